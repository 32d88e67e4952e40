"""Keystroke features and the per-user model, on hand-built streams with known answers."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from agent.events import Event, KeyClass, Kind
from agent.features import keystroke as ks
from agent.model.detector import RankShift
from agent.model.profile import KeystrokeModel, Profile, ProfileError
from agent.model.prior import cell_weights, discriminability
from agent.model.rankshift import estimate_overdispersion

MS = 1_000_000


def typing(classes, press_ms, hold_ms, start_id=0):
    events = []
    for i, (cls, t, h) in enumerate(zip(classes, press_ms, hold_ms)):
        events.append(Event(int(t * MS), Kind.DOWN, KeyClass(cls), start_id + i))
        events.append(Event(int((t + h) * MS), Kind.UP, KeyClass(cls), start_id + i))
    return sorted(events, key=lambda e: e.t_ns)


def person(rng, hold, gap, n=60, sessions=12):
    """Synthetic typist: log-normal holds and gaps around a personal tempo."""
    out = []
    for _ in range(sessions):
        classes = rng.choice([0, 1, 3, 8], size=n, p=[0.4, 0.35, 0.2, 0.05])
        gaps = rng.lognormal(np.log(gap), 0.35, size=n)
        holds = rng.lognormal(np.log(hold), 0.25, size=n)
        out.append(typing(classes, np.cumsum(gaps), holds))
    return out


def test_keystrokes_pair_by_press_id_and_ignore_repeats():
    events = [
        Event(0, Kind.DOWN, KeyClass.MODIFIER, 0),
        Event(10 * MS, Kind.DOWN, KeyClass.LEFT_LETTER, 1),
        Event(40 * MS, Kind.DOWN, KeyClass.LEFT_LETTER, 1, repeat=True),
        Event(90 * MS, Kind.UP, KeyClass.LEFT_LETTER, 1),
        Event(100 * MS, Kind.UP, KeyClass.MODIFIER, 0),
        Event(150 * MS, Kind.DOWN, KeyClass.SPACE, 2),
    ]
    table = ks.keystrokes(events)
    assert table.shape == (3, 3)
    np.testing.assert_allclose(table[:2], [[0, 100, 6], [10, 80, 0]])
    assert table[2, 0] == 150 and np.isnan(table[2, 1])


def test_samples_cells_and_values_are_known():
    table = ks.keystrokes(typing([0, 1, 3], [0, 120, 3000], [80, 95, 70]))
    cells, values = ks.samples(table)
    got = sorted(zip(cells.tolist(), values.tolist()))
    expected = sorted([
        (ks.HOLD0 + 0, 80.0), (ks.HOLD0 + 1, 95.0), (ks.HOLD0 + 3, 70.0),
        (ks.DD0 + 0 * 10 + 1, 120.0),  # the 2,880 ms flight is a pause: no sample
    ])
    assert got == expected


def test_holds_are_capped_and_bins_are_log_spaced():
    table = ks.keystrokes(typing([0], [0], [5000]))
    assert ks.samples(table)[1].tolist() == [ks.MAX_HOLD_MS]
    bins = ks.time_bin(np.array([0.5, 1, 10, 100, 1000, 2000, 9999]))
    assert bins[0] == bins[1] == 0 and bins[-1] == bins[-2] == ks.N_BINS - 1
    assert np.all(np.diff(bins) >= 0)
    assert abs((bins[3] - bins[2]) - (bins[4] - bins[3])) <= 1  # equal steps per decade


def test_histograms_pool_by_addition():
    a = typing([0, 1], [0, 100], [80, 90])
    b = typing([3, 0], [5000, 5150], [60, 70], start_id=10)
    pooled = ks.window_vector(a) + ks.window_vector(b)
    assert pooled.shape == (ks.N_FEATURES,)
    assert pooled.sum() == 4 + 2  # 4 holds, 2 flights
    assert pooled.sum() == ks.window_vector(a + b).sum()  # the 4,850 ms gap is a pause


def test_detector_tells_two_synthetic_typists_apart():
    rng = np.random.default_rng(1)
    alice = [ks.window_vector(s) for s in person(rng, hold=90, gap=180)]
    bob = [ks.window_vector(s) for s in person(rng, hold=120, gap=260)]
    det = RankShift().fit(np.array(alice[:8]))
    genuine = det.decision_function(np.array(alice[8:]))
    impostor = det.decision_function(np.array(bob[8:]))
    assert genuine.max() < impostor.min()
    assert det.predict(np.array(bob[8:])).tolist() == [1] * 4
    assert det.threshold_ == pytest.approx(np.percentile(det.decision_scores_, 95))


def test_leave_one_out_scores_are_honest():
    rng = np.random.default_rng(2)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200)])
    det = RankShift().fit(windows)
    in_sample = det.decision_function(windows)
    assert np.mean(det.decision_scores_) > np.mean(in_sample)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_numpy_scores_equal_pyod_detector_scores(seed):
    rng = np.random.default_rng(seed)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, n=40, sessions=6)])
    det = RankShift().fit(windows[:4])
    model = KeystrokeModel.from_detector(det)
    restored = Profile.from_json(Profile(model).to_json()).keystroke
    np.testing.assert_allclose(restored.score(windows, cell_weights()),
                               det.decision_function(windows), rtol=0, atol=1e-12)


def test_scores_allow_for_the_reference_being_a_sample_too():
    """The Mann-Whitney variance counts the enrolment timings: a window as long as the
    enrolment scores lower with the correction, a short one about the same."""
    rng = np.random.default_rng(4)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, n=60, sessions=6)])
    old = RankShift(finite_reference=False).fit(windows[:2])
    new = RankShift().fit(windows[:2])
    long_window = windows[2:].sum(axis=0)[None, :]
    assert new.decision_function(long_window)[0] < 0.8 * old.decision_function(long_window)[0]
    ratio = new.decision_function(windows[2:]) / old.decision_function(windows[2:])
    assert np.all((ratio > 0.6) & (ratio <= 1.0))


def test_profiles_saved_before_the_correction_keep_scoring_as_they_were_calibrated():
    rng = np.random.default_rng(5)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, sessions=5)])
    det = RankShift(finite_reference=False).fit(windows[:4])
    data = json.loads(Profile(KeystrokeModel.from_detector(det)).to_json())
    del data["keystroke"]["params"]["finite_reference"]  # as an older agent wrote it
    restored = Profile.from_json(json.dumps(data).encode()).keystroke
    assert restored.finite_reference is False
    np.testing.assert_allclose(restored.score(windows, cell_weights()),
                               det.decision_function(windows), rtol=0, atol=1e-12)


def test_overdispersion_caps_long_window_evidence_and_barely_moves_short_windows():
    """The session-to-session spread of a cell's mean position: a long window's z stops growing
    like sqrt(n), a short window's scores about the same."""
    rng = np.random.default_rng(6)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, n=60, sessions=8)])
    plain = RankShift(overdispersion=(0.0, 0.0)).fit(windows[:4])
    new = RankShift().fit(windows[:4])
    long_window = windows[4:].sum(axis=0)[None, :]
    assert new.decision_function(long_window)[0] < plain.decision_function(long_window)[0]
    ratio = new.decision_function(windows[4:]) / plain.decision_function(windows[4:])
    assert np.all((ratio > 0.8) & (ratio <= 1.0))


def test_overdispersion_estimate_is_about_zero_for_steady_typists_and_follows_what_wanders():
    """tau is the spread of a session's typing around the user's own beyond sampling noise:
    about 0 when every session is drawn alike, large for the timings (holds here) whose tempo
    wanders from session to session, and only for those."""
    rng = np.random.default_rng(9)

    def users(hold_spread):
        return [np.array([ks.window_vector(s) for _ in range(10) for s in person(
            rng, 100 * np.exp(rng.normal(0, hold_spread)), 200, n=60, sessions=1)])
            for _ in range(4)]
    steady, wandering = estimate_overdispersion(users(0.0)), estimate_overdispersion(users(0.15))
    assert max(steady) < 0.05  # seeds 9-13: at most 0.04, wandering holds at least 0.14
    assert wandering[0] > 0.1 and wandering[1] < 0.05


def test_profiles_saved_before_overdispersion_keep_scoring_as_they_were_calibrated():
    rng = np.random.default_rng(7)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, sessions=5)])
    det = RankShift(overdispersion=(0.0, 0.0)).fit(windows[:4])
    data = json.loads(Profile(KeystrokeModel.from_detector(det)).to_json())
    for key in ("overdispersion_hold", "overdispersion_flight"):  # as an older agent wrote it
        del data["keystroke"]["params"][key]
    restored = Profile.from_json(json.dumps(data).encode()).keystroke
    assert restored.overdispersion == (0.0, 0.0) and restored.legacy
    assert not KeystrokeModel.from_detector(RankShift().fit(windows[:4])).legacy
    np.testing.assert_allclose(restored.score(windows, cell_weights()),
                               det.decision_function(windows), rtol=0, atol=1e-12)


def test_enrolment_drift_is_small_for_a_steady_typist_and_large_for_one_who_speeds_up():
    rng = np.random.default_rng(8)
    steady = np.array([ks.window_vector(s) for s in person(rng, 100, 200, sessions=10)])
    drifting = np.array([ks.window_vector(s)
                         for i in range(10) for s in person(rng, 100 * 1.06 ** i,
                                                            200 * 0.94 ** i, sessions=1)])
    calm, moved = RankShift().fit(steady).drift_, RankShift().fit(drifting).drift_
    assert abs(calm) < 0.5 and moved > 1.0  # over 20 seeds: |calm| <= 0.38, moved >= 1.42
    # the same windows in another order carry no trend
    assert RankShift().fit(drifting[rng.permutation(10)]).drift_ < moved
    assert RankShift().fit(steady[:3]).drift_ == 0.0


def test_profiles_keep_their_drift_and_older_ones_have_none():
    rng = np.random.default_rng(9)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, sessions=6)])
    model = KeystrokeModel.from_detector(RankShift().fit(windows))
    data = json.loads(Profile(model).to_json())
    assert Profile.from_json(json.dumps(data).encode()).keystroke.drift == model.drift != 0.0
    del data["keystroke"]["drift"]  # as an older agent wrote it
    assert Profile.from_json(json.dumps(data).encode()).keystroke.drift == 0.0


def test_detector_rejects_wrong_shapes_and_negative_counts():
    with pytest.raises(ValueError, match="histogram counts"):
        RankShift().fit(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="non-negative"):
        RankShift().fit(-np.ones((2, ks.N_FEATURES)))


def profile_blob() -> bytes:
    rng = np.random.default_rng(3)
    windows = np.array([ks.window_vector(s) for s in person(rng, 100, 200, sessions=4)])
    return Profile(KeystrokeModel.from_detector(RankShift().fit(windows))).to_json()


def test_profile_holds_only_numbers():
    data = json.loads(profile_blob())

    def strings(x):
        if isinstance(x, dict):
            return [k for k in x] + [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) else []

    assert set(strings(data)) <= {"format", "version", "keystroke", "windows", "threshold",
                                  "calibration", "drift", "params", "min_support", "count_power",
                                  "z_cap", "finite_reference", "overdispersion_hold",
                                  "overdispersion_flight", "shape", "counts",
                                  "cadence-profile"}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(format="other"), "not a Cadence profile"),
    (lambda d: d["keystroke"].update(threshold="x"), "not a number"),
    (lambda d: d["keystroke"].update(drift="x"), "not a number"),
    (lambda d: d["keystroke"].update(drift=float("nan")), "not a number"),
    (lambda d: d["keystroke"]["counts"].append([10 ** 9, 1.0]), "invalid count"),
    (lambda d: d["keystroke"]["counts"].append([0, -1.0]), "invalid count"),
    (lambda d: d["keystroke"].pop("calibration"), "incomplete"),
    (lambda d: d["keystroke"].update(shape=[1, 2]), "incompatible"),
    (lambda d: d["keystroke"]["params"].update(finite_reference=2), "invalid setting"),
    (lambda d: d["keystroke"]["params"].update(overdispersion_hold=-0.1), "invalid setting"),
    (lambda d: d["keystroke"]["params"].update(overdispersion_flight="x"), "invalid setting"),
])
def test_malformed_profiles_are_refused_with_a_clear_message(mutate, message):
    data = json.loads(profile_blob())
    mutate(data)
    with pytest.raises(ProfileError, match=message):
        Profile.from_json(json.dumps(data).encode())


def test_garbage_profile_is_refused():
    with pytest.raises(ProfileError, match="re-enrol"):
        Profile.from_json(b"\x00\xff garbage")


def test_a_mouse_model_of_an_older_version_is_set_aside_not_called_tampering(caplog):
    """An upgrade must not turn every saved profile into a tamper alert: a mouse model from
    before the copula (mean, std and train) is dropped with a warning, the typing model kept."""
    data = json.loads(profile_blob())
    data["mouse"] = {"window": 20, "n_neighbors": 10, "scale": 1.0, "threshold": 2.0,
                     "mean": [0.0] * 3, "std": [1.0] * 3, "train": [[0.0] * 3] * 12}
    with caplog.at_level("WARNING"):
        profile = Profile.from_json(json.dumps(data).encode())
    assert profile.mouse is None
    assert profile.keystroke.to_dict() == json.loads(profile_blob())["keystroke"]
    assert "older version" in caplog.text and "enroll --restart" in caplog.text
    data["mouse"] = {"window": 20, "n_neighbors": 10, "scale": 1.0, "threshold": 2.0}
    with pytest.raises(ProfileError):  # neither format: malformed, as before
        Profile.from_json(json.dumps(data).encode())


def test_cell_weights_from_too_few_people_are_refused_not_nan():
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(3), 10)
    people = [(cells, rng.normal(4.0 + i / 10, 0.1, cells.size)) for i in range(5)]
    with pytest.raises(ValueError, match="5 people are too few"):
        discriminability(people)
    weights = discriminability(people, min_people=5)
    assert np.all(np.isfinite(weights)) and weights[0] > 0
