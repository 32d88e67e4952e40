"""The audit log: what the agent decided and did, as JSON lines, append-only, rotated by size.

Each record is ``{"time": ISO-8601 UTC, "kind": ..., **fields}``. Nothing that could carry text a
person typed gets in: field values are numbers, booleans, ``None`` or short lists of numbers;
strings are accepted only for a fixed set of enum-like fields (verdict, state, reason codes, ...)
and only as short tokens without whitespace. Anything else raises ``ValueError`` *before* a byte is
written, and the error names the field, never its value (errors end up in logs and crash reports).

Files are 0600 in a 0700 folder (by default ``platformdirs.user_log_dir("cadence")``); the
current file is ``audit.jsonl``, older ones ``audit.jsonl.1`` (newest) ... ``audit.jsonl.N``.

A record that cannot be written (a full disk, a folder made unwritable) is counted
(``write_failures``) and logged, never raised: the lock or the SIEM alert it goes with must still
happen. A write cut short leaves part of a line; the next record starts on a line of its own, and
the reader skips the torn line and counts it (``torn_lines``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

TEXT_FIELDS = frozenset({"verdict", "state", "reason", "method", "modality", "kind", "action", "rule",
                         "detail_code", "version", "host", "user"})
_TOKEN = re.compile(r"[A-Za-z0-9_.:@+/-]{0,64}")
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_LIST = 64
DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_BACKUPS = 5

log = logging.getLogger(__name__)


def default_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("cadence", appauthor=False)) / "audit.jsonl"


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _check(name: str, value) -> None:
    """Raise ValueError (naming the field only) unless ``value`` is allowed for ``name``."""
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name) or name == "time":
        raise ValueError("audit field names must be short lower-case identifiers other than "
                         "'time'")
    if value is None or _is_number(value):
        return
    if isinstance(value, str):
        if name not in TEXT_FIELDS:
            raise ValueError(f"audit field {name!r} may not hold a string; strings are allowed "
                             f"only in {sorted(TEXT_FIELDS)}")
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"audit field {name!r} must be a short code (letters, digits, "
                             "'_.:@+/-', at most 64 characters, no spaces)")
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST or not all(_is_number(v) for v in value):
            raise ValueError(f"audit field {name!r} must be a list of at most {MAX_LIST} numbers")
        return
    raise ValueError(f"audit field {name!r} has a type the audit log does not accept "
                     f"({type(value).__name__})")


_BINARY = getattr(os, "O_BINARY", 0)   # Windows: no newline translation


class AuditLog:
    """Append-only JSON-lines audit log with size-based rotation. Thread-safe within a process."""

    def __init__(self, path: str | os.PathLike | None = None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.max_bytes = int(max_bytes)
        self.backups = max(0, int(backups))
        self.write_failures = 0
        self.torn_lines = 0    # lines the last read() skipped: not a whole record
        self._lock = threading.Lock()

    # -- files
    def _ensure_folder(self) -> None:
        folder = self.path.parent
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for created in missing:  # only folders we created: never chmod someone else's folder
            os.chmod(created, 0o700)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _append(self, line: bytes) -> None:
        self._ensure_folder()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > 0 and size + len(line) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _BINARY
                     | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if hasattr(os, "fchmod"):  # an existing file made by an older version or by hand
                os.fchmod(fd, 0o600)
            end = os.fstat(fd).st_size
            if end:  # a write cut short (this run or an earlier one) is not glued to this record
                os.lseek(fd, end - 1, os.SEEK_SET)
                if os.read(fd, 1) != b"\n":
                    line = b"\n" + line
            rest = memoryview(line)
            while rest:     # a filling disk takes part of a write, then refuses the rest
                rest = rest[os.write(fd, rest):]
        finally:
            os.close(fd)

    # -- API
    def record(self, kind: str, **fields) -> dict:
        """Validate and append one record; returns it. Raises ValueError on a disallowed field
        (nothing is written then); a write that fails is counted and logged, not raised."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("audit record kind must be a non-empty code")
        _check("kind", kind)
        for name, value in fields.items():
            _check(name, value)
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                 .replace("+00:00", "Z"), "kind": kind}
        entry.update({name: list(v) if isinstance(v, tuple) else v for name, v in fields.items()})
        line = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._append(line)
            except OSError as exc:
                self.write_failures += 1
                if self.write_failures in (1, 10) or self.write_failures % 100 == 0:
                    log.error("cannot write the audit log %s (%s): %d records lost so far; "
                              "free disk space or fix the folder's permissions", self.path,
                              exc.strerror or type(exc).__name__, self.write_failures)
        return entry

    def files(self) -> list[Path]:
        """The current file and its backups that exist, newest first."""
        names = [self.path] + [self.path.with_name(f"{self.path.name}.{n}")
                               for n in range(1, self.backups + 1)]
        return [p for p in names if p.exists()]

    def prune(self, retention_days: int, now: float | None = None) -> int:
        """Delete rotated files whose newest record is older than ``retention_days`` (the
        current file is never deleted); returns how many were deleted."""
        import time
        cutoff = (time.time() if now is None else now) - retention_days * 86400
        removed = 0
        with self._lock:
            for path in self.files()[1:]:
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def read(self) -> list[dict]:
        """All records, oldest first (for ``cadence status`` and tests). A line that is not a
        whole record (a write cut short) is skipped, counted in ``torn_lines`` and logged."""
        records, torn = [], 0
        for path in reversed(self.files()):
            with open(path, encoding="utf-8") as fh:
                for line in filter(str.strip, fh):
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        torn += 1
        self.torn_lines = torn
        if torn:
            log.warning("the audit log %s has %d torn line(s), skipped: writes cut short, as by a "
                        "full disk; free disk space so that records are written whole", self.path,
                        torn)
        return records
