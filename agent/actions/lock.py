"""Lock the user's session, and say only what was verified.

``lock_session`` runs on the pipeline worker: it never raises and every step has a deadline. A
method counts as having locked the session only when :func:`agent.system.session.screen_locked`
confirms it afterwards; an exit code alone is never trusted (``xdg-screensaver lock`` exits 0 on
desktops where it only blanks, ``loginctl lock-session`` exits 0 when no locker listens to logind).

Linux order: the configured locker command (for example ``["i3lock", "-n"]`` or
``["xsecurelock"]``) started detached, then ``loginctl lock-session`` (if logind manages this
session), D-Bus ``org.freedesktop.ScreenSaver.Lock`` (then ``org.gnome.ScreenSaver.Lock``) and
``xdg-screensaver lock``. Each attempt gets ``verify_timeout_s`` (command plus
verification), so the whole call takes at most four times that, plus up to
``session.X_QUERY_TIMEOUT_S`` per state read if the X server stops answering.

Only the first method that verifiably locks is used. If one runs and exits 0 but this session
cannot report its lock state (some Wayland desktops), we stop there with ``verified=None`` rather
than stack a second locker on top. A configured locker that keeps running without locking within
the window is terminated, so a retry never stacks lockers either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.system import session

POLL_S = 0.1
MACOS_LOGIN_FRAMEWORK = "/System/Library/PrivateFrameworks/login.framework/Versions/Current/login"
KNOWN_LOCKERS = (["i3lock", "-n"], ["xsecurelock"], ["slock"], ["xlock", "-mode", "blank"],
                 ["swaylock"])
CONFIGURE_HINT = ("set locker_command in the settings (for example [\"i3lock\", \"-n\"] or "
                  "[\"xsecurelock\"]), or run a screen locker that listens to logind "
                  "(for example xss-lock with i3lock)")


@dataclass(frozen=True)
class LockResult:
    locked: bool            # True only when the lock was verified
    verified: bool | None   # True: lock state confirmed; False: state read as unlocked; None: unreadable
    method: str             # short method name ("loginctl", "dbus-screensaver", "locker:i3lock", ...)
    detail: str             # for the user / doctor; never holds anything typed
    pid: int | None = None  # the detached locker we started, if any


# --------------------------------------------------------------------------- verification
def _wait_locked(deadline: float, process: subprocess.Popen | None = None) -> bool | None:
    """Poll the lock state until ``deadline``: True as soon as locked; False if it never was;
    None if the state could never be read. Stops early if our locker process exits."""
    seen_unlocked = False
    while True:
        state = session.screen_locked()
        if state:
            return True
        seen_unlocked = seen_unlocked or state is False
        if process is not None and process.poll() is not None:
            # It exited; one more look (a locker that forks and exits may have locked by now).
            return True if session.screen_locked() else (False if seen_unlocked else None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False if seen_unlocked else None
        time.sleep(min(POLL_S, remaining))


def _remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def _attempt(method: str, argv: list[str], verify_timeout_s: float,
             env: dict | None = None) -> tuple[bool | None, str]:
    """Run a short command, then verify. Returns (verified-state, note). A command that
    failed locks nothing later: its state is read once, not waited for, so the next method (and
    the lock an injection needs at once) does not lose the whole window."""
    deadline = time.monotonic() + verify_timeout_s
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=_remaining(deadline), env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        return _wait_locked(deadline), "timed out"
    except OSError as exc:
        return False, f"could not start ({type(exc).__name__})"
    if done.returncode != 0:
        return _wait_locked(time.monotonic()), f"exit {done.returncode}"
    return _wait_locked(deadline), "exit 0"


# --------------------------------------------------------------------------- Linux methods
def _loginctl(verify_timeout_s: float):
    if not session.logind_session_available():
        return None, "no logind session"
    argv = ["loginctl", "lock-session"]
    if os.environ.get("XDG_SESSION_ID"):
        argv.append(os.environ["XDG_SESSION_ID"])
    return _attempt("loginctl", argv, verify_timeout_s)


def _dbus_screensaver(verify_timeout_s: float):
    env = session.dbus_env()
    if env is None:
        return None, "no session bus"
    if shutil.which("dbus-send") is None:
        return None, "dbus-send not installed"
    deadline = time.monotonic() + verify_timeout_s
    notes = []
    for dest, path in (("org.freedesktop.ScreenSaver", "/org/freedesktop/ScreenSaver"),
                       ("org.gnome.ScreenSaver", "/org/gnome/ScreenSaver")):
        timeout = _remaining(deadline)
        argv = ["dbus-send", "--session", "--print-reply",
                f"--reply-timeout={int(timeout * 1000)}", f"--dest={dest}", path, f"{dest}.Lock"]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, env=env, check=False)
        except (subprocess.TimeoutExpired, OSError):
            notes.append(f"{dest}: no reply")
            continue
        if done.returncode == 0:
            return _wait_locked(deadline), f"{dest}.Lock answered"
        notes.append(f"{dest}: not available")
    return None, "; ".join(notes)


def _xdg_screensaver(verify_timeout_s: float):
    if shutil.which("xdg-screensaver") is None:
        return None, "not installed"
    env = dict(os.environ)
    if session.session_bus_address() is None:
        env["DBUS_SESSION_BUS_ADDRESS"] = "disabled:"  # do not let it autolaunch a session bus
    return _attempt("xdg-screensaver", ["xdg-screensaver", "lock"], verify_timeout_s, env=env)


def _reap(process: subprocess.Popen) -> None:
    threading.Thread(target=process.wait, name="cadence-locker-reaper", daemon=True).start()


def _locker(command: list[str], verify_timeout_s: float):
    """Start the configured locker detached; returns (state, note, pid)."""
    if not command or not all(isinstance(part, str) and part for part in command):
        return None, "locker_command is empty or malformed", None
    if shutil.which(command[0]) is None:
        return None, f"{Path(command[0]).name} not found on PATH", None
    deadline = time.monotonic() + verify_timeout_s
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   close_fds=True)
    except OSError as exc:
        return False, f"could not start ({type(exc).__name__})", None
    _reap(process)
    state = _wait_locked(deadline, process)
    code = process.poll()
    if state is True:
        return True, "running", process.pid
    if code is not None:
        return state, f"exited {code} without locking", None
    if state is False:
        # Running but the screen is demonstrably not locked: do not leave a half-started locker
        # behind to surprise the user, nor stack a second one on a retry.
        try:
            process.terminate()
        except OSError:
            pass
        return False, "started but did not lock in time (stopped it)", None
    return None, "started; lock state unreadable", process.pid


def _lock_linux(locker_command: list[str] | None, verify_timeout_s: float) -> LockResult:
    """The configured locker first: the administrator's choice, known to work here, where a
    desktop method that exits 0 with no locker listening costs the verify window while an
    injector types on. Then the desktop's own methods."""
    tried: list[str] = []
    if locker_command:
        name = f"locker:{Path(str(locker_command[0])).name}" if locker_command[0] else "locker"
        state, note, pid = _locker(list(locker_command), verify_timeout_s)
        if state is True:
            return LockResult(True, True, name, f"{name}: locked and verified", pid)
        if state is None and pid is not None:
            return LockResult(False, None, name, f"{name}: {note}; cannot confirm the lock", pid)
        tried.append(f"{name}: {note}")
    else:
        tried.append("locker: none configured")
    methods = [("loginctl", _loginctl), ("dbus-screensaver", _dbus_screensaver),
               ("xdg-screensaver", _xdg_screensaver)]
    for name, method in methods:
        state, note = method(verify_timeout_s)
        if state is True:
            return LockResult(True, True, name, f"{name}: locked and verified ({note})")
        if state is None and note.endswith(("exit 0", "answered")):
            # It ran and claims success but this session cannot report its lock state: stop here
            # rather than stack another locker on top, and do not claim a lock.
            return LockResult(False, None, name, f"{name}: {note}, but the lock state cannot be "
                              "read on this session; cannot confirm the lock")
        tried.append(f"{name}: {note}" + ("" if state is None else ", not locked"))
    return LockResult(False, False if session.screen_locked() is False else None, "none",
                      "nothing locked the session (tried " + "; ".join(tried) + "); "
                      + CONFIGURE_HINT)


# --------------------------------------------------------------------------- Windows, macOS
def _lock_windows(verify_timeout_s: float) -> LockResult:
    import ctypes

    deadline = time.monotonic() + verify_timeout_s
    if not ctypes.windll.user32.LockWorkStation():
        return LockResult(False, False, "LockWorkStation",
                          f"LockWorkStation failed (error {ctypes.GetLastError()}); the agent must "
                          "run in the user's interactive session, not as a service")
    state = _wait_locked(deadline)  # LockWorkStation is asynchronous
    if state:
        return LockResult(True, True, "LockWorkStation", "locked and verified")
    return LockResult(False, state, "LockWorkStation", "LockWorkStation returned but the lock "
                      "was not confirmed in time")


def _lock_macos(verify_timeout_s: float) -> LockResult:
    import ctypes

    deadline = time.monotonic() + verify_timeout_s
    lock_fn = None
    try:
        lock_fn = getattr(ctypes.CDLL(MACOS_LOGIN_FRAMEWORK), "SACLockScreenImmediate", None)
    except OSError:
        lock_fn = None
    if lock_fn is not None:
        lock_fn.restype = ctypes.c_int
        lock_fn()
        state = _wait_locked(deadline)
        if state:
            return LockResult(True, True, "SACLockScreenImmediate", "locked and verified")
        return LockResult(False, state, "SACLockScreenImmediate", "called, but the lock was not "
                          "confirmed in time")
    try:
        subprocess.run(["pmset", "displaysleepnow"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=_remaining(deadline), check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return LockResult(False, None, "pmset", f"pmset failed ({type(exc).__name__})")
    state = _wait_locked(deadline)
    if state:
        return LockResult(True, True, "pmset", "display slept and the lock was verified")
    return LockResult(False, None, "pmset", "SACLockScreenImmediate is unavailable; the display "
                      "was put to sleep, which locks only if 'require password immediately' is "
                      "set; unverified")


# --------------------------------------------------------------------------- public API
def lock_session(locker_command: list[str] | None = None,
                 verify_timeout_s: float = 3.0) -> LockResult:
    """Lock the session and verify it. Never raises."""
    try:
        verify_timeout_s = max(0.1, float(verify_timeout_s))
        if session.screen_locked():
            return LockResult(True, True, "already-locked", "the session was already locked")
        if sys.platform == "win32":
            return _lock_windows(verify_timeout_s)
        if sys.platform == "darwin":
            return _lock_macos(verify_timeout_s)
        return _lock_linux(locker_command, verify_timeout_s)
    except Exception as exc:  # noqa: BLE001 - the pipeline worker must survive
        return LockResult(False, None, "error", f"locking failed: {type(exc).__name__}")


def available_methods(locker_command: list[str] | None = None) -> list[str]:
    """Lock methods this machine offers, in the order ``lock_session`` tries them (for
    ``cadence doctor``). Lockers installed but not configured are listed as ``installed:<name>``."""
    try:
        if sys.platform == "win32":
            return ["LockWorkStation"]
        if sys.platform == "darwin":
            return (["SACLockScreenImmediate"] if Path(MACOS_LOGIN_FRAMEWORK).exists()
                    else []) + ["pmset"]
        methods = []
        if locker_command and locker_command[0] and shutil.which(locker_command[0]):
            methods.append(f"locker:{Path(locker_command[0]).name}")
        if session.logind_session_available():
            methods.append("loginctl")
        if session.session_bus_address() is not None and shutil.which("dbus-send"):
            methods.append("dbus-screensaver")
        if shutil.which("xdg-screensaver"):
            methods.append("xdg-screensaver")
        for known in KNOWN_LOCKERS:
            entry = f"installed:{known[0]}"
            if shutil.which(known[0]) and entry not in methods and \
                    not (locker_command and Path(locker_command[0]).name == known[0]):
                methods.append(entry)
        return methods
    except Exception:  # noqa: BLE001
        return []
