"""Durable private files: what the store, the spool and the status file write through."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_BINARY = getattr(os, "O_BINARY", 0)


def write_private(path: Path, data: bytes, exclusive: bool = False, durable: bool = True) -> None:
    """Write ``data`` to ``path`` readable by the user only (0600), atomically: a temp file
    (``.<name>.<pid>.<random>.tmp``) renamed over ``path``; ``durable`` also fsyncs the file and
    the folder (not worth a disk flush for a status a reboot makes stale anyway). With
    ``exclusive`` the file is created in place and must not exist yet."""
    target = path if exclusive else \
        path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.name == "posix":
                os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if not exclusive:
            os.replace(target, path)
    except BaseException:
        if not exclusive:
            target.unlink(missing_ok=True)
        raise
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
