"""The recording format (EVALUATION.md): ``DIR/<user>/<session>.csv``, sessions by name.

UTF-8 CSV with header ``t_ms,kind,key,x,y,button``. ``kind``: down/up (keyboard),
move/press/release/scroll (mouse), or attach/new_keyboard (a keyboard plugged in, or typing
for the first time: a time and nothing else). ``key`` is a key as pynput names it (``a``,
``Key.space``, ``<65>``) or a KeyClass name; it passes the same keymap and pairing as live
input and is forgotten there. A malformed row is skipped, counted and logged with its file and
line (never its content); a file that cannot be read at all is an error naming it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from agent.events import ARRIVALS, Button, Event, Kind
from agent.keymap import KeyTracker
from agent.sources.loading import (CSV_ROW, LoadReport, People, SourceError, UserSessions,
                                   csv_rows, require_dir, sample)

HEADER = ["t_ms", "kind", "key", "x", "y", "button"]
_KINDS = {k.name.lower(): k for k in Kind}
_BUTTONS = {"": Button.NONE, "left": Button.LEFT, "right": Button.RIGHT, "middle": Button.MIDDLE}


def read_session(path: Path, report: LoadReport) -> list[Event] | None:
    """One recorded session as events in time order; None if the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        report.fail(str(path), "not UTF-8 text; is this a recording CSV?")
        return None
    except OSError as exc:
        report.fail(str(path), f"{exc.strerror}; check the file and its permissions")
        return None
    report.files += 1
    rows = csv_rows(text)
    first = next(rows, None)
    if first is None:
        report.fail(str(path), "empty file; a recording starts with the header "
                    + ",".join(HEADER))
        return None
    if first[1] is None or [h.strip() for h in first[1]] != HEADER:
        report.fail(str(path), "first line is not the recording header " + ",".join(HEADER))
        return None
    tracker = KeyTracker()
    events: list[Event] = []
    for line, row in rows:
        report.rows += 1
        if row is None:
            report.skip(str(path), line, CSV_ROW)
            continue
        try:
            event = _parse(row, tracker)
        except ValueError as exc:
            report.skip(str(path), line, str(exc))
            continue
        if event is not None:
            events.append(event)
    events.sort(key=lambda e: e.t_ns)
    return events


def _parse(row: list[str], tracker: KeyTracker) -> Event | None:
    if len(row) != len(HEADER):
        raise ValueError(f"{len(row)} fields, expected {len(HEADER)}")
    t_text, kind_text, key, x_text, y_text, button_text = row
    try:
        t_ns = float(t_text) * 1e6
    except ValueError:
        raise ValueError("t_ms is not a number") from None
    if not math.isfinite(t_ns) or t_ns < 0:
        raise ValueError("t_ms is negative, or not a finite number")
    t_ns = round(t_ns)
    kind = _KINDS.get(kind_text.strip().lower())
    if kind is None:
        raise ValueError("kind is not one of " + "/".join(_KINDS))
    if kind == Kind.DOWN:
        cls, press_id, repeat = tracker.press(key)
        return Event(t_ns, kind, cls, press_id, repeat=repeat)
    if kind == Kind.UP:
        paired = tracker.release(key)
        if paired is None:
            return None  # a release whose press was not recorded: nothing to time
        cls, press_id = paired
        return Event(t_ns, kind, cls, press_id)
    if kind in ARRIVALS:
        return Event(t_ns, kind)
    try:
        x, y = float(x_text), float(y_text)
    except ValueError:
        raise ValueError("x or y is not a number") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError("x or y is not a finite number")
    button = _BUTTONS.get(button_text.strip().lower())
    if button is None:
        raise ValueError("button is not left, right, middle or empty")
    return Event(t_ns, kind, x=x, y=y, button=button)


def read_user(folder: Path, report: LoadReport) -> UserSessions:
    """A user folder's sessions, by name (the unreadable and the empty left out)."""
    sessions = [read_session(p, report) for p in sorted(folder.glob("*.csv"))]
    return UserSessions(folder.name, [s for s in sessions if s])


def people(root: Path, users: int | None = None, seed: int = 0,
           report: LoadReport | None = None) -> People:
    """Every user folder under ``root`` (a seeded sample of ``users``), read as needed."""
    root = require_dir(Path(root), "a recordings folder (DIR/<user>/<session>.csv)")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise SourceError(f"{root}: no user folders; recordings are DIR/<user>/<session>.csv")
    return People(sample(folders, users, seed), read_user,
                  report if report is not None else LoadReport())


def load(root: Path, users: int | None = None, seed: int = 0,
         report: LoadReport | None = None) -> tuple[list[UserSessions], LoadReport]:
    """Every user folder under ``root`` (a seeded sample of ``users``), sessions by name."""
    return people(root, users, seed, report).load()


def write_session(path: Path, events: list[Event]) -> None:
    """Write events as a recording, keys as their KeyClass names (never a character)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for e in events:
            key = e.key.name if e.is_key and e.key is not None else ""
            button = "" if e.button == Button.NONE else e.button.name.lower()
            mouse = not e.is_key and e.kind not in ARRIVALS
            out.writerow([f"{e.t_ns / 1e6:.3f}", e.kind.name.lower(), key,
                          e.x if mouse else "", e.y if mouse else "", button])
