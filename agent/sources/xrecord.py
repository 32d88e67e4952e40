"""Keyboard and pointer input on X11 straight from the X RECORD extension, parsed with ``struct``.

pynput's X listeners hand every recorded event through python-xlib's generic reply and event
parsers, each on a thread of its own that wakes for every event: about 170 us of Python per
pointer motion, and a pointer sends 60 of them a second (`cadence bench --x11`). This reader
makes the same RECORD context (all clients; device events KeyPress to MotionNotify, or only
the keys), sends EnableContext itself on a connection it keeps for that, and reads the replies
off the socket: a 32-byte header and, for events from the server, 32-byte core events whose
keycode or button, time, root position and modifier state sit at fixed offsets (X protocol,
"Events"; RECORD extension protocol 1.13, "EnableContext").

It reads at most every ``READ_S``: what arrived meanwhile waits in the socket and is taken in
one go, so a stream of input costs a few wake-ups a second, not one per event. Event times are
therefore the X server's own (milliseconds), mapped onto the monotonic clock by the smallest
offset seen so far (the X server on Linux counts on CLOCK_MONOTONIC too, so it is about 0).

A key's keycode and Shift level become a :class:`~agent.events.KeyClass` through a table made
at start from the server's keyboard mapping and :func:`agent.keymap.from_vk` (AltGr levels are
read as their base level); the keycode pairs a release with its press inside the keymap's
tracker and goes nowhere else.

Where the server has XInput, the context also records the XInput 1 device events
(DeviceKeyPress .. DeviceMotionNotify). For each key, button or motion the server records the
event of the slave device that made it (its id in the last byte), then the master's core event
with the same detail and time, then the master's own XInput event: the core event takes its
device from the slave event just before it, and :class:`~agent.sources.xdevices.KeyOrigins`
says what that device is. Input made through XTest is ``injected`` (as pynput's hooks report
software input on Windows and macOS; the core event's send_event bit is never set for it);
keys of a keyboard the policy allows are not passed on at all; a device's first key is
preceded by a ``NEW_KEYBOARD`` event.
Linux X11 only; pynput's listeners serve everywhere else.
"""

from __future__ import annotations

import struct
import threading
import time

from agent.events import Button, KeyClass
from agent.keymap import from_vk
from agent.sources.xdevices import ALLOWED, SOFTWARE, KeyOrigins, x_describe

KEY_PRESS, KEY_RELEASE, BUTTON_PRESS, BUTTON_RELEASE, MOTION_NOTIFY = 2, 3, 4, 5, 6
SHIFT_MASK = 1
SCROLL = {4, 5, 6, 7}  # wheel buttons: a press is one scroll step, the release is nothing
BUTTONS = {1: Button.LEFT, 2: Button.MIDDLE, 3: Button.RIGHT}
READ_S = 0.05
_REPLY, _ERROR = 1, 0
_FROM_SERVER, _END_OF_DATA = 0, 5
_ENABLE_CONTEXT = 5
_HEADER = struct.Struct("=BBHI")         # reply: 1, category, sequence, length (4-byte units)
_EVENT = struct.Struct("=BBxxI12xhh4xH")  # type, detail, time, (windows), root x, y, state
_EVENT_SIZE = 32
_DEVICE_BYTE = 31                        # XInput 1 device event: device id (| 0x80: more follow)
# XInput 1's DeviceKeyPress .. DeviceMotionNotify are its first event + 1 .. 5, in the order of
# the core KeyPress (2) .. MotionNotify (6): the core code is the offset + 1
_XI_CORE = 1
_WRAP_MS = 1 << 32


class RecordError(RuntimeError):
    """The X server refused or ended the recording."""


def key_classes(display) -> dict[tuple[int, int], KeyClass]:
    """(keycode, Shift level 0/1) -> class, from the server's keyboard mapping."""
    first = display.display.info.min_keycode
    count = display.display.info.max_keycode - first + 1
    table = {}
    for offset, keysyms in enumerate(display.get_keyboard_mapping(first, count)):
        for level in (0, 1):
            keysym = keysyms[level] if level < len(keysyms) and keysyms[level] else keysyms[0]
            table[first + offset, level] = from_vk(keysym, "linux") if keysym else KeyClass.OTHER
    return table


class InputRecorder:
    """Feeds a :class:`~agent.sources.live.LiveSource` (``key_down``, ``key_up``, ``move``,
    ``click``, ``scroll``) from a thread of its own. ``start()`` raises when there is no X
    display or no RECORD extension."""

    def __init__(self, source, pointer: bool = True, allow: tuple[str, ...] = ()) -> None:
        self.source = source
        self.pointer = pointer
        self.allow = tuple(allow)          # names of keyboards whose keys are not passed on
        self.origins: KeyOrigins | None = None   # None: the server cannot say which device
        self.allowed_keys = 0
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._control = self._record = None
        self._context = None
        self._classes: dict[tuple[int, int], KeyClass] = {}
        self._offset_ns: int | None = None
        self._last_ms = 0
        self._last_ns = 0
        self._wraps = 0
        self._xi_first = 1 << 8            # XInput's first event code (none above it: not recorded)
        self._xi_last = (0, 0, 0, 0)       # the last XInput event's (core code, detail, time,
                                           # device)

    def start(self) -> None:
        from Xlib import display
        from Xlib.ext import record
        self._control, self._record = display.Display(), display.Display()
        if not self._record.has_extension("RECORD"):
            self._close()
            raise RecordError("the X server has no RECORD extension")
        self._classes = key_classes(self._control)
        last = MOTION_NOTIFY if self.pointer else KEY_RELEASE
        ranges = [(KEY_PRESS, last)]
        xinput = self._control.query_extension("XInputExtension")
        if xinput is not None:
            self._xi_first = xinput.first_event
            ranges.append((self._xi_first + KEY_PRESS - _XI_CORE, self._xi_first + last - _XI_CORE))
            self.origins = KeyOrigins(x_describe(self._control), self.allow)
        self._context = self._control.record_create_context(0, [record.AllClients], [{
            "core_requests": (0, 0), "core_replies": (0, 0),
            "ext_requests": (0, 0, 0, 0), "ext_replies": (0, 0, 0, 0),
            "delivered_events": (0, 0), "device_events": events,
            "errors": (0, 0), "client_started": False, "client_died": False}
            for events in ranges])
        self._control.sync()
        opcode = self._record.display.get_extension_major("RECORD")
        self._record.display.socket.sendall(struct.pack("=BBHI", opcode, _ENABLE_CONTEXT, 2,
                                                        self._context))
        self._thread = threading.Thread(target=self._run, name="cadence-input", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def forget_device(self, device: int) -> None:
        """The server added or removed the device with this id (the keyboard watch saw it)."""
        if self.origins is not None:
            self.origins.forget(device)

    def stop(self) -> None:
        """Ask the server to end the recording (on the other connection: the recording one is
        busy); the reader sees EndOfData and closes both."""
        control, context = self._control, self._context
        if control is None or context is None:
            return
        try:
            control.record_disable_context(context)
            control.flush()
        except Exception:  # noqa: BLE001 - the server is gone: the reader has ended too
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    # -- the reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._record.display.socket
        buffer = bytearray()
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise RecordError("the X server closed the connection")
                buffer += chunk
                arrived = time.monotonic_ns()
                while len(buffer) >= 32:
                    kind, category, _, length = _HEADER.unpack_from(buffer)
                    if kind == _ERROR:
                        raise RecordError(f"X error {category} while recording")
                    size = 32 + 4 * length if kind == _REPLY else 32
                    if len(buffer) < size:
                        break
                    if kind == _REPLY:
                        if category == _END_OF_DATA:
                            return
                        if category == _FROM_SERVER:
                            self.events(buffer, 32, size, arrived)
                    del buffer[:size]
                time.sleep(READ_S)  # let input gather in the socket: one wake-up for many
        except Exception as exc:  # noqa: BLE001 - ends the thread: the watchdog restarts it
            # our own messages only: another's may hold a key (a KeyError's is the key)
            self.error = (str(exc) if isinstance(exc, (RecordError, OSError)) else "") \
                or type(exc).__name__
        finally:
            self._close()

    def events(self, data, start: int, end: int, arrived_ns: int) -> None:
        """Hand the 32-byte core events in ``data[start:end]`` (read at ``arrived_ns``) to the
        source."""
        if end - start < _EVENT_SIZE:
            return
        source, xi_first = self.source, self._xi_first
        self._calibrate(_EVENT.unpack_from(data, end - _EVENT_SIZE)[2], arrived_ns)
        for offset in range(start, end - _EVENT_SIZE + 1, _EVENT_SIZE):
            began = time.perf_counter_ns()
            kind, detail, ms, x, y, state = _EVENT.unpack_from(data, offset)
            injected = bool(kind & 0x80)
            kind &= 0x7F
            if kind > xi_first:   # an XInput device event: which device, for the core one next
                self._xi_last = (kind - xi_first + _XI_CORE, detail, ms,
                                 data[offset + _DEVICE_BYTE] & 0x7F)
                continue
            xi = self._xi_last
            origin = None
            if xi[0] == kind and xi[1] == detail and xi[2] == ms:  # its slave device's event
                origin = self.origins.origin(xi[3])
                injected = injected or origin == SOFTWARE
            t_ns = self._monotonic_ns(ms)
            if kind == KEY_PRESS or kind == KEY_RELEASE:
                if origin == ALLOWED:
                    self.allowed_keys += kind == KEY_PRESS
                    continue
                if origin is not None and kind == KEY_PRESS and self.origins.first_key(xi[3]):
                    source.new_keyboard(t_ns, injected)
                cls = self._classes.get((detail, state & SHIFT_MASK), KeyClass.OTHER)
                (source.key_down if kind == KEY_PRESS else source.key_up)(
                    t_ns, ("x", detail), cls, injected, began)
            elif kind == MOTION_NOTIFY:
                source.move(t_ns, x, y, injected, began)
            elif detail in SCROLL:
                if kind == BUTTON_PRESS:
                    source.scroll(t_ns, x, y, injected, began)
            elif kind == BUTTON_PRESS or kind == BUTTON_RELEASE:
                source.click(t_ns, x, y, BUTTONS.get(detail, Button.NONE), kind == BUTTON_PRESS,
                             injected, began)

    # The server's 32-bit millisecond time on our monotonic clock: unwrapped, plus the smallest
    # (arrival - time) of a batch's last event seen so far, so no event is placed after it
    # arrived; never before the previous event (the offset only shrinks, by fractions of a ms).
    def _calibrate(self, last_ms: int, arrived_ns: int) -> None:
        lag = arrived_ns - (last_ms + self._wraps * _WRAP_MS) * 1_000_000
        if self._offset_ns is None or lag < self._offset_ns:
            self._offset_ns = lag

    def _monotonic_ns(self, ms: int) -> int:
        if ms < self._last_ms and self._last_ms - ms > _WRAP_MS // 2:
            self._wraps += 1
        self._last_ms = ms
        t_ns = (ms + self._wraps * _WRAP_MS) * 1_000_000 + self._offset_ns
        self._last_ns = max(self._last_ns, t_ns)
        return self._last_ns

    def _close(self) -> None:
        for conn in (self._record, self._control):
            try:
                if conn is self._control and self._context is not None:
                    conn.record_free_context(self._context)
                conn.close()
            except Exception:  # noqa: BLE001 - closing a connection the server dropped
                pass
        self._control = self._record = None
