"""Desktop notifications: ``notify(title, body) -> bool``, True only if the desktop accepted it.

Linux: the freedesktop notification service (``org.freedesktop.Notifications``) through
``notify-send``, else ``gdbus call``. (``dbus-send`` cannot build the ``a{sv}`` hints argument
that ``Notify`` requires, so it is no fallback.) Nothing is attempted when no session bus is
known: with ``DISPLAY`` set, D-Bus clients would otherwise autolaunch a bus that outlives us.
macOS: ``osascript``'s ``display notification``, the strings passed as arguments, not as script.
Windows: returns False; there the tray's own ``pystray`` ``Icon.notify`` shows the balloon, since
a toast needs an application identity that the tray icon already has.

Never raises; every call is time-limited.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from agent.system import session

APP_NAME = "Cadence"
TIMEOUT_S = 3.0
EXPIRE_MS = 8000
MAX_LEN = 500


def _run(argv: list[str], env: dict | None = None) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return done.returncode == 0


def _gvariant_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _notify_linux(title: str, body: str) -> bool:
    env = session.dbus_env()
    if env is None:
        return False
    if shutil.which("notify-send"):
        return _run(["notify-send", f"--app-name={APP_NAME}", f"--expire-time={EXPIRE_MS}",
                     "--", title, body], env=env)
    if shutil.which("gdbus"):
        return _run(["gdbus", "call", "--session", "--timeout", str(int(TIMEOUT_S)),
                     "--dest", "org.freedesktop.Notifications",
                     "--object-path", "/org/freedesktop/Notifications",
                     "--method", "org.freedesktop.Notifications.Notify",
                     _gvariant_string(APP_NAME), "0", "''", _gvariant_string(title),
                     _gvariant_string(body), "@as []", "@a{sv} {}", str(EXPIRE_MS)], env=env)
    return False


def _notify_macos(title: str, body: str) -> bool:
    return _run(["osascript", "-e", "on run argv",
                 "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                 "-e", "end run", title, body])


def notify(title: str, body: str) -> bool:
    """Show a desktop notification; True if the desktop took it, False otherwise."""
    try:
        title, body = str(title)[:MAX_LEN], str(body)[:MAX_LEN]
        if sys.platform == "win32":
            return False
        if sys.platform == "darwin":
            return _notify_macos(title, body)
        return _notify_linux(title, body)
    except Exception:  # noqa: BLE001 - a notification must never take the agent down
        return False
