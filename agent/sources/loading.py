"""What every loader shares: a user's sessions, and an account of what was skipped."""

from __future__ import annotations

import csv
import io
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.events import Event

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A file or folder that cannot be read at all; the message names it and what to do."""


@dataclass
class UserSessions:
    """One person's sessions, each an Event stream in time order, sessions in time order."""

    user: str
    sessions: list[list[Event]]


@dataclass
class LoadReport:
    """What a loader read and what it skipped, by reason (no content, only counts)."""

    files: int = 0
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    adjusted: Counter = field(default_factory=Counter)
    failed_files: list[str] = field(default_factory=list)

    def skip(self, where: str, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        log.warning("%s:%d: skipped row: %s", where, line, reason)

    def fail(self, where: str, reason: str) -> None:
        self.failed_files.append(where)
        log.error("%s: cannot read: %s", where, reason)

    @property
    def skipped_rows(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "rows": self.rows,
            "skipped_rows": self.skipped_rows,
            "skipped_by_reason": dict(self.skipped),
            "adjusted": dict(self.adjusted),
            "failed_files": len(self.failed_files),
        }


@dataclass
class People:
    """The people a loader chose, each read from disk only when iteration reaches them, so an
    evaluation that judges one person at a time (``cadence eval injection``) runs over a
    dataset larger than memory: the full Aalto download is 168,000 people. ``len`` is how many
    were chosen (one with no readable session is passed over). Each iteration reads the files
    again and adds to ``report`` again: iterate once, or take :meth:`load`."""

    items: list
    read: Callable[[Any, LoadReport], UserSessions | None]
    report: LoadReport = field(default_factory=LoadReport)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[UserSessions]:
        for item in self.items:
            person = self.read(item, self.report)
            if person is not None and person.sessions:
                yield person

    def load(self) -> tuple[list[UserSessions], LoadReport]:
        """Everyone, in memory (for evaluations that set people against each other)."""
        return list(self), self.report


#: why a CSV row the csv module cannot read was skipped (its content is never shown)
CSV_ROW = "not a readable CSV row (a field over the size limit, a NUL byte or a broken quote)"


def csv_rows(text: str) -> Iterator[tuple[int, list[str] | None]]:
    """(line, fields) for each row of a CSV text, the header first; fields are None for a row
    the csv module cannot read (:data:`CSV_ROW`), and reading goes on at the next row."""
    rows = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error:
            row = None
        yield rows.line_num, row


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise SourceError(f"{path}: no such folder; point the command at {what}")
    if not path.is_dir():
        raise SourceError(f"{path}: not a folder; point the command at {what}")
    return path


def sample(items: list, n: int | None, seed: int) -> list:
    """``n`` items drawn with ``seed`` (all of them, in order, when ``n`` is None or too big)."""
    if n is None or n >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(items, n))
