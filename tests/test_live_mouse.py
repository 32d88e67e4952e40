"""The live agent's pointer path, for real: a recorded Balabit trajectory driven through XTest
into the agent's own pynput hooks is segmented into the same actions as the dataset loader
segments from the file (one segmentation rule, shared by live input and evaluation)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from agent.events import Kind
from agent.evaluation.xreplay import XTEST_AS_HANDS, XTyper
from agent.features.mouse import Segmenter
from agent.sources.datasets import balabit

pytestmark = [pytest.mark.skipif(not shutil.which("Xvfb"), reason="needs Xvfb (apt-get install xvfb)"),
              pytest.mark.usefixtures("alarm_guard")]
GUARD_S = 180  # per test: a wedged Xvfb fails the test instead of hanging CI

SCREEN = (2560, 1600)
SECONDS = 40


@pytest.fixture(scope="module")
def big_screen():
    from conftest import XServer
    server = XServer(size=f"{SCREEN[0]}x{SCREEN[1]}x24")
    yield server
    server.close()


def trajectory(folder):
    """SECONDS of a recorded session, from its busiest minute's start, that stay on the screen,
    one position per timestamp (the file repeats timestamps; the segmenter keeps the last)."""
    people, _ = balabit.load(folder, users=1, seed=0)
    events = [e for e in people[0].sessions[0] if e.kind in (Kind.MOVE, Kind.PRESS, Kind.RELEASE)]
    presses = [e.t_ns for e in events if e.kind == Kind.PRESS]
    start = max(presses, key=lambda t: sum(t <= p < t + SECONDS * 1e9 for p in presses)) - 10**9
    prefix = [e for e in events if start <= e.t_ns <= start + SECONDS * 1e9]
    while prefix and prefix[0].kind == Kind.RELEASE:
        prefix.pop(0)
    if any(not (0 <= e.x < SCREEN[0] and 0 <= e.y < SCREEN[1]) for e in prefix):
        pytest.skip("the chosen trajectory leaves the virtual screen")
    out = []
    for e in prefix:
        if out and e.kind == Kind.MOVE and out[-1].kind == Kind.MOVE and out[-1].t_ns == e.t_ns:
            out[-1] = e
        else:
            out.append(e)
    return out


def test_live_segmentation_matches_the_loader(big_screen, balabit_dir, tmp_path):
    events = trajectory(balabit_dir)
    segmenter = Segmenter()
    expected = sum(len(segmenter.push(e)) for e in events)
    assert expected >= 10
    env = {**os.environ, "DISPLAY": big_screen.name, "CADENCE_HOME": str(tmp_path),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    for name in ("PYNPUT_BACKEND", "PYSTRAY_BACKEND", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text(XTEST_AS_HANDS)
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--no-tray"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    state = tmp_path / "run" / "state.json"
    try:
        deadline = time.monotonic() + 30
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        typer = XTyper(big_screen.name)
        typer.replay_pointer(events)
        typer.close()
        time.sleep(2.5)
        status = json.loads(state.read_text())
        assert status["state"] == "learning"
        assert status["mouse_actions_learned"] == expected
        audit = (tmp_path / "logs" / "audit.jsonl").read_text()
        assert '"x"' not in audit and '"y"' not in audit  # positions are never logged
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
