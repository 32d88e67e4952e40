"""Session state, locking and notifications, for real: a private Xvfb, real screen lockers (i3lock,
xsecurelock), a private D-Bus session bus, input through XTest and xdotool.

Safety: the tests never talk to the developer's real session. Every X test runs against its own
Xvfb (killed by PID with SIGKILL afterwards, its lock file removed), D-Bus and logind are cut off
unless a test starts its own private bus, and every test runs under a SIGALRM guard on top of the
per-call subprocess timeouts (pytest-timeout is not a dependency).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import XServer, fullscreen_viewer, wait_for

from agent.actions import lock, notify
from agent.system import session

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Xvfb-based tests run on Linux")

GUARD_S = 60
HAVE_XVFB = shutil.which("Xvfb") is not None
HAVE_I3LOCK = shutil.which("i3lock") is not None
HAVE_XSECURELOCK = shutil.which("xsecurelock") is not None
HAVE_DBUS = shutil.which("dbus-daemon") is not None and shutil.which("dbus-send") is not None
SYSTEM_PYTHON = "/usr/bin/python3"

needs_xvfb = pytest.mark.skipif(not HAVE_XVFB, reason="Xvfb not installed "
                                "(apt-get install xvfb xdotool x11-utils i3lock xsecurelock)")
needs_i3lock = pytest.mark.skipif(not HAVE_I3LOCK, reason="i3lock not installed (apt-get install "
                                  "i3lock)")


def _have_gi() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", "from gi.repository import Gio"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# --------------------------------------------------------------------------- guards and fixtures
@pytest.fixture(autouse=True)
def _guard(alarm_guard):
    """Every test here runs under the GUARD_S alarm (conftest.alarm_guard)."""


@pytest.fixture(autouse=True)
def _isolated_session(monkeypatch):
    """No test may reach the real desktop: no real display, bus or logind session."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "XDG_SESSION_ID",
                 "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(session, "logind_session_available", lambda: False)


def _free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number in 90..139")


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def xvfb():
    """A private Xvfb; yields its display name (":N"). ``-noreset``: by default Xvfb resets when
    its last client disconnects and refuses connections meanwhile, which the per-call connections
    of the session checks would race against (a real desktop always has clients)."""
    if not HAVE_XVFB:
        pytest.skip("Xvfb not installed (apt-get install xvfb)")
    n = _free_display()
    name = f":{n}"
    proc = subprocess.Popen(["Xvfb", name, "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                             "-noreset"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.skip(f"Xvfb {name} exited at start (code {proc.returncode})")
            if Path(f"/tmp/.X11-unix/X{n}").exists() and \
                    session.x_grabs(name) == "none":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"Xvfb {name} did not come up within 15 s")
            time.sleep(0.1)
        yield name
    finally:
        proc.send_signal(signal.SIGKILL)  # Xvfb can hang and ignore SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for leftover in (Path(f"/tmp/.X{n}-lock"), Path(f"/tmp/.X11-unix/X{n}")):
            leftover.unlink(missing_ok=True)


@pytest.fixture
def x(xvfb, monkeypatch):
    """DISPLAY set to the private Xvfb; the screen unlocked before and after the test."""
    monkeypatch.setenv("DISPLAY", xvfb)
    started: list[int] = []
    yield started  # tests append locker pids here for cleanup
    for pid in started:
        _kill_group(pid)
    deadline = time.monotonic() + 5
    while session.x_grabs(xvfb) != "none" and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def private_bus(tmp_path, monkeypatch):
    """A private D-Bus session bus with no activatable services; sets DBUS_SESSION_BUS_ADDRESS."""
    if not HAVE_DBUS:
        pytest.skip("dbus-daemon / dbus-send not installed (apt-get install dbus dbus-x11)")
    config = tmp_path / "bus.conf"
    config.write_text(
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" "
        "\"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        f"<busconfig><type>session</type><listen>unix:dir={tmp_path}</listen>"
        "<auth>EXTERNAL</auth><policy context=\"default\"><allow send_destination=\"*\"/>"
        "<allow own=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n")
    proc = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork",
                             "--print-address=1"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready:
            pytest.fail("private dbus-daemon printed no address within 10 s")
        address = proc.stdout.readline().strip()
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address
    finally:
        _kill_group(proc.pid)
        proc.wait(timeout=10)


FAKE_SERVICE = r'''
import os, subprocess, sys
from gi.repository import Gio, GLib

kind, out = sys.argv[1], sys.argv[2]
XML = {
 "screensaver": """<node><interface name='org.freedesktop.ScreenSaver'>
   <method name='Lock'/><method name='GetActive'><arg type='b' direction='out'/></method>
   </interface></node>""",
 "notifications": """<node><interface name='org.freedesktop.Notifications'>
   <method name='Notify'><arg type='s' direction='in'/><arg type='u' direction='in'/>
   <arg type='s' direction='in'/><arg type='s' direction='in'/><arg type='s' direction='in'/>
   <arg type='as' direction='in'/><arg type='a{sv}' direction='in'/><arg type='i' direction='in'/>
   <arg type='u' direction='out'/></method>
   <method name='GetCapabilities'><arg type='as' direction='out'/></method>
   <method name='GetServerInformation'><arg type='s' direction='out'/><arg type='s' direction='out'/>
   <arg type='s' direction='out'/><arg type='s' direction='out'/></method>
   </interface></node>"""}[kind]
NAME = {"screensaver": "org.freedesktop.ScreenSaver",
        "notifications": "org.freedesktop.Notifications"}[kind]
PATH = "/" + NAME.replace(".", "/")
node = Gio.DBusNodeInfo.new_for_xml(XML)
locker = []

def call(conn, sender, path, iface, method, params, inv):
    if method == "Lock":
        p = subprocess.Popen(["i3lock", "-n"], start_new_session=True)
        locker.append(p)
        open(out, "w").write(str(p.pid))
        inv.return_value(None)
    elif method == "GetActive":
        inv.return_value(GLib.Variant("(b)", (bool(locker) and locker[-1].poll() is None,)))
    elif method == "Notify":
        open(out, "a").write(params.unpack()[3] + "\n")
        inv.return_value(GLib.Variant("(u)", (1,)))
    elif method == "GetCapabilities":
        inv.return_value(GLib.Variant("(as)", (["body"],)))
    elif method == "GetServerInformation":
        inv.return_value(GLib.Variant("(ssss)", ("fake", "cadence-tests", "1", "1.2")))

bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
bus.register_object(PATH, node.interfaces[0], call, None, None)
loop = GLib.MainLoop()

def acquired(*a):
    print("ready", flush=True)

Gio.bus_own_name_on_connection(bus, NAME, Gio.BusNameOwnerFlags.NONE, acquired,
                               lambda *a: loop.quit())
loop.run()
'''


@pytest.fixture
def fake_service(private_bus, tmp_path):
    """Start a fake D-Bus service ("screensaver" or "notifications") on the private bus, in the
    system Python (PyGObject); returns the file it reports into."""
    if not _have_gi():
        pytest.skip(f"PyGObject not available in {SYSTEM_PYTHON} (apt-get install python3-gi)")
    script = tmp_path / "fake_service.py"
    script.write_text(FAKE_SERVICE)
    procs: list[subprocess.Popen] = []

    def start(kind: str) -> Path:
        out = tmp_path / f"{kind}.out"
        proc = subprocess.Popen([SYSTEM_PYTHON, str(script), kind, str(out)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready or proc.stdout.readline().strip() != "ready":
            pytest.fail(f"fake {kind} service did not start")
        return out

    yield start
    for proc in procs:
        _kill_group(proc.pid)
        proc.wait(timeout=10)


def _own_grab_status(display_name: str) -> int:
    """The test's own XGrabKeyboard on the root window (released at once if it succeeds)."""
    from Xlib import X, display as xdisplay

    d = xdisplay.Display(display_name)
    try:
        status = d.screen().root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeAsync,
                                               X.CurrentTime)
        if status == X.GrabSuccess:
            d.ungrab_keyboard(X.CurrentTime)
            d.sync()
        return status
    finally:
        d.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- display kind
@pytest.mark.parametrize("env, expected", [
    ({}, "none"),
    ({"DISPLAY": ":0"}, "x11"),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "wayland"),
    ({"XDG_SESSION_TYPE": "wayland"}, "wayland"),
    ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "xwayland"),
    ({"XDG_SESSION_TYPE": "x11", "DISPLAY": ":0"}, "x11"),
])
def test_display_kind(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert session.display_kind() == expected


def test_no_display_cannot_tell():
    assert session.screen_locked() is None
    assert session.idle_seconds() is None


def test_wayland_without_logind_or_bus_cannot_tell(monkeypatch):
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert session.screen_locked() is None
    assert session.idle_seconds() is None


# --------------------------------------------------------------------------- X11 state
@needs_xvfb
def test_unlocked_screen_reads_unlocked(x, xvfb):
    assert session.display_kind() == "x11"
    assert session.screen_locked() is False
    assert session.x_grabs() == "none"
    from Xlib import X
    assert _own_grab_status(xvfb) == X.GrabSuccess  # our check released its grab


@needs_xvfb
def test_an_application_grabbing_the_keyboard_alone_is_not_a_lock(x, xvfb, monkeypatch):
    """A remote-desktop client or VM viewer in fullscreen grabs the keyboard (so that Alt+Tab
    reaches the remote machine) and leaves the pointer free: its user is at work, typing to be
    scored, not locked out. What logind says still counts. A client holding both grabs, with
    no menu on top, reads as a locker (every locker takes both)."""
    from Xlib import X

    with fullscreen_viewer(xvfb) as (d, viewer):
        assert session.x_grabs() == "keyboard"
        assert session.screen_locked() is False
        monkeypatch.setattr(session, "_logind_locked_hint", lambda: True)  # no logind here
        assert session.screen_locked() is True
        monkeypatch.setattr(session, "_logind_locked_hint", lambda: None)
        # the check's own pointer grab was let go: the viewer can take the pointer now
        assert viewer.grab_pointer(True, 0, X.GrabModeAsync, X.GrabModeAsync, X.NONE, X.NONE,
                                   X.CurrentTime) == X.GrabSuccess
        d.sync()
        assert session.x_grabs() == "locker" and session.screen_locked() is True
    assert wait_for(lambda: session.screen_locked() is False, 5)


@contextmanager
def grabbing_popup(display_name: str, window_type: str | None):
    """A small override-redirect window at the top holding the keyboard and the pointer, of
    this ``_NET_WM_WINDOW_TYPE``: an open menu, a drag icon, or a locker's own window."""
    from Xlib import X, Xatom, display as xdisplay
    d = xdisplay.Display(display_name)
    popup = d.screen().root.create_window(0, 0, 240, 600, 0, d.screen().root_depth,
                                          override_redirect=True)
    if window_type is not None:
        popup.change_property(d.intern_atom("_NET_WM_WINDOW_TYPE"), Xatom.ATOM, 32,
                              [d.intern_atom(window_type)])
    popup.map()
    d.sync()
    try:
        assert popup.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync,
                                   X.CurrentTime) == X.GrabSuccess
        assert popup.grab_pointer(True, 0, X.GrabModeAsync, X.GrabModeAsync, X.NONE, X.NONE,
                                  X.CurrentTime) == X.GrabSuccess
        d.sync()
        yield
    finally:
        d.ungrab_pointer(X.CurrentTime)
        d.ungrab_keyboard(X.CurrentTime)
        popup.destroy()
        d.close()


@needs_xvfb
@pytest.mark.parametrize("window_type", ["_NET_WM_WINDOW_TYPE_POPUP_MENU",
                                         "_NET_WM_WINDOW_TYPE_DROPDOWN_MENU",
                                         "_NET_WM_WINDOW_TYPE_DND"])
def test_an_open_menu_is_not_a_lock_and_closing_it_no_unlock(x, xvfb, window_type):
    """A menu (or a drag) holds both grabs while it is open. Read as a lock, closing it would
    read as the unlock, which restores full trust and ends a verdict's hold: an impostor could
    open a menu, wait for a lock check and close it. The toolkits say what the window is."""
    with grabbing_popup(xvfb, window_type):
        assert session.x_grabs() == "both" and session.screen_locked() is False
    assert wait_for(lambda: session.x_grabs() == "none", 5)


@needs_xvfb
@pytest.mark.parametrize("window_type", [None, "_NET_WM_WINDOW_TYPE_NOTIFICATION"])
def test_a_locker_with_no_menu_on_top_is_a_lock(x, xvfb, window_type):
    """Both grabs with no menu on top are a locker's, whatever else is there: a locker drawing
    in the composite overlay window (xsecurelock) leaves only other windows on the root, and a
    notification may pop up over the lock."""
    with grabbing_popup(xvfb, window_type):
        assert session.x_grabs() == "locker" and session.screen_locked() is True
    assert wait_for(lambda: session.screen_locked() is False, 5)


@needs_xvfb
def test_screensaver_blank_is_not_a_lock(x, xvfb):
    from Xlib import X, display as xdisplay

    d = xdisplay.Display(xvfb)
    try:
        d.force_screen_saver(X.ScreenSaverActive)
        d.sync()
        assert wait_for(lambda: session.screensaver_active() is True, 3)
        assert session.screen_locked() is False  # blanked, but the next input wakes it freely
    finally:
        d.force_screen_saver(X.ScreenSaverReset)
        d.sync()
        d.close()
    assert wait_for(lambda: session.screensaver_active() is False, 3)


@needs_xvfb
def test_idle_grows_and_resets_on_input(x, xvfb):
    from Xlib import X, XK, display as xdisplay
    from Xlib.ext import xtest

    if not shutil.which("xdotool"):
        pytest.skip("xdotool not installed (apt-get install xdotool)")
    subprocess.run(["xdotool", "mousemove", "10", "10"], check=True, timeout=10)
    first = session.idle_seconds()
    assert first is not None and first < 1.0
    time.sleep(1.3)
    later = session.idle_seconds()
    assert later >= first + 1.0, (first, later)

    subprocess.run(["xdotool", "mousemove", "200", "150"], check=True, timeout=10)
    assert session.idle_seconds() < 0.5

    time.sleep(1.0)
    assert session.idle_seconds() >= 0.9
    d = xdisplay.Display(xvfb)  # a key through XTest (Shift: types nothing anywhere)
    try:
        code = d.keysym_to_keycode(XK.string_to_keysym("Shift_L"))
        xtest.fake_input(d, X.KeyPress, code)
        xtest.fake_input(d, X.KeyRelease, code)
        d.sync()
    finally:
        d.close()
    assert session.idle_seconds() < 0.5



@needs_xvfb
def test_session_queries_share_one_connection(x, xvfb):
    from Xlib import display as xdisplay

    def others() -> set[int]:
        """The X server's clients (X-Resource), but the server itself (base 0) and this test."""
        return {c.resource_base for c in d.res_query_clients().clients} - {0, own}

    d = xdisplay.Display(xvfb)
    try:
        own = d.display.info.resource_id_base
        session.idle_seconds()
        first = others()
        for _ in range(5):
            assert session.idle_seconds() is not None
            assert session.screen_locked() is False
            assert session.screensaver_active() is False
        assert first and others() == first  # one connection, kept open between queries
    finally:
        d.close()


@needs_xvfb
def test_session_queries_follow_a_restarted_x_server(monkeypatch):
    first = XServer()
    monkeypatch.setenv("DISPLAY", first.name)
    try:
        assert session.screen_locked() is False
    finally:
        first.close()
    assert session.screen_locked() is None  # the server is gone: cannot tell, no exception
    second = XServer(first=first.number)  # the same display name, a new server
    try:
        assert second.name == first.name
        assert session.screen_locked() is False  # the very next query reconnects
        assert session.idle_seconds() is not None
    finally:
        second.close()


@needs_xvfb
def test_hung_x_server_cannot_stall_the_caller(monkeypatch):
    server = XServer()
    monkeypatch.setenv("DISPLAY", server.name)
    try:
        assert session.idle_seconds() is not None
        server.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        assert session.idle_seconds() is None  # stranded: the caller hears nothing, in time
        assert time.monotonic() - started < 2 * session.X_QUERY_TIMEOUT_S
        started = time.monotonic()
        assert session.screen_locked() is None  # while it stays stranded: at once
        assert time.monotonic() - started < session.X_QUERY_TIMEOUT_S / 2
        server.proc.send_signal(signal.SIGCONT)
        assert wait_for(lambda: session.idle_seconds() is not None, 10)
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.close()

# --------------------------------------------------------------------------- locking
def _lock_and_unlock_with(x, xvfb, command: list[str], *, skip_if_not_locked: bool) -> None:
    from Xlib import X

    assert session.screen_locked() is False
    started = time.monotonic()
    result = lock.lock_session(locker_command=command, verify_timeout_s=8.0)
    if result.pid:
        x.append(result.pid)
    if skip_if_not_locked and not result.locked:
        pytest.skip(f"{command[0]} did not lock under Xvfb here: {result.detail}")
    assert result.locked is True and result.verified is True, result
    assert result.method == f"locker:{command[0]}"
    assert result.pid and _alive(result.pid)
    assert time.monotonic() - started < 8.0
    assert session.screen_locked() is True
    assert _own_grab_status(xvfb) == X.AlreadyGrabbed  # independent check

    again = lock.lock_session(locker_command=command, verify_timeout_s=2.0)
    assert (again.locked, again.method) == (True, "already-locked")

    _kill_group(result.pid)
    assert wait_for(lambda: session.screen_locked() is False, 5)
    assert _own_grab_status(xvfb) == X.GrabSuccess
    assert wait_for(lambda: not _alive(result.pid), 5)  # reaped, not left a zombie


@needs_xvfb
@needs_i3lock
def test_i3lock_locks_verifies_and_unlocks(x, xvfb):
    _lock_and_unlock_with(x, xvfb, ["i3lock", "-n"], skip_if_not_locked=False)


@needs_xvfb
@pytest.mark.skipif(not HAVE_XSECURELOCK, reason="xsecurelock not installed")
def test_xsecurelock_locks_verifies_and_unlocks(x, xvfb):
    _lock_and_unlock_with(x, xvfb, ["xsecurelock"], skip_if_not_locked=True)


@needs_xvfb
def test_nothing_configured_says_what_to_configure(x):
    started = time.monotonic()
    result = lock.lock_session(locker_command=None, verify_timeout_s=1.0)
    assert time.monotonic() - started < 4 * 1.0 + 1
    assert result.locked is False and result.verified is False
    assert result.method == "none"
    assert "locker_command" in result.detail and "i3lock" in result.detail
    assert "loginctl: no logind session" in result.detail
    assert "dbus-screensaver: no session bus" in result.detail
    assert "none configured" in result.detail
    assert session.screen_locked() is False


@needs_xvfb
def test_bus_without_screensaver_service_is_not_a_lock(x, private_bus):
    result = lock.lock_session(locker_command=None, verify_timeout_s=1.0)
    assert result.locked is False
    assert "org.freedesktop.ScreenSaver: not available" in result.detail
    assert "locker_command" in result.detail


@needs_xvfb
@needs_i3lock
def test_dbus_screensaver_lock_is_verified(x, fake_service, tmp_path):
    out = fake_service("screensaver")
    result = lock.lock_session(locker_command=None, verify_timeout_s=8.0)
    pid = int(out.read_text()) if out.exists() else None
    if pid:
        x.append(pid)
    assert (result.locked, result.verified, result.method) == (True, True, "dbus-screensaver"), \
        result
    assert session.screen_locked() is True
    _kill_group(pid)
    assert wait_for(lambda: session.screen_locked() is False, 5)


@needs_xvfb
@needs_xvfb
def test_a_method_that_fails_does_not_hold_back_the_next(x):
    """A lock command that exits non-zero (``loginctl lock-session`` where logind cannot lock)
    locks nothing later: the next method is tried at once, not after the verify window."""
    started = time.monotonic()
    assert lock._attempt("failing", ["false"], verify_timeout_s=30.0) == (False, "exit 1")
    assert time.monotonic() - started < 10.0  # not the 30 s window


@needs_xvfb
@needs_i3lock
def test_the_configured_locker_comes_first(x, tmp_path, monkeypatch):
    """A desktop method that exits 0 and locks nothing (``xdg-screensaver lock`` where it only
    blanks) would hold the lock back for its whole verify window while an injector types on:
    the administrator's locker is tried first, and the desktop's methods are not run."""
    marker = tmp_path / "xdg-screensaver-ran"
    fake = tmp_path / "bin" / "xdg-screensaver"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert lock.available_methods(["i3lock", "-n"])[0] == "locker:i3lock"
    started = time.monotonic()
    result = lock.lock_session(locker_command=["i3lock", "-n"], verify_timeout_s=8.0)
    if result.pid:
        x.append(result.pid)
    assert (result.locked, result.method) == (True, "locker:i3lock"), result
    assert time.monotonic() - started < 8.0 and not marker.exists()
    _kill_group(result.pid)
    assert wait_for(lambda: session.screen_locked() is False, 5)


def test_missing_locker_is_reported(x):
    result = lock.lock_session(locker_command=["no-such-locker-cadence"], verify_timeout_s=1.0)
    assert result.locked is False
    assert "no-such-locker-cadence not found on PATH" in result.detail


@needs_xvfb
def test_locker_that_exits_is_not_trusted(x):
    result = lock.lock_session(locker_command=["true"], verify_timeout_s=2.0)
    assert result.locked is False and result.verified is False
    assert "exited 0 without locking" in result.detail


@needs_xvfb
def test_locker_that_never_locks_is_bounded_and_stopped(x, tmp_path):
    marker = tmp_path / "started"
    script = tmp_path / "fake-locker"
    script.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 60\n")
    script.chmod(0o755)
    started = time.monotonic()
    result = lock.lock_session(locker_command=[str(script)], verify_timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    assert result.locked is False and result.verified is False
    assert "did not lock in time (stopped it)" in result.detail
    pid = int(marker.read_text())
    assert wait_for(lambda: not _alive(pid), 5)


@needs_xvfb
def test_lock_never_raises(x, monkeypatch):
    def boom():
        raise RuntimeError("broken adapter")
    monkeypatch.setattr(session, "screen_locked", boom)
    result = lock.lock_session(locker_command=["i3lock", "-n"], verify_timeout_s=0.5)
    assert result.locked is False and result.method == "error"


def test_available_methods_lists_lockers(monkeypatch):
    methods = lock.available_methods(["i3lock", "-n"] if HAVE_I3LOCK else None)
    assert "loginctl" not in methods and "dbus-screensaver" not in methods  # isolated here
    if HAVE_I3LOCK:
        assert "locker:i3lock" in methods and "installed:i3lock" not in methods
    if HAVE_XSECURELOCK:
        assert "installed:xsecurelock" in methods


# --------------------------------------------------------------------------- notifications
def test_notify_without_bus_is_false_and_starts_no_bus():
    before = subprocess.run(["pgrep", "-c", "dbus-daemon"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    started = time.monotonic()
    assert notify.notify("Cadence", "Session locked") is False
    assert time.monotonic() - started < 4
    after = subprocess.run(["pgrep", "-c", "dbus-daemon"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
    assert before == after


def test_notify_without_daemon_is_false(private_bus):
    started = time.monotonic()
    assert notify.notify("Cadence", "Session locked") is False
    assert time.monotonic() - started < notify.TIMEOUT_S + 1


def test_notify_with_daemon_is_true(fake_service):
    out = fake_service("notifications")
    assert notify.notify("Cadence: session locked", "Someone else was typing.") is True
    assert out.read_text().splitlines() == ["Cadence: session locked"]


def test_notify_with_gdbus_fallback(fake_service, monkeypatch):
    out = fake_service("notifications")
    real_which = shutil.which
    monkeypatch.setattr(notify.shutil, "which",
                        lambda name: None if name == "notify-send" else real_which(name))
    assert notify.notify("It's 'quoted'", "-starts with a dash") is True
    assert out.read_text().splitlines() == ["It's 'quoted'"]
