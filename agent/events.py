"""The vocabulary past the privacy boundary: what the pipeline knows about input.

An :class:`Event` has no field that can hold a character or a key's identity. A key is only
its coarse :class:`KeyClass`; presses and releases are paired by ``press_id``, an opaque
per-stream counter assigned by :mod:`agent.keymap`, never by the key itself.
Time is monotonic nanoseconds from the source's own clock.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class KeyClass(IntEnum):
    """Coarse key classes. Every class holding printable characters holds at least three,
    except SPACE, which is a separator: a class sequence reveals word lengths, never letters."""

    LEFT_LETTER = 0
    RIGHT_LETTER = 1
    DIGIT = 2
    SPACE = 3
    BACKSPACE = 4
    ENTER = 5
    MODIFIER = 6
    NAVIGATION = 7
    PUNCTUATION = 8
    OTHER = 9


N_KEY_CLASSES = len(KeyClass)


class Kind(IntEnum):
    DOWN = 0
    UP = 1
    MOVE = 2
    PRESS = 3
    RELEASE = 4
    SCROLL = 5
    ATTACH = 6   # a keyboard was attached (plugged in): no key, no device name, only the time
    NEW_KEYBOARD = 7  # the keys next may be a keyboard's new here (see Event)


KEY_KINDS = frozenset({Kind.DOWN, Kind.UP})
#: a keyboard's arrival: no key, no device, only the time
ARRIVALS = frozenset({Kind.ATTACH, Kind.NEW_KEYBOARD})


class Button(IntEnum):
    NONE = 0
    LEFT = 1
    RIGHT = 2
    MIDDLE = 3


class Event(NamedTuple):
    """One input event. Keyboard events carry ``key`` and ``press_id``; mouse events carry
    ``x``, ``y`` and ``button``. ``injected`` is the OS's software-injection flag (pynput's
    ``injected``); ``repeat`` marks a key-down produced by auto-repeat of a held key.
    An ``ATTACH`` or ``NEW_KEYBOARD`` event carries only its time (and ``injected`` when the
    keyboard is software's); which keyboard is not kept. ``ATTACH``: a keyboard appeared (it is
    audited). ``NEW_KEYBOARD``: the keys next may be a keyboard's that has not typed here (they
    are judged as a just-attached keyboard's); where the hooks tell keyboards apart (X11 with
    XInput) it comes before a keyboard's own first key, elsewhere with each ``ATTACH``, as the
    keys after it may be anyone's."""

    t_ns: int
    kind: Kind
    key: KeyClass | None = None
    press_id: int = -1
    x: float = 0.0
    y: float = 0.0
    button: Button = Button.NONE
    injected: bool = False
    repeat: bool = False

    @property
    def is_key(self) -> bool:
        return self.kind in KEY_KINDS
