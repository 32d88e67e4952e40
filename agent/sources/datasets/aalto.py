"""The Aalto "136M Keystrokes" layout: ``keystrokes/<PARTICIPANT_ID>_keystrokes.txt`` (the
shared subset), or ``files/`` as the public download (``Keystrokes.zip``) unpacks.

Tab-separated, one header row, columns ``PARTICIPANT_ID TEST_SECTION_ID SENTENCE USER_INPUT
KEYSTROKE_ID PRESS_TIME RELEASE_TIME LETTER KEYCODE`` (epoch ms, browser keyCode). Each row
becomes a key-down and a key-up Event at once: the key passes the keymap by KEYCODE and the
sentence, input and letter columns are never decoded. One stream per TEST_SECTION_ID.

Row policy (counted in the LoadReport): rows with a wrong number of columns or a time or key
code that is not an integer (``1.471968e+12``) are skipped; a hold <= 0 ms is clipped to 1 ms
(``adjusted["hold_clipped_to_1ms"]``); long holds are kept as recorded (features cap them).
"""

from __future__ import annotations

from pathlib import Path

from agent.events import Event, Kind
from agent.keymap import from_browser_keycode
from agent.sources.loading import (LoadReport, People, SourceError, UserSessions, require_dir,
                                   sample)

SUFFIX = "_keystrokes.txt"
N_COLUMNS = 9
_NS_PER_MS = 1_000_000


FOLDERS = ("keystrokes", "files", "Keystrokes/files", ".")  # where the files may lie under DIR


def participant_files(root: Path) -> list[Path]:
    """The participant files under ``root``: in its ``keystrokes/`` (the shared subset), its
    ``files/`` or ``Keystrokes/files/`` (the public download, unpacked or its parent), or in
    ``root`` itself. The first of these that holds any is taken."""
    root = require_dir(Path(root), "the Aalto dataset folder (it holds keystrokes/ or files/)")
    for name in FOLDERS:
        folder = root / name
        files = sorted(folder.glob("*" + SUFFIX)) if folder.is_dir() else []
        if files:
            return files
    raise SourceError(f"{root}: no *{SUFFIX} files in it or in its "
                      f"{', '.join(n + '/' for n in FOLDERS[:-1])}; is this the Aalto 136M layout?")


def _int_field(raw: bytes) -> int:
    if not raw.isdigit():
        raise ValueError
    return int(raw)


def read_participant(path: Path, report: LoadReport) -> UserSessions | None:
    """One participant's sessions; None (and a logged error) if the file cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.fail(str(path), f"{exc.strerror}; check the file's permissions")
        return None
    report.files += 1
    lines = data.splitlines()
    if not lines or not lines[0].startswith(b"PARTICIPANT_ID\t"):
        report.fail(str(path), "no Aalto header row (PARTICIPANT_ID ... KEYCODE); not this format")
        return None
    sections: dict[int, list[tuple[int, int, int]]] = {}
    for number, line in enumerate(lines[1:], start=2):
        report.rows += 1
        fields = line.split(b"\t")
        if len(fields) != N_COLUMNS:
            report.skip(str(path), number, f"{len(fields)} columns, expected {N_COLUMNS}")
            continue
        try:
            section = _int_field(fields[1])
            press = _int_field(fields[5])
            release = _int_field(fields[6])
            keycode = _int_field(fields[8])
        except ValueError:
            report.skip(str(path), number, "a section id, time or key code is not an integer")
            continue
        if release <= press:
            report.adjusted["hold_clipped_to_1ms"] += 1
            release = press + 1
        sections.setdefault(section, []).append((press, release, keycode))
    sessions = [_to_events(rows) for rows in sections.values()]
    sessions.sort(key=lambda events: events[0].t_ns)
    return UserSessions(path.name[: -len(SUFFIX)], sessions)


def _to_events(rows: list[tuple[int, int, int]]) -> list[Event]:
    events = []
    for press_id, (press, release, keycode) in enumerate(sorted(rows)):
        cls = from_browser_keycode(keycode)
        events.append(Event(press * _NS_PER_MS, Kind.DOWN, cls, press_id))
        events.append(Event(release * _NS_PER_MS, Kind.UP, cls, press_id))
    events.sort(key=lambda e: (e.t_ns, e.kind))
    return events


def people(root: Path, users: int | None = None, seed: int = 0,
           report: LoadReport | None = None) -> People:
    """The participants under ``root`` (a seeded sample of ``users`` of them), read as needed."""
    return People(sample(participant_files(root), users, seed), read_participant,
                  report if report is not None else LoadReport())


def load(root: Path, users: int | None = None, seed: int = 0,
         report: LoadReport | None = None) -> tuple[list[UserSessions], LoadReport]:
    """Load the participants under ``root`` (a seeded sample of ``users`` of them)."""
    return people(root, users, seed, report).load()
