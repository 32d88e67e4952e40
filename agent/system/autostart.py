"""Start at login: one API, one small backend per OS.

``enable(per_machine=False)``, ``disable(per_machine=False)``, ``status() -> dict``, and for the
tray's "Start at login" toggle ``is_enabled()`` and ``toggle()``.

- Linux: an XDG autostart entry ``cadence.desktop``, per user in ``$XDG_CONFIG_HOME/autostart``
  (default ``~/.config/autostart``), per machine in ``$XDG_CONFIG_DIRS/autostart`` (default
  ``/etc/xdg/autostart``, installed by the .deb). A machine entry is the administrator's: users
  cannot change it, so ``status`` reports it as managed; a user may still opt out with a user
  entry of the same name carrying ``Hidden=true`` (the spec's way to hide a system entry).
- macOS: a LaunchAgent ``org.cadence.agent.plist`` (``RunAtLoad``; ``KeepAlive`` restarts it
  after a crash but not after Quit), in ``~/Library/LaunchAgents`` or, per machine,
  ``/Library/LaunchAgents`` (installed by the .pkg; managed).
- Windows: per user the ``HKCU`` Run key (value ``Cadence`` = ``"<exe>" run``); per machine the
  ``HKLM`` Run key written by the MSI (managed), or a logon scheduled task for every user
  (``schtasks /Create /XML``) when enabled per machine from the command line.

The artefacts (desktop entry, plist, Run value, task XML) are pure functions, tested on any OS;
the OS calls around them are thin. Errors a user can act on raise :class:`AutostartError`.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

NAME = "Cadence"
LABEL = "org.cadence.agent"           # launchd label = bundle id
DESKTOP_FILE = "cadence.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = NAME
TASK_NAME = r"\Cadence\Agent"
COMMENT = "Recognises how you type, never what you type"


class AutostartError(RuntimeError):
    """Start at login cannot be changed here; the message says why and what to do."""


# -- the command that starts the agent -------------------------------------------------------------

def command() -> list[str]:
    """argv that starts this installation's agent: ``[<cadence executable>, "run"]``. A
    package's launcher names itself in ``CADENCE_LAUNCHER`` (the .deb's ``/usr/bin/cadence``,
    which runs the agent isolated from the user's Python settings); it wins while it exists."""
    launcher = os.environ.get("CADENCE_LAUNCHER", "")
    if os.path.isabs(launcher) and os.path.isfile(launcher) and os.access(launcher, os.X_OK):
        return [launcher, "run"]
    if getattr(sys, "frozen", False):  # PyInstaller: the windowed twin on Windows, if shipped
        exe = Path(sys.executable)
        windowed = exe.with_name("cadencew.exe")
        return [str(windowed if windowed.exists() else exe), "run"]
    here = Path(sys.executable).parent
    for candidate in (here / "cadence", here / "cadence.exe", here / "Scripts" / "cadence.exe"):
        if candidate.exists():
            return [str(candidate), "run"]
    found = shutil.which("cadence")
    if found:
        return [found, "run"]
    return [sys.executable, "-m", "agent", "run"]


# -- Linux: XDG autostart ------------------------------------------------------------------------

_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def _exec_arg(arg: str) -> str:
    """One Exec argument, quoted per the Desktop Entry spec (then escaped as a string value)."""
    arg = arg.replace("%", "%%")
    if arg and not (_EXEC_RESERVED & set(arg)):
        return arg
    quoted = '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'
    return quoted.replace("\\", "\\\\")


def desktop_entry(argv: list[str], *, hidden: bool = False) -> str:
    """The text of ``cadence.desktop`` starting ``argv``; ``hidden`` makes it an opt-out. With
    ``TryExec`` the session skips the entry once the program is gone (a package removed, its
    conffile kept)."""
    lines = ["[Desktop Entry]", "Type=Application", f"Name={NAME}",
             "GenericName=Behavioural authentication", f"Comment={COMMENT}",
             "Exec=" + " ".join(_exec_arg(a) for a in argv), "Terminal=false",
             "Categories=Security;System;", "StartupNotify=false",
             f"X-GNOME-Autostart-enabled={'false' if hidden else 'true'}"]
    if Path(argv[0]).is_absolute():
        lines.insert(6, "TryExec=" + argv[0].replace("\\", "\\\\"))   # a string value
    if hidden:
        lines.append("Hidden=true")
    return "\n".join(lines) + "\n"


def read_desktop_entry(path: Path) -> dict[str, str] | None:
    """The ``[Desktop Entry]`` keys of a file, or None if it is missing or unreadable."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    if not parser.has_section("Desktop Entry"):
        return None
    return dict(parser["Desktop Entry"])


def entry_active(entry: dict[str, str] | None) -> bool:
    """Whether a desktop session would start this entry."""
    return (entry is not None and entry.get("Hidden", "false").lower() != "true"
            and entry.get("X-GNOME-Autostart-enabled", "true").lower() != "false")


class Linux:
    method = "xdg-autostart"

    def __init__(self, env: dict[str, str] | None = None, home: Path | None = None) -> None:
        env = os.environ if env is None else env
        home = Path.home() if home is None else home
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        dirs = [d for d in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
        self.user_file = config_home / "autostart" / DESKTOP_FILE
        self.machine_files = [Path(d) / "autostart" / DESKTOP_FILE for d in dirs]

    def _machine(self) -> tuple[Path | None, dict | None]:
        for path in self.machine_files:  # the first (most important) directory wins
            entry = read_desktop_entry(path)
            if entry is not None:
                return path, entry
        return None, None

    def enable(self, per_machine: bool = False) -> None:
        if per_machine:
            _write(self.machine_files[0], desktop_entry(command()).encode(),
                   "needs root: run `sudo cadence autostart enable --machine`")
            return
        _, machine = self._machine()
        if entry_active(machine):  # the administrator's entry starts it: drop the user opt-out
            self.user_file.unlink(missing_ok=True)
            return
        _write(self.user_file, desktop_entry(command()).encode())

    def disable(self, per_machine: bool = False) -> None:
        if per_machine:
            for path in self.machine_files:
                if path.exists():
                    try:
                        path.unlink()
                    except PermissionError as exc:
                        raise AutostartError(f"cannot remove {path}: needs root") from exc
            return
        path, machine = self._machine()
        if entry_active(machine):  # a user entry of the same name with Hidden=true hides it
            _write(self.user_file, desktop_entry(command(), hidden=True).encode())
        else:
            self.user_file.unlink(missing_ok=True)

    def status(self) -> dict:
        machine_path, machine = self._machine()
        user = read_desktop_entry(self.user_file)
        managed = machine is not None
        if user is not None:  # a user entry of the same name overrides the machine's
            enabled, scope, path = entry_active(user), "user", self.user_file
        elif managed:
            enabled, scope, path = entry_active(machine), "machine", machine_path
        else:
            enabled, scope, path = False, None, self.user_file
        detail = ("started at login for every user by the administrator"
                  if managed and enabled and scope == "machine" else
                  "turned off for this user (the administrator's entry is hidden)"
                  if managed and not enabled else
                  "starts at login for this user" if enabled else "does not start at login")
        source = user if user is not None else machine
        return {"enabled": enabled, "scope": scope, "managed": managed, "can_toggle": True,
                "method": self.method, "path": str(path),
                "command": source.get("Exec") if source else None, "detail": detail}


# -- macOS: LaunchAgent --------------------------------------------------------------------------

MAC_APP_EXE = "/Applications/Cadence.app/Contents/MacOS/cadence"


def launch_agent_plist(argv: list[str]) -> dict:
    """The LaunchAgent: start at login in the GUI session, restart after a crash, not after Quit."""
    return {
        "Label": LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "LimitLoadToSessionType": "Aqua",
        "ProcessType": "Interactive",
        "ThrottleInterval": 30,
        "AssociatedBundleIdentifiers": [LABEL],
    }


class MacOS:
    method = "launchagent"

    def __init__(self, home: Path | None = None,
                 machine_dir: Path = Path("/Library/LaunchAgents")) -> None:
        home = Path.home() if home is None else home
        self.user_file = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        self.machine_file = machine_dir / f"{LABEL}.plist"

    def enable(self, per_machine: bool = False) -> None:
        if not per_machine and self.machine_file.exists():
            return  # the administrator's LaunchAgent starts it; a second one would clash
        path = self.machine_file if per_machine else self.user_file
        # Written only: launchd loads it at the next login. Loading it now would start a
        # second agent beside the running one.
        _write(path, plistlib.dumps(launch_agent_plist(command())),
               "needs root: run `sudo cadence autostart enable --machine`")

    def disable(self, per_machine: bool = False) -> None:
        if per_machine:
            _unlink(self.machine_file)
            return
        self.user_file.unlink(missing_ok=True)
        if self.machine_file.exists():
            raise AutostartError(f"{self.machine_file} starts Cadence for every user; it is "
                                 "managed by your administrator")

    def status(self) -> dict:
        managed = self.machine_file.exists()
        path = self.machine_file if managed else self.user_file
        try:
            job = plistlib.loads(path.read_bytes())
        except (OSError, plistlib.InvalidFileException, ValueError):
            job = None
        enabled = bool(job) and not job.get("Disabled", False)
        return {"enabled": enabled, "scope": ("machine" if managed else "user") if job else None,
                "managed": managed, "can_toggle": not managed, "method": self.method,
                "path": str(path), "command": job.get("ProgramArguments") if job else None,
                "detail": ("started at login for every user by the administrator" if managed
                           else "starts at login for this user" if enabled
                           else "does not start at login")}


# -- Windows: Run key, logon task ----------------------------------------------------------------

def run_value(argv: list[str]) -> str:
    """The Run-key command line: the executable quoted, then its arguments."""
    rest = subprocess.list2cmdline(argv[1:])
    return f'"{argv[0]}"' + (f" {rest}" if rest else "")


def task_xml(argv: list[str]) -> str:
    """A Task Scheduler task starting ``argv`` at every user's logon, as that user, unelevated.
    Instances run in parallel: one runs per signed-in user (a terminal server, a switched user),
    and the agent's own instance lock keeps it to one per session."""
    args = subprocess.list2cmdline(argv[1:])
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo><Description>{escape(NAME)}: {escape(COMMENT)}</Description></RegistrationInfo>
  <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>
  <Principals>
    <Principal id="Author">
      <GroupId>S-1-5-32-545</GroupId>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>Parallel</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure><Interval>PT1M</Interval><Count>3</Count></RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec><Command>{escape(argv[0])}</Command><Arguments>{escape(args)}</Arguments></Exec>
  </Actions>
</Task>
"""


def schtasks_create(xml_path: str) -> list[str]:
    return ["schtasks", "/Create", "/TN", TASK_NAME, "/XML", xml_path, "/F"]


def schtasks_delete() -> list[str]:
    return ["schtasks", "/Delete", "/TN", TASK_NAME, "/F"]


class WinRegistry:  # pragma: no cover - Windows only
    """The two Run keys through winreg; tests pass a dict-backed stand-in."""

    def get(self, machine: bool) -> str | None:
        import winreg
        hive = winreg.HKEY_LOCAL_MACHINE if machine else winreg.HKEY_CURRENT_USER
        try:
            with winreg.OpenKey(hive, RUN_KEY) as key:
                return str(winreg.QueryValueEx(key, RUN_VALUE)[0])
        except OSError:
            return None

    def set(self, machine: bool, value: str | None) -> None:
        import winreg
        hive = winreg.HKEY_LOCAL_MACHINE if machine else winreg.HKEY_CURRENT_USER
        with winreg.CreateKeyEx(hive, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            if value is None:
                try:
                    winreg.DeleteValue(key, RUN_VALUE)
                except FileNotFoundError:
                    pass
            else:
                winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, value)

    def task_exists(self) -> bool:
        return subprocess.run(["schtasks", "/Query", "/TN", TASK_NAME], capture_output=True,
                              check=False).returncode == 0


class Windows:
    method = "run-key"

    def __init__(self, registry=None, run=None) -> None:
        self.registry = WinRegistry() if registry is None else registry
        self.run = run or (lambda argv: subprocess.run(argv, capture_output=True, text=True,
                                                       check=False))

    def enable(self, per_machine: bool = False) -> None:
        if per_machine:
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                xml = Path(tmp) / "cadence-task.xml"
                xml.write_text(task_xml(command()), encoding="utf-16")
                done = self.run(schtasks_create(str(xml)))
            if done.returncode != 0:
                raise AutostartError("schtasks could not create the logon task (run as an "
                                     f"administrator): {(done.stderr or '').strip()}")
            return
        if self._machine_entry():
            return
        self.registry.set(False, run_value(command()))

    def disable(self, per_machine: bool = False) -> None:
        if per_machine:
            if self.registry.task_exists():
                done = self.run(schtasks_delete())
                if done.returncode != 0:
                    raise AutostartError("schtasks could not delete the logon task (run as "
                                         f"an administrator): {(done.stderr or '').strip()}")
            if self.registry.get(True) is not None:
                try:
                    self.registry.set(True, None)
                except PermissionError as exc:
                    raise AutostartError("removing the HKLM Run value needs an "
                                         "administrator") from exc
            return
        self.registry.set(False, None)
        if self._machine_entry():
            raise AutostartError("Cadence is started at login for every user by the "
                                 "installation; it is managed by your administrator")

    def _machine_entry(self) -> str | None:
        value = self.registry.get(True)
        if value is not None:
            return value
        return TASK_NAME if self.registry.task_exists() else None

    def status(self) -> dict:
        machine = self._machine_entry()
        user = self.registry.get(False)
        value = machine or user
        scope = "machine" if machine else "user" if user else None
        return {"enabled": value is not None, "scope": scope, "managed": machine is not None,
                "can_toggle": machine is None,
                "method": "scheduled-task" if machine == TASK_NAME else self.method,
                "path": (TASK_NAME if machine == TASK_NAME else
                         ("HKLM\\" if machine else "HKCU\\") + RUN_KEY + "\\" + RUN_VALUE),
                "command": value if value != TASK_NAME else None,
                "detail": ("started at login for every user by the administrator" if machine
                           else "starts at login for this user" if user
                           else "does not start at login")}


# -- shared helpers and the module API -----------------------------------------------------------

def _write(path: Path, data: bytes, permission_hint: str = "") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except PermissionError as exc:
        raise AutostartError(f"cannot write {path}" + (f": {permission_hint}"
                                                       if permission_hint else "")) from exc


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except PermissionError as exc:
        raise AutostartError(f"cannot remove {path}: needs root") from exc


def backend():
    """This OS's backend (a fresh one: it reads the environment when called)."""
    if sys.platform == "win32":
        return Windows()
    if sys.platform == "darwin":
        return MacOS()
    return Linux()


def enable(per_machine: bool = False) -> None:
    """Start the agent at login, for this user or (as administrator) for every user."""
    backend().enable(per_machine)


def disable(per_machine: bool = False) -> None:
    """Stop starting at login (for this user: also opts out of a machine entry where possible)."""
    backend().disable(per_machine)


def status() -> dict:
    """``enabled``, ``scope`` (user/machine/None), ``managed`` (a machine entry exists),
    ``can_toggle`` (the user can change it), ``method``, ``path``, ``command``, ``detail``."""
    return backend().status()


def is_enabled() -> bool:
    return bool(status()["enabled"])


def toggle() -> bool:
    """Flip start at login for this user; the new state (the tray's check mark)."""
    if is_enabled():
        disable()
    else:
        enable()
    return is_enabled()
