"""The shell's own decisions about the agent's state (its hooks not started: they would need a
display; the watchdog is told they run)."""

from agent.model.prior import cell_weights
from agent.pipeline import Pipeline
from agent.policy import merge
from agent.runtime import Agent
from agent.sources.live import LiveSource
from agent.system.paths import Paths


def test_hooks_coming_back_leave_the_agent_waiting_for_a_locked_keyring(tmp_path, monkeypatch):
    """The keyring holding the profile's key is locked, then the hooks stop and come back: the
    agent stays degraded for the keyring, not learning a new profile (which could never be
    saved over the user's own, and would judge the user against the wrong one)."""
    root = tmp_path / "home"
    paths = Paths(root / "data", root / "config", root / "logs", root / "run")
    hooks = LiveSource()
    monkeypatch.setattr(hooks, "alive", lambda: True)
    agent = Agent(paths, merge([]), source=hooks)
    agent.pipeline = Pipeline(agent.policy, None, cell_weights())
    agent._key_unavailable = True
    agent._execute(agent.pipeline.degrade("keyring-locked"))
    agent._hook_problem = "hook-stopped"
    agent._execute(agent.pipeline.degrade("hook-stopped"))
    agent._hook_events_at = agent._hooks_started_at + 1.0    # the restarted hooks hear input
    agent._watchdog(agent._hook_events_at)
    assert agent._hook_problem is None
    assert (agent.pipeline.state, agent.pipeline.reason) == ("degraded", "keyring-locked")
    assert agent.pipeline.pause() == [] and agent.pipeline.state == "degraded"


def test_one_agent_per_session_and_the_second_names_the_first(tmp_path):
    import os

    import pytest

    from agent.system.instance import AlreadyRunning, InstanceLock
    first, second = InstanceLock(tmp_path / "run" / "agent.lock"), InstanceLock(
        tmp_path / "run" / "agent.lock")
    first.acquire()
    with pytest.raises(AlreadyRunning, match=rf"pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    second.acquire()                   # the first is gone: the next one runs
    second.release()
