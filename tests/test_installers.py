"""The installers' artefacts: plists and the configuration profile (plistlib), desktop entries
(configparser), ADMX/ADML and WiX (XML), the MSI with wixl where installed, and the .deb built
by scripts/build-deb, unpacked and (as root in a container or CI) installed, run and purged.

The .deb test is the slow one (a pip install of the agent's stack from PyPI, ~0.5 GB unpacked,
1-3 minutes with a warm pip cache); it stays in the suite.
"""

from __future__ import annotations

import configparser
import dataclasses
import fcntl
import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent import __version__, policy
from agent.system import autostart

REPO = Path(__file__).resolve().parent.parent
INSTALLERS = REPO / "installers"
POLICY_KEYS = {f.name for f in dataclasses.fields(policy.Policy)}
# meaningless on macOS (an empty command is invalid; macOS hooks cannot tell keyboards apart)
LINUX_ONLY = {"locker_command", "injection_allow_keyboards"}
GPO = "{http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions}"
WIX = "{http://schemas.microsoft.com/wix/2006/wi}"


# -- macOS ---------------------------------------------------------------------------------------

def _plist(name: str) -> dict:
    return plistlib.loads((INSTALLERS / "macos" / name).read_bytes())


def test_launch_agent_plist_is_the_one_autostart_writes():
    job = _plist("org.cadence.agent.plist")
    assert job == autostart.launch_agent_plist([autostart.MAC_APP_EXE, "run"])
    assert job["Label"] == policy.BUNDLE_ID and job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["LimitLoadToSessionType"] == "Aqua"


@pytest.fixture(scope="module")
def profile() -> dict:
    return _plist("cadence.mobileconfig")


def _payloads(profile: dict) -> dict[str, dict]:
    return {p["PayloadType"]: p for p in profile["PayloadContent"]}


def test_mobileconfig_payload_keys(profile):
    payloads = [profile, *profile["PayloadContent"]]
    for payload in payloads:
        for key in ("PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion"):
            assert key in payload, (payload.get("PayloadType"), key)
        assert payload["PayloadVersion"] == 1
        assert str(uuid.UUID(payload["PayloadUUID"])).upper() == payload["PayloadUUID"]
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadScope"] == "System"  # device level: /Library/Managed Preferences
    assert len({p["PayloadUUID"] for p in payloads}) == len(payloads)
    assert len({p["PayloadIdentifier"] for p in payloads}) == len(payloads)
    assert set(_payloads(profile)) == {"com.apple.ManagedClient.preferences",
                                       "com.apple.TCC.configuration-profile-policy",
                                       "com.apple.servicemanagement"}


def test_mobileconfig_managed_preferences_are_valid_policy(profile):
    domain = _payloads(profile)["com.apple.ManagedClient.preferences"]["PayloadContent"]
    settings = domain[policy.BUNDLE_ID]["Forced"][0]["mcx_preference_settings"]
    assert set(settings) == POLICY_KEYS - LINUX_ONLY
    merged = policy.merge([("mobileconfig", settings, True)])
    assert merged.errors == ()
    assert merged.policy == policy.Policy()  # the template enforces the defaults
    assert merged.managed == frozenset(settings)


def test_mobileconfig_privacy_and_login_item(profile):
    payloads = _payloads(profile)
    services = payloads["com.apple.TCC.configuration-profile-policy"]["Services"]
    team = payloads["com.apple.servicemanagement"]["Rules"]
    team_id = next(r["RuleValue"] for r in team if r["RuleType"] == "TeamIdentifier")
    for service in ("Accessibility", "ListenEvent"):
        (entry,) = services[service]
        assert entry["Identifier"] == policy.BUNDLE_ID and entry["IdentifierType"] == "bundleID"
        assert f'identifier "{policy.BUNDLE_ID}"' in entry["CodeRequirement"]
        assert f'subject.OU] = "{team_id}"' in entry["CodeRequirement"]
    assert services["Accessibility"][0]["Allowed"] is True
    listen = services["ListenEvent"][0]  # MDM can only deny Input Monitoring
    assert listen["Authorization"] == "AllowStandardUserToSetSystemService"
    assert "Allowed" not in listen
    rules = {(r["RuleType"], r["RuleValue"]) for r in team}
    assert ("Label", autostart.LABEL) in rules
    assert ("BundleIdentifier", policy.BUNDLE_ID) in rules


def test_macos_scripts_parse():
    for script in ("build-pkg.sh", "uninstall.sh", "scripts/preinstall", "scripts/postinstall"):
        path = INSTALLERS / "macos" / script
        assert os.access(path, os.X_OK), script
        shell = "bash" if path.read_text().startswith("#!/bin/bash") else "sh"
        subprocess.run([shell, "-n", str(path)], check=True)


# -- Linux files ---------------------------------------------------------------------------------

def _desktop(path: Path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return dict(parser["Desktop Entry"])


def test_machine_desktop_entry():
    entry = _desktop(INSTALLERS / "linux" / "cadence.desktop")
    assert entry["Type"] == "Application" and entry["Exec"] == "/usr/bin/cadence run"
    assert entry["X-GNOME-Autostart-enabled"] == "true" and "Hidden" not in entry
    assert entry["TryExec"] == "/usr/bin/cadence"   # after apt remove (conffile kept): skipped
    generated = autostart.desktop_entry(["/usr/bin/cadence", "run"])
    assert (INSTALLERS / "linux" / "cadence.desktop").read_text() == generated


def test_policy_example_names_every_key_and_is_valid_uncommented():
    text = (INSTALLERS / "linux" / "policy.toml.example").read_text()
    uncommented = re.sub(r"(?m)^#(?=\[|[a-z_]+ = )", "", text)
    values = tomllib.loads(uncommented)
    assert set(values) == POLICY_KEYS
    merged = policy.merge([("example", values, True)])
    assert merged.errors == (), merged.errors
    assert len(merged.policy.sinks) == 2


def test_linux_wrapper_and_maintainer_scripts():
    wrapper = (INSTALLERS / "linux" / "cadence").read_text()
    assert "exec /opt/cadence/venv/bin/python -I -m agent" in wrapper
    assert "CADENCE_LAUNCHER=/usr/bin/cadence exec" in wrapper
    for script in ("cadence", "debian/postinst", "debian/prerm", "debian/postrm"):
        path = INSTALLERS / "linux" / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", str(path)], check=True)
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "build-deb")], check=True)


# -- Windows -------------------------------------------------------------------------------------

def _admx():
    return (ET.parse(INSTALLERS / "windows" / "cadence.admx").getroot(),
            ET.parse(INSTALLERS / "windows" / "en-US" / "cadence.adml").getroot())


def test_admx_has_every_policy_key():
    admx, _ = _admx()
    policies = {p.get("name"): p for p in admx.iter(f"{GPO}policy")}
    assert set(policies) == POLICY_KEYS
    for name, node in policies.items():
        assert node.get("key") == policy.WINDOWS_KEY
        assert node.get("class") in ("Machine", "User", "Both")
        elements = node.find(f"{GPO}elements")
        value_names = {node.get("valueName")} - {None}
        if elements is not None:
            value_names |= {e.get("valueName") for e in elements}
        assert value_names == {name}, name
        default = policy.Policy.__dataclass_fields__[name].default
        if isinstance(default, bool):
            assert node.find(f"{GPO}enabledValue/{GPO}decimal").get("value") == "1"
            assert node.find(f"{GPO}disabledValue/{GPO}decimal").get("value") == "0"
        elif name in policy._CHOICES:
            items = [v.text for v in elements.iter(f"{GPO}string")]
            assert tuple(items) == policy._CHOICES[name]
        elif name in policy._RANGES and isinstance(default, int):
            (decimal,) = elements.findall(f"{GPO}decimal")
            assert (int(decimal.get("minValue")), int(decimal.get("maxValue"))) == \
                policy._RANGES[name]


def test_adml_defines_every_string_and_presentation_the_admx_uses():
    admx, adml = _admx()
    strings = {s.get("id") for s in adml.iter(f"{GPO}string")}
    presentations = {p.get("id"): p for p in adml.iter(f"{GPO}presentation")}
    text = (INSTALLERS / "windows" / "cadence.admx").read_text()
    used_strings = set(re.findall(r"\$\(string\.([A-Za-z0-9_]+)\)", text))
    used_presentations = set(re.findall(r"\$\(presentation\.([A-Za-z0-9_]+)\)", text))
    assert used_strings and used_strings <= strings, used_strings - strings
    assert used_presentations <= set(presentations)
    for node in admx.iter(f"{GPO}policy"):
        elements = node.find(f"{GPO}elements")
        ids = {e.get("id") for e in elements} if elements is not None else set()
        if ids:
            refs = {c.get("refId") for c in presentations[node.get("name")]}
            assert refs == ids, node.get("name")


def test_admx_is_current():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make-admx.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + " (run scripts/make-admx.py)"


def test_wix_source():
    root = ET.parse(INSTALLERS / "windows" / "Product.wxs").getroot()
    product = root.find(f"{WIX}Product")
    upgrade = product.get("UpgradeCode")
    assert re.fullmatch(r"[0-9A-F]{8}-([0-9A-F]{4}-){3}[0-9A-F]{12}", upgrade), upgrade
    assert product.find(f"{WIX}Package").get("InstallScope") == "perMachine"
    assert product.find(f"{WIX}MajorUpgrade") is not None
    refs = {r.get("Id") for r in product.iter(f"{WIX}ComponentGroupRef")}
    assert "CadenceFiles" in refs
    for component in product.iter(f"{WIX}Component"):
        assert uuid.UUID(component.get("Guid"))
    (run,) = [v for v in product.iter(f"{WIX}RegistryValue")
              if v.get("Key") == autostart.RUN_KEY]
    assert run.get("Root") == "HKLM" and run.get("Name") == autostart.RUN_VALUE
    assert run.get("Value") == "&quot;[INSTALLFOLDER]cadencew.exe&quot; run".replace(
        "&quot;", '"')


@pytest.mark.skipif(not (shutil.which("wixl") and shutil.which("msiinfo")),
                    reason="wixl/msiinfo not installed (apt-get install wixl msitools)")
def test_msi_builds_with_wixl(tmp_path):
    dist = tmp_path / "cadence"
    (dist / "_internal" / "agent" / "model").mkdir(parents=True)
    for name in ("cadence.exe", "cadencew.exe", "_internal/python311.dll"):
        (dist / name).write_bytes(b"MZ stand-in for the PyInstaller build")
    shutil.copy(REPO / "agent" / "model" / "prior.json", dist / "_internal/agent/model")
    msi = tmp_path / "cadence.msi"
    subprocess.run([str(INSTALLERS / "windows" / "build-msi.sh"), str(dist), str(msi)],
                   check=True, capture_output=True, timeout=120)

    def table(name):
        return subprocess.run(["msiinfo", "export", str(msi), name], check=True,
                              capture_output=True, text=True).stdout

    upgrade_code = ET.parse(INSTALLERS / "windows" / "Product.wxs").getroot().find(
        f"{WIX}Product").get("UpgradeCode")
    assert "{" + upgrade_code + "}" in table("Upgrade")
    assert f"ProductVersion\t{__version__}" in table("Property")
    assert '\t2\tSoftware\\Microsoft\\Windows\\CurrentVersion\\Run\tCadence\t' \
           '"[INSTALLFOLDER]cadencew.exe" run' in table("Registry")
    files = table("File")
    for name in ("cadence.exe", "cadencew.exe", "prior.json"):
        assert f"\t{name}\t" in files


# -- the .deb ------------------------------------------------------------------------------------

DEB_PYTHON = Path("/usr/bin/python3.11")


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed: not a Debian system")
    if not DEB_PYTHON.exists():
        pytest.skip(f"{DEB_PYTHON} missing: the .deb is built on and for Debian 12")
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "CADENCE_DEB_COMPRESS": "gzip"}  # fast; releases use xz
    done = subprocess.run([str(REPO / "scripts" / "build-deb"), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    (package,) = out.glob("cadence-agent_*.deb")
    return package


def test_deb_contents(deb, tmp_path):
    fields = {name: subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True,
                                   capture_output=True, text=True).stdout.strip()
              for name in ("Package", "Version", "Depends", "Architecture")}
    assert fields["Package"] == "cadence-agent" and fields["Version"] == __version__
    assert "python3.11" in fields["Depends"]
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert set((control / "conffiles").read_text().split()) == {
        "/etc/xdg/autostart/cadence.desktop", "/etc/cadence/policy.toml.example"}
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(control / script, os.X_OK)

    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    assert os.access(root / "usr/bin/cadence", os.X_OK)
    assert _desktop(root / "etc/xdg/autostart/cadence.desktop")["Exec"] == "/usr/bin/cadence run"
    assert (root / "etc/cadence/policy.toml.example").is_file()
    assert (root / "usr/share/doc/cadence-agent/copyright").is_file()
    venv = root / "opt/cadence/venv"
    assert os.readlink(venv / "bin/python3.11") == str(DEB_PYTHON)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg and "/tmp" not in cfg
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            first = script.read_bytes().split(b"\n", 1)[0]
            assert not first.startswith(b"#!") or first == b"#!/opt/cadence/venv/bin/python", \
                (script.name, first)
    lock = (root / "opt/cadence/requirements.lock").read_text()
    assert f"cadence-agent=={__version__}" in lock and "pyod==" in lock
    assert not list(venv.rglob("__pycache__"))  # postinst compiles on the target
    assert not list(venv.glob("lib/python3.11/site-packages/pip"))
    # the unpacked environment runs (its python links to the system interpreter)
    done = subprocess.run([str(venv / "bin/python"), "-I", "-m", "agent", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"cadence {__version__}", done.stderr


def _install_allowed() -> str | None:
    """None if `dpkg -i` may run here, else why not."""
    choice = os.environ.get("CADENCE_TEST_DPKG_INSTALL")
    if choice == "0":
        return "CADENCE_TEST_DPKG_INSTALL=0"
    if os.geteuid() != 0:
        return "not root"
    container = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
    if not (container or os.environ.get("CI") or choice == "1"):
        return ("not in a container or CI: installing would change this machine "
                "(set CADENCE_TEST_DPKG_INSTALL=1 to allow)")
    if subprocess.run(["dpkg", "-s", "cadence-agent"], capture_output=True).returncode == 0:
        return "cadence-agent is installed on this machine; the test leaves it alone"
    if Path("/usr/bin/cadence").exists() or Path("/opt/cadence").exists():
        return "/usr/bin/cadence or /opt/cadence exists; the test leaves it alone"
    return None


def test_deb_installs_runs_and_purges(deb, tmp_path):
    lock = open("/tmp/cadence-dpkg-test.lock", "w")  # one install test at a time per machine
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        reason = _install_allowed()
        if reason:
            pytest.skip(f"dpkg -i skipped: {reason}")
        home = tmp_path / "home"
        home.mkdir()
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "LANG": "C.UTF-8",
               "CADENCE_HOME": str(tmp_path / "cadence"),
               "XDG_CONFIG_HOME": str(home / ".config"), "XDG_RUNTIME_DIR": str(tmp_path),
               "MPLCONFIGDIR": str(tmp_path / "mpl")}
        try:
            done = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
            run = lambda *argv: subprocess.run(["/usr/bin/cadence", *argv], env=env,  # noqa: E731
                                               capture_output=True, text=True, timeout=120)
            version = run("--version")
            assert version.stdout.strip() == f"cadence {__version__}", version.stderr
            doctor = run("doctor")  # no display here: it reports problems, and must say so
            assert doctor.returncode in (0, 1), doctor.stderr
            lines = doctor.stdout.splitlines()
            assert lines and all(re.match(r"\[(ok  |WARN|FAIL)\] \w+: ", x) for x in lines)
            assert {"display", "keyring", "lock", "policy"} <= {x[7:].split(":")[0] for x in lines}
            state = json.loads(run("autostart", "status", "--json").stdout)
            assert state["managed"] and state["enabled"] and state["scope"] == "machine"
            assert state["path"] == "/etc/xdg/autostart/cadence.desktop"
            assert run("autostart", "disable").returncode == 0   # a user's opt-out entry
            entry = (home / ".config" / "autostart" / "cadence.desktop").read_text()
            assert "Exec=/usr/bin/cadence run" in entry and "Hidden=true" in entry, entry
            assert list(Path("/opt/cadence/venv").rglob("*.pyc"))  # postinst compiled
        finally:
            purge = subprocess.run(["dpkg", "--purge", "cadence-agent"], capture_output=True,
                                   text=True, timeout=600)
        assert purge.returncode == 0, purge.stdout + purge.stderr
        for path in ("/opt/cadence", "/etc/cadence", "/etc/xdg/autostart/cadence.desktop",
                     "/usr/bin/cadence"):
            assert not Path(path).exists(), path
        assert subprocess.run(["dpkg", "-s", "cadence-agent"], capture_output=True).returncode
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def test_pyinstaller_build_runs_on_linux(tmp_path):
    """CI builds the frozen Linux agent from the spec and smoke-runs it."""
    pytest.importorskip("PyInstaller", reason="pip install pyinstaller (the test extra has it)")
    out = subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                          "--distpath", str(tmp_path / "dist"), "--workpath",
                          str(tmp_path / "build"), str(REPO / "installers" / "pyinstaller" /
                                                       "cadence.spec")],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    exe = tmp_path / "dist" / "cadence" / "cadence"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("cadence ")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["CADENCE_HOME"] = str(tmp_path / "home")
    doctor = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, timeout=120,
                            env=env)
    assert "display" in doctor.stdout and "keyring" in doctor.stdout
