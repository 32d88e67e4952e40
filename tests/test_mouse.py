"""Mouse: Balabit loaders, segmentation and features with known answers, the numpy model against
pyod, and a small real run of the protocol."""

import logging
import math
from statistics import NormalDist

import numpy as np
import pytest

from agent.events import Button, Event, Kind
from agent.evaluation import mouse as evaluation
from agent.features import mouse as fm
from agent.model import mouse as mm
from agent.sources.datasets import balabit
from agent.sources.loading import SourceError

F = {name: i for i, name in enumerate(fm.FEATURE_NAMES)}
MS = 1_000_000


def move(t_ms, x, y):
    return Event(round(t_ms * MS), Kind.MOVE, x=x, y=y)


def line(t0_ms=0.0, n=21, dt_ms=10.0, step_px=5.0, y=100.0):
    return [move(t0_ms + i * dt_ms, 10 + i * step_px, y) for i in range(n)]


def only(actions):
    assert len(actions) == 1, actions
    return actions[0]


# -- segmentation and features ---------------------------------------------------------------

def test_straight_line_at_constant_speed():
    actions, dropped = fm.segment(line())
    action = only(actions)
    assert action.kind == fm.MM and len(action.t) == 21
    v = fm.action_features(action)
    assert v[F["straightness"]] == pytest.approx(1.0)
    assert v[F["log_speed_mean"]] == pytest.approx(math.log1p(500.0))  # 5 px / 10 ms
    assert v[F["log_speed_max"]] == pytest.approx(math.log1p(500.0))
    assert v[F["log_speed_sd"]] == pytest.approx(0.0, abs=1e-9)
    assert v[F["log_accel_pos_max"]] == pytest.approx(0.0, abs=1e-6)
    assert v[F["log_jerk_abs_mean"]] == pytest.approx(0.0, abs=1e-6)
    assert v[F["turn_abs_per_step"]] == pytest.approx(0.0, abs=1e-12)
    assert v[F["log_curvature_mean"]] == pytest.approx(0.0, abs=1e-12)
    assert v[F["deviation_ratio"]] == pytest.approx(0.0, abs=1e-12)
    assert v[F["log_duration_s"]] == pytest.approx(math.log1p(0.2))
    assert v[F["log_path_px"]] == pytest.approx(math.log1p(100.0))
    assert v[F["log_points"]] == pytest.approx(math.log(21))
    assert v[F["log_dt_median_s"]] == pytest.approx(math.log1p(0.01))
    assert v[F["short_dt_share"]] == 1.0 and v[F["long_dt_share"]] == 0.0
    assert v[F["is_point_click"]] == 0 and v[F["is_drag_drop"]] == 0
    assert not dropped


def test_circle_arc_has_known_turn_and_curvature():
    radius, step = 200.0, 0.05
    events = [move(i * 16.0, 500 + radius * math.cos(i * step), 500 + radius * math.sin(i * step))
              for i in range(30)]
    v = fm.action_features(only(fm.segment(events)[0]))
    chord = 2 * radius * math.sin(step / 2)
    assert v[F["turn_abs_per_step"]] == pytest.approx(step, rel=1e-9)
    assert v[F["log_curvature_mean"]] == pytest.approx(math.log1p(step / chord), rel=1e-9)
    assert step / chord == pytest.approx(1 / radius, rel=1e-3)
    assert v[F["log_speed_mean"]] == pytest.approx(math.log1p(chord / 0.016), rel=1e-9)
    assert v[F["straightness"]] < 1


def test_click_with_known_hold_is_a_point_and_click():
    events = line() + [Event(300 * MS, Kind.PRESS, x=110, y=100, button=Button.LEFT),
                       Event(420 * MS, Kind.RELEASE, x=110, y=100, button=Button.LEFT)]
    actions, dropped = fm.segment(events)
    action = only(actions)
    assert action.kind == fm.PC and action.hold_s == pytest.approx(0.12)
    assert action.end_slow_s == pytest.approx(0.1)
    v = fm.action_features(action)
    assert v[F["log_hold_s"]] == pytest.approx(math.log1p(0.12))
    assert v[F["is_point_click"]] == 1
    assert dropped["zero_length"] == 2  # press and release land where the pointer already was


def test_drag_is_an_action_of_its_own_and_a_click_after_a_pause_is_not():
    events = [Event(0, Kind.PRESS, x=0, y=0, button=Button.LEFT)]
    events += [move(20 * i, 10 * i, 0) for i in range(1, 11)]
    events += [Event(250 * MS, Kind.RELEASE, x=100, y=0, button=Button.LEFT)]
    events += [Event(2000 * MS, Kind.PRESS, x=100, y=0, button=Button.LEFT),
               Event(2100 * MS, Kind.RELEASE, x=100, y=0, button=Button.LEFT),
               Event(2200 * MS, Kind.RELEASE, x=100, y=0, button=Button.LEFT)]
    actions, dropped = fm.segment(events)
    drag = only(actions)
    assert drag.kind == fm.DD and drag.hold_s == pytest.approx(0.25)
    assert fm.action_features(drag)[F["is_drag_drop"]] == 1
    assert dropped["click_without_movement"] == 1 and dropped["release_without_press"] == 1


def test_a_pause_or_a_scroll_ends_a_movement():
    events = line(0) + line(200 + fm.PAUSE_S * 1000 + 1) + [Event(10**10, Kind.SCROLL)]
    events += line(10_100)
    actions, _ = fm.segment(events)
    assert [a.kind for a in actions] == [fm.MM, fm.MM, fm.MM]


def test_duplicated_timestamps_zero_moves_and_jumps_are_handled_and_counted():
    events = [move(0, 0, 0), move(16, 4, 0), move(16, 8, 0), move(32, 8, 0), move(48, 16, 0),
              move(64, 65535, 65535), move(80, 20, 0), move(96, 24, 0), move(112, 28, 0),
              move(128, 32, 0), move(144, 36, 0)]
    actions, dropped = fm.segment(events)
    assert dropped["same_time"] == 1 and dropped["zero_length"] == 1
    # out to 65535 and back: the 3 points before and the lone far point are too short to describe
    assert dropped["jump"] == 2 and dropped["too_short"] == 2
    assert [len(a.t) for a in actions] == [5]
    for a in actions:
        assert np.all(np.diff(a.t) > 0)
        assert np.all(np.isfinite(fm.action_features(a)))


def test_streaming_segmenter_matches_the_batch_function():
    events = line(0) + [Event(300 * MS, Kind.PRESS, x=110, y=100, button=Button.LEFT),
                        Event(400 * MS, Kind.RELEASE, x=110, y=100, button=Button.LEFT)]
    events += line(2000)
    seg = fm.Segmenter()
    live = [a for e in events for a in seg.push(e)] + seg.flush()
    batch, _ = fm.segment(events)
    assert [a.kind for a in live] == [a.kind for a in batch] == [fm.PC, fm.MM]


# -- model -----------------------------------------------------------------------------------

def test_numpy_scores_equal_pyod_knn():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, fm.N_FEATURES))
    X[50] = X[49]  # duplicated enrolment actions
    for window in (1, 5):
        model = mm.fit(X[:300], window)
        detector = mm.pyod_knn(model)
        V = model.summarise(X[300:])
        assert np.allclose(model.score_vectors(V), detector.decision_function(model.standardise(V)),
                           rtol=0, atol=1e-9)
        assert np.allclose(model.loo_scores(), detector.decision_scores_, rtol=0, atol=1e-9)


def test_windows_summarise_means():
    Z = np.zeros((4, fm.N_FEATURES))
    Z[:, F["is_point_click"]] = [1, 0, 0, 0]
    Z[:, F["log_duration_s"]] = [1, 2, 3, 100]
    V = mm.window_vectors(Z, 4)
    assert V.shape == (1, fm.N_FEATURES)
    assert V[0, F["is_point_click"]] == 0.25 and V[0, F["log_duration_s"]] == 26.5
    assert mm.window_vectors(Z, 5).shape == (0, fm.N_FEATURES)
    assert np.array_equal(mm.window_vectors(Z, 1), Z)
    assert np.allclose(mm.window_vectors(Z, 2, stride=1)[:, F["log_duration_s"]], [1.5, 2.5, 51.5])


def test_actions_on_the_users_own_scale_are_normal_quantiles_of_mid_ranks():
    ref = np.sort(np.array([[1.0], [2.0], [2.0], [3.0]]), axis=0)
    z = mm.rank_normal(ref, np.array([[0.0], [1.0], [2.0], [2.5], [9.0]]))[:, 0]
    inv = NormalDist().inv_cdf
    # mid-ranks 0, 0.5, 2, 3, 4 among 4 values: quantiles of (r + 1/2) / 5
    assert np.allclose(z, [inv(0.1), inv(0.2), inv(0.5), inv(0.7), inv(0.9)])
    model = mm.fit(np.random.default_rng(1).normal(size=(200, 3)), 10)
    assert np.allclose(model.summary(np.zeros((20, 3))), model.summarise(np.zeros((20, 3)))[0])
    # a monotone change of any feature's units leaves every score unchanged
    X = np.random.default_rng(2).normal(size=(300, 3))
    Y = X.copy()
    Y[:, 0] = np.exp(3 * Y[:, 0])
    a, b = mm.fit(X[:200], 10), mm.fit(Y[:200], 10)
    assert np.allclose(a.score_actions(X[200:]), b.score_actions(Y[200:]))


def test_calibration_scales_and_thresholds_from_held_out_enrolment():
    rng = np.random.default_rng(0)
    model = mm.calibrate(rng.normal(size=(2000, fm.N_FEATURES)), 10)
    own = model.score_actions(rng.normal(size=(500, fm.N_FEATURES))) / model.scale
    other = model.score_actions(rng.normal(2.0, size=(500, fm.N_FEATURES))) / model.scale
    assert 0.5 < np.median(own) < 2 and np.median(other) > 2 * np.median(own)
    assert model.threshold > model.scale


# -- loaders ---------------------------------------------------------------------------------

HEADER = "record timestamp,client timestamp,button,state,x,y\n"


def write_session(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_balabit_rows_become_events(tmp_path):
    write_session(tmp_path / "training_files" / "user1" / "session_2", [
        "0.0,0.0,NoButton,Move,10,20", "0.1,0.016,Left,Pressed,10,20",
        "0.1,0.032,NoButton,Drag,12,20", "0.2,0.05,Left,Released,12,20",
        "0.3,0.06,Scroll,Down,12,20", "0.3,0.07,Right,Pressed,12,20"])
    write_session(tmp_path / "training_files" / "user1" / "session_1", ["0,0,NoButton,Move,1,1"])
    people, report = balabit.load(tmp_path)
    first, second = people[0].sessions
    assert first == [Event(0, Kind.MOVE, x=1.0, y=1.0)]  # ordered by file name
    assert [e.kind for e in second] == [Kind.MOVE, Kind.PRESS, Kind.MOVE, Kind.RELEASE,
                                        Kind.SCROLL, Kind.PRESS]
    assert second[1].t_ns == 16_000_000 and second[1].button == Button.LEFT
    assert second[2].button == Button.NONE and second[5].button == Button.RIGHT
    assert report.files == 2 and report.rows == 7 and report.skipped_rows == 0


def test_balabit_malformed_rows_are_skipped_counted_and_named(tmp_path, caplog):
    path = write_session(tmp_path / "training_files" / "u" / "session_1", [
        "0,0,NoButton,Move,1,1", "0,0.1,NoButton,Move,secret", "0,0.2,NoButton,Move,nan,3",
        "0,0.3,Wheel,Spin,1,1", "0,-1,NoButton,Move,1,1", "0,0.5,NoButton,Move,2,2"])
    (tmp_path / "training_files" / "u" / "session_2").write_bytes(b"\xff\xfe junk")
    (tmp_path / "training_files" / "u" / "session_3").write_text("a,b\n1,2\n")
    with caplog.at_level(logging.WARNING):
        people, report = balabit.load(tmp_path)
    assert len(people[0].sessions) == 1 and len(people[0].sessions[0]) == 2
    assert report.skipped_rows == 4 and report.rows == 6
    assert len(report.failed_files) == 2
    for line in (3, 4, 5, 6):
        assert f"{path}:{line}" in caplog.text
    assert "secret" not in caplog.text and "Wheel" not in caplog.text
    assert "session_2" in caplog.text and "session_3" in caplog.text


def test_balabit_rows_out_of_range_or_oversized_are_skipped(tmp_path):
    from agent.sources.loading import CSV_ROW
    path = write_session(tmp_path / "training_files" / "u" / "session_1", [
        "0,0,NoButton,Move,1,1", "0,1e300,NoButton,Move,1,1", "0,0.1,NoButton,Move," + "9" * 200_000,
        "0,0.5,NoButton,Move,2,2"])
    people, report = balabit.load(tmp_path)
    assert len(people[0].sessions[0]) == 2 and report.skipped_rows == 2
    assert set(report.skipped) == {"time out of range", CSV_ROW}
    assert str(path) not in str(report.as_dict())


def test_balabit_missing_layout_says_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        balabit.load(tmp_path / "nope")
    with pytest.raises(SourceError, match="training_files"):
        balabit.load(tmp_path)
    with pytest.raises(SourceError, match="challenge layout"):
        balabit.load_challenge(tmp_path)


def test_challenge_loader_reads_labelled_test_sessions(tmp_path):
    rows = ["0,0,NoButton,Move,1,1", "0,0.02,NoButton,Move,5,1"]
    write_session(tmp_path / "training_files" / "user1" / "session_0", rows)
    write_session(tmp_path / "test_files" / "user1" / "session_b", rows)
    write_session(tmp_path / "test_files" / "user1" / "session_a", rows)
    write_session(tmp_path / "test_files" / "user2" / "session_c", rows)
    write_session(tmp_path / "test_files" / "user2" / "session_unlabelled", rows)
    (tmp_path / "public_labels.csv").write_text(
        "filename,is_illegal\nsession_a,1\nsession_b,0\nsession_c,0\nbroken\n")
    assert balabit.has_challenge(tmp_path)
    tests = balabit.load_challenge(tmp_path)
    assert [(u, len(ev), bad) for u, ev, bad in tests] == [
        ("user1", 2, True), ("user1", 2, False), ("user2", 2, False)]


# -- a small real run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def balabit_people(balabit_dir):
    people, report = balabit.load(balabit_dir, users=4, seed=1)
    assert report.skipped_rows == 0 and not report.failed_files
    return people


def test_real_balabit_run_gives_the_protocol_keys(balabit_people):
    result = evaluation.evaluate(balabit_people, seed=0)
    assert result["users"] == 4
    for k in (1, 10, 20):
        assert 0.5 < result[f"auc_mean_{k}"] <= 1.0
    assert result["auc_mean_20"] > result["auc_mean_1"]
    assert result["dropped"]["same_time"] > 0
    again = evaluation.evaluate(balabit_people, seed=0)
    timing = {"fit_ms_mean", "score_us_per_window"}
    assert {k: v for k, v in result.items() if k not in timing} == {
        k: v for k, v in again.items() if k not in timing}
    assert any("AUC over 20 actions" in line for line in evaluation.summary_lines(result))


def test_challenge_protocol_on_a_tree_cut_from_real_sessions(balabit_people, balabit_dir,
                                                             tmp_path):
    people = balabit_people[:3]
    train = [type(p)(p.user, p.sessions[:-1]) for p in people]
    tests = []
    for i, p in enumerate(people):
        last = p.sessions[-1]
        chunks = [last[j:j + 4000] for j in range(0, len(last) - 4000, 4000)][:4]
        other = people[(i + 1) % len(people)].user
        tests += [(p.user, c, False) for c in chunks[:2]] + [(other, c, True) for c in chunks[2:]]
    result = evaluation.evaluate_challenge(train, tests)
    assert result["challenge_sessions"] == len(tests)
    assert 0.5 < result["challenge_auc"] <= 1.0
    assert any("challenge AUC" in line for line in evaluation.summary_lines(result))
