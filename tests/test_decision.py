"""The trust rule (agent.decision) and the continuous-authentication protocol on real typists."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import decision
from agent.decision import ScoringWindow, TrustPolicy, TrustState, Verdict

CALIBRATION = np.array([0.62, 0.7, 0.74, 0.75, 0.8, 0.84, 0.85, 0.92, 0.95, 1.09])
POLICY = TrustPolicy()
TH = decision.thresholds_from_calibration(CALIBRATION, POLICY)
scores = st.floats(min_value=-1.0, max_value=10.0, allow_nan=False)
trusts = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def run(values, state=None, thresholds=TH, policy=POLICY) -> TrustState:
    state = state or decision.reset()
    for value in values:
        state = decision.update(state, value, thresholds, policy)
    return state


def test_thresholds_come_from_the_calibration():
    assert TH.reference == pytest.approx(np.median(CALIBRATION))
    assert TH.adapt_below == pytest.approx(np.quantile(CALIBRATION, 0.75))
    shifted = decision.thresholds_from_calibration(CALIBRATION + 1.0)
    assert shifted.reference == pytest.approx(TH.reference + 1.0)
    with pytest.raises(ValueError):
        decision.thresholds_from_calibration([])
    with pytest.raises(ValueError):
        decision.thresholds_from_calibration([0.5, np.nan])


def test_trust_falls_faster_the_further_the_score():
    near = TH.reference + POLICY.tolerance + 0.2
    far = TH.reference + POLICY.tolerance + 0.7
    assert run([near]).trust < 100
    assert run([far]).trust < run([near]).trust
    assert 100 - run([far]).trust == pytest.approx(3.5 * (100 - run([near]).trust))


def test_one_odd_window_never_locks():
    state = run([1e6])
    assert state.trust == pytest.approx(100 - POLICY.max_drop)
    assert state.verdict is not Verdict.IMPOSTOR


def test_typical_scores_keep_full_trust():
    state = run([TH.reference] * 50)
    assert state.trust == 100 and state.verdict is Verdict.OK and state.windows == 50


def test_alert_then_lock_as_trust_falls():
    high = TH.reference + POLICY.tolerance + 0.5  # 25 points per window
    seen = [s.verdict for s in _states([high] * 4)]
    assert seen == [Verdict.OK, Verdict.SUSPECT, Verdict.SUSPECT, Verdict.IMPOSTOR]
    assert _states([high] * 4)[-1].trust < POLICY.lock_at


def test_trust_recovers_with_genuine_windows():
    high = TH.reference + POLICY.tolerance + 0.5
    suspect = run([high, high])
    assert suspect.verdict is Verdict.SUSPECT
    recovered = run([TH.reference - 0.5] * 3, suspect)
    assert recovered.trust > suspect.trust
    assert recovered.verdict is Verdict.OK


def test_a_lock_holds_until_reset():
    locked = run([TH.reference + 5] * 3)
    assert locked.verdict is Verdict.IMPOSTOR
    assert run([TH.reference - 1] * 20, locked) == locked
    assert decision.reset() == TrustState(100.0, Verdict.OK, 0)
    injected = decision.with_verdict(decision.reset(), Verdict.INJECTION)
    assert decision.update(injected, 0.0, TH, POLICY) == injected


def test_sensitivity_locks_sooner():
    high = [TH.reference + POLICY.tolerance + 0.3] * 20
    def windows_to_lock(policy):
        return next(i for i, s in enumerate(_states(high, policy), 1)
                    if s.verdict is Verdict.IMPOSTOR)
    strict = dataclasses.replace(POLICY, sensitivity=2.0)
    lax = dataclasses.replace(POLICY, sensitivity=0.5)
    assert windows_to_lock(strict) < windows_to_lock(POLICY) < windows_to_lock(lax)


def test_policy_is_validated():
    with pytest.raises(ValueError):
        TrustPolicy(alert_at=20, lock_at=30)
    with pytest.raises(ValueError):
        TrustPolicy(sensitivity=0)
    with pytest.raises(ValueError):
        ScoringWindow(size=10, first=20)


def _states(values, policy=POLICY):
    out, state = [], decision.reset()
    for value in values:
        state = decision.update(state, value, TH, policy)
        out.append(state)
    return out


@given(scores, scores)
def test_trust_change_is_monotone_and_bounded(a, b):
    lo, hi = sorted((a, b))
    assert decision.trust_change(hi) <= decision.trust_change(lo)
    assert -POLICY.max_drop <= decision.trust_change(a) <= POLICY.max_rise


@given(trusts, scores, scores)
def test_update_is_monotone_in_score_and_stays_in_range(trust, a, b):
    state = TrustState(trust, decision.verdict_for(trust), 3)
    lo, hi = sorted((a, b))
    after_lo, after_hi = (decision.update(state, s, TH, POLICY) for s in (lo, hi))
    if state.verdict is Verdict.IMPOSTOR:
        assert after_lo == after_hi == state
        return
    assert after_hi.trust <= after_lo.trust
    assert 0 <= after_hi.trust <= 100 and after_hi.windows == 4
    assert after_hi.verdict == decision.verdict_for(after_hi.trust)


@given(trusts, trusts)
def test_verdict_is_monotone_in_trust(a, b):
    order = [Verdict.IMPOSTOR, Verdict.SUSPECT, Verdict.OK]
    lo, hi = sorted((a, b))
    assert order.index(decision.verdict_for(lo)) <= order.index(decision.verdict_for(hi))


@given(st.lists(scores, max_size=30), scores)
def test_a_higher_score_never_leaves_more_trust(history, extra):
    base = run(history)
    if base.verdict is Verdict.IMPOSTOR:
        return
    assert run([extra + 0.5], base).trust <= run([extra], base).trust


def test_adaptation_takes_only_clearly_genuine_windows():
    ok = decision.reset()
    assert decision.may_adapt(ok, TH.reference, TH)
    assert not decision.may_adapt(ok, TH.adapt_below + 0.01, TH)
    assert not decision.may_adapt(ok, float("nan"), TH)
    wary = run([TH.reference + POLICY.tolerance + 0.3])  # trust 85: not clearly the user
    assert wary.verdict is Verdict.OK and not decision.may_adapt(wary, TH.reference, TH)
    for verdict in (Verdict.SUSPECT, Verdict.IMPOSTOR, Verdict.INJECTION):
        assert not decision.may_adapt(TrustState(100.0, verdict), TH.reference, TH)


@given(st.lists(scores, min_size=1, max_size=30))
def test_an_impostor_window_never_trains_the_profile(history):
    state = run(history)
    for score in history:
        if score > TH.adapt_below:
            assert not decision.may_adapt(state, score, TH)


def test_scoring_window_schedule():
    w = ScoringWindow(size=200, step=10, first=30)
    assert list(decision.scoring_points(65, w)) == [30, 40, 50, 60]
    assert len(decision.scoring_points(29, w)) == 0
    assert decision.window_span(30, w) == (0, 30)
    assert decision.window_span(450, w) == (250, 450)
    # is_due, fed one keystroke at a time, scores exactly at scoring_points
    due, last = [], None
    for typed in range(1, 101):
        if decision.is_due(typed, last, w):
            due.append(typed)
            last = typed
    assert due == list(decision.scoring_points(100, w))


def test_continuous_evaluation_on_real_typists(aalto_dir):
    from agent.evaluation import continuous
    from agent.sources.datasets import aalto

    people, _ = aalto.load(aalto_dir, users=20, seed=0)
    result = continuous.evaluate(people, seed=0)
    assert result["users"] == 20 and result["impostor_streams"] == 20 * 19
    assert json.loads(json.dumps(result)) == result
    assert result["genuine_keystrokes"] > 20 * 100
    assert result["anga"] == result["genuine_keystrokes"] / max(result["false_locks"], 1)
    window = ScoringWindow()
    assert window.first <= result["ania"] <= 300
    assert result["ania"] < 200 and result["impostors_missed_pct"] < 20
    assert result["false_locks"] <= 2
    injectors = result["injectors"]
    assert set(injectors) == set(continuous.INJECTORS)
    for kind, found in injectors.items():   # jittered injectors, the profile alone
        assert found["streams"] == 20 and found["missed_pct"] <= 10, (kind, found)
        assert window.first <= found["median_keys_to_lock"] <= 150, (kind, found)
    assert continuous.evaluate(people, seed=0) == result
    lines = continuous.summary_lines(result)
    assert any("ANIA" in line for line in lines) and any("ANGA" in line for line in lines)
    assert sum("profile alone vs injector" in line for line in lines) == len(injectors)


def test_an_injector_table_keeps_the_keys_and_draws_the_timing(aalto_dir):
    from agent.evaluation import continuous
    from agent.sources.datasets import aalto

    (person,), _ = aalto.load(aalto_dir, users=1, seed=3)
    table = continuous.stream_table(person.sessions)
    rng = np.random.default_rng(0)
    out = continuous.injector_table(table, (20.0, 120.0), (60.0, 140.0), rng)
    assert np.array_equal(out[:, 2], table[:, 2]) and out[0, 0] == 0.0
    delays = np.diff(out[:, 0])
    assert delays.min() >= 20.0 and delays.max() <= 120.0 and delays.std() > 20
    assert out[:, 1].min() >= 60.0 and out[:, 1].max() <= 140.0


def test_stream_table_concatenates_sessions_in_order(aalto_dir):
    from agent.evaluation import continuous
    from agent.features.keystroke import keystrokes
    from agent.sources.datasets import aalto

    (person,), _ = aalto.load(aalto_dir, users=1, seed=3)
    table = continuous.stream_table(person.sessions[-5:])
    assert len(table) == sum(len(keystrokes(s)) for s in person.sessions[-5:])
    assert np.all(np.diff(table[:, 0]) >= 0)


def test_a_legacy_profile_keeps_its_old_tolerance():
    calibration = [0.6, 0.7, 0.8]
    new = decision.thresholds_from_calibration(calibration)
    old = decision.thresholds_from_calibration(calibration, legacy=True)
    assert old.reference == pytest.approx(new.reference + decision.LEGACY_REFERENCE_OFFSET)
    assert old.adapt_below == new.adapt_below
    assert decision.TrustPolicy().tolerance + decision.LEGACY_REFERENCE_OFFSET == \
        pytest.approx(0.5)


def test_enrolment_drift_widens_the_reference_only_beyond_the_dead_zone():
    calibration = [0.6, 0.7, 0.8]
    policy = decision.TrustPolicy()
    plain = decision.thresholds_from_calibration(calibration, policy)
    for drift in (-0.5, 0.0, policy.drift_dead_zone):
        assert decision.thresholds_from_calibration(calibration, policy, drift=drift) == plain
    wide = decision.thresholds_from_calibration(calibration, policy,
                                                drift=policy.drift_dead_zone + 0.4)
    assert wide.reference == pytest.approx(plain.reference + 0.4)
    assert wide.adapt_below == plain.adapt_below  # what may train the profile does not widen
    with pytest.raises(ValueError, match="drift"):
        decision.thresholds_from_calibration(calibration, policy, drift=float("nan"))
    with pytest.raises(ValueError, match="drift_dead_zone"):
        decision.TrustPolicy(drift_dead_zone=-0.1)
