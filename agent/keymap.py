"""Key identity -> KeyClass: the only module that classifies which key was pressed.

Input sources hand a key straight here (pynput's callbacks pass its key object; the X11 RECORD
reader passes a keycode, with the class it looked up in a table built by :func:`from_vk`).
Everything past this module works with :class:`~agent.events.KeyClass` and opaque press ids.
A key's identity lives here only while the key is held (to pair its release with its press)
and is forgotten on release. Nothing here logs, stores or raises a key's identity.
"""

from __future__ import annotations

import enum
import sys
from typing import Any

from agent.events import KeyClass

_LEFT = frozenset("qwertasdfgzxcvb")
_RIGHT = frozenset("yuiophjklnm")

_NAMED = {
    **dict.fromkeys(
        ("alt", "alt_l", "alt_r", "alt_gr", "cmd", "cmd_l", "cmd_r", "ctrl", "ctrl_l", "ctrl_r",
         "shift", "shift_l", "shift_r", "caps_lock"), KeyClass.MODIFIER),
    **dict.fromkeys(
        ("tab", "up", "down", "left", "right", "home", "end", "page_up", "page_down", "delete",
         "insert"), KeyClass.NAVIGATION),
    "space": KeyClass.SPACE,
    "backspace": KeyClass.BACKSPACE,
    "enter": KeyClass.ENTER,
}


def from_char(char: str) -> KeyClass:
    """Class of a typed character (layout-level: the character, not the physical key)."""
    if len(char) != 1:
        return KeyClass.OTHER
    code = ord(char)
    if 1 <= code <= 26 and char not in "\b\t\n\r":
        char = chr(code + 96)  # Ctrl+letter arrives as a control character on some OSes
    lower = char.lower()
    if lower in _LEFT:
        return KeyClass.LEFT_LETTER
    if lower in _RIGHT:
        return KeyClass.RIGHT_LETTER
    if "0" <= char <= "9":
        return KeyClass.DIGIT
    if char == " ":
        return KeyClass.SPACE
    if char in "\r\n":
        return KeyClass.ENTER
    if char == "\b":
        return KeyClass.BACKSPACE
    if char == "\t":
        return KeyClass.NAVIGATION
    if char.isascii() and char.isprintable():
        return KeyClass.PUNCTUATION
    return KeyClass.OTHER


def from_name(name: str) -> KeyClass:
    """Class of a named (non-character) key as pynput names it: ``space``, ``shift_r``, ``f5``."""
    return _NAMED.get(name, KeyClass.OTHER)


def _browser_table() -> dict[int, KeyClass]:
    table: dict[int, KeyClass] = {}
    for code in range(65, 91):
        table[code] = from_char(chr(code))
    for code in list(range(48, 58)) + list(range(96, 106)):
        table[code] = KeyClass.DIGIT
    for code in (59, 61, 106, 107, 108, 109, 110, 111, 173, *range(186, 193), *range(219, 224), 226):
        table[code] = KeyClass.PUNCTUATION
    for code in (16, 17, 18, 20, 91, 92, 93, 224, 225):
        table[code] = KeyClass.MODIFIER
    for code in (9, 33, 34, 35, 36, 37, 38, 39, 40, 45, 46):
        table[code] = KeyClass.NAVIGATION
    table.update({8: KeyClass.BACKSPACE, 13: KeyClass.ENTER, 32: KeyClass.SPACE})
    return table


_BROWSER = _browser_table()


def from_browser_keycode(code: int) -> KeyClass:
    """Class of a browser ``keyCode`` (as in the Aalto dataset); unknown codes are OTHER."""
    return _BROWSER.get(code, KeyClass.OTHER)


# macOS kVK_ANSI_* virtual key codes of letters and digits (pynput's vk on darwin).
_MAC_VK = {
    **{vk: c for c, vk in zip("asdfhgzxcv", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9))},
    **{vk: c for c, vk in zip("bqweryt", (11, 12, 13, 14, 15, 16, 17))},
    **{vk: c for c, vk in zip("123465", (18, 19, 20, 21, 22, 23))},
    **{vk: c for c, vk in zip("97", (25, 26))},
    **{vk: c for c, vk in zip("80oupil", (28, 29, 31, 32, 34, 35, 37))},
    **{vk: c for c, vk in zip("jknm", (38, 40, 45, 46))},
    49: " ", 36: "\r", 51: "\b", 48: "\t",
}


# X keysyms of named keys (X11 keysymdef.h) -> pynput's names for them.
_X_NAMED = {
    0xFFE1: "shift_l", 0xFFE2: "shift_r", 0xFFE3: "ctrl_l", 0xFFE4: "ctrl_r", 0xFFE5: "caps_lock",
    0xFFE7: "alt_l", 0xFFE8: "alt_r", 0xFFE9: "alt_l", 0xFFEA: "alt_r", 0xFFEB: "cmd_l",
    0xFFEC: "cmd_r", 0xFE03: "alt_gr", 0xFF7E: "alt_gr",
    0xFF08: "backspace", 0xFF09: "tab", 0xFE20: "tab", 0xFF0D: "enter", 0xFF8D: "enter",
    0xFF50: "home", 0xFF51: "left", 0xFF52: "up", 0xFF53: "right", 0xFF54: "down",
    0xFF55: "page_up", 0xFF56: "page_down", 0xFF57: "end", 0xFF63: "insert", 0xFFFF: "delete",
}


def from_vk(vk: int, platform: str = sys.platform) -> KeyClass:
    """Class of a virtual key code as pynput reports it on ``platform`` when no character is
    known (Windows: VK_* codes, which browser keyCodes copy; macOS: kVK codes; X: keysyms)."""
    if platform == "win32":
        return from_browser_keycode(vk)
    if platform == "darwin":
        char = _MAC_VK.get(vk)
        return from_char(char) if char is not None else KeyClass.OTHER
    if vk in _X_NAMED:
        return from_name(_X_NAMED[vk])
    if 0x20 <= vk <= 0x7E:  # X keysyms of Latin-1 printable characters are the characters
        return from_char(chr(vk))
    if 0xFFB0 <= vk <= 0xFFB9:  # keypad digits
        return KeyClass.DIGIT
    return KeyClass.OTHER


def classify(key: Any) -> KeyClass:
    """Class of any key the agent can meet: a pynput ``Key`` or ``KeyCode``, a recording's key
    string (``a``, ``Key.space``, ``<65>``, or a KeyClass name), or a browser keyCode int."""
    return identify(key)[1]



def identify(key: Any) -> tuple[Any, KeyClass]:
    """(pairing identity, class). The identity is used only inside :class:`KeyTracker` (a
    source passes it straight to :meth:`KeyTracker.press_identified`), which forgets it on
    release."""
    char = getattr(key, "char", None)  # a pynput KeyCode, the hooks' common case, first
    if isinstance(char, str) and char:
        return _ASCII.get(char) or _char_identity(char)
    if isinstance(key, KeyClass):
        return None, key
    if isinstance(key, bool) or key is None:
        return None, KeyClass.OTHER
    if isinstance(key, int):
        return ("code", key), from_browser_keycode(key)
    if isinstance(key, str):
        return _identify_string(key)
    if isinstance(key, enum.Enum):  # pynput.keyboard.Key member
        name = key.name
        return ("name", name), from_name(name)
    vk = getattr(key, "vk", None)
    if isinstance(vk, int):
        return ("vk", vk), from_vk(vk)
    return None, KeyClass.OTHER


def _char_identity(char: str) -> tuple[tuple[str, str], KeyClass]:
    return ("char", char.lower()), from_char(char)


# ASCII is looked up, not worked out: a hook callback's cost is mostly its first, cache-cold
# steps (`cadence bench` measures it), and a table holds no trace of what was typed.
_ASCII = {chr(code): _char_identity(chr(code)) for code in range(128)}


def _identify_string(text: str) -> tuple[Any, KeyClass]:
    if text.startswith("Key."):
        name = text[4:]
        return ("name", name), from_name(name)
    if len(text) > 2 and text[0] == "<" and text[-1] == ">" and text[1:-1].isascii() \
            and text[1:-1].isdigit():
        vk = int(text[1:-1])
        return ("vk", vk), from_vk(vk)
    if text in KeyClass.__members__:
        return None, KeyClass[text]
    if len(text) == 1:
        return _ASCII.get(text) or _char_identity(text)
    raise ValueError("not a key name (expected a character, Key.<name>, <vk> or a KeyClass name)")


class KeyTracker:
    """Turns key presses and releases into (class, press_id) without keeping identities.

    A press gets a fresh ``press_id``; its release gets the same id. A second press of a key
    that is still held is auto-repeat (same id, ``repeat=True``). A release that matches no
    held key (some systems report the release of a shifted key differently) closes the
    longest-held press. A press never released is forgotten after ``max_held`` newer presses.
    Keys given only as a class (recordings of classes) pair first-in, first-out.
    """

    def __init__(self, max_held: int = 16) -> None:
        self.max_held = max_held
        self._next_id = 0
        self._held: dict[Any, tuple[int, KeyClass]] = {}
        self._anonymous: list[tuple[KeyClass, int]] = []

    def press(self, key: Any) -> tuple[KeyClass, int, bool]:
        return self.press_identified(*identify(key))

    def press_identified(self, ident: Any, cls: KeyClass) -> tuple[KeyClass, int, bool]:
        """As :meth:`press`, for a source that identifies keys itself (``ident``: any hashable
        the key's release will repeat, e.g. an X keycode; ``None`` pairs by class)."""
        if ident is not None and ident in self._held:
            return cls, self._held[ident][0], True
        press_id = self._next_id
        self._next_id += 1
        if ident is None:
            self._anonymous.append((cls, press_id))
        else:
            self._held[ident] = (press_id, cls)
        if len(self._held) + len(self._anonymous) > self.max_held:
            self._drop_oldest()
        return cls, press_id, False

    def release(self, key: Any) -> tuple[KeyClass, int] | None:
        return self.release_identified(*identify(key))

    def release_identified(self, ident: Any, cls: KeyClass) -> tuple[KeyClass, int] | None:
        if ident is not None and ident in self._held:
            return cls, self._held.pop(ident)[0]
        if ident is None:
            for i, (held_cls, press_id) in enumerate(self._anonymous):
                if held_cls == cls:
                    del self._anonymous[i]
                    return cls, press_id
        return self._release_oldest(cls)

    def _release_oldest(self, cls: KeyClass) -> tuple[KeyClass, int] | None:
        if cls == KeyClass.MODIFIER:
            return None
        candidates = [(pid, ident) for ident, (pid, held_cls) in self._held.items()
                      if held_cls != KeyClass.MODIFIER]
        if not candidates:
            return None
        press_id, ident = min(candidates, key=lambda c: c[0])
        del self._held[ident]
        return cls, press_id

    def _drop_oldest(self) -> None:
        oldest_named = min((pid for pid, _ in self._held.values()), default=None)
        oldest_anon = self._anonymous[0][1] if self._anonymous else None
        if oldest_anon is not None and (oldest_named is None or oldest_anon < oldest_named):
            self._anonymous.pop(0)
        else:
            self._held = {k: v for k, v in self._held.items() if v[0] != oldest_named}

    def reset(self) -> None:
        """Forget every held key (on lock, pause, or a listener restart)."""
        self._held.clear()
        self._anonymous.clear()
