"""Live input from pynput's hooks (on X11: :mod:`agent.sources.xrecord`): each callback does O(1)
work and never blocks.

A callback reads :data:`clock_ns` (the X11 reader gives the X server's event time instead),
passes the key through the keymap (the only place it is classified), puts an Event on a bounded
queue and returns. When the queue is full the
event is dropped and counted: a slow consumer must never slow the desktop (on Windows a slow
low-level hook is silently removed by the OS). One pipeline worker consumes the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from agent.events import Button, Event, KeyClass, Kind
from agent.keymap import KeyTracker, identify
from agent.sources.keyboards import start_watch

log = logging.getLogger(__name__)
_BUTTONS = {"left": Button.LEFT, "right": Button.RIGHT, "middle": Button.MIDDLE}
_new = tuple.__new__
START_TIMEOUT_S = 5.0
_DOWN, _UP, _MOVE, _NO_BUTTON = Kind.DOWN, Kind.UP, Kind.MOVE, Button.NONE

#: The clock a callback stamps its event with: monotonic and fine-grained everywhere. Not
#: ``time.monotonic_ns``: on Windows before Python 3.13 that is GetTickCount64, which steps every
#: 15.6 ms and would round every hold and gap to a multiple of it (a person's fast keys would
#: look like a machine's steady cadence). ``perf_counter_ns`` is QueryPerformanceCounter there
#: (system-wide since 3.10) and the same monotonic clock as ``monotonic_ns`` on Linux and macOS.
clock_ns = time.perf_counter_ns


class CallbackTimer:
    """Our own cost inside the hook callbacks, in ns (for `cadence bench`): a ring buffer."""

    def __init__(self, size: int = 4096) -> None:
        self.samples = [0] * size
        self.count = 0

    def add(self, ns: int) -> None:
        self.samples[self.count % len(self.samples)] = ns
        self.count += 1

    def recent(self) -> list[int]:
        return self.samples[: min(self.count, len(self.samples))]


class HookError(RuntimeError):
    """An input listener could not start; the message says why and what to do."""


def _await_ready(listener, timeout_s: float = START_TIMEOUT_S) -> None:
    """pynput's ``wait()``, bounded: it blocks for ever when the listener's thread ends before
    it is ready (a backend that cannot hook, an OS that refuses). macOS starts a listener it does
    not trust to monitor input, and it hears nothing: that is refused here too."""
    deadline = time.monotonic() + timeout_s
    while not getattr(listener, "_ready", True):
        if not listener.is_alive():
            raise HookError("the input listener ended as it started")
        if time.monotonic() > deadline:
            raise HookError(f"the input listener was not ready within {timeout_s:g} s")
        time.sleep(0.01)
    if getattr(listener, "IS_TRUSTED", True) is False:
        raise HookError("macOS does not let Cadence monitor input: allow it under System "
                        "Settings > Privacy & Security > Input Monitoring and Accessibility")


class LiveSource:
    """Keyboard and mouse listeners feeding a bounded queue of Events."""

    def __init__(self, maxsize: int = 8192, mouse: bool = True) -> None:
        # SimpleQueue (C): putting costs a third of queue.Queue's locking and notify in Python
        # (measured by `cadence bench`); the bound is checked here.
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.maxsize = maxsize
        self.dropped = 0
        self.keys_seen = 0
        self.key_errors = 0
        self.timer = CallbackTimer()
        self.want_mouse = mouse
        self._tracker = KeyTracker()
        self._keys_lock = threading.Lock()  # the tracker: the hook thread's, and a forget's
        self._keyboard = None
        self._mouse = None
        self._attach_watch = None  # sees keyboards plugged in (agent.sources.keyboards)
        #: names of keyboards whose keys are not passed on (policy ``injection_allow_keyboards``;
        #: only where the hooks can tell keyboards apart: :attr:`keyboard_identity`)
        self.allowed_keyboards: tuple[str, ...] = ()
        self._lock = threading.Lock()

    # -- callbacks (listener threads) --------------------------------------------------------
    def _put(self, event: Event, started: int) -> None:
        if self.queue.qsize() < self.maxsize:
            self.queue.put_nowait(event)
        else:
            self.dropped += 1
        self.timer.add(time.perf_counter_ns() - started)

    # pynput's callbacks: the time is now. ---------------------------------------------------
    # An exception must not reach pynput: it would log the message (a KeyError's is the key)
    # and stop the listener.
    def on_press(self, key, injected: bool = False) -> None:
        started = time.perf_counter_ns()
        try:
            self.key_down(clock_ns(), *identify(key), injected, started)
        except Exception as exc:  # noqa: BLE001
            self._key_failed(exc)

    def on_release(self, key, injected: bool = False) -> None:
        started = time.perf_counter_ns()
        try:
            self.key_up(clock_ns(), *identify(key), injected, started)
        except Exception as exc:  # noqa: BLE001
            self._key_failed(exc)

    def _key_failed(self, exc: Exception) -> None:
        """A key the callback could not handle: skipped, counted, the first logged (the
        exception's kind only, never its message)."""
        self.key_errors += 1
        if self.key_errors == 1:
            log.error("a key event could not be handled (%s); it is skipped, and so are any "
                      "more that fail", type(exc).__name__)

    def on_move(self, x, y, injected: bool = False) -> None:
        started = time.perf_counter_ns()
        self.move(clock_ns(), x, y, injected, started)

    def on_click(self, x, y, button, pressed, injected: bool = False) -> None:
        started = time.perf_counter_ns()
        self.click(clock_ns(), x, y,
                   _BUTTONS.get(getattr(button, "name", ""), Button.NONE), pressed, injected,
                   started)

    def on_scroll(self, x, y, dx, dy, injected: bool = False) -> None:
        started = time.perf_counter_ns()
        self.scroll(clock_ns(), x, y, injected, started)

    # the events, from any source that knows when they happened ----------------------------------
    # Events are built with tuple.__new__, Event's fields in order: the NamedTuple constructor is
    # a Python frame of its own, and a callback's cost is mostly its cold first steps.
    def key_down(self, t_ns: int, ident, cls: KeyClass, injected: bool, started: int) -> None:
        with self._keys_lock:
            cls, press_id, repeat = self._tracker.press_identified(ident, cls)
        self.keys_seen += 1
        self._put(_new(Event, (t_ns, _DOWN, cls, press_id, 0.0, 0.0, _NO_BUTTON, bool(injected),
                               repeat)), started)

    def key_up(self, t_ns: int, ident, cls: KeyClass, injected: bool, started: int) -> None:
        with self._keys_lock:
            paired = self._tracker.release_identified(ident, cls)
        if paired is not None:
            self._put(_new(Event, (t_ns, _UP, paired[0], paired[1], 0.0, 0.0, _NO_BUTTON,
                                   bool(injected), False)), started)

    def move(self, t_ns: int, x, y, injected: bool, started: int) -> None:
        self._put(_new(Event, (t_ns, _MOVE, None, -1, float(x), float(y), _NO_BUTTON,
                               bool(injected), False)), started)

    def click(self, t_ns: int, x, y, button: Button, pressed: bool, injected: bool,
              started: int) -> None:
        self._put(Event(t_ns, Kind.PRESS if pressed else Kind.RELEASE, x=float(x), y=float(y),
                        button=button, injected=bool(injected)), started)

    def scroll(self, t_ns: int, x, y, injected: bool, started: int) -> None:
        self._put(Event(t_ns, Kind.SCROLL, x=float(x), y=float(y), injected=bool(injected)),
                  started)

    def keyboard_attached(self) -> None:
        """A keyboard appeared (plugged in): audited. Its first keys are judged as a new
        keyboard's: where the hooks tell keyboards apart, from its own first key (a
        ``NEW_KEYBOARD`` the hooks put before it); elsewhere from now on, whoever types (a
        headset or a dock plugged in while the user types puts the user's next keys under
        that rule too)."""
        started = time.perf_counter_ns()
        now = clock_ns()
        self._put(Event(now, Kind.ATTACH), started)
        if not self.keyboard_identity:
            self._put(Event(now, Kind.NEW_KEYBOARD), started)

    def new_keyboard(self, t_ns: int, injected: bool) -> None:
        """A keyboard types here for the first time (its first key comes next): judged as a
        just-attached one's. ``injected``: it is software's (XTest)."""
        started = time.perf_counter_ns()
        self._put(Event(t_ns, Kind.NEW_KEYBOARD, injected=injected), started)

    @property
    def watching_keyboards(self) -> bool:
        return self._attach_watch is not None and self._attach_watch.is_alive()

    @property
    def keyboard_identity(self) -> bool:
        """Do the hooks know which keyboard typed each key (X11 with XInput)?"""
        return getattr(self._keyboard, "origins", None) is not None and self.alive()

    @property
    def allowed_keys(self) -> int:
        """Key presses of allowed keyboards, not passed on."""
        return getattr(self._keyboard, "allowed_keys", 0)

    # -- lifecycle (the agent's threads) -----------------------------------------------------
    def start(self) -> None:
        """Start (or restart) the listeners. Raises what pynput raises when input cannot be
        captured (no display, no permission); the caller reports it as `degraded`."""
        from pynput import keyboard, mouse
        with self._lock:
            self._stop_listeners()
            self.forget_held_keys()
            if keyboard.Listener.__module__ == "pynput.keyboard._xorg":
                from agent.sources.xrecord import InputRecorder
                # one reader for keys and pointer: it stands in both listeners' place
                self._keyboard = InputRecorder(self, pointer=self.want_mouse,
                                               allow=self.allowed_keyboards)
                self._keyboard.start()
                self._attach_watch = start_watch(self.keyboard_attached,
                                                 on_change=self._keyboard.forget_device)
                return
            self._keyboard = keyboard.Listener(on_press=self.on_press,
                                               on_release=self.on_release)
            self._keyboard.daemon = True
            self._keyboard.start()
            if self.want_mouse:
                self._mouse = mouse.Listener(on_move=self.on_move, on_click=self.on_click,
                                             on_scroll=self.on_scroll)
                self._mouse.daemon = True
                self._mouse.start()
            try:
                for listener in (self._keyboard, self._mouse):
                    if listener is not None:
                        _await_ready(listener)
            except HookError:
                self._stop_listeners()
                raise
            self._attach_watch = start_watch(self.keyboard_attached)

    def alive(self) -> bool:
        listeners = [x for x in (self._keyboard, self._mouse) if x is not None]
        return bool(listeners) and all(x.is_alive() for x in listeners)

    def forget_held_keys(self) -> None:
        """Forget the keys held now (at a lock, an unlock or a pause): their releases may never
        come (Win+L's, Ctrl+Alt+Del's go to the secure desktop), and a key left held would
        make the next press of it look like auto-repeat. Under the tracker's lock: a reset
        in the middle of the hook thread's pairing would make it fail."""
        with self._keys_lock:
            self._tracker.reset()

    def stop(self) -> None:
        with self._lock:
            self._stop_listeners()

    def _stop_listeners(self) -> None:
        for listener in (self._keyboard, self._mouse, self._attach_watch):
            if listener is not None:
                try:
                    listener.stop()
                except Exception:  # noqa: BLE001 - a listener that never ran cannot stop
                    pass
        self._keyboard = self._mouse = self._attach_watch = None
