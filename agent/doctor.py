"""`cadence doctor`: what this machine offers the agent, and what to fix."""

from __future__ import annotations

import os
import sys

from agent.actions.lock import available_methods
from agent.policy import Settings
from agent.store import ProfileStore, StoreError
from agent.system import session
from agent.system.paths import Paths


def _item(check: str, level: str, detail: str) -> dict:
    return {"check": check, "level": level, "detail": detail}


def _display() -> list[dict]:
    kind = session.display_kind()
    if kind == "x11":
        try:
            from Xlib import display as xdisplay
            d = xdisplay.Display()
            missing = [ext for ext in ("RECORD", "XTEST", "MIT-SCREEN-SAVER", "XInputExtension")
                       if not d.has_extension(ext)]
            d.close()
        except Exception as exc:  # noqa: BLE001
            return [_item("display", "fail", f"cannot open X display {os.environ.get('DISPLAY')}"
                          f" ({type(exc).__name__}); is the session running?")]
        if "RECORD" in missing:
            return [_item("display", "fail", "X server lacks the RECORD extension pynput needs; "
                          "enable it in the X server configuration")]
        lost = {"XTEST": "lock checks limited", "MIT-SCREEN-SAVER": "idle checks limited",
                "XInputExtension": "keyboards plugged in go unnoticed, keys are not told "
                                   "apart by keyboard (injection_allow_keyboards has no effect)"}
        note = f" (missing {', '.join(missing)}: {'; '.join(lost[m] for m in missing)})" \
            if missing else ""
        return [_item("display", "ok", f"X11 {os.environ.get('DISPLAY')} with RECORD{note}")]
    if kind in ("wayland", "xwayland"):
        return [_item("display", "fail", "Wayland session: input to native Wayland apps is not "
                      "visible to Cadence; choose an X11 session at login")]
    if kind == "none":
        return [_item("display", "fail", "no graphical session (DISPLAY unset); run Cadence "
                      "inside the user's desktop session")]
    if kind == "macos":
        return [_item("display", "warn", "macOS: grant Input Monitoring (System Settings > "
                      "Privacy & Security) to the Cadence app; without it input stays silent")]
    return [_item("display", "ok", kind)]


def checks(paths: Paths, settings: Settings) -> list[dict]:
    results = _display()
    store = ProfileStore(paths.data)
    try:
        protection = store.key_protection
        results.append(_item("keyring", "ok" if protection == "keyring" else "warn",
                             store.key_protection_note))
    except StoreError as exc:
        results.append(_item("profile", "fail", str(exc)))
    command = list(settings.policy.locker_command) or None
    methods = available_methods(command)
    usable = [m for m in methods if not m.startswith("installed:")]
    if usable:
        results.append(_item("lock", "ok", "lock methods: " + ", ".join(methods)))
    else:
        hint = ("set locker_command in settings.toml, e.g. [\"i3lock\", \"-n\"]"
                if sys.platform.startswith("linux") else "")
        results.append(_item("lock", "fail", "no way to lock this session found"
                             + (f" (installed: {', '.join(methods)})" if methods else "")
                             + (f"; {hint}" if hint else "")))
    for problem in settings.errors:
        results.append(_item("policy", "fail", problem))
    if not settings.errors:
        managed = ", ".join(sorted(settings.managed)) or "none"
        results.append(_item("policy", "ok", f"valid; managed keys: {managed}"))
    return results
