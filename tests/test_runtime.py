"""The shell's own decisions about the agent's state (its hooks not started: they would need a
display; the watchdog is told they run)."""

from agent.model.prior import cell_weights
from agent.pipeline import Pipeline
from agent.policy import merge
from agent.runtime import Agent
from agent.sources.live import LiveSource
from agent.system.paths import Paths


def agent_here(tmp_path, policy=None) -> Agent:
    """An agent in ``tmp_path`` with its pipeline, not started (no hooks, no worker)."""
    root = tmp_path / "home"
    paths = Paths(root / "data", root / "config", root / "logs", root / "run")
    agent = Agent(paths, merge([("test policy", policy or {}, True)]), source=LiveSource())
    agent.pipeline = Pipeline(agent.policy, None, cell_weights())
    return agent


def kinds(agent) -> list[str]:
    return [r["kind"] for r in agent.audit.read()]


def test_hooks_coming_back_leave_the_agent_waiting_for_a_locked_keyring(tmp_path, monkeypatch):
    """The keyring holding the profile's key is locked, then the hooks stop and come back: the
    agent stays degraded for the keyring, not learning a new profile (which could never be
    saved over the user's own, and would judge the user against the wrong one)."""
    agent = agent_here(tmp_path)
    monkeypatch.setattr(agent.source, "alive", lambda: True)
    agent._profile_wait = "keyring-locked"
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
    (tmp_path / "run").mkdir(mode=0o700)
    (tmp_path / "run" / "agent.lock").touch(mode=0o644)      # as an older version left it
    first.acquire()
    if os.name == "posix":                  # 0600, as every file of the agent's
        assert (tmp_path / "run" / "agent.lock").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AlreadyRunning, match=rf"pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    second.acquire()                   # the first is gone: the next one runs
    second.release()


def test_a_profile_trained_for_a_forgotten_enrolment_is_not_brought_back(tmp_path):
    from test_features_model import profile_blob

    from agent.model.profile import Profile
    agent = agent_here(tmp_path)
    before = agent.pipeline
    agent.handle("forget")                      # while a training thread still runs
    assert agent.pipeline is not before
    agent._pending_profile = (before, Profile.from_json(profile_blob()))   # it finishes
    agent._take_training()
    assert agent.pipeline.profile is None and not agent.store.path.exists()


def test_forget_is_refused_while_a_verdict_holds(tmp_path):
    """An impostor held after an alert-only verdict (or a lock that failed) must not wipe the
    profile and enrol as the user."""
    from test_features_model import profile_blob

    from agent.model.profile import Profile
    agent = agent_here(tmp_path, {"action": "alert"})
    agent.pipeline.profile = Profile.from_json(profile_blob())
    agent.pipeline._verdict("impostor", 9.0, "keyboard")
    held = agent.pipeline
    agent.handle("forget")
    assert agent.pipeline is held and agent.pipeline.holding()
    assert kinds(agent)[-1] == "request_refused"


def test_an_effect_that_fails_does_not_stop_the_lock_after_it(tmp_path, monkeypatch):
    from agent.pipeline import Audit, Lock
    agent = agent_here(tmp_path, {"locker_command": ["false"]})
    monkeypatch.delenv("DISPLAY", raising=False)
    agent._execute([Audit("impostor", {"note": "refused by the audit rules"}), Lock("impostor")])
    assert kinds(agent)[-2:] == ["lock", "lock_failed"]     # the lock was tried, and said so
    assert (agent.pipeline.state, agent.pipeline.reason) == ("alert", "lock-failed")


def test_keys_held_at_a_lock_are_forgotten(tmp_path):
    """Win+L's releases go to the secure desktop: left held, the next L would read as
    auto-repeat (and the key's identity would stay in memory). A lock or unlock forgets them."""
    from agent.events import KeyClass
    agent = agent_here(tmp_path)
    source = agent.source
    source.key_down(1, ("name", "cmd"), KeyClass.MODIFIER, False, 0)
    source.key_down(2, ("char", "l"), KeyClass.LEFT_LETTER, False, 0)
    agent._session_locked(True)
    assert not source._tracker._held and not source._tracker._anonymous
    source.key_down(3, ("char", "l"), KeyClass.LEFT_LETTER, False, 0)
    *_, last = [source.queue.get_nowait() for _ in range(source.queue.qsize())]
    assert last.repeat is False


def test_an_allowed_keyboard_typing_is_input_the_hooks_heard(tmp_path, monkeypatch):
    """An allowed keyboard's keys (a YubiKey) are passed over, not queued; the OS still saw
    input. That is not a silent hook to restart."""
    import time
    from types import SimpleNamespace
    agent = agent_here(tmp_path)
    monkeypatch.setattr(agent.source, "alive", lambda: True)
    now = time.monotonic()
    agent._hook_events_at = now - 100
    agent._unheard_input_at = now - 2            # the X server saw a key the queue did not
    agent.source._keyboard = SimpleNamespace(allowed_keys=3)
    agent._watchdog(now)
    assert agent._hook_problem is None and agent.pipeline.state == "learning"


def test_a_worker_that_keeps_failing_shows_error_until_a_step_succeeds(tmp_path, monkeypatch):
    from agent.events import Event, KeyClass, Kind
    from agent.runtime import WORKER_FAILURES_ERROR
    agent = agent_here(tmp_path)
    key = Event(1, Kind.DOWN, KeyClass.SPACE, 0)
    real_feed = agent.pipeline.feed

    def broken(event):
        raise RuntimeError("a bug")
    monkeypatch.setattr(agent.pipeline, "feed", broken)
    for n in range(WORKER_FAILURES_ERROR):
        assert agent.status()["state"] == "learning"     # one failure is not yet a state
        agent._step([key], None)
    status = agent.status()
    assert status["state"] == "error" and status["reason"] == "worker-exception"
    assert kinds(agent).count("error") == WORKER_FAILURES_ERROR
    monkeypatch.setattr(agent.pipeline, "feed", real_feed)
    agent._step([key._replace(t_ns=2)], None)
    assert agent.status()["state"] == "learning"


def test_a_degraded_agent_at_the_lock_screen_watches_for_the_unlock(tmp_path, monkeypatch,
                                                                     xserver):
    """Degraded (a keyring not yet unlocked) while the session is locked: the agent checks for
    the unlock as often as when it is locked, the user typing or not, so keys after the unlock
    are not taken for the lock screen's (where an injector can only be reported)."""
    import time

    from agent.runtime import UNLOCK_CHECK_S, tick_interval
    monkeypatch.setenv("DISPLAY", xserver.name)           # a real X server, nothing grabbed
    agent = agent_here(tmp_path)
    agent._execute(agent.pipeline.degrade("keyring-locked"))
    agent._session_locked(True)
    assert agent.pipeline.session_is_locked and agent.pipeline.state == "degraded"
    now = time.monotonic()
    assert tick_interval(0.0, agent.pipeline.session_is_locked) == UNLOCK_CHECK_S
    agent._hook_events_at = now                            # the user types
    agent._last_lock_check = now - UNLOCK_CHECK_S
    agent._check_lock(now)
    assert not agent.pipeline.session_is_locked
    assert (agent.pipeline.state, agent.pipeline.reason) == ("degraded", "keyring-locked")


def test_a_locked_keyring_is_reported_once_not_at_every_retry(tmp_path, monkeypatch):
    """The retries every KEY_RETRY_S while the keyring stays locked (a day: 8,640) are not
    each a ``store_error``: those would flood the SIEM and push real alerts out of a spool."""
    from agent.runtime import KEY_RETRY_S
    from agent.store import KeyUnavailableError
    agent = agent_here(tmp_path)
    answers = [KeyUnavailableError("the keyring is locked: unlock it")] * 6 + [None]

    def load():
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return None                              # unlocked: no profile stored after all
    monkeypatch.setattr(agent.store, "load", load)
    assert agent._load_profile() is None and agent._profile_wait == "keyring-locked"
    agent._execute(agent.pipeline.degrade("keyring-locked"))
    for i in range(1, 7):
        agent._retry_profile(i * KEY_RETRY_S)
    assert kinds(agent).count("store_error") == 1
    assert agent._profile_wait is None and agent.pipeline.state == "learning"


def test_a_profile_cadence_cannot_read_is_waited_for_not_learned_over(tmp_path):
    """A key file left owned by root (here: a folder where the key file should be, which no
    one can read as a file): the agent stays degraded and retries, reports it once, and never
    learns a new profile that a save would put over the user's own."""
    from agent.runtime import KEY_RETRY_S
    from agent.store import FORMAT_VERSION, MAGIC, NONCE_LEN, SOURCE_FILE, TAG_LEN
    agent = agent_here(tmp_path)
    store = agent.store
    stored = MAGIC + bytes([FORMAT_VERSION]) + SOURCE_FILE + bytes(NONCE_LEN + TAG_LEN + 32)
    store.path.write_bytes(stored)                     # a key-file profile: its key is needed
    store.key_path.mkdir()
    assert agent._load_profile() is None and agent._profile_wait == "store-unreadable"
    agent._execute(agent.pipeline.degrade(agent._profile_wait))
    for i in range(1, 4):
        agent._retry_profile(i * KEY_RETRY_S)
    assert (agent.pipeline.state, agent.pipeline.reason) == ("degraded", "store-unreadable")
    assert kinds(agent).count("store_error") == 1
    assert store.path.read_bytes() == stored
