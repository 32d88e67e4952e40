"""Settings: built-in defaults < user settings < managed (MDM) policy, every value validated.

Sources: the user's ``settings.toml`` in the platformdirs config folder; managed policy from
``/etc/cadence/policy.toml`` (Linux), the managed preferences of ``org.cadence.agent``
(macOS configuration profile) or ``HKLM``/``HKCU\\SOFTWARE\\Policies\\Cadence\\Agent`` (Windows).
Managed keys win and are reported as locked. A bad value is named with its key, source and
what is allowed; it is ignored (the lower layer's value stays) and reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import plistlib
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BUNDLE_ID = "org.cadence.agent"
LINUX_POLICY = Path("/etc/cadence/policy.toml")
MAC_POLICY = Path("/Library/Managed Preferences") / f"{BUNDLE_ID}.plist"
WINDOWS_KEY = r"SOFTWARE\Policies\Cadence\Agent"

ACTIONS = ("observe", "alert", "lock")


@dataclass(frozen=True)
class Policy:
    action: str = "lock"                  # on an impostor verdict: observe (log) | alert | lock
    sensitivity: float = 1.0              # 0.5 (fewer, later alerts) .. 2.0 (faster locks)
    enrol_keystrokes: int = 1000          # typing needed before protecting (plus quality check)
    allow_pause: bool = True
    pause_minutes: int = 15
    allow_quit: bool = True
    locker_command: tuple[str, ...] = ()  # Linux fallback locker, e.g. ["i3lock", "-n"]
    injection_action: str = "lock"        # on a keystroke-injection verdict
    injection_allow_software: bool = True  # OS-flagged injected input (remote desktop, ...)
    audit_max_mb: int = 10
    audit_backups: int = 5


_RANGES = {"sensitivity": (0.5, 2.0), "enrol_keystrokes": (200, 20000),
           "pause_minutes": (1, 480), "audit_max_mb": (1, 1000), "audit_backups": (1, 100)}
_CHOICES = {"action": ACTIONS, "injection_action": ACTIONS}


class PolicyError(ValueError):
    pass


def validate(key: str, value, source: str):
    """The value converted to the setting's type, or PolicyError naming key, value, source."""
    fields = {f.name: f for f in dataclasses.fields(Policy)}
    if key not in fields:
        raise PolicyError(f"{source}: unknown setting {key!r}; known: {', '.join(fields)}")
    default = fields[key].default
    where = f"{source}: {key} = {value!r}"
    if isinstance(default, bool):
        if isinstance(value, int) and value in (0, 1):  # registry DWORDs
            return bool(value)
        if not isinstance(value, bool):
            raise PolicyError(f"{where} is not true or false")
        return value
    if isinstance(default, tuple):
        if not (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
            raise PolicyError(f"{where} must be a command as a list of strings")
        return tuple(value)
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise PolicyError(f"{where} must be one of {', '.join(_CHOICES[key])}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{where} is not a number")
    low, high = _RANGES[key]
    if not low <= value <= high:
        raise PolicyError(f"{where} is outside {low}..{high}")
    return type(default)(value)


@dataclass(frozen=True)
class Settings:
    policy: Policy
    managed: frozenset[str] = frozenset()
    errors: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())


def merge(layers: list[tuple[str, dict, bool]]) -> Settings:
    """Apply (source, values, managed) layers in order over the defaults."""
    values, managed, errors, sources = {}, set(), [], []
    for source, layer, is_managed in layers:
        if layer:
            sources.append(source)
        for key, value in layer.items():
            if key in managed and not is_managed:
                continue
            try:
                values[key] = validate(key, value, source)
            except PolicyError as exc:
                errors.append(str(exc))
                continue
            if is_managed:
                managed.add(key)
    return Settings(Policy(**values), frozenset(managed), tuple(errors), tuple(sources))


def read_toml(path: Path) -> tuple[dict, list[str]]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), []
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"{path}: cannot read ({exc}); fix or remove the file"]


def _managed_layer() -> tuple[str, dict, list[str]]:
    if sys.platform == "win32":
        return "Windows policy", _read_registry(), []
    if sys.platform == "darwin":
        try:
            return str(MAC_POLICY), plistlib.loads(MAC_POLICY.read_bytes()), []
        except FileNotFoundError:
            return str(MAC_POLICY), {}, []
        except (OSError, plistlib.InvalidFileException) as exc:
            return str(MAC_POLICY), {}, [f"{MAC_POLICY}: cannot read ({exc})"]
    values, errors = read_toml(LINUX_POLICY)
    return str(LINUX_POLICY), values, errors


def _read_registry() -> dict:  # pragma: no cover - Windows only
    import winreg
    values = {}
    for hive in (winreg.HKEY_CURRENT_USER, winreg.HKEY_LOCAL_MACHINE):  # machine wins
        try:
            with winreg.OpenKey(hive, WINDOWS_KEY) as key:
                i = 0
                while True:
                    try:
                        name, value, kind = winreg.EnumValue(key, i)
                    except OSError:
                        break
                    if kind == winreg.REG_MULTI_SZ:
                        value = list(value)
                    elif kind == winreg.REG_SZ and name == "sensitivity":
                        value = float(value)
                    values[name] = value
                    i += 1
        except OSError:
            continue
    return values


def load(user_file: Path | None, managed: tuple[str, dict, list[str]] | None = None) -> Settings:
    """Settings from the user file and the OS's managed policy (or a given managed layer)."""
    user_values, errors = read_toml(user_file) if user_file else ({}, [])
    source, managed_values, managed_errors = managed if managed is not None else _managed_layer()
    settings = merge([(str(user_file), user_values, False), (source, managed_values, True)])
    return dataclasses.replace(settings, errors=tuple(errors + managed_errors) + settings.errors)
