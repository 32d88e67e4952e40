"""Which keyboard typed a key, on X11: the X server's input devices, by id.

The recording (:mod:`agent.sources.xrecord`) also takes the XInput 1 DeviceKeyPress/Release
events, which name the device: for each key the X server records the event of the *slave*
device that produced it (a USB keyboard, a YubiKey, a scanner, the XTEST device software types
through), then the master keyboard's core event. :class:`KeyOrigins` turns a slave's id into
what the agent needs of it, once per device:

- :data:`SOFTWARE`: the device carries the X server's ``XTEST Device`` property. Its keys come
  through XTest (xdotool, password-manager auto-type, x11vnc): input injected by software, as
  Windows' LLKHF_INJECTED and macOS's source PID report it. A USB device can claim any name,
  but not this property.
- :data:`ALLOWED`: its name matches a pattern of the policy's ``injection_allow_keyboards``
  (shell-style, any case: ``"Yubico YubiKey*"``, ``"*barcode*"``). Its keys are neither judged
  nor learned: they never reach the queue. A device's name is what it says it is; an injector
  can claim an allowed one, so an allowlist trades that risk for the device's convenience.
- :data:`HAND`: any other keyboard.

:meth:`KeyOrigins.first_key` is true for a device's first key since the agent started (or since
the device id was given to another device): a keyboard that has never typed here, a USB injector
plugged in minutes ago or before the agent started, starts with the ``new_keyboard`` rule.

Names are asked for once, kept in memory only and never leave this module.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

HAND, SOFTWARE, ALLOWED = "hand", "software", "allowed"
XTEST_PROPERTY = "XTEST Device"

#: device id -> (name, software), or None when the server no longer has the device
Describe = Callable[[int], "tuple[str, bool] | None"]


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Does a device name match one of the policy's patterns (shell-style, any case)?"""
    name = name.casefold()
    return any(fnmatch.fnmatchcase(name, pattern.casefold()) for pattern in patterns)


class KeyOrigins:
    """The origin of each device's keys (asked once per device) and whether it has typed."""

    def __init__(self, describe: Describe, allow: tuple[str, ...] = ()) -> None:
        self.describe = describe
        self.allow = tuple(allow)
        self._origins: dict[int, str] = {}
        self._typed: set[int] = set()

    def origin(self, device: int) -> str:
        found = self._origins.get(device)
        if found is None:
            described = self.describe(device)
            if described is None:
                return HAND  # gone already: judge its keys, and ask again next time
            name, software = described
            found = ALLOWED if allowed(name, self.allow) else SOFTWARE if software else HAND
            self._origins[device] = found
        return found

    def first_key(self, device: int) -> bool:
        """True once per device: for its first key-down."""
        if device in self._typed:
            return False
        self._typed.add(device)
        return True

    def forget(self, device: int) -> None:
        """The server added or removed a device with this id: what was known of it is void."""
        self._origins.pop(device, None)
        self._typed.discard(device)


def x_describe(display) -> Describe:
    """``describe`` over a python-xlib connection: XIQueryDevice for the name, XIListProperties
    for the XTEST property. Raises for X errors other than a device that is gone."""
    from Xlib import error
    xtest = display.intern_atom(XTEST_PROPERTY)

    def describe(device: int) -> tuple[str, bool] | None:
        try:
            info = display.xinput_query_device(device).devices
            atoms = display.xinput_list_device_properties(device).atoms
        except error.XError:  # BadDevice: unplugged since it typed
            return None
        return (info[0].name if info else "", xtest in atoms)

    return describe
