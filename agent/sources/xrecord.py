"""Pointer input on X11 straight from the X RECORD extension, parsed with ``struct``.

pynput's X listener hands every recorded event through python-xlib's generic reply and event
parsers: about 170 us of Python per pointer motion, and a pointer sends 60 of them a second
(`cadence bench --x11`). This reader makes the same RECORD context (all clients, device events
ButtonPress, ButtonRelease and MotionNotify), sends EnableContext itself on a connection it
keeps for that, and reads the replies off the socket: a 32-byte header and, for events from the
server, 32-byte core events whose root position, button and time sit at fixed offsets
(X protocol, "Events"; RECORD extension protocol 1.13, "EnableContext"). Keys stay with
pynput, whose key symbols the keymap classifies.

The callbacks get what pynput's would (root position, button number, pressed, ``injected``
from the event's send_event bit, as pynput's xorg listener sets it). Linux X11 only; the caller
uses pynput's listener everywhere else.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

from agent.events import Button

BUTTON_PRESS, BUTTON_RELEASE, MOTION_NOTIFY = 4, 5, 6
SCROLL = {4: (0, 1), 5: (0, -1), 6: (-1, 0), 7: (1, 0)}  # button number: (dx, dy), as pynput
BUTTONS = {1: Button.LEFT, 2: Button.MIDDLE, 3: Button.RIGHT}
_REPLY, _ERROR = 1, 0
_FROM_SERVER, _END_OF_DATA = 0, 5
_ENABLE_CONTEXT = 5
_HEADER = struct.Struct("=BBHI")          # reply: 1, category, sequence, length (4-byte units)
_EVENT = struct.Struct("=BB2x4x12x2h")    # type, detail, (sequence, time, windows), root x, y
_EVENT_SIZE = 32


class RecordError(RuntimeError):
    """The X server refused or ended the recording."""


class PointerRecorder:
    """Calls ``on_move(x, y, injected)``, ``on_click(x, y, button, pressed, injected)`` (an
    :class:`~agent.events.Button`) and ``on_scroll(x, y, dx, dy, injected)`` from
    a thread of its own. ``start()`` raises when there is no X display or no RECORD extension."""

    def __init__(self, on_move: Callable, on_click: Callable, on_scroll: Callable) -> None:
        self.on_move, self.on_click, self.on_scroll = on_move, on_click, on_scroll
        self._thread: threading.Thread | None = None
        self._control = self._record = None
        self._context = None
        self.error: str | None = None

    def start(self) -> None:
        from Xlib import display
        from Xlib.ext import record
        self._control, self._record = display.Display(), display.Display()
        if not self._record.has_extension("RECORD"):
            self._close()
            raise RecordError("the X server has no RECORD extension")
        self._context = self._control.record_create_context(0, [record.AllClients], [{
            "core_requests": (0, 0), "core_replies": (0, 0),
            "ext_requests": (0, 0, 0, 0), "ext_replies": (0, 0, 0, 0),
            "delivered_events": (0, 0), "device_events": (BUTTON_PRESS, MOTION_NOTIFY),
            "errors": (0, 0), "client_started": False, "client_died": False}])
        self._control.sync()
        opcode = self._record.display.get_extension_major("RECORD")
        self._record.display.socket.sendall(struct.pack("=BBHI", opcode, _ENABLE_CONTEXT, 2,
                                                        self._context))
        self._thread = threading.Thread(target=self._run, name="cadence-pointer", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Ask the server to end the recording (on the other connection: the recording one is
        busy); the reader sees EndOfData and closes both."""
        if self._control is None or self._context is None:
            return
        try:
            self._control.record_disable_context(self._context)
            self._control.flush()
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
                chunk = sock.recv(65536)
                if not chunk:
                    raise RecordError("the X server closed the connection")
                buffer += chunk
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
                            self._events(buffer, 32, size)
                    del buffer[:size]
        except Exception as exc:  # noqa: BLE001 - ends the thread: the watchdog restarts it
            self.error = str(exc)
        finally:
            self._close()

    def _events(self, data: bytearray, start: int, end: int) -> None:
        for offset in range(start, end - _EVENT_SIZE + 1, _EVENT_SIZE):
            kind, detail, x, y = _EVENT.unpack_from(data, offset)
            injected = bool(kind & 0x80)
            kind &= 0x7F
            if kind == MOTION_NOTIFY:
                self.on_move(x, y, injected)
            elif detail in SCROLL:
                if kind == BUTTON_PRESS:
                    self.on_scroll(x, y, *SCROLL[detail], injected)
            elif kind in (BUTTON_PRESS, BUTTON_RELEASE):
                self.on_click(x, y, BUTTONS.get(detail, Button.NONE), kind == BUTTON_PRESS,
                              injected)

    def _close(self) -> None:
        for conn in (self._record, self._control):
            try:
                if conn is self._control and self._context is not None:
                    conn.record_free_context(self._context)
                conn.close()
            except Exception:  # noqa: BLE001 - closing a connection the server dropped
                pass
        self._control = self._record = None
