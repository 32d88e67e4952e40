"""One agent per user session: an exclusive, non-blocking lock on a file."""

from __future__ import annotations

import os
import sys

from agent.system.paths import private_dir


class AlreadyRunning(RuntimeError):
    pass


class InstanceLock:
    """One agent per user session: an exclusive lock on a file in the runtime folder."""

    def __init__(self, path) -> None:
        self.path = path
        self._file = None

    def acquire(self) -> None:
        private_dir(self.path.parent)
        f = open(self.path, "a+")
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise AlreadyRunning(f"Cadence is already running in this session (pid {pid})")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
