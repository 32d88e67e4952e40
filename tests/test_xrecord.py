"""The X RECORD input reader: its byte parsing against hand-built X events, its clock, and the
real thing on Xvfb driven through XTest (keys, moves, clicks, scrolls, stop, a server that goes
away), feeding a real LiveSource."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import numpy as np
import pytest
from conftest import wait_for

from agent.events import Button, Event, KeyClass, Kind
from agent.sources.live import LiveSource
from agent.sources.xrecord import READ_S, InputRecorder

GUARD_S = 60
pytestmark = pytest.mark.usefixtures("alarm_guard")


class Recording:
    """Stands in for LiveSource: what the reader hands over, in order."""

    def __init__(self) -> None:
        self.seen = []

    def __getattr__(self, name):
        keep = None if name == "new_keyboard" else -1  # the others end with a timer start
        return lambda *args: self.seen.append((name, *args[:keep]))


def x_event(kind: int, detail: int, ms: int, x: int, y: int, state: int = 0,
            send_event: bool = False) -> bytes:
    """A 32-byte core input event as the server sends it (native byte order)."""
    return struct.pack("=BBHIIIIhhhhHBx", kind | (0x80 if send_event else 0), detail, 7, ms,
                       1, 2, 0, x, y, x, y, state, 1)


def reader(source) -> InputRecorder:
    rec = InputRecorder(source)
    rec._classes = {(38, 0): KeyClass.LEFT_LETTER, (38, 1): KeyClass.LEFT_LETTER,
                    (10, 0): KeyClass.DIGIT, (10, 1): KeyClass.PUNCTUATION}
    return rec


def test_events_are_parsed_at_their_fixed_offsets():
    source = Recording()
    rec = reader(source)
    arrived = 5_010 * 1_000_000  # read when the last event had just happened
    data = bytearray(32) + b"".join([
        x_event(2, 10, 5000, 0, 0),                # "1" down: a digit
        x_event(3, 10, 5003, 0, 0, state=1),       # its release with Shift held: same keycode
        x_event(2, 10, 5004, 0, 0, state=1),       # "!" : punctuation
        x_event(2, 99, 5005, 0, 0),                # a keycode with no mapping
        x_event(6, 0, 5006, 10, -20),              # motion, negative coordinate (left monitor)
        x_event(4, 1, 5007, 11, 21),               # left press
        x_event(5, 3, 5008, 12, 22, send_event=True),  # right release, sent by a client
        x_event(4, 4, 5009, 13, 23), x_event(5, 4, 5009, 13, 23),  # wheel: one scroll
        x_event(4, 9, 5010, 15, 25),               # a ninth button: no known button
    ])
    rec.events(data, 32, len(data), arrived)
    ms = 1_000_000
    assert source.seen == [
        ("key_down", 5000 * ms, ("x", 10), KeyClass.DIGIT, False),
        ("key_up", 5003 * ms, ("x", 10), KeyClass.PUNCTUATION, False),
        ("key_down", 5004 * ms, ("x", 10), KeyClass.PUNCTUATION, False),
        ("key_down", 5005 * ms, ("x", 99), KeyClass.OTHER, False),
        ("move", 5006 * ms, 10, -20, False),
        ("click", 5007 * ms, 11, 21, Button.LEFT, True, False),
        ("click", 5008 * ms, 12, 22, Button.RIGHT, False, True),
        ("scroll", 5009 * ms, 13, 23, False),
        ("click", 5010 * ms, 15, 25, Button.NONE, True, False)]


def xi_event(kind: int, detail: int, ms: int, device: int) -> bytes:
    """A 32-byte XInput 1 device event (DeviceKeyPress ..): the core layout, the device id
    last."""
    return x_event(kind, detail, ms, 0, 0)[:31] + bytes([device])


def test_each_key_takes_the_device_of_the_slave_event_before_it():
    """Per key the server records the slave's XInput event, the core event, the master's
    XInput event. 8 is a keyboard, 5 XTest's (software), 12 an allowed scanner; 6 a mouse and 4
    XTest's pointer."""
    from agent.sources.xdevices import KeyOrigins
    source = Recording()
    rec = reader(source)
    rec._xi_first = 66    # XInput's events: 67 DeviceKeyPress .. 71 DeviceMotionNotify
    names = {8: ("AT keyboard", False), 5: ("Virtual core XTEST keyboard", True),
             12: ("Honeywell scanner", False), 6: ("USB mouse", False),
             4: ("Virtual core XTEST pointer", True)}
    rec.origins = KeyOrigins(names.get, allow=("honeywell*",))
    master = 3
    data = bytearray(32)
    for device, kind, ms in [(8, 2, 100), (8, 3, 110), (8, 2, 120), (5, 2, 130), (5, 3, 131),
                             (12, 2, 140), (12, 3, 141), (8, 3, 150)]:
        data += xi_event(kind + 65, 38, ms, device) + x_event(kind, 38, ms, 0, 0) \
            + xi_event(kind + 65, 38, ms, master | 0x80)
    data += x_event(2, 38, 160, 0, 0)  # no slave event before it: judged, no device known
    for device, ms in [(6, 170), (4, 180)]:
        data += xi_event(71, 0, ms, device | 0x80) + x_event(6, 0, ms, 5, 6) \
            + xi_event(71, 0, ms, 2)
    rec.events(data, 32, len(data), 180 * 1_000_000)
    ms = 1_000_000
    key = ("x", 38)
    assert source.seen == [
        ("new_keyboard", 100 * ms, False),   # 8 types for the first time
        ("key_down", 100 * ms, key, KeyClass.LEFT_LETTER, False),
        ("key_up", 110 * ms, key, KeyClass.LEFT_LETTER, False),
        ("key_down", 120 * ms, key, KeyClass.LEFT_LETTER, False),
        ("new_keyboard", 130 * ms, True),       # XTest's first key: software's
        ("key_down", 130 * ms, key, KeyClass.LEFT_LETTER, True),
        ("key_up", 131 * ms, key, KeyClass.LEFT_LETTER, True),
        ("key_up", 150 * ms, key, KeyClass.LEFT_LETTER, False),  # the scanner's: not passed on
        ("key_down", 160 * ms, key, KeyClass.LEFT_LETTER, False),
        ("move", 170 * ms, 5, 6, False),
        ("move", 180 * ms, 5, 6, True)]                           # XTest's pointer
    assert rec.allowed_keys == 1


def test_server_time_maps_onto_the_monotonic_clock():
    rec = reader(Recording())
    ms, base = 1_000_000, 10**12
    rec._calibrate(1000, base + 1002 * ms)  # first seen 2 ms after it happened
    assert rec._monotonic_ns(1000) == base + 1002 * ms
    rec._calibrate(1010, base + 1060 * ms)  # a batch read 50 ms late keeps the offset
    assert rec._monotonic_ns(1010) == base + 1012 * ms
    rec._calibrate(1020, base + 1021 * ms)  # a smaller lag: the offset shrinks
    assert rec._monotonic_ns(1011) == base + 1012 * ms  # ... but time never runs backwards
    assert rec._monotonic_ns(1020) == base + 1021 * ms
    rec._last_ms = (1 << 32) - 5  # the 32-bit millisecond counter wraps after 49.7 days
    assert rec._monotonic_ns(3) == base + 1 * ms + ((1 << 32) + 3) * ms  # offset: base + 1 ms


def drain(source: LiveSource) -> list:
    out = []
    while not source.queue.empty():
        out.append(source.queue.get())
    return out


@pytest.fixture
def recording(monkeypatch):
    """A fresh Xvfb, a LiveSource fed by a started InputRecorder, and an XTest typer."""
    from conftest import XServer
    from agent.evaluation.xreplay import XTyper
    server = XServer()
    try:
        monkeypatch.setenv("DISPLAY", server.name)
        source = LiveSource()
        rec = InputRecorder(source)
        rec.start()
        yield server, source, rec, XTyper(server.name)
    finally:
        server.close()


def test_records_real_input_into_a_live_source_and_stops(recording):
    from Xlib import XK
    server, source, rec, typer = recording
    code = {name: typer.display.keysym_to_keycode(XK.string_to_keysym(name))
            for name in ("a", "1", "Shift_L", "Return")}
    started = time.monotonic_ns()
    for name in ("a", "Shift_L", "1"):
        typer._key(True, code[name])
    for name in ("1", "Shift_L", "a"):
        typer._key(False, code[name])
    typer._key(True, code["Return"])
    typer._key(False, code["Return"])
    typer.move(100, 200)
    typer.button(1, True)
    typer.button(1, False)
    typer.button(5, True)
    typer.button(5, False)
    assert wait_for(lambda: source.queue.qsize() >= 12), source.queue.qsize()
    events = drain(source)
    # XTest's keyboard types here for the first time: a NEW_KEYBOARD first, and its keys and
    # pointer are software's (the XTEST devices), as pynput's hooks report software input on
    # Windows and macOS
    assert (events[0].kind, events[0].injected) == (Kind.NEW_KEYBOARD, True)
    assert [e.kind for e in events].count(Kind.NEW_KEYBOARD) == 1
    assert all(e.injected for e in events)
    keys = [(e.kind, e.key) for e in events if e.is_key]
    assert keys == [(Kind.DOWN, KeyClass.LEFT_LETTER), (Kind.DOWN, KeyClass.MODIFIER),
                    (Kind.DOWN, KeyClass.PUNCTUATION), (Kind.UP, KeyClass.PUNCTUATION),
                    (Kind.UP, KeyClass.MODIFIER), (Kind.UP, KeyClass.LEFT_LETTER),
                    (Kind.DOWN, KeyClass.ENTER), (Kind.UP, KeyClass.ENTER)]
    downs = {e.press_id for e in events if e.kind == Kind.DOWN}
    assert downs == {e.press_id for e in events if e.kind == Kind.UP}  # each release paired
    pointer = [(e.kind, e.x, e.y, e.button) for e in events
               if not e.is_key and e.kind != Kind.NEW_KEYBOARD]
    assert pointer == [(Kind.MOVE, 100, 200, Button.NONE),
                       (Kind.PRESS, 100, 200, Button.LEFT),
                       (Kind.RELEASE, 100, 200, Button.LEFT),
                       (Kind.SCROLL, 100, 200, Button.NONE)]
    times = [e.t_ns for e in events]
    assert times == sorted(times) and started - 10**7 <= times[0] <= time.monotonic_ns()
    assert rec.is_alive()
    rec.stop()
    assert not rec.is_alive() and rec.error is None
    typer.move(1, 1)
    time.sleep(0.2)
    assert source.queue.empty()  # nothing after stop
    typer.close()

    again = InputRecorder(LiveSource())  # the context was freed: a new one starts cleanly
    again.start()
    server.close()  # the X server goes away: the reader ends and says why
    assert wait_for(lambda: not again.is_alive())
    assert again.error


def test_server_timed_replay_keeps_a_payloads_timing(recording):
    """XTyper.replay_server_timed: the X server spaces the keys (XTest's delay), so the
    recorded holds and gaps are the payload's, not this process's scheduling."""
    _, source, rec, typer = recording
    for i in range(10):  # the reader settles its server-to-monotonic offset on first input:
        typer.move(1 + i % 2, 1)  # a move it waits for in recv, so it reads it at once
        time.sleep(2 * READ_S)
    time.sleep(0.2)
    drain(source)
    payload, t = [], 0
    for i, gap in enumerate([0, 40, 25, 60, 30, 50, 35, 45]):
        t += gap * 10**6
        cls = (KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER)[i % 2]
        payload += [Event(t, Kind.DOWN, cls, i), Event(t + 3 * 10**6, Kind.UP, cls, i)]
    typer.replay_server_timed(payload)
    assert wait_for(lambda: source.queue.qsize() >= len(payload) + 1)
    attach, *events = drain(source)  # XTest's keyboard types here for the first time
    assert attach.kind == Kind.NEW_KEYBOARD
    assert [(e.kind, e.key) for e in events] == [(e.kind, e.key) for e in payload]
    downs = [e.t_ns for e in events if e.kind == Kind.DOWN]
    holds = [up.t_ns - down.t_ns for down, up in zip(events[::2], events[1::2])]
    gaps_ms = np.diff(downs) / 1e6
    assert np.median(holds) / 1e6 <= 5 and np.all(gaps_ms >= 24)
    assert abs(np.median(gaps_ms) - 40) <= 3
    rec.stop()
    typer.close()


def test_no_display_raises_at_start(monkeypatch):
    from Xlib.error import DisplayError
    monkeypatch.setenv("DISPLAY", ":999")
    rec = InputRecorder(LiveSource())
    with pytest.raises(DisplayError):
        rec.start()
    assert not rec.is_alive()


def _tap(typer, press_id: int) -> None:
    typer.press(KeyClass.LEFT_LETTER, press_id)
    typer.release(press_id)


def _device_ids(display_name: str, prefix: str) -> list[int]:
    from Xlib import display
    from Xlib.ext import xinput
    x = display.Display(display_name)
    try:
        return sorted(d.deviceid for d in x.xinput_query_device(xinput.AllDevices).devices
                      if d.name.startswith(prefix))
    finally:
        x.close()


@pytest.mark.skipif(not shutil.which("xinput"), reason="needs xinput (apt-get install xinput)")
def test_a_keyboard_that_never_typed_here_starts_with_a_new_keyboard_event(recording):
    """On a real X server: a second master's XTEST keyboard (``xinput create-master``) is a
    device that has not typed yet, so a NEW_KEYBOARD event comes before its first key and none before its
    second; the first keyboard typing again brings none. When the server gives a removed
    device's id to a new one (the watch reports both), the new one starts afresh."""
    from agent.sources.keyboards import XKeyboardWatch
    server, source, rec, typer = recording
    env = {**os.environ, "DISPLAY": server.name}
    watch = XKeyboardWatch(lambda: None, rec.forget_device)
    watch.start()

    def kinds_after(act) -> list:
        act()
        assert wait_for(lambda: not source.queue.empty(), 5)
        time.sleep(3 * READ_S)
        return [(e.kind, e.injected) for e in drain(source)]

    try:
        down, up = (Kind.DOWN, True), (Kind.UP, True)   # XTest's keys: software's
        assert kinds_after(lambda: _tap(typer, 1)) == [(Kind.NEW_KEYBOARD, True), down, up]
        subprocess.run(["xinput", "create-master", "Ducky"], env=env, check=True)
        first = _device_ids(server.name, "Ducky")
        typer.through("Ducky")
        assert kinds_after(lambda: _tap(typer, 2)) == [(Kind.NEW_KEYBOARD, True), down, up]
        assert kinds_after(lambda: _tap(typer, 3)) == [down, up]
        typer.through("Virtual core")
        assert kinds_after(lambda: _tap(typer, 4)) == [down, up]
        subprocess.run(["xinput", "remove-master", "Ducky pointer"], env=env, check=True)
        subprocess.run(["xinput", "create-master", "Ducky"], env=env, check=True)
        assert _device_ids(server.name, "Ducky") == first          # the same ids, given again
        typer.through("Ducky")
        assert kinds_after(lambda: _tap(typer, 5)) == [(Kind.NEW_KEYBOARD, True), down, up]
    finally:
        watch.stop()
        subprocess.run(["xinput", "remove-master", "Ducky pointer"], env=env, check=False)
    rec.stop()
    typer.close()


@pytest.mark.skipif(not shutil.which("xinput"), reason="needs xinput (apt-get install xinput)")
def test_keys_of_an_allowed_keyboard_never_reach_the_queue(recording):
    """The policy's allowlist names a keyboard (any case, shell pattern): its keys are counted
    and dropped at the hook; another keyboard's keys still arrive."""
    server, _, first, typer = recording
    first.stop()
    source = LiveSource()
    rec = InputRecorder(source, allow=("DUCKY xtest*",))
    rec.start()
    env = {**os.environ, "DISPLAY": server.name}
    subprocess.run(["xinput", "create-master", "Ducky"], env=env, check=True)
    try:
        typer.through("Ducky")
        for press_id in range(5):
            _tap(typer, press_id)
        typer.through("Virtual core")
        _tap(typer, 9)
        assert wait_for(lambda: source.queue.qsize() >= 3, 5)
        time.sleep(3 * READ_S)
        assert [e.kind for e in drain(source)] == [Kind.NEW_KEYBOARD, Kind.DOWN, Kind.UP]
        assert rec.allowed_keys == 5
    finally:
        subprocess.run(["xinput", "remove-master", "Ducky pointer"], env=env, check=False)
    rec.stop()
    typer.close()
