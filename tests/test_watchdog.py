"""The hook watchdog, for real: a running agent's own X RECORD hook on an Xvfb is silenced or
stopped by another X client, as a misbehaving program could; typing goes on through XTest. The
agent must notice (its hook thread ended, or the X server's idle time says someone types while
its hooks hear nothing), say `degraded` with the reason, restart its hooks, and come back to what
it was doing with the typing heard again."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import XServer, stop_agent, wait_for

from agent.evaluation.xreplay import XTEST_AS_HANDS, XTyper
from agent.events import KeyClass

pytestmark = [pytest.mark.skipif(not shutil.which("Xvfb"), reason="needs Xvfb"),
              pytest.mark.usefixtures("alarm_guard")]
GUARD_S = 120
SILENT_HOOK_S = 1.5  # the agent's limits, in seconds instead of its 10 and 30

# `cadence run --no-tray` with the watchdog's limits shortened. It also writes the id of its
# RECORD context, which the test needs to act as the other X client, each time it (re)starts
# its hooks; that is all it adds.
DRIVER = f"""
import os, sys
from pathlib import Path
from agent import cli, runtime
runtime.SILENT_HOOK_S, runtime.SILENCE_CHECK_S = {SILENT_HOOK_S}, 1.0
start_hooks = runtime.Agent._start_hooks
def reporting(self):
    problem = start_hooks(self)
    context = self.source._keyboard._context
    Path(os.environ["CADENCE_HOME"], "record-context").write_text(str(context))
    return problem
runtime.Agent._start_hooks = reporting
sys.exit(cli.main(["run", "--no-tray"]))
"""


class Running:
    """The agent in a process of its own, and a typer that types while ``typing`` is set."""

    def __init__(self, home, server) -> None:
        self.home, self.server = home, server
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "settings.toml").write_text(XTEST_AS_HANDS)
        self.env = {**os.environ, "DISPLAY": server.name, "CADENCE_HOME": str(home),
                    "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
        for name in ("PYNPUT_BACKEND", "PYSTRAY_BACKEND", "DBUS_SESSION_BUS_ADDRESS"):
            self.env.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.typer = XTyper(server.name)
        self.typing, self.idle, self.done = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._type_on, daemon=True)
        self.thread.start()

    def _type_on(self) -> None:
        """About 8 keys a second at a person's uneven pace (an even one is an injector's)."""
        rng, n = random.Random(0), 0
        while not self.done.is_set():
            if not self.typing.is_set():
                self.idle.set()
                self.typing.wait(0.1)
                continue
            self.typer.press(KeyClass.LEFT_LETTER if n % 2 else KeyClass.RIGHT_LETTER, n)
            time.sleep(rng.uniform(0.05, 0.1))
            self.typer.release(n)
            time.sleep(rng.uniform(0.01, 0.1))
            n += 1

    def pause(self) -> None:
        """Stop typing, and return once no key is held."""
        self.typing.clear()
        self.idle.clear()
        assert self.idle.wait(5)

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "agent", "status", "--json"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def heard(self) -> int:
        """Keys learned from: it grows a window (50 keys) at a time."""
        return self.status().get("enrol_keystrokes", 0)

    def states(self) -> list[tuple]:
        path = self.home / "logs" / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(e.get("state"), e.get("reason")) for e in map(json.loads, lines)
                if e["kind"] == "state"]

    def other_client(self, act) -> None:
        """Another X client does ``act(display, the agent's RECORD context)``."""
        from Xlib import display
        other = display.Display(self.server.name)
        act(other, int((self.home / "record-context").read_text()))
        other.sync()
        other.close()

    def recovers(self, reason: str) -> bool:
        """Degraded with ``reason``, then learning again, and the typing is heard after it."""
        assert wait_for(lambda: ("degraded", reason) in self.states(), 30), self.states()
        assert wait_for(lambda: self.states()[-1] == ("learning", None), 30), self.states()
        before = self.heard()
        return wait_for(lambda: self.heard() > before, 20)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.typer.close()
        stop_agent(self.proc)


@pytest.fixture
def running(tmp_path):
    server = XServer()
    agent = Running(tmp_path, server)
    try:
        agent.typing.set()
        assert wait_for(lambda: agent.heard() > 0, 30), "the agent did not hear the typing"
        yield agent
    finally:
        agent.close()
        server.close()


def test_a_silenced_hook_is_noticed_and_restarted(running):
    """Another client unregisters every client from the agent's RECORD context: the hook thread
    lives on and hears nothing. One key typed then (the X server's idle time counts it) is
    enough to call the hooks silent. Restarted, they must hear input before the agent says it
    is learning again."""
    from Xlib.ext import record
    assert running.states() == []
    running.pause()
    running.other_client(lambda d, context:
                         d.record_unregister_clients(context, [record.AllClients]))
    time.sleep(SILENT_HOOK_S + 0.5)
    running.typer.press(KeyClass.SPACE, 0)
    running.typer.release(0)
    assert wait_for(lambda: ("degraded", "hook-silent") in running.states(), 10), running.states()
    time.sleep(3)  # restarted, and nothing typed since
    assert running.states()[-1] == ("degraded", "hook-silent")
    assert running.status()["state"] == "degraded"
    running.typing.set()
    assert running.recovers("hook-silent")


def test_a_stopped_hook_is_noticed_and_restarted(running):
    """Another client disables the agent's RECORD context: the hook thread ends."""
    running.other_client(lambda d, context: d.record_disable_context(context))
    assert running.recovers("hook-stopped")


def test_typing_after_a_quiet_spell_is_not_a_silent_hook(running):
    """Quiet spells longer than the silence limit, each ended by typing: the X server counts
    the input a moment before the hooks deliver it, which is no reason to call them silent."""
    for _ in range(3):
        running.typing.clear()
        time.sleep(2 * SILENT_HOOK_S)
        running.typing.set()
        time.sleep(2.0)  # the watchdog's next ticks see the typing
    typed = running.heard()
    assert wait_for(lambda: running.heard() > typed, 20)
    assert running.states() == []


def test_hooks_that_cannot_start_leave_the_agent_running_degraded(tmp_path):
    """pynput's dummy backend, whose listener thread ends as it starts (as a hook the OS refuses
    does): the agent does not hang at start; it runs, says `degraded` with the reason and what
    to do, and tries again now and then without filling the audit log."""
    server = XServer()
    env = {**os.environ, "DISPLAY": server.name, "CADENCE_HOME": str(tmp_path),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", "PYNPUT_BACKEND": "dummy"}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--no-tray"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def status():
            out = subprocess.run([sys.executable, "-m", "agent", "status"], env=env,
                                 capture_output=True, text=True, timeout=30)
            return out.stdout
        assert wait_for(lambda: "degraded" in status(), 20), status()
        text = status()
        assert "input hooks could not start" in text and "cadence doctor" in text
        time.sleep(3)  # several ticks of the worker
        audit = [json.loads(line) for line in
                 (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()]
        assert [(e.get("state"), e.get("reason")) for e in audit if e["kind"] == "state"] == \
            [("degraded", "hook-failed")]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        server.close()
    assert "input hooks could not start: the input listener ended as it started" in err
