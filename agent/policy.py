"""Settings: built-in defaults < user settings < managed (MDM) policy, every value validated.

Sources: the user's ``settings.toml`` in the platformdirs config folder; managed policy from
``/etc/cadence/policy.toml`` (Linux), the managed preferences of ``org.cadence.agent``
(macOS configuration profile) or ``HKLM``/``HKCU\\SOFTWARE\\Policies\\Cadence\\Agent`` (Windows).
Managed keys win and are reported as locked. A bad value is named with its key, source and
what is allowed, reported, never fatal: a bad user value is ignored (the default stays); a bad
managed value keeps the last valid managed value (see :func:`load`) or, without one, the built-in
default, and the key stays managed, so a typo in the fleet's policy never hands it to the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import plistlib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

BUNDLE_ID = "org.cadence.agent"
LINUX_POLICY = Path("/etc/cadence/policy.toml")
MAC_POLICY = Path("/Library/Managed Preferences") / f"{BUNDLE_ID}.plist"
WINDOWS_KEY = r"SOFTWARE\Policies\Cadence\Agent"

ACTIONS = ("observe", "alert", "lock")

SINK_TYPES = ("syslog", "webhook", "splunk_hec")
TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
              "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
              **{f"local{n}": 16 + n for n in range(8)}}


@dataclass(frozen=True)
class SinkConfig:
    """One SIEM destination (an entry of ``sinks``); see :mod:`agent.actions.sinks`."""
    type: str                             # syslog | webhook | splunk_hec
    name: str = ""                        # names its spool folder; default: type + a hash
    host: str = ""                        # syslog collector
    port: int = 0                         # syslog: default 514 (udp, tcp) or 6514 (tls)
    transport: str = "tcp"                # syslog: udp | tcp (RFC 6587 octet counting) | tls
    facility: str = "authpriv"            # syslog facility name
    url: str = ""                         # webhook / splunk_hec: https://...
    ca_file: str = ""                     # tls / https: CA bundle; default: the system's store
    token: str = field(default="", repr=False)  # never shown in repr, errors or logs
    token_env: str = ""                   # ... or the name of an environment variable holding it
    token_file: str = ""                  # ... or a file holding it
    index: str = ""                       # splunk_hec only
    source: str = "cadence"               # splunk_hec only
    sourcetype: str = "cadence:alert"     # splunk_hec only


@dataclass(frozen=True)
class Policy:
    action: str = "lock"                  # on an impostor verdict: observe (log) | alert | lock
    sensitivity: float = 1.0              # 0.5 (fewer, later alerts) .. 2.0 (faster locks)
    enrol_keystrokes: int = 1000          # typing needed before protecting (plus quality check)
    allow_pause: bool = True
    pause_minutes: int = 15
    allow_quit: bool = True
    locker_command: tuple[str, ...] = ()  # Linux locker, tried first when set, e.g. ["i3lock", "-n"]
    injection_action: str = "lock"        # on a keystroke-injection verdict
    injection_allow_software: bool = True  # OS-flagged injected input (remote desktop, ...)
    injection_sensitivity: str = "balanced"  # relaxed | balanced | strict (see features/injection)
    injection_new_keyboard: bool = True   # judge a just-attached keyboard's first keys strictly
    injection_allow_keyboards: tuple[str, ...] = ()  # names (patterns) of keyboards let through
    audit_max_mb: int = 10
    audit_backups: int = 5
    retention_days: int = 90              # rotated audit files older than this are deleted
    sinks: tuple[SinkConfig, ...] = ()    # SIEM destinations: [[sinks]] tables, see SinkConfig
    heartbeat_minutes: int = 15           # a heartbeat to every sink, so a silenced agent shows
    spool_max_records: int = 10000        # per sink while its collector is down; oldest dropped


_RANGES = {"sensitivity": (0.5, 2.0), "enrol_keystrokes": (200, 20000),
           "pause_minutes": (1, 480), "audit_max_mb": (1, 1000), "audit_backups": (1, 100),
           "retention_days": (1, 3650),
           "heartbeat_minutes": (1, 1440), "spool_max_records": (100, 1_000_000)}
_CHOICES = {"action": ACTIONS, "injection_action": ACTIONS,
            "injection_sensitivity": ("relaxed", "balanced", "strict")}
# list settings: (what it must be, may it be empty)
_LISTS = {"locker_command": ("a command as a list of strings", False),
          "injection_allow_keyboards": ("a list of keyboard names or patterns, such as "
                                        "[\"Yubico YubiKey*\"]", True)}


_FIELDS = {f.name: f for f in dataclasses.fields(Policy)}


class PolicyError(ValueError):
    pass


def validate(key: str, value, source: str):
    """The value converted to the setting's type, or PolicyError naming key, value, source."""
    if key not in _FIELDS:
        raise PolicyError(f"{source}: unknown setting {key!r}; known: {', '.join(_FIELDS)}")
    default = _FIELDS[key].default
    if key == "sinks":
        sinks, problems = validate_sinks(value, source)
        if problems:
            raise PolicyError("; ".join(problems))
        return sinks
    where = f"{source}: {key} = {value!r}"
    if isinstance(default, bool):
        if isinstance(value, int) and value in (0, 1):  # registry DWORDs
            return bool(value)
        if not isinstance(value, bool):
            raise PolicyError(f"{where} is not true or false")
        return value
    if isinstance(default, tuple):
        what, may_be_empty = _LISTS[key]
        if not (isinstance(value, (list, tuple)) and (value or may_be_empty)
                and all(isinstance(v, str) and v for v in value)):
            raise PolicyError(f"{where} must be {what}")
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
    if isinstance(default, int) and value != int(value):
        raise PolicyError(f"{where} is not a whole number")
    return type(default)(value)


_SINK_KEYS = {"syslog": {"type", "name", "host", "port", "transport", "facility", "ca_file"},
              "webhook": {"type", "name", "url", "ca_file", "token", "token_env", "token_file"}}
_SINK_KEYS["splunk_hec"] = _SINK_KEYS["webhook"] | {"index", "source", "sourcetype"}
_SINK_NAME = re.compile(r"(?!\.+\Z)[A-Za-z0-9_.-]{1,40}")  # a spool folder: not . or ..
_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")
_HEC_FIELD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
TOKEN = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no space: fit for a header
# (is it valid, what it must hold): for messages that never show the value, as it may be a token
_TOKEN_SETTINGS = {
    "token": (TOKEN.fullmatch, "a token (printable ASCII, no spaces)"),
    "token_env": (_ENV_NAME.fullmatch, ("the name of an environment variable that holds the "
                                        "token (letters, digits and _), not the token itself")),
    "token_file": (os.path.isabs, "the full path of a file that holds the token, not the token")}


def redact_url(url: str) -> str:
    """A URL fit for messages and logs: no user info, no query (webhook URLs often hold a
    secret there)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?<hidden>" if parts.query else "")


def _sink(entry, where: str) -> SinkConfig:
    """One ``sinks`` entry as a SinkConfig, or PolicyError naming the entry's key and value."""
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table with a type ({', '.join(SINK_TYPES)})")
    kind = entry.get("type")
    if kind not in SINK_TYPES:
        raise PolicyError(f"{where}.type = {kind!r} must be one of {', '.join(SINK_TYPES)}")
    unknown = sorted(str(k) for k in set(entry) - _SINK_KEYS[kind])
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for a {kind} "
                          f"sink; known: {', '.join(sorted(_SINK_KEYS[kind]))}")

    def text(key, pattern=None, allowed=None):
        value = entry.get(key, "")
        if key in _TOKEN_SETTINGS:
            valid, what = _TOKEN_SETTINGS[key]
            if not isinstance(value, str) or (value and not valid(value)):
                raise PolicyError(f"{where}.{key} = <hidden> must be {what}")
            return value
        if not isinstance(value, str):
            raise PolicyError(f"{where}.{key} = {value!r} is not a string")
        if allowed and value not in allowed:
            raise PolicyError(f"{where}.{key} = {value!r} must be one of {', '.join(allowed)}")
        if pattern and value and not pattern.fullmatch(value):
            raise PolicyError(f"{where}.{key} = {value!r} is not a valid {key.replace('_', ' ')}")
        return value

    values = {"type": kind, "name": text("name", _SINK_NAME), "ca_file": text("ca_file")}
    if kind == "syslog":
        values["host"] = text("host", _HOST)
        if not values["host"]:
            raise PolicyError(f"{where}: a syslog sink needs a host")
        values["transport"] = text("transport", allowed=TRANSPORTS) if "transport" in entry \
            else SinkConfig.transport
        values["facility"] = text("facility", allowed=tuple(FACILITIES)) if "facility" in entry \
            else SinkConfig.facility
        port = entry.get("port", DEFAULT_PORTS[values["transport"]])
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise PolicyError(f"{where}.port = {port!r} must be a port number 1..65535")
        values["port"] = port
        if values["ca_file"] and values["transport"] != "tls":
            raise PolicyError(f"{where}.ca_file only applies to transport = \"tls\"")
        destination = f"{values['transport']}://{values['host']}:{port}"
    else:
        url = text("url")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise PolicyError(f"{where}.url = {redact_url(url)!r} is not a valid URL") from None
        if parts.scheme != "https" or not parts.hostname:
            raise PolicyError(f"{where}.url = {redact_url(url)!r} must be an https:// URL")
        if "@" in parts.netloc:
            raise PolicyError(f"{where}.url must not hold user:password; use token instead")
        values["url"] = destination = url
        for key in _TOKEN_SETTINGS:
            values[key] = text(key)
        given = [k for k in ("token", "token_env", "token_file") if values[k]]
        if len(given) > 1:
            raise PolicyError(f"{where}: give only one of token, token_env, token_file")
        if kind == "splunk_hec":
            if not given:
                raise PolicyError(f"{where}: a splunk_hec sink needs token, token_env or "
                                  "token_file (the HEC token)")
            for key in ("index", "source", "sourcetype"):
                if key in entry:
                    values[key] = text(key, _HEC_FIELD)
    if not values["name"]:
        digest = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:10]
        values["name"] = f"{kind}-{digest}"
    return SinkConfig(**values)


def validate_sinks(value, source: str) -> tuple[tuple[SinkConfig, ...], list[str]]:
    """The usable entries of a ``sinks`` value, and one message per bad entry (skipped).

    ``value`` is a list of tables (TOML ``[[sinks]]``, a plist array of dicts) or, from the
    Windows registry, a JSON string holding one. A token's value is never put in a message.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise PolicyError(f"{source}: sinks is a string but not JSON for a list of "
                              "tables") from None
    if not isinstance(value, (list, tuple)):
        raise PolicyError(f"{source}: sinks must be a list of tables ([[sinks]] in TOML), "
                          f"not a {type(value).__name__}")
    sinks, problems, names = [], [], set()
    for i, entry in enumerate(value):
        where = f"{source}: sinks[{i}]"
        try:
            sink = entry if isinstance(entry, SinkConfig) else _sink(entry, where)
        except PolicyError as exc:
            problems.append(f"{exc}; this sink is skipped")
            continue
        if sink.name in names:
            problems.append(f"{where}.name = {sink.name!r} is used twice; this sink is skipped")
            continue
        names.add(sink.name)
        sinks.append(sink)
    return tuple(sinks), problems


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
                if key == "sinks":  # a bad entry is reported and skipped; the others still work
                    values[key], problems = validate_sinks(value, source)
                    errors.extend(problems)
                else:
                    values[key] = validate(key, value, source)
            except PolicyError as exc:
                errors.append(str(exc))
                if is_managed and key in _FIELDS:  # the built-in default, still managed
                    values.pop(key, None)
                    managed.add(key)
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
        return {}, [_unreadable(path, exc)]


def read_plist(path: Path) -> tuple[dict, list[str]]:
    """Managed preferences (a property list of settings), as read_toml reads a TOML file."""
    try:
        values = plistlib.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [_unreadable(path, exc)]
    except ExpatError as exc:  # its text only says where: "not well-formed ...: line 3, ..."
        return {}, [_unreadable(path, f"not a valid property list: {exc}")]
    except Exception:  # noqa: BLE001 - ValueError, AttributeError, ...: their text shows values
        return {}, [_unreadable(path, "not a valid property list")]
    if not isinstance(values, dict):
        return {}, [_unreadable(path, "its root is not a dictionary of settings")]
    return values, []


def _unreadable(path: Path, why: object) -> str:
    return f"{path}: cannot read ({why}); fix or remove the file"


def _managed_layer() -> tuple[str, dict, list[str]]:
    if sys.platform == "win32":
        return "Windows policy", _read_registry(), []
    if sys.platform == "darwin":
        values, errors = read_plist(MAC_POLICY)
        return str(MAC_POLICY), values, errors
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
                        try:
                            value = float(value)
                        except ValueError:
                            pass  # validate() names the bad value
                    values[name] = value
                    i += 1
        except OSError:
            continue
    return values


def load(user_file: Path | None, managed: tuple[str, dict, list[str]] | None = None,
         last_good: Path | None = None) -> Settings:
    """Settings from the user file and the OS's managed policy (or a given managed layer).

    With ``last_good`` (a file in the agent's data folder), a managed value that is invalid now,
    or a managed policy that cannot be read at all, keeps the last value that was valid (without
    one, a bad managed value is the built-in default, see :func:`merge`), so a typo in the
    fleet's policy never hands a setting back to the user; the error is reported."""
    user_values, errors = read_toml(user_file) if user_file else ({}, [])
    source, managed_values, managed_errors = managed if managed is not None else _managed_layer()
    if last_good is not None:
        managed_values, kept = _keep_last_good(dict(managed_values), bool(managed_errors),
                                               last_good)
        managed_errors = list(managed_errors) + kept
    settings = merge([(str(user_file), user_values, False), (source, managed_values, True)])
    return dataclasses.replace(settings, errors=tuple(errors + managed_errors) + settings.errors)


def _keep_last_good(values: dict, unreadable: bool, path: Path) -> tuple[dict, list[str]]:
    try:
        good = json.loads(path.read_text(encoding="utf-8"))
        good = good if isinstance(good, dict) else {}
    except (OSError, ValueError):
        good = {}
    valid, notes = {}, []
    for key, value in list(values.items()):
        try:
            if key == "sinks":
                _, problems = validate_sinks(value, "managed policy")
                if problems:
                    raise PolicyError(problems[0])
            else:
                validate(key, value, "managed policy")
            valid[key] = value
        except PolicyError as exc:
            if key in good:
                values[key] = valid[key] = good[key]
                notes.append(f"{exc}; kept the last valid value")
    if unreadable:
        for key, value in good.items():
            values.setdefault(key, value)
        if good:
            notes.append("managed policy unreadable: kept the last valid managed policy")
    elif valid != good:
        try:
            from agent.system.files import write_private
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, json.dumps(valid, default=list).encode())
        except (OSError, TypeError):
            pass
    return values, notes
