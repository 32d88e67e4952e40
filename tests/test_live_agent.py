"""The live agent end to end, for real: Xvfb, XTest input replayed from real typists, the
agent's own pynput hooks, a real screen locker (i3lock), a tray host (trayer).

Stages run in order on one agent home: learn a real Aalto participant's typing (replayed at
their recorded timing), keep protecting while the same person types on, lock when another
participant types, see the lock from another X client, leave no trace of a typed canary, refuse
a tampered profile, and stop keystroke injectors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CATCH_UP_GAPS, CATCH_UP_HOLDS, fullscreen_viewer, stop_agent
from conftest import wait_for as _wait_for

from agent.evaluation.xreplay import XTEST_AS_HANDS, TrayHost, XTyper
from agent.features.keystroke import window_vector
from agent.model.detector import RankShift
from agent.sources.datasets import aalto

pytestmark = [pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("i3lock")),
                                reason="needs Xvfb and i3lock (apt-get install xvfb i3lock)"),
              pytest.mark.usefixtures("alarm_guard")]
GUARD_S = 400  # per test: a wedged Xvfb fails the test instead of hanging CI

SPEED = 1.0
ENROL_KEYS = 500
CANARY = "zqxj vbwk pfyg"


def wait_for(predicate, timeout_s: float):
    return _wait_for(predicate, timeout_s, every_s=0.2)  # a poll may run `cadence status`


def pick_pair(folder: Path):
    """A genuine typist and an impostor the offline model separates with a margin, so the
    test checks the live agent's plumbing and decisions, not the odds of a hard pair."""
    people, _ = aalto.load(folder, users=40, seed=5)
    people = [p for p in people if len(p.sessions) >= 15]
    vectors = {p.user: np.array([window_vector(s) for s in p.sessions]) for p in people}
    for genuine in people:
        det = RankShift().fit(vectors[genuine.user][:10])
        if det.decision_function(vectors[genuine.user][10:]).max() > np.median(det.decision_scores_) * 1.3:
            continue
        for other in people:
            if other is not genuine and \
                    det.decision_function(vectors[other.user]).min() > 2.5 * det.threshold_:
                return genuine, other
    pytest.skip("no clearly separable pair in the sample")


class Agent:
    def __init__(self, home: Path, display: str) -> None:
        self.home = home
        self.env = {**os.environ, "DISPLAY": display, "CADENCE_HOME": str(home),
                    "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                    "MPLCONFIGDIR": str(home / "mpl")}
        for name in ("PYNPUT_BACKEND", "PYSTRAY_BACKEND", "DBUS_SESSION_BUS_ADDRESS"):
            self.env.pop(name, None)
        self.proc = None

    def start(self) -> None:
        self.log = open(self.home / "agent-stderr.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--enrol-keystrokes", str(ENROL_KEYS)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        assert wait_for(lambda: self.status().get("state") not in (None, "not running",
                                                                   "starting"), 30), \
            "agent did not start"

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "agent", "status", "--json"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def audit(self) -> list[dict]:
        path = self.home / "logs" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> None:
        if self.proc:
            stop_agent(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def desktop(xserver):
    tray = TrayHost(xserver.name)  # trayer (CI installs it)
    yield xserver, tray
    tray.close()
    subprocess.run(["pkill", "-KILL", "-f", f"i3lock.*{xserver.name}"], check=False)


@pytest.fixture(scope="module")
def scenario(desktop, aalto_dir, tmp_path_factory):
    xserver, tray = desktop
    home = tmp_path_factory.mktemp("agent-home")
    (home / "config").mkdir()
    (home / "config" / "settings.toml").write_text(
        'locker_command = ["i3lock", "-n"]\ninjection_allow_keyboards = ["scanner xtest*"]\n'
        + XTEST_AS_HANDS)
    genuine, impostor = pick_pair(aalto_dir)
    agent = Agent(home, xserver.name)
    typer = XTyper(xserver.name)
    yield {"agent": agent, "typer": typer, "genuine": genuine, "impostor": impostor,
           "display": xserver.name, "home": home, "tray": tray}
    typer.close()
    agent.stop()


def x_keyboard_grab_status(display: str) -> int:
    from Xlib import X, display as xdisplay
    d = xdisplay.Display(display)
    status = d.screen().root.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync, X.CurrentTime)
    if status == X.GrabSuccess:
        d.ungrab_keyboard(X.CurrentTime)
    d.sync()
    d.close()
    return status


def test_learns_the_user_then_protects(scenario):
    agent, typer = scenario["agent"], scenario["typer"]
    agent.start()
    assert agent.status()["state"] == "learning"
    before = scenario["tray"].picture()
    typer.type_text(CANARY)  # typed while learning: goes through the whole enrolment path
    sessions = scenario["genuine"].sessions
    heard = []
    for used, session in enumerate(sessions[:12], start=1):
        typer.replay(session, speed=SPEED)
        status = agent.status()
        if status.get("state") == "protecting":
            break
        heard.append(status.get("enrol_keystrokes"))
        assert heard[-3:] != [heard[-1]] * 3, f"learning stalled at {heard}\n{story(agent)}"
    scenario["enrolled_on"] = used
    assert wait_for(lambda: agent.status().get("state") == "protecting", 30), story(agent)
    assert wait_for(lambda: scenario["tray"].picture() != before, 10), \
        "the tray icon did not change with the state"
    kinds = [entry["kind"] for entry in agent.audit()]
    assert "enrolment" in kinds


def test_same_person_typing_on_is_not_locked(scenario):
    agent, typer = scenario["agent"], scenario["typer"]
    for session in scenario["genuine"].sessions[scenario["enrolled_on"]:]:
        typer.replay(session, speed=SPEED)
    time.sleep(1)
    status = agent.status()
    assert status["state"] == "protecting", status
    assert not [e for e in agent.audit() if e["kind"] in ("lock", "impostor")]
    from Xlib import X
    assert x_keyboard_grab_status(scenario["display"]) == X.GrabSuccess


def test_another_person_typing_is_locked_out(scenario):
    agent, typer = scenario["agent"], scenario["typer"]
    for session in scenario["impostor"].sessions:
        typer.replay(session, speed=SPEED)
        if agent.status().get("state") == "locked":
            break
    from Xlib import X
    assert wait_for(lambda: x_keyboard_grab_status(scenario["display"]) == X.AlreadyGrabbed,
                    10), story(agent)
    locks = [e for e in agent.audit() if e["kind"] == "lock"]
    assert locks and locks[-1]["locked"] is True and locks[-1]["reason"] == "impostor"
    assert wait_for(lambda: agent.status().get("state") == "locked", 10), story(agent)
    subprocess.run(["pkill", "-KILL", "-x", "i3lock"], check=False)
    assert wait_for(lambda: agent.status().get("state") == "protecting", 15), story(agent)


def test_no_trace_of_typed_text(scenario):
    agent = scenario["agent"]
    agent.stop()
    grams = {CANARY[i:i + 4] for i in range(len(CANARY) - 3)}
    home = scenario["home"]
    blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file() and "mpl" not in p.parts]
    env = {**agent.env}
    out = subprocess.run([sys.executable, "-c",
                          "from agent.store import ProfileStore; import sys;"
                          f"sys.stdout.write(ProfileStore({str(home / 'data')!r}).load().to_json().decode())"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"cadence-profile"' in out.stdout
    blobs.append(out.stdout.encode())
    for blob in blobs:
        text = blob.decode("utf-8", "replace")
        assert not [g for g in grams if g in text]


def test_tampered_profile_is_refused_and_relearned(scenario):
    agent = scenario["agent"]
    profile = scenario["home"] / "data" / "profile.enc"
    data = bytearray(profile.read_bytes())
    data[len(data) // 2] ^= 0x01
    profile.write_bytes(bytes(data))
    agent.start()
    assert wait_for(lambda: [e for e in agent.audit() if e["kind"] == "tamper"], 15)
    assert agent.status()["state"] == "learning"
    assert list((scenario["home"] / "data").glob("profile.enc.tampered-*"))
    second = subprocess.run([sys.executable, "-m", "agent", "run", "--no-tray"], env=agent.env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 0 and "already running" in second.stderr


def payload(gap_ms, hold_ms, keys=60, seed=0):
    """A keystroke injector's payload as events: classes of a command line, machine timing."""
    from agent.events import Event, KeyClass, Kind
    rng = np.random.default_rng(seed)
    classes = rng.choice([KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE,
                          KeyClass.PUNCTUATION], size=keys, p=[0.45, 0.35, 0.15, 0.05])
    gaps = gap_ms(rng, keys)
    events, t = [], 0.0
    for i, (cls, gap) in enumerate(zip(classes, gaps)):
        events += [Event(int(t * 1e6), Kind.DOWN, cls, i), Event(int((t + hold_ms) * 1e6), Kind.UP, cls, i)]
        t += gap
    return sorted(events, key=lambda e: e.t_ns)


def stall() -> list:
    """A key at a hand's pace, then an Aalto typist's stall (``CATCH_UP_GAPS``): the keys typed
    while the machine stalled, delivered at once, of three classes."""
    from agent.events import Event, KeyClass, Kind
    classes = [KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE]
    events = [Event(0, Kind.DOWN, classes[0], 0), Event(90 * 10**6, Kind.UP, classes[0], 0)]
    t = 0.0
    for i, (gap, hold) in enumerate(zip(CATCH_UP_GAPS, CATCH_UP_HOLDS), start=1):
        t += gap
        cls = classes[i % 3]
        events += [Event(int(t * 1e6), Kind.DOWN, cls, i),
                   Event(int((t + hold) * 1e6), Kind.UP, cls, i)]
    return sorted(events, key=lambda e: (e.t_ns, e.kind))


def story(agent) -> str:
    """What the agent did lately, for a failing assertion's message: its last audit entries
    (numbers and states only), its status, and the end of its own log with where each of its
    threads is (SIGUSR1: faulthandler)."""
    if agent.proc is not None and agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
    keep = ("kind", "state", "reason", "verdict", "rule", "keys_observed", "method", "locked")
    entries = [{k: e[k] for k in keep if k in e} for e in agent.audit()[-12:]]
    log = agent.home / "agent-stderr.log"
    tail = log.read_text(errors="replace").splitlines()[-80:] if log.exists() else []
    return "\n".join(["audit:", *map(str, entries), f"status: {agent.status()}", "log:", *tail])


def injection_entries(agent):
    return [e for e in agent.audit() if e["kind"] == "injection"]


@pytest.mark.parametrize("name, gaps", [
    ("usb-5ms", lambda rng, n: np.full(n, 5.0)),
    ("jitter-20-120ms", lambda rng, n: rng.uniform(20, 120, n)),
])
def test_keystroke_injection_is_caught_and_locked(scenario, name, gaps):
    """A USB injector typing through the real hooks: detected, locked, and not learned."""
    agent, typer = scenario["agent"], scenario["typer"]
    from Xlib import X
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    before = len(injection_entries(agent))
    learned = agent.status()["enrol_keystrokes"]
    # the X server keeps the payload's timing, as the injector's own clock would: a loaded CI
    # machine must not stretch its 3 ms holds into a person's
    typer.replay_server_timed(payload(gaps, hold_ms=3.0))
    assert wait_for(lambda: len(injection_entries(agent)) > before, 10), story(agent)
    entry = injection_entries(agent)[-1]
    assert entry["verdict"] == "injection"
    assert entry["keys_observed"] <= (14 if name.startswith("usb") else 40), story(agent)
    assert wait_for(lambda: x_keyboard_grab_status(scenario["display"]) == X.AlreadyGrabbed,
                    10), story(agent)
    assert agent.status()["enrol_keystrokes"] == learned  # injected keys were not learned
    subprocess.run(["pkill", "-KILL", "-x", "i3lock"], check=False)
    assert wait_for(lambda: agent.status().get("state") != "locked", 15), story(agent)


def test_a_paused_agent_still_locks_an_injector(scenario):
    """Protection paused from the tray (its request file, as the tray writes it), by the user
    or by someone at a session left unlocked: a USB injector typing then is still locked out
    on its 5th key, its keys not learned, and the pause is over."""
    agent, typer = scenario["agent"], scenario["typer"]
    from Xlib import X
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    requests = scenario["home"] / "run" / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    (requests / "pause").touch()
    assert wait_for(lambda: agent.status().get("state") == "paused", 15), story(agent)
    before = len(injection_entries(agent))
    learned = agent.status()["enrol_keystrokes"]
    typer.replay_server_timed(payload(lambda rng, n: np.full(n, 5.0), hold_ms=3.0, keys=40))
    assert wait_for(lambda: len(injection_entries(agent)) > before, 10), story(agent)
    entry = injection_entries(agent)[-1]
    assert entry["action"] == "lock" and entry["keys_observed"] <= 14, story(agent)
    assert wait_for(lambda: x_keyboard_grab_status(scenario["display"]) == X.AlreadyGrabbed,
                    10), story(agent)
    assert agent.status()["enrol_keystrokes"] == learned
    subprocess.run(["pkill", "-KILL", "-x", "i3lock"], check=False)
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)                      # not back to paused


def test_a_fullscreen_remote_desktop_client_is_not_taken_for_a_lock(scenario):
    """A remote-desktop client or VM viewer in fullscreen holds the keyboard grab (not the
    pointer) all day: the agent's lock checks, which run once input stops, must not read that
    as a locked session, or nothing the user types into it would be scored."""
    from agent.runtime import LOCK_CHECK_S
    from Xlib import X
    agent = scenario["agent"]
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    entries = len(agent.audit())
    with fullscreen_viewer(scenario["display"]) as viewer_display:
        # the user types into the viewer (its keys go there; the hooks hear them), then stops:
        # the lock checks come LOCK_CHECK_S and twice that after the last key
        scenario["typer"].replay_server_timed(
            payload(lambda rng, n: rng.uniform(150, 300, n), hold_ms=90.0, keys=8))
        time.sleep(2 * LOCK_CHECK_S + 4)
        assert agent.status()["state"] in ("learning", "protecting"), story(agent)
        assert not [e for e in agent.audit()[entries:] if e.get("state") == "locked"]
        # the checks do run: the same viewer taking the pointer too reads as a locker at the
        # next one (4 x LOCK_CHECK_S after the last key), and letting go as the unlock
        d, viewer = viewer_display
        assert viewer.grab_pointer(True, 0, X.GrabModeAsync, X.GrabModeAsync, X.NONE, X.NONE,
                                   X.CurrentTime) == X.GrabSuccess
        d.sync()
        assert wait_for(lambda: agent.status().get("state") == "locked",
                        2 * LOCK_CHECK_S + 10), story(agent)
        d.ungrab_pointer(X.CurrentTime)
        d.sync()
        assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                        15), story(agent)


def test_an_injector_at_the_lock_screen_is_reported_without_a_lock(scenario):
    """The user locks the session (i3lock, started as a user would) and walks away; a USB
    injector then types at the lock screen. The X hooks still see its keys: one `injection`
    alert, marked as while locked, and no lock attempt (there is nothing to lock). When the
    user unlocks, the agent goes back to work."""
    agent, typer, display = scenario["agent"], scenario["typer"], scenario["display"]
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    before = len(injection_entries(agent))
    locks = sum(e["kind"] == "lock" for e in agent.audit())
    # the user types a few keys, then locks (the hotkey): the lock checks, which wait for
    # input to stop and then space out, come LOCK_CHECK_S after
    typer.replay(payload(lambda rng, n: rng.uniform(150, 250, n), hold_ms=90.0, keys=3))
    locker = subprocess.Popen(["i3lock", "-n"], env={**os.environ, "DISPLAY": display})
    try:
        assert wait_for(lambda: agent.status().get("state") == "locked", 20), story(agent)
        typer.replay_server_timed(payload(lambda rng, n: np.full(n, 5.0), hold_ms=3.0, keys=80))
        assert wait_for(lambda: len(injection_entries(agent)) > before, 10), story(agent)
        entry = injection_entries(agent)[-1]
        assert entry["while_locked"] is True and entry["action"] == "alert", entry
        time.sleep(1)
        assert len(injection_entries(agent)) == before + 1, story(agent)   # reported once
        assert sum(e["kind"] == "lock" for e in agent.audit()) == locks    # nothing to lock
        assert agent.status()["state"] == "locked"
    finally:
        locker.kill()
        locker.wait()
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)


def attaches(agent) -> list[dict]:
    return [e for e in agent.audit() if e["kind"] == "keyboard_attached"]


@pytest.mark.skipif(not shutil.which("xinput"), reason="needs xinput (apt-get install xinput)")
def test_an_injector_is_locked_on_its_5th_key_even_after_the_user_types_on(scenario):
    """A new keyboard appears in the X server (``xinput create-master`` adds a master with an
    XTEST keyboard of its own, as a USB injector enumerating adds one). The attach is audited,
    with nothing of the device. At once the user's own keyboard delivers a stall's queued keys
    (the Aalto typist's: 10 gaps of 2-10 ms after 1,325 ms, as a machine busy with a dock just
    plugged in would): the hooks see whose keys they are, and do not judge them as the new
    keyboard's. The user types 12 keys more, as a dormant injector (an O.MG cable) would wait;
    then the new keyboard types 5 keys at 5 ms. The hooks see that this keyboard has never
    typed here: the 5th key locks the session."""
    agent, typer, display = scenario["agent"], scenario["typer"], scenario["display"]
    from Xlib import X
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    status = agent.status()
    assert status["watching_keyboards"] is True and status["keyboard_identity"] is True
    before, attached = len(injection_entries(agent)), len(attaches(agent))
    env = {**os.environ, "DISPLAY": display}
    subprocess.run(["xinput", "create-master", "Ducky"], env=env, check=True)
    try:
        assert wait_for(lambda: len(attaches(agent)) > attached, 10), story(agent)
        assert set(attaches(agent)[-1]) == {"time", "kind"}   # that a keyboard came: no more
        typer.replay_server_timed(stall())
        typer.replay(payload(lambda rng, n: rng.uniform(150, 250, n), hold_ms=90.0, keys=12))
        assert not wait_for(lambda: len(injection_entries(agent)) > before, 1), story(agent)
        keys = payload(lambda rng, n: np.full(n, 5.0), hold_ms=3.0, keys=5)
        assert len({e.key for e in keys}) > 1
        typer.through("Ducky")
        typer.replay_server_timed(keys)
        assert wait_for(lambda: len(injection_entries(agent)) > before, 10), story(agent)
        found = injection_entries(agent)[-1]
        assert found["rule"] == "new_keyboard"
        # locked on the device's 5th key: the last 4 gaps are the payload's, the one before
        # them the pause after the user's last key. (The server keeps a 5 ms delay from its
        # last time stamp, which a loaded server has left stale or passed: not exactly 5 ms.)
        gaps = found["recent_gaps_ms"]
        assert max(gaps[-4:]) <= 25 < gaps[-5], gaps
        assert wait_for(lambda: x_keyboard_grab_status(display) == X.AlreadyGrabbed, 10), \
            story(agent)
    finally:
        typer.through("Virtual core")
        subprocess.run(["xinput", "remove-master", "Ducky pointer"], env=env, check=False)
        subprocess.run(["pkill", "-KILL", "-x", "i3lock"], check=False)
    assert wait_for(lambda: agent.status().get("state") != "locked", 15), story(agent)


@pytest.mark.skipif(not shutil.which("xinput"), reason="needs xinput (apt-get install xinput)")
def test_a_keyboard_the_policy_allows_types_at_machine_speed_unjudged(scenario):
    """The policy allows "scanner xtest*": a barcode scanner typing 30 keys at 5 ms through
    its own keyboard is neither judged (no injection, no lock) nor learned, only counted."""
    agent, typer, display = scenario["agent"], scenario["typer"], scenario["display"]
    assert wait_for(lambda: agent.status().get("state") in ("learning", "protecting"),
                    15), story(agent)
    before, status = len(injection_entries(agent)), agent.status()
    env = {**os.environ, "DISPLAY": display}
    subprocess.run(["xinput", "create-master", "Scanner"], env=env, check=True)
    try:
        typer.through("Scanner")
        typer.replay_server_timed(payload(lambda rng, n: np.full(n, 5.0), hold_ms=3.0, keys=30))
        assert wait_for(lambda: agent.status()["allowed_keyboard_keys"]
                        == status["allowed_keyboard_keys"] + 30, 10), story(agent)
    finally:
        typer.through("Virtual core")
        subprocess.run(["xinput", "remove-master", "Scanner pointer"], env=env, check=False)
    assert not wait_for(lambda: len(injection_entries(agent)) > before, 2), story(agent)
    after = agent.status()
    assert after["state"] == status["state"] != "locked"
    assert after["enrol_keystrokes"] == status["enrol_keystrokes"]
