"""The Balabit Mouse Dynamics Challenge layout.

``training_files/<user>/session_<id>``: CSV with the header
``record timestamp,client timestamp,button,state,x,y``. Times are seconds since the session's
start; we use the *client* timestamp (the RDP client's clock, the one closest to the hand) and
turn it into integer nanoseconds. ``button`` is ``NoButton|Left|Right|Middle|Scroll|XButton``;
``state`` is ``Move|Drag|Pressed|Released|Down|Up``.

Mapping to :class:`~agent.events.Event`:

- ``Move`` and ``Drag`` -> ``MOVE`` (a drag is a move with a button held; the held button is
  known from the preceding press, so the move carries ``Button.NONE`` like live input);
- button ``Scroll`` -> ``SCROLL`` whatever the state (Balabit writes the wheel's direction as
  ``Down``/``Up``; the direction is not kept);
- ``Pressed``/``Down`` -> ``PRESS``, ``Released``/``Up`` -> ``RELEASE`` for the other buttons;
- buttons: ``Left``/``Right``/``Middle`` -> LEFT/RIGHT/MIDDLE, ``NoButton`` and ``XButton`` ->
  NONE.

Row policy (counted in the LoadReport, reported with file and line, never the row's content):
a row with a wrong number of fields, a time or coordinate that is not a finite number, a negative
time, or an unknown button or state is skipped. A client time earlier than the previous row's
is kept at the previous row's time (``adjusted["time_clamped_monotonic"]``), so each stream is in
time order. Coordinates are kept as recorded; jumps (Balabit has some beyond 5000 px) are for
the feature code to handle, exactly as for live input.

Sessions carry no absolute time, so a user's sessions are ordered by file name, as the data's
README says. Users are the folders of ``training_files/`` in name order.

The challenge layout adds ``test_files/<user>/session_<id>`` and ``public_labels.csv``
(``filename,is_illegal``): :func:`load_challenge` reads the labelled test sessions.
"""

from __future__ import annotations

import math
from pathlib import Path

from agent.events import Button, Event, Kind
from agent.sources.loading import (CSV_ROW, LoadReport, People, SourceError, UserSessions,
                                   csv_rows, require_dir, sample)

HEADER = ("record timestamp", "client timestamp", "button", "state", "x", "y")
N_COLUMNS = len(HEADER)
TRAINING = "training_files"
TESTING = "test_files"
LABELS = "public_labels.csv"
_NS_PER_S = 1_000_000_000

BUTTONS = {"NoButton": Button.NONE, "Left": Button.LEFT, "Right": Button.RIGHT,
           "Middle": Button.MIDDLE, "Scroll": Button.NONE, "XButton": Button.NONE}
STATES = {"Move": Kind.MOVE, "Drag": Kind.MOVE, "Pressed": Kind.PRESS, "Down": Kind.PRESS,
          "Released": Kind.RELEASE, "Up": Kind.RELEASE}

# (button, state) -> (kind, button); a move carries Button.NONE, as live input does.
_MAPPED = {(b, s): (Kind.SCROLL if b == "Scroll" else k, Button.NONE if k == Kind.MOVE else bv)
           for b, bv in BUTTONS.items() for s, k in STATES.items()}


def _folder(root: Path, name: str) -> Path:
    root = require_dir(Path(root), f"the Balabit dataset folder (it holds {TRAINING}/)")
    folder = root / name if (root / name).is_dir() else None
    if folder is None:
        raise SourceError(f"{root}: no {name}/ folder; is this the Balabit Mouse Dynamics layout?")
    return folder


def user_folders(root: Path, name: str = TRAINING) -> list[Path]:
    """The user folders of ``root/<name>`` in name order."""
    folder = _folder(root, name)
    users = sorted(p for p in folder.iterdir() if p.is_dir())
    if not users:
        raise SourceError(f"{folder}: no user folders; is this the Balabit Mouse Dynamics layout?")
    return users


def session_files(user_dir: Path) -> list[Path]:
    return sorted(p for p in user_dir.glob("session_*") if p.is_file())


def _number(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError
    return value


def read_session(path: Path, report: LoadReport) -> list[Event] | None:
    """One session's Event stream; None (and a logged error naming the file) if unreadable."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        report.fail(str(path), f"{exc.strerror}; check the file's permissions")
        return None
    except UnicodeDecodeError:
        report.fail(str(path), "not UTF-8 text; not this format")
        return None
    report.files += 1
    rows = csv_rows(text)
    _, header = next(rows, (1, None))
    if header is None or tuple(h.strip() for h in header) != HEADER:
        report.fail(str(path), "no Balabit header row (record timestamp,...,x,y); not this format")
        return None
    events: list[Event] = []
    last_ns = 0
    for number, row in rows:
        report.rows += 1
        if row is None:
            report.skip(str(path), number, CSV_ROW)
            continue
        if len(row) != N_COLUMNS:
            report.skip(str(path), number, f"{len(row)} fields, expected {N_COLUMNS}")
            continue
        try:
            seconds = _number(row[1])
            x, y = _number(row[4]), _number(row[5])
        except ValueError:
            report.skip(str(path), number, "a time or coordinate is not a finite number")
            continue
        if seconds < 0:
            report.skip(str(path), number, "negative time")
            continue
        mapped = _MAPPED.get((row[2], row[3]))
        if mapped is None:
            report.skip(str(path), number, "unknown button or state")
            continue
        kind, button = mapped
        if not math.isfinite(seconds * _NS_PER_S):
            report.skip(str(path), number, "time out of range")
            continue
        t_ns = round(seconds * _NS_PER_S)
        if t_ns < last_ns:
            report.adjusted["time_clamped_monotonic"] += 1
            t_ns = last_ns
        last_ns = t_ns
        events.append(Event(t_ns, kind, None, -1, x, y, button))
    return events


def read_user(user_dir: Path, report: LoadReport) -> UserSessions:
    sessions = []
    for path in session_files(user_dir):
        events = read_session(path, report)
        if events:
            sessions.append(events)
    return UserSessions(user_dir.name, sessions)


def people(root: Path, users: int | None = None, seed: int = 0,
           report: LoadReport | None = None) -> People:
    """The users under ``root`` (a seeded sample of ``users``), read as needed."""
    return People(sample(user_folders(root), users, seed), read_user,
                  report if report is not None else LoadReport())


def load(root: Path, users: int | None = None, seed: int = 0,
         report: LoadReport | None = None) -> tuple[list[UserSessions], LoadReport]:
    """The training sessions of the users under ``root`` (a seeded sample of ``users``)."""
    return people(root, users, seed, report).load()


def has_challenge(root: Path) -> bool:
    root = Path(root)
    return (root / TESTING).is_dir() and (root / LABELS).is_file()


def read_labels(path: Path, report: LoadReport) -> dict[str, bool]:
    """``public_labels.csv``: session file name -> is_illegal. Bad rows skipped and counted."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the challenge labels ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise SourceError(f"{path}: the challenge labels are not UTF-8 text") from None
    rows = csv_rows(text)
    _, header = next(rows, (1, None))
    if header is None or [h.strip() for h in header] != ["filename", "is_illegal"]:
        raise SourceError(f"{path}: no header row 'filename,is_illegal'; not the challenge labels")
    labels: dict[str, bool] = {}
    for number, row in rows:
        if row is None or len(row) != 2 or row[1].strip() not in ("0", "1") or not row[0].strip():
            report.skip(str(path), number, "label row is not filename,0|1")
            continue
        labels[row[0].strip()] = row[1].strip() == "1"
    return labels


def load_challenge(root: Path, report: LoadReport | None = None
                   ) -> list[tuple[str, list[Event], bool]]:
    """The labelled test sessions: ``(user, events, is_illegal)``, users and files in name order.

    A test session belongs to the user whose folder holds it (the account it was recorded as);
    sessions without a public label are not read. Raises SourceError without the layout."""
    root = Path(root)
    if not has_challenge(root):
        raise SourceError(f"{root}: no {TESTING}/ and {LABELS}; not the Balabit challenge layout")
    report = report if report is not None else LoadReport()
    labels = read_labels(root / LABELS, report)
    out = []
    for user_dir in user_folders(root, TESTING):
        for path in session_files(user_dir):
            if path.name not in labels:
                continue
            events = read_session(path, report)
            if events:
                out.append((user_dir.name, events, labels[path.name]))
    return out
