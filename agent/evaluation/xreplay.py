"""Replay Event streams as real X input through XTest (tests and ``cadence bench --x11``).

Each key class is typed with representative keys of that class (rotating, so overlapping
presses of one class stay distinct keys), at the events' own timing scaled by ``speed``.
What the agent's hooks then see has the recorded person's timing and classes; no recorded
character exists to replay.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from agent.events import Button, Event, KeyClass, Kind

#: Settings for an agent that :class:`XTyper` types and moves into. XTest is how software types
#: and moves, so the X hooks report its input as injected and, by default, set it aside
#: (``injection_allow_software``); where XTest stands in for the user's hands, or for a USB
#: injector, the agent must judge and learn it.
XTEST_AS_HANDS = "injection_allow_software = false\n"

KEYSYMS = {
    KeyClass.LEFT_LETTER: ("f", "d", "s", "e"),
    KeyClass.RIGHT_LETTER: ("j", "k", "l", "i"),
    KeyClass.DIGIT: ("5", "6", "7"),
    KeyClass.SPACE: ("space",),
    KeyClass.BACKSPACE: ("BackSpace",),
    KeyClass.ENTER: ("Return",),
    KeyClass.MODIFIER: ("Shift_L", "Shift_R"),
    KeyClass.NAVIGATION: ("Left", "Right"),
    KeyClass.PUNCTUATION: ("period", "comma", "slash"),
    KeyClass.OTHER: ("Escape",),
}


class XTyper:
    """Types through XTest on ``display_name`` (python-xlib)."""

    def __init__(self, display_name: str | None = None) -> None:
        from Xlib import XK, X, display
        from Xlib.ext import xtest
        self._X, self._xtest = X, xtest
        self.display = display.Display(display_name)
        self._codes = {cls: [self.display.keysym_to_keycode(XK.string_to_keysym(name))
                             for name in names] for cls, names in KEYSYMS.items()}
        self._held: dict[int, int] = {}

    def _key(self, press: bool, code: int, delay_ms: int = 0) -> None:
        """Fake a key event; with ``delay_ms`` the X server holds it back that long after it
        handled this client's previous request, and nothing waits here for it."""
        self._xtest.fake_input(self.display, self._X.KeyPress if press else self._X.KeyRelease,
                               code, time=delay_ms or self._X.CurrentTime)
        if not delay_ms:
            self.display.sync()

    def press(self, cls: KeyClass, press_id: int, delay_ms: int = 0) -> None:
        busy = set(self._held.values())
        codes = self._codes[cls]
        code = next((c for c in codes if c not in busy), codes[0])
        self._held[press_id] = code
        self._key(True, code, delay_ms)

    def through(self, master: str = "Virtual core") -> None:
        """Type from now on through the XTEST keyboard of another master (one that ``xinput
        create-master NAME`` made): the X server then names that device as the one typing.
        XTest sends a client's keys to its client pointer's keyboard (XISetClientPointer)."""
        from Xlib.ext import xinput
        from Xlib.protocol import rq

        class SetClientPointer(rq.Request):
            _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(44), rq.RequestLength(),
                                 rq.Window("window"), rq.Card16("deviceid"), rq.Pad(2))

        pointers = {d.name: d.deviceid for d in
                    self.display.xinput_query_device(xinput.AllMasterDevices).devices}
        SetClientPointer(display=self.display.display, window=0,
                         opcode=self.display.display.get_extension_major(xinput.extname),
                         deviceid=pointers[f"{master} pointer"])
        self.display.sync()

    def release(self, press_id: int, delay_ms: int = 0) -> None:
        code = self._held.pop(press_id, None)
        if code is not None:
            self._key(False, code, delay_ms)

    def type_text(self, text: str, delay_s: float = 0.12) -> None:
        """Type literal text (for privacy canaries): each character's own key."""
        from Xlib import XK
        for char in text:
            name = "space" if char == " " else char
            code = self.display.keysym_to_keycode(XK.string_to_keysym(name))
            self._key(True, code)
            time.sleep(delay_s / 3)
            self._key(False, code)
            time.sleep(delay_s * 2 / 3)

    def move(self, x: int, y: int) -> None:
        self._xtest.fake_input(self.display, self._X.MotionNotify, x=int(x), y=int(y))
        self.display.sync()

    def button(self, number: int, press: bool) -> None:
        self._xtest.fake_input(self.display, self._X.ButtonPress if press else
                               self._X.ButtonRelease, number)
        self.display.sync()

    def replay_pointer(self, events: list[Event], speed: float = 1.0) -> None:
        """Replay pointer events (moves, presses, releases) at their timing / ``speed``."""
        buttons = {Button.LEFT: 1, Button.MIDDLE: 2, Button.RIGHT: 3}
        pointer = [e for e in events if e.kind in (Kind.MOVE, Kind.PRESS, Kind.RELEASE)]
        if not pointer:
            return
        start, first = time.perf_counter(), pointer[0].t_ns
        for e in pointer:
            _sleep_until(start + (e.t_ns - first) / 1e9 / speed)
            if e.kind == Kind.MOVE:
                self.move(e.x, e.y)
            else:
                self.move(e.x, e.y)
                self.button(buttons.get(e.button, 1), e.kind == Kind.PRESS)

    def replay(self, events: list[Event], speed: float = 1.0, max_gap_s: float = 1.0) -> None:
        """Replay key events at their timing / ``speed``; gaps longer than ``max_gap_s`` are
        shortened to it (pauses carry no rhythm)."""
        keys = [e for e in events if e.is_key]
        if not keys:
            return
        start = time.perf_counter()
        offset = 0.0
        previous = keys[0].t_ns
        for e in keys:
            gap = (e.t_ns - previous) / 1e9 / speed
            if gap > max_gap_s:
                offset -= gap - max_gap_s
            previous = e.t_ns
            due = start + (e.t_ns - keys[0].t_ns) / 1e9 / speed + offset
            _sleep_until(due)
            if e.kind == Kind.DOWN and not e.repeat:
                self.press(e.key, e.press_id)
            elif e.kind == Kind.UP:
                self.release(e.press_id)
        for press_id in list(self._held):
            self.release(press_id)

    def replay_server_timed(self, events: list[Event]) -> None:
        """Replay key events with the X server keeping their timing (XTest's delay, whole
        ms): as a hardware keyboard's own clock does, whatever the load on this process. For
        machine-timed streams (an injector's payload); returns once the server has typed it."""
        keys = [e for e in events if e.is_key]
        previous = keys[0].t_ns if keys else 0
        for e in keys:
            delay_ms = round((e.t_ns - previous) / 1e6)
            if e.kind == Kind.DOWN and not e.repeat:
                self.press(e.key, e.press_id, delay_ms)
                previous = e.t_ns
            elif e.kind == Kind.UP and e.press_id in self._held:
                self.release(e.press_id, delay_ms)
                previous = e.t_ns
        self.display.sync()

    def close(self) -> None:
        for press_id in list(self._held):
            self.release(press_id)
        self.display.close()


def _sleep_until(due: float) -> None:
    while True:
        left = due - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left - 0.001 if left > 0.002 else 0)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a helper started with ``start_new_session`` (its whole process group) and reap it:
    a busy X server can ignore SIGTERM (FIELD-NOTES.md)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


class Xvfb:
    """A private virtual X server (Xvfb) on a free display, for tests and ``cadence bench
    --x11``. Killed by PID with SIGKILL (a busy Xvfb can ignore SIGTERM; FIELD-NOTES.md)."""

    def __init__(self, size: str = "1280x800x24", first: int = 60) -> None:
        if not shutil.which("Xvfb"):
            raise RuntimeError("Xvfb is not installed (apt-get install xvfb)")
        self.number = next(n for n in range(first, first + 80)
                           if not Path(f"/tmp/.X{n}-lock").exists()
                           and not Path(f"/tmp/.X11-unix/X{n}").exists())
        self.name = f":{self.number}"
        self.proc = subprocess.Popen(["Xvfb", self.name, "-screen", "0", size, "-nolisten",
                                      "tcp", "-noreset"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{self.number}").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"Xvfb {self.name} did not start within 10 s")
            time.sleep(0.05)

    def close(self) -> None:
        kill_group(self.proc)
        for path in (Path(f"/tmp/.X{self.number}-lock"), Path(f"/tmp/.X11-unix/X{self.number}")):
            path.unlink(missing_ok=True)


class TrayHost:
    """A system-tray host (trayer) docked at the top right of ``display``, for tests and
    ``cadence bench --x11``: ``picture()`` is the pixels of its area, which change when an icon
    docks or redraws."""

    WIDTH, HEIGHT = 96, 32

    def __init__(self, display: str) -> None:
        if not shutil.which("trayer"):
            raise RuntimeError("trayer is not installed (apt-get install trayer)")
        self.display = display
        self.proc = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel",
             "--width", str(self.WIDTH), "--height", str(self.HEIGHT)],
            env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def picture(self) -> bytes:
        from Xlib import X, display as xdisplay
        d = xdisplay.Display(self.display)
        try:
            root = d.screen().root
            width = d.screen().width_in_pixels
            return root.get_image(width - self.WIDTH, 0, self.WIDTH, self.HEIGHT, X.ZPixmap,
                                  0xFFFFFFFF).data
        finally:
            d.close()

    def close(self) -> None:
        kill_group(self.proc)
