"""Keyboards attached while the agent runs: a USB keystroke injector arrives as one.

A Rubber Ducky enumerates as a keyboard moments before it types. Each watch here calls
``on_attach()`` for every keyboard that appears, from a thread of its own, and hands over
nothing else: never a device's name or vendor. The X watch also calls ``on_change(id)`` with
the X server's id of each device added or removed, so the X hooks forget what they knew under
that id (:mod:`agent.sources.xdevices`).

- X11 (:class:`XKeyboardWatch`): the server tells its clients about every input device it adds
  with an XInput 2 ``HierarchyChanged`` event on the root window; an entry flagged
  ``XISlaveAdded`` whose use is ``XISlaveKeyboard`` is a keyboard plugged in (or a virtual one
  created, as ``xinput create-master`` does). The watch sleeps in ``select`` until the server
  sends one or :meth:`stop` wakes it: no wake-ups while nothing changes.
- Windows and macOS (:class:`PollingKeyboardWatch`): the set of keyboard handles, read once a
  second (``GetRawInputDeviceList``; IOKit's ``IOHIDManagerCopyDevices`` matching
  Generic Desktop / Keyboard); a handle not seen before is a keyboard attached. These two
  listers are thin ctypes adapters; the diffing around them is what the tests run.

:func:`start_watch` picks the one for the system and returns None (logged) where none can run;
the injection rule then goes without the ``new_keyboard`` evidence.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SLAVE_ADDED = 1 << 2      # XISlaveAdded (XI2 protocol, "HierarchyChanged")
SLAVE_REMOVED = 1 << 3    # XISlaveRemoved
SLAVE_KEYBOARD = 4        # XISlaveKeyboard
POLL_S = 1.0


class WatchError(RuntimeError):
    """No way to see keyboards arrive here (no X display, no XInput 2, no OS API)."""


def keyboards_added(info) -> int:
    """How many entries of a HierarchyChanged event's ``info`` are keyboards just added."""
    return sum(1 for device in info
               if device["flags"] & SLAVE_ADDED and device["type"] == SLAVE_KEYBOARD)


def devices_changed(info) -> list[int]:
    """Ids of the slave devices (of any use) a HierarchyChanged event's ``info`` adds or
    removes: what was known under those ids is void."""
    return [device["deviceid"] for device in info
            if device["flags"] & (SLAVE_ADDED | SLAVE_REMOVED)]


class XKeyboardWatch:
    """Calls ``on_attach()`` for each keyboard the X server adds, and ``on_change(id)`` for
    each slave device it adds or removes."""

    def __init__(self, on_attach: Callable[[], None],
                 on_change: Callable[[int], None] | None = None) -> None:
        self.on_attach = on_attach
        self.on_change = on_change
        self.error: str | None = None
        self._display = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1

    def start(self) -> None:
        from Xlib import display, error
        from Xlib.ext import xinput
        try:
            self._display = display.Display()
        except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
            raise WatchError(f"no X display to watch for keyboards ({exc})") from None
        try:
            if not self._display.has_extension(xinput.extname):
                raise WatchError("the X server has no XInput extension")
            version = self._display.xinput_query_version()
            if (version.major_version, version.minor_version) < (2, 0):
                raise WatchError("the X server's XInput is older than 2.0")
            self._display.screen().root.xinput_select_events(
                [(xinput.AllDevices, xinput.HierarchyChangedMask)])
            self._display.sync()
        except Exception as exc:  # noqa: BLE001 - an X error here means: no watch, not no hooks
            self._display.close()
            self._display = None
            if isinstance(exc, WatchError):
                raise
            raise WatchError(f"XInput 2 cannot be used ({type(exc).__name__}: {exc})") from None
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="cadence-keyboards", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if not self.is_alive():
            return
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # the watch ended meanwhile and closed its pipe
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        from Xlib.ext import xinput
        display = self._display
        try:
            while True:
                while display.pending_events():   # reads what the socket holds, never blocks
                    event = display.next_event()
                    if getattr(event, "evtype", None) == xinput.HierarchyChanged:
                        info = event.data["info"]
                        if self.on_change is not None:
                            for device in devices_changed(info):
                                self.on_change(device)
                        for _ in range(keyboards_added(info)):
                            self.on_attach()
                ready, _, _ = select.select([display.fileno(), self._wake_r], [], [])
                if self._wake_r in ready:
                    return
        except Exception as exc:  # noqa: BLE001 - the server went away: the watch ends
            self.error = str(exc) or type(exc).__name__
        finally:
            try:
                display.close()
            except Exception:  # noqa: BLE001 - closing a connection the server dropped
                pass
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._display = None


class PollingKeyboardWatch:
    """Calls ``on_attach()`` for each handle ``list_keyboards()`` returns that it did not
    return before, reading it every ``every_s``. Handles of keyboards present at start, and of
    those unplugged, are never reported."""

    def __init__(self, on_attach: Callable[[], None],
                 list_keyboards: Callable[[], set], every_s: float = POLL_S) -> None:
        self.on_attach = on_attach
        self.list_keyboards = list_keyboards
        self.every_s = every_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: set = set()

    def start(self) -> None:
        try:
            self._known = set(self.list_keyboards())
        except Exception as exc:  # noqa: BLE001 - an OS API that is missing or refuses
            raise WatchError(f"cannot list keyboards ({type(exc).__name__}: {exc})") from None
        self._thread = threading.Thread(target=self._run, name="cadence-keyboards", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def poll(self) -> int:
        """Read the keyboards once; report and return how many are new."""
        now = set(self.list_keyboards())
        new = now - self._known
        self._known = now
        for _ in new:
            self.on_attach()
        return len(new)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                self.poll()
        except Exception as exc:  # noqa: BLE001 - the OS API failed: the watch ends
            self.error = str(exc) or type(exc).__name__


# --- the OS listers (thin: what cannot run here) ----------------------------------------------

def windows_keyboards() -> set[int]:
    """Handles of the keyboards Windows has now (user32 ``GetRawInputDeviceList``)."""
    from ctypes import wintypes

    class RawInputDeviceList(ctypes.Structure):
        _fields_ = [("hDevice", wintypes.HANDLE), ("dwType", wintypes.DWORD)]

    user32 = ctypes.WinDLL("user32", use_last_error=True)
    user32.GetRawInputDeviceList.restype = wintypes.UINT   # (UINT)-1 on failure, not int -1
    size = ctypes.sizeof(RawInputDeviceList)
    count = wintypes.UINT(0)
    if user32.GetRawInputDeviceList(None, ctypes.byref(count), size) == 0xFFFFFFFF:
        raise OSError(ctypes.get_last_error(), "GetRawInputDeviceList failed")
    devices = (RawInputDeviceList * (count.value + 4))()  # room for one plugged in meanwhile
    count = wintypes.UINT(len(devices))
    got = user32.GetRawInputDeviceList(devices, ctypes.byref(count), size)
    if got == 0xFFFFFFFF:
        raise OSError(ctypes.get_last_error(), "GetRawInputDeviceList failed")
    return {devices[i].hDevice for i in range(got) if devices[i].dwType == 1}  # RIM_TYPEKEYBOARD


def macos_keyboards() -> set[int]:
    """Addresses of the keyboards IOKit's HID manager sees now (Generic Desktop / Keyboard)."""
    from ctypes import c_int, c_long, c_void_p, util
    iokit = ctypes.CDLL(util.find_library("IOKit"))
    cf = ctypes.CDLL(util.find_library("CoreFoundation"))
    for fn, res, args in [
            (iokit.IOHIDManagerCreate, c_void_p, [c_void_p, c_int]),
            (iokit.IOHIDManagerSetDeviceMatching, None, [c_void_p, c_void_p]),
            (iokit.IOHIDManagerCopyDevices, c_void_p, [c_void_p]),
            (cf.CFNumberCreate, c_void_p, [c_void_p, c_int, c_void_p]),
            (cf.CFStringCreateWithCString, c_void_p, [c_void_p, ctypes.c_char_p, c_int]),
            (cf.CFDictionaryCreateMutable, c_void_p, [c_void_p, c_long, c_void_p, c_void_p]),
            (cf.CFDictionarySetValue, None, [c_void_p, c_void_p, c_void_p]),
            (cf.CFSetGetCount, c_long, [c_void_p]),
            (cf.CFSetGetValues, None, [c_void_p, c_void_p]),
            (cf.CFRelease, None, [c_void_p])]:
        fn.restype, fn.argtypes = res, args
    utf8, sint32 = 0x08000100, 3
    key_callbacks = ctypes.addressof(c_void_p.in_dll(cf, "kCFTypeDictionaryKeyCallBacks"))
    value_callbacks = ctypes.addressof(c_void_p.in_dll(cf, "kCFTypeDictionaryValueCallBacks"))
    matching = cf.CFDictionaryCreateMutable(None, 2, key_callbacks, value_callbacks)
    owned = [matching]
    for key, value in ((b"DeviceUsagePage", 1), (b"DeviceUsage", 6)):
        number = c_int(value)
        cf_key = cf.CFStringCreateWithCString(None, key, utf8)
        cf_value = cf.CFNumberCreate(None, sint32, ctypes.byref(number))
        cf.CFDictionarySetValue(matching, cf_key, cf_value)
        owned += [cf_key, cf_value]
    manager = iokit.IOHIDManagerCreate(None, 0)
    owned.append(manager)
    try:
        iokit.IOHIDManagerSetDeviceMatching(manager, matching)
        devices = iokit.IOHIDManagerCopyDevices(manager)
        if not devices:
            return set()
        owned.append(devices)
        count = cf.CFSetGetCount(devices)
        values = (c_void_p * count)()
        cf.CFSetGetValues(devices, values)
        return {v for v in values if v}
    finally:
        for ref in owned:
            cf.CFRelease(ref)


def start_watch(on_attach: Callable[[], None], platform: str = sys.platform,
                on_change: Callable[[int], None] | None = None):
    """The running keyboard watch for this system, or None (logged) where none can run.
    ``on_change``: X11 only (the device ids the hooks see are X's)."""
    if platform == "win32":
        watch = PollingKeyboardWatch(on_attach, windows_keyboards)
    elif platform == "darwin":
        watch = PollingKeyboardWatch(on_attach, macos_keyboards)
    else:
        watch = XKeyboardWatch(on_attach, on_change)
    try:
        watch.start()
    except WatchError as exc:
        log.warning("keyboards plugged in will not be noticed: %s", exc)
        return None
    return watch
