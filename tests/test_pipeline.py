"""The agent's state machine, fed real typists' event streams (no OS, no clock)."""

import numpy as np
import pytest

from agent.decision import TrustState
from agent.events import Event, KeyClass, Kind
from agent.model.detector import RankShift
from agent.model.prior import cell_weights
from agent.model.profile import KeystrokeModel, Profile
from agent.pipeline import Audit, Lock, Notify, Pipeline, Save, Train, enrolment_quality
from agent.policy import Policy
from agent.sources.datasets import aalto

MS = 1_000_000


def shifted(sessions, start_ns=0, gap_ns=2_000 * MS):
    """Sessions back to back on one clock from ``start_ns``, with press ids unique across the
    stream (as a live stream has)."""
    out, t = [], start_ns
    for number, session in enumerate(sessions):
        base = session[0].t_ns
        out += [e._replace(t_ns=t + e.t_ns - base, press_id=start_ns + number * 10**4 + e.press_id)
                for e in session]
        t = out[-1].t_ns + gap_ns
    return out


def run(pipeline, events):
    effects = []
    for e in events:
        effects += pipeline.feed(e)
    return effects


def train(effects):
    (job,) = [e for e in effects if isinstance(e, Train)]
    return Profile(KeystrokeModel.from_detector(RankShift().fit(job.windows)))


@pytest.fixture(scope="module")
def typists(aalto_dir):
    people, _ = aalto.load(aalto_dir, users=12, seed=7)
    return [p for p in people if len(p.sessions) >= 15]


def test_learns_then_protects_then_locks_an_impostor(typists):
    policy = Policy(enrol_keystrokes=500)
    pipeline = Pipeline(policy, None, cell_weights())
    user, others = typists[0], typists[1:]
    effects = run(pipeline, shifted(user.sessions[:11]))
    assert pipeline.state == "learning" or any(isinstance(e, Train) for e in effects)
    assert 0 < pipeline.status()["progress"] <= 99
    profile = train(effects)
    installed = pipeline.installed(profile)
    assert pipeline.state == "protecting"
    assert any(isinstance(e, Save) for e in installed) and any(isinstance(e, Notify) for e in installed)
    genuine = run(pipeline, shifted(user.sessions[11:], start_ns=10**13))
    assert not [e for e in genuine if isinstance(e, Lock)]
    locked = 0
    for other in others:
        fresh = Pipeline(policy, profile, cell_weights())
        effects = run(fresh, shifted(other.sessions[-5:], start_ns=10**13))
        locks = [e for e in effects if isinstance(e, Lock)]
        if locks:
            locked += 1
            assert locks[0].reason == "impostor"
            assert fresh.status()["verdict"] == "impostor"
    assert locked >= len(others) * 0.7


def test_observe_policy_only_audits():
    policy = Policy(action="observe")
    pipeline = Pipeline(policy, None, cell_weights())
    pipeline.profile = object()  # the verdict path does not need the model
    effects = pipeline._act("observe", "impostor", {"verdict": "impostor"}, "x")
    assert [type(e) for e in effects] == [Audit]


def test_injection_locks_at_once_and_discards_the_keys(typists):
    pipeline = Pipeline(Policy(), None, cell_weights())
    events = []
    for i in range(40):  # a USB injector: a key every 5 ms, held 3 ms
        cls = KeyClass.RIGHT_LETTER if i % 2 else KeyClass.LEFT_LETTER
        events += [Event(i * 5 * MS, Kind.DOWN, cls, i), Event(i * 5 * MS + 3 * MS, Kind.UP, cls, i)]
    effects = run(pipeline, events)
    locks = [e for e in effects if isinstance(e, Lock)]
    assert locks and locks[0].reason == "injection"
    audit = [e for e in effects if isinstance(e, Audit) and e.kind == "injection"][0]
    assert audit.fields["verdict"] == "injection" and "recent_gaps_ms" in audit.fields
    assert pipeline.enrol_keys == 0  # nothing of it was learned
    more = [Event(10**9 + i * 150 * MS, Kind.DOWN if i % 2 == 0 else Kind.UP,
                  KeyClass.SPACE, 1000 + i // 2) for i in range(400)]
    assert run(pipeline, more) == [] and pipeline._keys_in_buffer == 0  # held until unlocked
    pipeline.session_locked(True)
    pipeline.session_locked(False)
    run(pipeline, more)
    assert pipeline.enrol_keys > 0


def _payload(start_ns: int, n: int = 40) -> list[Event]:
    """A USB injector: a key every 5 ms, held 3 ms."""
    events = []
    for i in range(n):
        cls = KeyClass.RIGHT_LETTER if i % 2 else KeyClass.LEFT_LETTER
        t = start_ns + i * 5 * MS
        events += [Event(t, Kind.DOWN, cls, 500 + i), Event(t + 3 * MS, Kind.UP, cls, 500 + i)]
    return events


@pytest.mark.parametrize("new_keyboard", [True, False])
def test_a_keyboard_attached_before_an_injection_is_audited_and_locks_on_its_5th_key(
        new_keyboard):
    pipeline = Pipeline(Policy(injection_new_keyboard=new_keyboard), None, cell_weights())
    effects = pipeline.feed(Event(10 * MS, Kind.ATTACH))
    assert effects == [Audit("keyboard_attached", {})]
    assert pipeline.feed(Event(10 * MS, Kind.NEW_KEYBOARD)) == []   # its keys next: judged
    keys = 0
    for event in _payload(900 * MS):
        keys += event.kind == Kind.DOWN
        if any(isinstance(e, Lock) for e in pipeline.feed(event)):
            break
    assert pipeline.status()["verdict"] == "injection"
    assert keys == (5 if new_keyboard else 6)
    assert pipeline.enrol_keys == 0


def test_a_keyboard_typing_for_the_first_time_locks_on_its_5th_key_unaudited():
    """X11's hooks say when a keyboard types here for the first time: its first keys are
    judged as a just-attached one's, with no audit entry (the user's own keyboard does this
    once at every start)."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    assert pipeline.feed(Event(10 * MS, Kind.NEW_KEYBOARD)) == []
    keys = 0
    for event in _payload(900 * MS):
        keys += event.kind == Kind.DOWN
        if any(isinstance(e, Lock) for e in pipeline.feed(event)):
            break
    assert pipeline.status()["verdict"] == "injection" and keys == 5


def test_software_injection_is_judged_when_the_policy_does_not_allow_it():
    pipeline = Pipeline(Policy(injection_allow_software=False), None, cell_weights())
    payload = [e._replace(injected=True) for e in _payload(900 * MS)]
    assert pipeline.feed(Event(10 * MS, Kind.NEW_KEYBOARD, injected=True)) == []
    keys = 0
    for event in payload:
        keys += event.kind == Kind.DOWN
        if any(isinstance(e, Lock) for e in pipeline.feed(event)):
            break
    assert pipeline.status()["verdict"] == "injection" and keys == 5


def test_allowed_software_injection_is_neither_learned_nor_flagged():
    pipeline = Pipeline(Policy(), None, cell_weights())
    events = [Event(0, Kind.NEW_KEYBOARD, injected=True)]
    events += [Event(i * 5 * MS, Kind.DOWN if i % 2 == 0 else Kind.UP, KeyClass.LEFT_LETTER,
                     i // 2, injected=True) for i in range(400)]
    assert run(pipeline, events) == [] and pipeline._keys_in_buffer == 0
    assert pipeline.injection._new_keyboard_keys == 0  # software's arrival opens no window


def test_locked_paused_and_degraded_ignore_input_and_come_back():
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.session_locked(True)
    assert pipeline.feed(Event(0, Kind.DOWN, KeyClass.SPACE, 0)) == []
    assert pipeline.state == "locked" and pipeline._keys_in_buffer == 0
    pipeline.session_locked(False)
    assert pipeline.state == "learning"
    pipeline.pause()
    assert pipeline.state == "paused"
    pipeline.resume()
    pipeline.degrade("hook-silent")
    assert pipeline.status()["detail"].startswith("an input hook is silent")
    pipeline.degrade(None)
    assert pipeline.state == "learning"


def test_the_lock_comes_before_the_notification():
    """A notification can take seconds (a desktop service to start): the lock is not kept
    waiting behind it while a payload types on."""
    effects = _until_injection(Pipeline(Policy(), None, cell_weights()), _payload(900 * MS))
    assert [type(e) for e in effects] == [Audit, Lock, Notify]


def _until_injection(pipeline, events) -> list:
    """Feed events until one gives effects; those effects."""
    for event in events:
        effects = pipeline.feed(event)
        if effects:
            return effects
    return []


def test_an_injector_at_the_lock_screen_is_reported_once_and_counted_at_unlock():
    """The user locked the session and left; a USB injector types at the lock screen (guessing
    the password, or a payload that does not know the screen is locked). Nothing is learned or
    scored, and there is nothing to lock: one alert, the rest counted when the user is back."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.session_locked(True)
    assert pipeline.feed(Event(10 * MS, Kind.ATTACH)) == [
        Audit("keyboard_attached", {"while_locked": True})]
    assert pipeline.feed(Event(10 * MS, Kind.NEW_KEYBOARD)) == []
    effects = _until_injection(pipeline, _payload(900 * MS))
    (audit,) = [e for e in effects if isinstance(e, Audit)]
    assert audit.kind == "injection" and audit.fields["while_locked"] is True
    assert audit.fields["action"] == "alert" and audit.fields["keys_observed"] == 5
    assert not any(isinstance(e, Lock) for e in effects) and pipeline.state == "locked"
    assert run(pipeline, _payload(2_000 * MS, n=60)) == []     # more of it: counted, not alerted
    assert pipeline.enrol_keys == 0 and pipeline._keys_in_buffer == 0
    (back,) = pipeline.session_locked(False)
    assert back.fields["state"] == "learning" and back.fields["injections_unreported"] >= 2
    assert pipeline.status()["verdict"] == "ok"
    pipeline.session_locked(True)                               # the next lock starts afresh
    assert [e.kind for e in _until_injection(pipeline, _payload(9_000 * MS))
            if isinstance(e, Audit)] == ["injection"]
    assert "injections_unreported" not in pipeline.session_locked(False)[0].fields


def test_people_typing_at_the_lock_screen_are_not_reported(typists):
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.session_locked(True)
    for person in typists:
        assert run(pipeline, shifted(person.sessions[:3], start_ns=10**13)) == []
    assert pipeline.state == "locked" and pipeline._keys_in_buffer == 0


def test_an_injector_typing_on_after_its_lock_is_counted_not_reported_again():
    pipeline = Pipeline(Policy(), None, cell_weights())
    first = _until_injection(pipeline, _payload(900 * MS))
    assert any(isinstance(e, Lock) for e in first)
    assert run(pipeline, _payload(1_500 * MS, n=30)) == []      # before the lock took hold
    pipeline.session_locked(True)
    assert run(pipeline, _payload(3_000 * MS, n=30)) == []      # at the lock screen
    assert pipeline.session_locked(False)[0].fields["injections_unreported"] >= 2


def test_an_injection_after_an_impostor_alert_takes_the_injection_action():
    """Alert-only for impostors holds the scoring, not the injection rule: an injector then
    still gets the injection's own action (lock)."""
    pipeline = Pipeline(Policy(action="alert"), None, cell_weights())
    pipeline.profile = object()  # the verdict path does not need the model
    pipeline._verdict("impostor", 9.0, "keyboard")
    assert pipeline.holding() and pipeline.state == "alert"
    effects = _until_injection(pipeline, _payload(900 * MS))
    assert [e.reason for e in effects if isinstance(e, Lock)] == ["injection"]
    assert pipeline.last_verdict == "injection"


def test_a_pause_is_no_way_round_the_injection_rule(typists):
    """Whoever paused protection (the user, or someone at a session left unlocked) then plugs
    in an injector: the injection rule still watches and locks; the pause is over. People
    typing while paused are neither flagged, learned nor scored."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    assert [e.kind for e in pipeline.pause()] == ["state"]
    for person in typists:
        assert run(pipeline, shifted(person.sessions[:3], start_ns=10**13)) == []
    assert pipeline.state == "paused" and pipeline.enrol_keys == 0 \
        and pipeline._keys_in_buffer == 0
    assert pipeline.feed(Event(10**14, Kind.ATTACH)) == [Audit("keyboard_attached", {})]
    assert pipeline.feed(Event(10**14, Kind.NEW_KEYBOARD)) == []
    payload = _payload(10**14 + 900 * MS)
    effects = _until_injection(pipeline, payload[:9])             # on its 5th key-down
    (audit,) = [e for e in effects if isinstance(e, Audit)]
    assert audit.kind == "injection" and audit.fields["action"] == "lock"
    assert [e.reason for e in effects if isinstance(e, Lock)] == ["injection"]
    assert pipeline.state == "alert" and pipeline.holding()
    assert pipeline.resume() == [] and pipeline.pause() == []   # held until the unlock


def test_an_injection_observed_while_paused_still_holds_after_the_resume():
    pipeline = Pipeline(Policy(injection_action="observe"), None, cell_weights())
    pipeline.pause()
    effects = _until_injection(pipeline, _payload(900 * MS))
    assert [(e.kind, e.fields["action"]) for e in effects] == [("injection", "observe")]
    assert pipeline.state == "paused"
    assert [e.fields["state"] for e in pipeline.resume()] == ["learning"]
    assert pipeline.holding()
    more = run(pipeline, _payload(2_000 * MS, n=60))            # each detection audited
    assert more and {(e.kind, e.fields["action"]) for e in more} == {("injection", "observe")}
    assert pipeline.enrol_keys == 0 and pipeline._keys_in_buffer == 0


def test_an_injector_typing_while_the_keyring_is_locked_is_locked_out_and_held():
    """Degraded with its hooks still hearing keys (a keyring not unlocked yet): the injection
    rule watches and acts. The agent stays degraded; the verdict is what it goes back to."""
    pipeline = Pipeline(Policy(injection_action="alert"), None, cell_weights())
    pipeline.degrade("keyring-locked")
    effects = _until_injection(pipeline, _payload(900 * MS))
    assert [e.kind for e in effects if isinstance(e, Audit)] == ["injection"]
    assert any(isinstance(e, Notify) for e in effects)
    assert (pipeline.state, pipeline.reason) == ("degraded", "keyring-locked")
    assert pipeline.degrade(None) == [Audit("state", {"state": "alert"})]
    assert pipeline.reason == "injection" and pipeline.holding()
    locking = Pipeline(Policy(), None, cell_weights())
    locking.degrade("keyring-locked")
    assert any(isinstance(e, Lock) for e in _until_injection(locking, _payload(900 * MS)))
    assert locking.state == "degraded"
    assert [e.kind for e in locking.lock_failed("loginctl") if isinstance(e, Audit)] \
        == ["lock_failed"]
    assert (locking.state, locking.reason) == ("degraded", "keyring-locked")
    locking.degrade(None)
    assert (locking.state, locking.reason) == ("alert", "lock-failed") and locking.holding()


@pytest.mark.parametrize("action", ["lock", "alert", "observe"])
def test_an_injector_at_the_lock_screen_while_degraded_is_reported_as_at_the_lock_screen(action):
    """Degraded (a keyring not unlocked yet), then the user locks the screen: an injector
    typing at the lock screen is reported as such (no lock, one alert), and the unlock is
    still the unlock: the agent goes back to work once the keyring opens."""
    pipeline = Pipeline(Policy(injection_action=action), None, cell_weights())
    pipeline.degrade("keyring-locked")
    pipeline.session_locked(True)
    effects = _until_injection(pipeline, _payload(900 * MS))
    (audit,) = [e for e in effects if isinstance(e, Audit)]
    assert audit.fields["while_locked"] is True and audit.fields["action"] == "alert"
    assert not any(isinstance(e, Lock) for e in effects)
    assert run(pipeline, _payload(2_000 * MS, n=60)) == []      # counted, not reported again
    assert pipeline.lock_failed("loginctl") == [Audit("lock_failed", {"method": "loginctl"})]
    (back,) = pipeline.session_locked(False)
    assert back.fields["state"] == "degraded" and back.fields["injections_unreported"] >= 2
    assert pipeline.degrade(None) == [Audit("state", {"state": "learning"})]
    assert not pipeline.holding() and pipeline.last_verdict == "ok"


def test_pause_is_refused_when_policy_forbids():
    pipeline = Pipeline(Policy(allow_pause=False), None, cell_weights())
    assert pipeline.pause() == [] and pipeline.state == "learning"


def test_enrolment_quality_needs_enough_varied_typing():
    assert "fewer than" in enrolment_quality(np.ones((3, 7040)))
    empty = np.zeros((12, 7040))
    empty[:, 0] = 100
    assert "little varied" in enrolment_quality(empty)


def test_mouse_evidence_moves_trust_and_locks_a_clicking_impostor(balabit_dir):
    """A profile with a mouse model (trained as the agent trains it) judges pointer use: the
    enrolled user's later sessions keep trust far longer than another person's."""
    from agent.features.mouse import features
    from agent.runtime import train_profile
    from agent.sources.datasets import balabit
    people, _ = balabit.load(balabit_dir, users=3, seed=2)
    owner, *others = people
    enrol = np.concatenate([features(s)[0] for s in owner.sessions[:-2]])
    keystroke_windows = np.zeros((12, 7040))
    keystroke_windows[:, ::37] = 3  # typing is not what this test is about
    profile = train_profile(Train(keystroke_windows, enrol))
    assert profile.mouse is not None and profile.mouse.window == 20
    restored = Profile.from_json(profile.to_json())
    np.testing.assert_allclose(restored.mouse.train, profile.mouse.train)

    def locked(sessions):
        pipeline = Pipeline(Policy(), restored, cell_weights())
        effects = run(pipeline, [e for s in sessions for e in s])
        return any(isinstance(e, Lock) for e in effects), pipeline

    genuine_locked, genuine = locked(owner.sessions[-2:])
    assert not genuine_locked and genuine.status()["last_mouse_score"] is not None
    for other in others:
        impostor_locked, impostor = locked(other.sessions[-2:])
        assert impostor_locked, "a clicking impostor must be locked out"
        assert impostor.status()["verdict"] == "impostor"


def test_the_worker_sleeps_longer_once_input_stops():
    from agent.runtime import IDLE_TICK_S, LOCK_CHECK_S, TICK_S, UNLOCK_CHECK_S, tick_interval
    assert tick_interval(0.5, False) == TICK_S == 1.0  # the user is around
    assert tick_interval(LOCK_CHECK_S + 1, False) == IDLE_TICK_S > 1.0  # idle
    assert tick_interval(3600, True) == UNLOCK_CHECK_S  # watch for the unlock
    assert tick_interval(0.5, True) == UNLOCK_CHECK_S


def test_an_observed_injection_does_not_release_an_impostor_hold():
    """Injection set to observe, impostors to alert: the injector's detection is audited, and
    the impostor's hold (nothing scored, nothing learned) stays until the session is unlocked."""
    pipeline = Pipeline(Policy(action="alert", injection_action="observe"), None, cell_weights())
    pipeline.profile = object()  # the verdict path does not need the model
    pipeline._verdict("impostor", 9.0, "keyboard")
    effects = _until_injection(pipeline, _payload(900 * MS))
    (audit,) = effects
    assert audit.kind == "injection" and audit.fields["action"] == "observe"
    assert pipeline.holding() and pipeline.last_verdict == "impostor"
    later = run(pipeline, _payload(2_000 * MS))                 # each one audited
    assert later and {(e.kind, e.fields["action"]) for e in later} == {("injection", "observe")}
    assert pipeline._keys_in_buffer == 0 and pipeline.state == "alert"


def test_keys_after_an_observed_injection_are_not_learned_until_a_break():
    """Observe-only injection: no lock, but the payload, and whatever follows it without a
    break of WINDOW_BREAK_S, is neither learned nor scored; each detection is audited."""
    pipeline = Pipeline(Policy(injection_action="observe"), None, cell_weights())
    effects = _until_injection(pipeline, _payload(900 * MS))
    assert [e.fields["action"] for e in effects if isinstance(e, Audit)] == ["observe"]
    assert not any(isinstance(e, Lock) for e in effects)
    human, t = [], 2 * 10**9
    for i in range(120):                     # a hand: uneven gaps, holds of 70-110 ms
        t += (150, 170, 130, 190, 120, 160, 210)[i % 7] * MS
        cls = (KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE)[i % 3]
        human += [Event(t, Kind.DOWN, cls, 1000 + i),
                  Event(t + (90, 70, 110)[i % 3] * MS, Kind.UP, cls, 1000 + i)]
    assert run(pipeline, human) == [] and pipeline.enrol_keys == 0
    again = [e.kind for e in run(pipeline, _payload(60 * 10**9)) if isinstance(e, Audit)]
    assert again and set(again) == {"injection"} and pipeline.enrol_keys == 0
    after_break = [e._replace(t_ns=e.t_ns + 200 * 10**9, press_id=e.press_id + 10**4)
                   for e in human]
    run(pipeline, after_break)
    assert pipeline.enrol_keys > 0 and pipeline.last_verdict == "ok"


def test_degraded_while_locked_comes_back_locked():
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.session_locked(True)
    pipeline.last_verdict = "injection"
    pipeline.degrade("hook-silent")
    pipeline.degrade(None)
    assert pipeline.state == "locked"
    assert pipeline.session_locked(False) == [Audit("state", {"state": "learning"})]
    assert pipeline.last_verdict == "ok" and not pipeline.holding()


@pytest.mark.parametrize("why", ["degraded", "held", "alert"])
def test_pause_is_refused_while_degraded_held_or_alerting(why):
    """A pause must not lead out of a state the agent did not choose: a keyring that keeps the
    profile locked (resuming would learn a new profile over it), a verdict's hold or an
    "unusual typing" alert (an impostor could pause and resume it away)."""
    pipeline = Pipeline(Policy(action="alert"), None, cell_weights())
    if why == "degraded":
        pipeline.degrade("keyring-locked")
    else:
        pipeline.profile = object()
        pipeline._verdict("impostor" if why == "held" else "suspect", 9.0, "keyboard")
    before = pipeline.state
    assert pipeline.pause() == [] and pipeline.state == before
    assert pipeline.resume() == [] and pipeline.state == before


def test_a_resume_keeps_the_trust_level_from_before_the_pause():
    """Trust fallen short of an alert stays fallen across a pause: pause and resume are no
    way to a fresh start for someone whose typing the agent doubts."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.profile = object()
    pipeline.state = "protecting"
    pipeline.trust = TrustState(trust=55.0, windows=12)
    assert [e.kind for e in pipeline.pause()] == ["state"]
    assert [e.kind for e in pipeline.resume()] == ["state"]
    assert pipeline.state == "protecting" and pipeline.trust == TrustState(trust=55.0, windows=12)


def test_a_suspect_window_after_an_observed_verdict_alerts():
    pipeline = Pipeline(Policy(action="observe"), None, cell_weights())
    pipeline.profile = object()
    assert [e.kind for e in pipeline._verdict("impostor", 9.0, "keyboard")] == ["impostor"]
    assert [e.kind for e in pipeline._verdict("suspect", 3.0, "keyboard")] == ["alert"]
    assert pipeline._verdict("suspect", 3.0, "keyboard") == []


def _three_windows_and_ten_keys(pipeline) -> int:
    """A person types three enrolment windows and ten keys into a fourth; the last key's time."""
    from agent.pipeline import ENROL_WINDOW
    human, t = [], 0
    for i in range(3 * ENROL_WINDOW + 10):
        t += (150, 170, 130, 190, 120, 160, 210)[i % 7] * MS
        cls = (KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE)[i % 3]
        human += [Event(t, Kind.DOWN, cls, i), Event(t + (90, 70, 110)[i % 3] * MS, Kind.UP, cls, i)]
    assert run(pipeline, human) == []
    return t


def _profile_from(windows) -> Profile:
    return Profile(KeystrokeModel.from_detector(RankShift().fit(np.array(windows))), None)


def test_enrolment_the_payload_may_have_begun_in_is_dropped_with_it():
    """A rule fires some keys into a payload: a window cut among those keys may hold its first
    ones. Windows cut within INJECTION_REACH key-downs of the detection go; earlier ones stay."""
    from agent.pipeline import ENROL_WINDOW, INJECTION_REACH
    pipeline = Pipeline(Policy(), None, cell_weights())
    t = _three_windows_and_ten_keys(pipeline)
    assert len(pipeline.enrol_windows) == 3
    effects = _until_injection(pipeline, _payload(t + 150 * MS))
    assert any(isinstance(e, Lock) for e in effects)
    # the last cut was 10 human and 5 injected key-downs before the detection: within reach;
    # the one before, 50 more back, is not
    assert 10 + 5 < INJECTION_REACH <= 10 + 5 + ENROL_WINDOW
    assert len(pipeline.enrol_windows) == 2 and pipeline.enrol_keys == 2 * ENROL_WINDOW


def test_a_profile_trained_while_a_payload_typed_is_not_installed():
    """The enrolment went to train; a payload is detected before the profile comes back. The
    windows sent may hold the payload's first keys: the profile is dropped, those windows go,
    and learning goes on (and trains again on what is left and what comes)."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    t = _three_windows_and_ten_keys(pipeline)
    profile = _profile_from(pipeline.enrol_windows)
    pipeline.training = True                    # a Train with those windows is in flight
    assert any(isinstance(e, Lock) for e in _until_injection(pipeline, _payload(t + 150 * MS)))
    assert len(pipeline.enrol_windows) == 2
    assert pipeline.installed(profile) == [
        Audit("enrolment", {"state": "learning", "reason": "injection"})]
    assert pipeline.profile is None and not pipeline.training
    assert pipeline.session_locked(True) and pipeline.session_locked(False)
    assert pipeline.state == "learning" and pipeline.installed(profile)[0] == Save(profile)


def test_a_training_that_fails_after_an_injection_leaves_the_next_profile_alone():
    pipeline = Pipeline(Policy(), None, cell_weights())
    t = _three_windows_and_ten_keys(pipeline)
    profile = _profile_from(pipeline.enrol_windows)
    pipeline.training = True
    _until_injection(pipeline, _payload(t + 150 * MS))
    pipeline.training_failed()
    pipeline.session_locked(True)
    pipeline.session_locked(False)
    pipeline.training = True                    # the retry, on clean windows
    assert pipeline.installed(profile)[0] == Save(profile) and pipeline.profile is profile


@pytest.mark.parametrize("reason", ["wayland", "keyring-locked"])
def test_a_lock_and_unlock_while_degraded_leave_it_degraded(reason):
    """A Wayland session sees no input, and stays so across a lock: the agent must not show
    'protecting' after the unlock. What it goes back to once the problem passes follows the
    lock."""
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.degrade(reason)
    assert pipeline.session_locked(True) == [] and pipeline.state == "degraded"
    assert pipeline.session_locked(False) == []
    assert (pipeline.state, pipeline.reason) == ("degraded", reason)
    pipeline.session_locked(True)
    pipeline.degrade(None)
    assert pipeline.state == "locked"                 # the problem passed while locked


def test_degraded_after_a_failed_lock_comes_back_alerting_and_held():
    pipeline = Pipeline(Policy(), None, cell_weights())
    pipeline.profile = object()
    pipeline._verdict("impostor", 9.0, "keyboard")
    pipeline.lock_failed("none")
    pipeline.degrade("hook-stopped")
    pipeline.degrade(None)
    assert (pipeline.state, pipeline.reason) == ("alert", "lock-failed") and pipeline.holding()


def test_a_failed_training_is_tried_again_later(typists):
    from agent.pipeline import RETRAIN_AFTER_KEYS
    pipeline = Pipeline(Policy(enrol_keystrokes=200), None, cell_weights())
    trains = []
    events = shifted([s for person in typists[:3] for s in person.sessions])
    for event in events:
        if any(isinstance(e, Train) for e in pipeline.feed(event)):
            trains.append(pipeline.enrol_keys)
            if len(trains) == 1:
                assert [type(e) for e in pipeline.training_failed()] == [Notify]
            else:
                break
    assert len(trains) == 2 and trains[1] == trains[0] + RETRAIN_AFTER_KEYS


def test_enrolment_that_never_passes_its_check_stays_bounded():
    from agent.pipeline import MAX_ENROL_WINDOWS
    pipeline = Pipeline(Policy(enrol_keystrokes=200), None, cell_weights())
    human, t = [], 0
    for i in range((MAX_ENROL_WINDOWS + 20) * 50):    # one key only: never a profile
        t += (150, 170, 130, 190, 120, 160, 210)[i % 7] * MS
        human += [Event(t, Kind.DOWN, KeyClass.SPACE, i),
                  Event(t + 90 * MS, Kind.UP, KeyClass.SPACE, i)]
    run(pipeline, human)
    assert pipeline.quality is not None and len(pipeline.enrol_windows) == MAX_ENROL_WINDOWS


def test_a_profile_ready_while_locked_protects_from_the_unlock_on(typists):
    """Training ends while the user is away and the session locked: the lock screen's keys
    are not scored, and protection starts at the unlock."""
    policy = Policy(enrol_keystrokes=500)
    pipeline = Pipeline(policy, None, cell_weights())
    profile = train(run(pipeline, shifted(typists[0].sessions[:11])))
    pipeline.session_locked(True)
    (_, audit, _) = pipeline.installed(profile)
    assert pipeline.state == "locked" and audit.fields["state"] == "locked"
    run(pipeline, shifted(typists[1].sessions[:2], start_ns=10**13))
    assert pipeline.last_score is None and pipeline.adaptations == 0
    assert pipeline.session_locked(False)[0].fields["state"] == "protecting"
