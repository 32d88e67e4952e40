"""Keyboards attached while the agent runs (agent.sources.keyboards): the X11 watch on a real
Xvfb (a keyboard added with ``xinput create-master``), the polling watch used on Windows and
macOS around a lister standing in for the OS API, and the Event a LiveSource makes of it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading

import pytest
from conftest import wait_for

from agent.events import Kind
from agent.sources import keyboards, live
from agent.sources.keyboards import (
    PollingKeyboardWatch,
    WatchError,
    XKeyboardWatch,
    devices_changed,
    keyboards_added,
    start_watch,
)
from agent.sources.live import LiveSource

GUARD_S = 60
pytestmark = pytest.mark.usefixtures("alarm_guard")


def test_only_slave_keyboards_just_added_count():
    added, removed, attached, enabled = 1 << 2, 1 << 3, 1 << 4, 1 << 6
    info = [{"deviceid": 7, "flags": 0, "type": 4},                # a keyboard already there
            {"deviceid": 12, "flags": added | attached | enabled, "type": 4},  # plugged in
            {"deviceid": 13, "flags": added | attached | enabled, "type": 3},  # a mouse
            {"deviceid": 14, "flags": 1, "type": 2},               # a master keyboard created
            {"deviceid": 9, "flags": enabled, "type": 4},          # re-enabled (resume, VT)
            {"deviceid": 10, "flags": removed, "type": 4}]         # unplugged
    assert keyboards_added(info) == 1
    assert devices_changed(info) == [12, 13, 10]  # what the hooks knew under these ids is void


@pytest.mark.skipif(not shutil.which("xinput"), reason="needs xinput (apt-get install xinput)")
def test_x_watch_sees_a_keyboard_added_and_nothing_else(xserver, monkeypatch):
    monkeypatch.setenv("DISPLAY", xserver.name)
    seen: list[int] = []
    changed: list[int] = []
    watch = XKeyboardWatch(lambda: seen.append(1), changed.append)
    watch.start()
    env = {**os.environ, "DISPLAY": xserver.name}
    try:
        assert watch.is_alive() and seen == []
        subprocess.run(["xinput", "create-master", "Plugged"], env=env, check=True)
        assert wait_for(lambda: len(seen) == 1, 5)
        from Xlib import display
        from Xlib.ext import xinput
        x = display.Display(xserver.name)
        slaves = sorted(d.deviceid for d in x.xinput_query_device(xinput.AllDevices).devices
                        if d.name.startswith("Plugged XTEST"))
        x.close()
        assert len(slaves) == 2 and sorted(changed) == slaves   # its XTEST keyboard and pointer
        subprocess.run(["xinput", "remove-master", "Plugged pointer"], env=env, check=True)
        assert not wait_for(lambda: len(seen) > 1, 0.5)         # a removal is no attach ...
        assert sorted(changed) == sorted(slaves * 2)            # ... but voids the ids'
    finally:
        watch.stop()
    assert not watch.is_alive() and watch.error is None


def test_x_watch_without_a_display_says_so(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":999")
    with pytest.raises(WatchError, match="no X display"):
        XKeyboardWatch(lambda: None).start()


class Lister:
    """Stands in for the OS's list of keyboard handles."""

    def __init__(self, *handles) -> None:
        self.handles = set(handles)
        self.fail: Exception | None = None

    def __call__(self) -> set:
        if self.fail is not None:
            raise self.fail
        return set(self.handles)


def test_polling_watch_reports_new_handles_only():
    lister, seen = Lister(1, 2), []
    watch = PollingKeyboardWatch(lambda: seen.append(1), lister, every_s=3600)
    watch.start()
    try:
        assert watch.poll() == 0 and seen == []                 # present at start: not new
        lister.handles = {1, 2, 7}
        assert watch.poll() == 1 and len(seen) == 1
        lister.handles = {1}                                    # unplugged: nothing
        assert watch.poll() == 0
        lister.handles = {1, 2}                                 # plugged back in: new again
        assert watch.poll() == 1 and len(seen) == 2
    finally:
        watch.stop()
    assert not watch.is_alive()


def test_polling_watch_runs_on_its_own_and_ends_on_a_failing_api():
    lister, seen = Lister(), []
    attached = threading.Event()
    watch = PollingKeyboardWatch(lambda: (seen.append(1), attached.set()), lister, every_s=0.02)
    watch.start()
    lister.handles = {5}
    assert attached.wait(5)
    lister.fail = OSError(5, "access denied")
    assert wait_for(lambda: not watch.is_alive(), 5)
    assert "access denied" in watch.error and len(seen) == 1


def test_a_missing_os_api_leaves_no_watch_and_says_why(caplog):
    with caplog.at_level(logging.WARNING, logger=keyboards.__name__):
        assert start_watch(lambda: None, platform="win32") is None   # no user32 here
    assert "keyboards plugged in will not be noticed" in caplog.text
    with pytest.raises(WatchError, match="cannot list keyboards"):
        PollingKeyboardWatch(lambda: None, _raises(PermissionError("no")), 1).start()


def _raises(exc):
    def lister():
        raise exc
    return lister


def test_live_source_queues_an_attach_with_its_time_only(monkeypatch):
    """Hooks that cannot tell keyboards apart (pynput's, and these, not started) put the keys
    after an attach under the new-keyboard rule: an ATTACH, then a NEW_KEYBOARD, times only."""
    monkeypatch.setattr(live, "clock_ns", lambda: 123)
    source = LiveSource()
    assert source.keyboard_identity is False
    source.keyboard_attached()
    events = [source.queue.get_nowait(), source.queue.get_nowait()]
    assert source.queue.empty()
    assert [(e.kind, e.t_ns) for e in events] == [(Kind.ATTACH, 123), (Kind.NEW_KEYBOARD, 123)]
    assert all(e.key is None and e.press_id == -1 and not e.is_key for e in events)


def test_hooks_that_tell_keyboards_apart_queue_the_attach_alone(monkeypatch):
    """On X11 with XInput the hooks put a NEW_KEYBOARD before each keyboard's own first key
    (``test_xrecord``): an attach only says that a keyboard came, and the user's keys after it
    are not a new keyboard's (the live agent test types a stall's keys after one)."""
    monkeypatch.setattr(LiveSource, "keyboard_identity", property(lambda self: True))
    source = LiveSource()
    source.keyboard_attached()
    assert source.queue.get_nowait().kind == Kind.ATTACH
    assert source.queue.empty()


def test_an_x_error_while_starting_the_watch_leaves_the_hooks_alone(xserver, monkeypatch, caplog):
    """Whatever the X server answers, the watch fails as a WatchError (no watch), never as an
    error that would stop the input hooks from starting."""
    from Xlib.ext import xinput

    def refuse(self):
        raise RuntimeError("BadRequest")
    monkeypatch.setenv("DISPLAY", xserver.name)
    monkeypatch.setattr(xinput, "query_version", refuse)
    with pytest.raises(WatchError, match="XInput 2 cannot be used"):
        XKeyboardWatch(lambda: None).start()
    with caplog.at_level(logging.WARNING, logger=keyboards.__name__):
        assert start_watch(lambda: None, platform="linux") is None
    assert "BadRequest" in caplog.text
