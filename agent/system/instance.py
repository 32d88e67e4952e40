"""One agent per user session: an exclusive, non-blocking lock on a file."""

from __future__ import annotations

import os
import sys

from agent.system.paths import private_dir


_WINDOWS_LOCK_BYTE = 1 << 20


class AlreadyRunning(RuntimeError):
    pass


def _holder(f) -> str:
    """The pid the running agent wrote, or "?"."""
    try:
        f.seek(0)
        return f.read(32).decode("ascii", "replace").strip() or "?"
    except OSError:
        return "?"


class InstanceLock:
    """One agent per user session: an exclusive lock on a file in the runtime folder."""

    def __init__(self, path) -> None:
        self.path = path
        self._file = None

    def acquire(self) -> None:
        private_dir(self.path.parent)
        # 0600 like every file of the agent's (it holds only a pid, in a 0700 folder)
        f = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND
                              | getattr(os, "O_BINARY", 0), 0o600), "a+b")
        if os.name == "posix":      # a lock file an older version made 0644
            os.fchmod(f.fileno(), 0o600)
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt
                # msvcrt locks from the file's position: one fixed byte past any pid written,
                # so every agent contends for the same byte and the pid stays readable
                f.seek(_WINDOWS_LOCK_BYTE)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _holder(f)
            f.close()
            raise AlreadyRunning(f"Cadence is already running in this session (pid {pid})")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()).encode("ascii"))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
