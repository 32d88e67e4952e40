"""Durable private files: what the store, the spool and the status file write through."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_BINARY = getattr(os, "O_BINARY", 0)


def write_private(path: Path, data: bytes, exclusive: bool = False, durable: bool = True) -> None:
    """Write ``data`` to ``path`` readable by the user only (0600), atomically: a temp file
    (``.<name>.<pid>.<random>.tmp``) renamed over ``path``, or with ``exclusive`` linked to it,
    which fails (``FileExistsError``) if ``path`` exists. Either way ``path`` never holds part of
    ``data``, even when the disk fills or the process dies midway. ``durable`` also fsyncs the
    file and the folder (not worth a disk flush for a status a reboot makes stale anyway)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.name == "posix":
                os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if exclusive:
            os.link(temp, path)
        else:
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
