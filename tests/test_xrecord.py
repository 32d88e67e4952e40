"""The X RECORD pointer reader: its byte parsing against hand-built X events, and the real thing
on Xvfb driven through XTest (moves, clicks, scrolls, stop, and a server that goes away)."""

from __future__ import annotations

import struct
import time

import pytest

from agent.events import Button
from agent.sources.xrecord import PointerRecorder

GUARD_S = 60
pytestmark = pytest.mark.usefixtures("alarm_guard")


def recorder():
    seen = []
    rec = PointerRecorder(lambda *a: seen.append(("move", *a)),
                          lambda *a: seen.append(("click", *a)),
                          lambda *a: seen.append(("scroll", *a)))
    return rec, seen


def x_event(kind: int, detail: int, x: int, y: int, send_event: bool = False) -> bytes:
    """A 32-byte core input event as the server sends it (native byte order)."""
    return struct.pack("=BBHIIIIhhhhHBx", kind | (0x80 if send_event else 0), detail, 7, 123456,
                       1, 2, 0, x, y, x, y, 0, 1)


def test_events_are_parsed_at_their_fixed_offsets():
    rec, seen = recorder()
    data = bytearray(32) + b"".join([
        x_event(6, 0, 10, -20),                   # motion, negative coordinate (left monitor)
        x_event(4, 1, 11, 21),                    # left press
        x_event(5, 3, 12, 22, send_event=True),   # right release, sent by a client
        x_event(4, 4, 13, 23), x_event(5, 4, 13, 23),  # wheel up: one scroll, release ignored
        x_event(4, 7, 14, 24),                    # wheel right
        x_event(4, 9, 15, 25),                    # a ninth button: a click of no known button
    ])
    rec._events(data, 32, len(data))
    assert seen == [("move", 10, -20, False),
                    ("click", 11, 21, Button.LEFT, True, False),
                    ("click", 12, 22, Button.RIGHT, False, True),
                    ("scroll", 13, 23, 0, 1, False),
                    ("scroll", 14, 24, 1, 0, False),
                    ("click", 15, 25, Button.NONE, True, False)]


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_records_real_pointer_input_and_stops(monkeypatch):
    from conftest import XServer
    from agent.evaluation.xreplay import XTyper
    server = XServer()
    try:
        monkeypatch.setenv("DISPLAY", server.name)
        rec, seen = recorder()
        rec.start()
        typer = XTyper(server.name)
        typer.move(100, 200)
        typer.move(105, 210)
        typer.button(1, True)
        typer.button(1, False)
        typer.button(5, True)
        typer.button(5, False)
        assert wait_for(lambda: len(seen) >= 5), seen
        assert seen == [("move", 100, 200, False), ("move", 105, 210, False),
                        ("click", 105, 210, Button.LEFT, True, False),
                        ("click", 105, 210, Button.LEFT, False, False),
                        ("scroll", 105, 210, 0, -1, False)]
        assert rec.is_alive()
        rec.stop()
        assert not rec.is_alive() and rec.error is None
        typer.move(1, 1)
        time.sleep(0.2)
        assert len(seen) == 5  # nothing after stop
        typer.close()

        again, _ = recorder()  # the server freed the context: a new recorder starts cleanly
        again.start()
        server.close()  # the X server goes away: the reader ends and says why
        assert wait_for(lambda: not again.is_alive())
        assert again.error
    finally:
        server.close()


def test_no_display_raises_at_start(monkeypatch):
    from Xlib.error import DisplayError
    monkeypatch.setenv("DISPLAY", ":999")
    rec, _ = recorder()
    with pytest.raises(DisplayError):
        rec.start()
    assert not rec.is_alive()
