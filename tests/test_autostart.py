"""Start at login: the XDG backend for real in tmp folders; the macOS plist, the Windows Run value
and logon task as generated artefacts, and their backends over tmp paths / a fake registry."""

from __future__ import annotations

import configparser
import json
import plistlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from agent.system import autostart
from agent.system.autostart import AutostartError

ARGV = ["/opt/cadence/bin/cadence", "run"]


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """XDG_CONFIG_HOME and XDG_CONFIG_DIRS in tmp_path; the machine dir read-only like /etc."""
    home, machine = tmp_path / "config", tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(machine))
    monkeypatch.setattr(autostart, "command", lambda: list(ARGV))
    if sys.platform.startswith("linux"):
        monkeypatch.setattr(sys, "platform", "linux")
    return SimpleNamespace(user=home / "autostart" / "cadence.desktop",
                           machine=machine / "autostart" / "cadence.desktop")


def _parse(path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser["Desktop Entry"]


def test_linux_enable_disable_status_per_user(xdg):
    state = autostart.status()
    assert state["enabled"] is False and state["managed"] is False and state["scope"] is None
    assert state["method"] == "xdg-autostart"

    autostart.enable()
    entry = _parse(xdg.user)
    assert entry["Type"] == "Application" and entry["X-GNOME-Autostart-enabled"] == "true"
    assert _split_exec(entry["Exec"]) == ARGV
    assert "Hidden" not in entry
    state = autostart.status()
    assert state == {**state, "enabled": True, "scope": "user", "managed": False,
                     "can_toggle": True, "path": str(xdg.user)}
    assert autostart.is_enabled()

    autostart.disable()
    assert not xdg.user.exists()
    assert autostart.status()["enabled"] is False


def test_linux_honours_xdg_config_home_default(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    backend = autostart.Linux(env={}, home=tmp_path)
    assert backend.user_file == tmp_path / ".config" / "autostart" / "cadence.desktop"
    assert backend.machine_files == [autostart.Path("/etc/xdg/autostart/cadence.desktop")]
    backend = autostart.Linux(env={"XDG_CONFIG_HOME": str(tmp_path / "c"),
                                   "XDG_CONFIG_DIRS": "/a:/b"}, home=tmp_path)
    assert backend.user_file == tmp_path / "c" / "autostart" / "cadence.desktop"
    assert [str(p) for p in backend.machine_files] == ["/a/autostart/cadence.desktop",
                                                       "/b/autostart/cadence.desktop"]


def test_linux_machine_entry_is_managed_and_user_can_opt_out(xdg):
    xdg.machine.parent.mkdir(parents=True)
    xdg.machine.write_text(autostart.desktop_entry(["/usr/bin/cadence", "run"]))
    xdg.machine.parent.chmod(0o555)  # like /etc/xdg/autostart for a user
    try:
        state = autostart.status()
        assert state["enabled"] and state["managed"] and state["scope"] == "machine"
        assert state["path"] == str(xdg.machine)
        assert "administrator" in state["detail"]

        autostart.disable()  # a user entry of the same name with Hidden=true
        entry = _parse(xdg.user)
        assert entry["Hidden"] == "true" and entry["X-GNOME-Autostart-enabled"] == "false"
        assert xdg.machine.exists()
        state = autostart.status()
        assert state["enabled"] is False and state["managed"] is True
        assert "turned off for this user" in state["detail"]

        assert autostart.toggle() is True  # enabling again removes the opt-out
        assert not xdg.user.exists()
        assert autostart.status()["scope"] == "machine"
    finally:
        xdg.machine.parent.chmod(0o755)


@pytest.mark.skipif(not hasattr(autostart.os, "geteuid") or autostart.os.geteuid() == 0,
                    reason="root can write a read-only directory")
def test_linux_machine_enable_without_root_says_so(xdg):
    xdg.machine.parent.mkdir(parents=True)
    xdg.machine.parent.chmod(0o555)
    try:
        with pytest.raises(AutostartError, match="needs root"):
            autostart.enable(per_machine=True)
    finally:
        xdg.machine.parent.chmod(0o755)


def test_linux_machine_enable_and_disable(xdg):
    autostart.enable(per_machine=True)
    assert _split_exec(_parse(xdg.machine)["Exec"]) == ARGV
    assert autostart.status()["managed"]
    autostart.disable(per_machine=True)
    assert not xdg.machine.exists() and not autostart.status()["enabled"]


def test_toggle_flips_per_user(xdg):
    assert autostart.toggle() is True and xdg.user.exists()
    assert autostart.toggle() is False and not xdg.user.exists()


def test_user_entry_disabled_by_gnome_key_is_off(xdg):
    xdg.user.parent.mkdir(parents=True)
    xdg.user.write_text(autostart.desktop_entry(ARGV).replace(
        "X-GNOME-Autostart-enabled=true", "X-GNOME-Autostart-enabled=false"))
    assert autostart.status()["enabled"] is False


@pytest.mark.parametrize("argv", [
    ["/usr/bin/cadence", "run"],
    ["/home/a b/.venv/bin/python", "-m", "agent", "run"],
    ["/opt/we\"ird$dir/ca`dence\\x", "run"],
    ["/opt/100%/cadence", "run"],
])
def test_exec_line_round_trips(tmp_path, argv):
    path = tmp_path / "cadence.desktop"
    path.write_text(autostart.desktop_entry(argv))
    exec_value = autostart.read_desktop_entry(path)["Exec"]
    # string-level unescape (\\ -> \), field codes (%% -> %), then the spec's quoting rules
    unescaped = exec_value.replace("\\\\", "\\").replace("%%", "%")
    assert _split_exec(unescaped) == argv


def _split_exec(line: str) -> list[str]:
    """The Desktop Entry spec's Exec splitting: spaces separate, "..." quotes, and inside
    quotes a backslash escapes one of " ` $ \\."""
    args, current, quoted, i, started = [], "", False, 0, False
    while i < len(line):
        c = line[i]
        if quoted and c == "\\" and line[i + 1] in '"`$\\':
            current += line[i + 1]
            i += 1
        elif c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if current or started:
                args.append(current)
            current, started = "", False
        else:
            current += c
        i += 1
    if current or started:
        args.append(current)
    return args


def test_command_is_runnable_from_this_environment():
    argv = autostart.command()
    assert argv[-1] == "run"
    done = subprocess.run([*argv[:-1], "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("cadence ")


def test_a_packages_launcher_is_the_command_while_it_exists(tmp_path, monkeypatch):
    launcher = tmp_path / "cadence"
    monkeypatch.setenv("CADENCE_LAUNCHER", str(launcher))
    assert autostart.command() != [str(launcher), "run"]          # not there: not used
    launcher.mkdir()
    assert autostart.command() != [str(launcher), "run"]          # a folder: not used
    launcher.rmdir()
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert autostart.command() == [str(launcher), "run"]
    monkeypatch.setenv("CADENCE_LAUNCHER", "cadence")             # relative: not used
    assert autostart.command()[0] != "cadence"


# -- macOS ---------------------------------------------------------------------------------------

def test_launch_agent_plist():
    job = autostart.launch_agent_plist([autostart.MAC_APP_EXE, "run"])
    job = plistlib.loads(plistlib.dumps(job))
    assert job["Label"] == "org.cadence.agent"
    assert job["ProgramArguments"] == [autostart.MAC_APP_EXE, "run"]
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}  # restart on crash, not after Quit
    assert job["LimitLoadToSessionType"] == "Aqua"


def test_macos_backend_on_tmp_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(autostart, "command", lambda: [autostart.MAC_APP_EXE, "run"])
    mac = autostart.MacOS(home=tmp_path / "home", machine_dir=tmp_path / "Library")
    assert mac.status()["enabled"] is False
    mac.enable()
    job = plistlib.loads(mac.user_file.read_bytes())
    assert job == autostart.launch_agent_plist([autostart.MAC_APP_EXE, "run"])
    assert mac.status() == {**mac.status(), "enabled": True, "scope": "user", "managed": False}
    mac.disable()
    assert not mac.user_file.exists()

    mac.enable(per_machine=True)
    state = mac.status()
    assert state["enabled"] and state["managed"] and not state["can_toggle"]
    mac.enable()  # a second job with the same label would clash
    assert not mac.user_file.exists()
    with pytest.raises(AutostartError, match="administrator"):
        mac.disable()
    mac.disable(per_machine=True)
    assert not mac.machine_file.exists()


# -- Windows -------------------------------------------------------------------------------------

def test_run_value_quotes_the_executable():
    assert autostart.run_value([r"C:\Program Files\Cadence\cadencew.exe", "run"]) == \
        r'"C:\Program Files\Cadence\cadencew.exe" run'
    assert autostart.run_value([r"C:\Cadence\cadence.exe", "run"]) == r'"C:\Cadence\cadence.exe" run'


def test_task_xml_is_a_logon_task_for_every_user():
    xml = autostart.task_xml([r"C:\Program Files\Cadence\cadencew.exe", "run"])
    root = ET.fromstring(xml.encode("utf-16"))
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    assert root.find("t:Triggers/t:LogonTrigger", ns) is not None
    assert root.find("t:Principals/t:Principal/t:GroupId", ns).text == "S-1-5-32-545"  # Users
    assert root.find("t:Principals/t:Principal/t:RunLevel", ns).text == "LeastPrivilege"
    # one instance per signed-in user: IgnoreNew would skip the second user on a terminal server
    assert root.find("t:Settings/t:MultipleInstancesPolicy", ns).text == "Parallel"
    assert root.find("t:Actions/t:Exec/t:Command", ns).text == \
        r"C:\Program Files\Cadence\cadencew.exe"
    assert root.find("t:Actions/t:Exec/t:Arguments", ns).text == "run"
    assert autostart.schtasks_create("t.xml") == ["schtasks", "/Create", "/TN", r"\Cadence\Agent",
                                                  "/XML", "t.xml", "/F"]


class FakeRegistry:
    def __init__(self):
        self.values = {}
        self.task = False

    def get(self, machine):
        return self.values.get(machine)

    def set(self, machine, value):
        if value is None:
            self.values.pop(machine, None)
        else:
            self.values[machine] = value

    def task_exists(self):
        return self.task


def test_windows_backend_with_a_fake_registry(monkeypatch):
    exe = r"C:\Program Files\Cadence\cadencew.exe"
    monkeypatch.setattr(autostart, "command", lambda: [exe, "run"])
    registry, calls = FakeRegistry(), []

    def run(argv):
        calls.append(argv)
        if argv[:2] == ["schtasks", "/Create"]:
            registry.task = True
        if argv[:2] == ["schtasks", "/Delete"]:
            registry.task = False
        return subprocess.CompletedProcess(argv, 0, "", "")

    win = autostart.Windows(registry=registry, run=run)
    assert win.status()["enabled"] is False
    win.enable()
    assert registry.values[False] == f'"{exe}" run'
    assert win.status() == {**win.status(), "enabled": True, "scope": "user", "managed": False}
    win.disable()
    assert False not in registry.values

    registry.values[True] = f'"{exe}" run'  # the MSI's HKLM Run value
    state = win.status()
    assert state["managed"] and state["scope"] == "machine" and not state["can_toggle"]
    with pytest.raises(AutostartError, match="administrator"):
        win.disable()
    win.disable(per_machine=True)
    assert True not in registry.values

    win.enable(per_machine=True)
    assert calls[-1][:2] == ["schtasks", "/Create"]
    assert win.status()["method"] == "scheduled-task"
    win.disable(per_machine=True)
    assert calls[-1] == autostart.schtasks_delete() and not win.status()["enabled"]


def test_cli_autostart(xdg, capsys):
    from agent.cli import main
    assert main(["autostart", "enable"]) == 0
    assert "on" in capsys.readouterr().out and xdg.user.exists()
    assert main(["autostart", "status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["enabled"] and state["scope"] == "user" and state["method"] == "xdg-autostart"
    assert main(["autostart", "disable"]) == 0
    assert "off" in capsys.readouterr().out and not xdg.user.exists()
