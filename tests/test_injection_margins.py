"""scripts/injection_margins.py: per group of real participants, the people flagged at each
threshold up to the loosest that flags nobody, and one step looser does flag someone there (a
small Aalto sample); scripts/injection_stalls.py: a stall put into a typist's day."""

from dataclasses import replace

from conftest import load_script

from agent.features.injection import PRESETS, scan
from agent.sources.datasets import aalto


def test_each_group_gets_the_edge_of_its_own_no_flag_region(aalto_dir):
    script = load_script("injection_margins")
    people, _ = aalto.load(aalto_dir, users=20, seed=11)
    groups = [people[:10], people[10:]]
    out = script.margins(people, parts=2)
    assert set(out) == set(script.KNOBS)
    for knob, row in out.items():
        values = list(script.KNOBS[knob])
        assert row["groups"] == [(0, 9), (10, 19)]
        assert row["default"] == getattr(PRESETS["balanced"], knob)
        for group, value, steps in zip(groups, row["loosest"], row["curves"]):
            # the shipped rule flags none of these people, so the edge is at least as loose
            assert value is not None and values.index(value) <= values.index(row["default"])
            assert [v for v, _ in steps] == values[:values.index(value) + 1]
            counts = [n for _, n in steps]
            assert counts[-1] == 0 < min(counts[:-1], default=1) and counts[0] <= len(group)
            assert counts == sorted(counts, reverse=True)   # a looser value flags no fewer
            if values.index(value) > 0:
                looser = replace(PRESETS["balanced"], **{knob: values[values.index(value) - 1]})
                data = script.streams(group, keyboard_attached=knob in script.NEW_KEYBOARD)
                assert any(scan(stream, looser) for stream in data), (knob, value)
        for suffix, power in (("", False), ("_power", True)):
            rule = knob in script.RULE_KNOBS
            tail = (script.expected(script.added(row["curves"]), row["default"], power)
                    if rule else None)
            assert row[f"expected{suffix}_per_1000"] == (None if tail is None
                                                         else tail * 1000 / 20)
            assert row[f"cross_check{suffix}"] == (
                script.cross_check(row["curves"], [10, 10], power) if rule else None)
    for power, key in ((False, "expected_per_1000"), (True, "expected_power_per_1000")):
        assert script.expected_total(out, power) == sum(out[k][key] or 0
                                                        for k in script.RULE_KNOBS)


def test_the_tail_estimate_is_a_geometric_fit_that_leans_high():
    """Counts that halve each step fit exactly (the edge's 0 counted as half a person); a
    count that falls to zero in one step still gets a finite slope; nobody flagged, or one
    value only, no estimate. The groups' curves are added value by value."""
    script = load_script("injection_margins")
    halving = [(1, 8), (2, 4), (3, 2), (4, 1), (5, 0)]
    assert abs(script.expected(halving, 8) - 8 * 0.5 ** 7) < 1e-9
    assert abs(script.expected(halving, 1) - 8) < 1e-9
    cliff = [(1, 14), (2, 0)]
    assert abs(script.expected(cliff, 4) - 14 * (0.5 / 14) ** 3) < 1e-12
    assert script.expected([(32, 0)], 8) is None
    assert script.expected([(5, 3)], 8) is None                  # one value: no slope
    descending = [(400, 3), (380, 1), (360, 0)]                 # a knob looser at more
    assert script.expected(descending, 100) < script.expected(descending, 340) < 0.5
    assert script.added([[(1, 3), (2, 1), (3, 0)], [(1, 2), (2, 0)]]) == [(1, 5), (2, 1), (3, 0)]


def test_the_power_law_tail_is_heavier_and_exact_on_a_power_law():
    """Counts falling as the value's -2nd power fit exactly with ``power``; on the same
    curve the power law predicts more people far out than the geometric tail."""
    script = load_script("injection_margins")
    steps = [(1, 64), (2, 16), (4, 4), (8, 1)]
    assert abs(script.expected(steps, 16, power=True) - 0.25) < 1e-9
    halving = [(1, 8), (2, 4), (3, 2), (4, 1), (5, 0)]
    assert script.expected(halving, 16, power=True) > 100 * script.expected(halving, 16)


def test_each_group_tail_predicts_the_others_from_its_own_edge_on():
    """A group's fit, scaled to the others' number, against the others' counts at every value
    from the group's edge to the end of the longest curve; a group with no edge, or nobody
    flagged, predicts nothing. The totals add every cell of the rule knobs."""
    script = load_script("injection_margins")
    a = [(1, 8), (2, 4), (3, 2), (4, 1), (5, 0)]       # halving: exact fit
    b = [(1, 10), (2, 6), (3, 3), (4, 2), (5, 2), (6, 1), (7, 0)]
    checks = script.cross_check([a, b], [100, 300])
    assert [c["group"] for c in checks] == [0, 1]
    first, second = checks
    assert first["values"] == [5, 6, 7] and first["observed"] == [2, 1, 0]
    for value, predicted in zip(first["values"], first["predicted"]):
        assert abs(predicted - 3 * 8 * 0.5 ** (value - 1)) < 1e-9
    assert second["values"] == [7] and second["observed"] == [0]
    assert abs(second["predicted"][0] - script.expected(b, 7) / 3) < 1e-12
    assert script.cross_check([a, [(1, 3), (2, 1)]], [1, 1]) == [            # b has no edge
        {"group": 0, "values": [5], "predicted": [script.expected(a, 5)], "observed": [0]}]
    assert script.cross_check([[(1, 0)], b], [1, 1])[0]["group"] == 1      # a flags nobody
    assert script.cross_check([a], [5]) == []                               # nobody else
    result = {knob: {"cross_check": [], "cross_check_power": []} for knob in script.RULE_KNOBS}
    result["short_hold_count"] = {"cross_check": checks,
                                  "cross_check_power": script.cross_check([a, b], [100, 300],
                                                                          power=True)}
    predicted, observed = script.cross_totals(result)
    assert observed == 3
    assert abs(predicted - sum(sum(c["predicted"]) for c in checks)) < 1e-12
    assert script.cross_totals(result, power=True)[0] > predicted


def test_streams_are_each_session_and_the_day_and_can_open_on_a_new_keyboard(aalto_dir):
    script = load_script("injection_margins")
    people, _ = aalto.load(aalto_dir, users=3, seed=2)
    plain = script.streams(people)
    assert len(plain) == sum(len(p.sessions) + 1 for p in people)
    opened = script.streams(people, keyboard_attached=True)
    assert [s[1:] for s in opened] == plain
    assert {s[0].kind.name for s in opened} == {"NEW_KEYBOARD"}


def person(gaps_ms: list[int], holds_ms=(40,)):
    """One stream of keys pressed ``gaps_ms`` apart, held ``holds_ms`` (in turn), two key
    classes."""
    from agent.events import Event, KeyClass, Kind
    from agent.sources.loading import UserSessions
    events, t = [], 10**12
    for i, gap in enumerate(gaps_ms):
        t += gap * 10**6
        cls = KeyClass.LEFT_LETTER if i % 2 else KeyClass.RIGHT_LETTER
        hold = holds_ms[i % len(holds_ms)] * 10**6
        events += [Event(t, Kind.DOWN, cls, i), Event(t + hold, Kind.UP, cls, i)]
    events.sort(key=lambda e: e.t_ns)
    return UserSessions("synthetic", [events])


def test_a_person_with_a_machine_speed_burst_sets_the_edges():
    """Ten keys pecked 1.5 s apart, then six more each 5-20 ms after the one before (6 fast
    gaps from the 10th key on, never steady): a new keyboard's window must end before the 14th
    key (the 4th fast gap). The pause before them could hold them all: no burst rule sees them."""
    script = load_script("injection_margins")
    pecker = person([0] + [1500] * 9 + [5, 12, 20, 7, 16, 9])
    assert script.loosest([pecker], "new_keyboard_keys") == 14 - 1
    assert script.loosest([pecker], "burst_gaps") == 1              # caught up: any length
    assert script.loosest([pecker], "steady_burst_gaps") == 1       # never steady: any length
    typist = person([0] + [150] * 9 + [5, 12, 20, 7, 16, 9])        # no pause: no catch-up
    assert script.loosest([typist], "burst_gaps") == 7
    roller = person([0, 150, 10, 150, 150])                          # one fast gap
    assert script.curve([pecker, typist, roller], "burst_gaps") == [
        (1, 2), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 0)]


def test_a_stall_sets_the_catch_up_edges():
    """A pause of 1 s, then 12 fast gaps, never steady: the burst rule (8 gaps) passes them only
    if the pause explains 6 keys (its own and 5 fast ones), which it does at 166 ms a key."""
    script = load_script("injection_margins")
    stalled = person([0, 150, 150, 1000] + [5, 12, 20, 7, 16, 9] * 2)
    assert script.loosest([stalled], "catch_up_keys") == 6
    assert script.loosest([stalled], "catch_up_ms") == 160


def test_a_person_typing_before_a_burst_sets_the_paced_gaps_edge():
    """Two gaps at a hand's pace, a pause, then 4 fast gaps ending on the 8th key: a new
    keyboard's window must close after the 2nd paced gap, or the burst ends inside it."""
    script = load_script("injection_margins")
    typist = person([0, 200, 200, 1500, 5, 12, 20, 7])
    assert script.loosest([typist], "new_keyboard_paced_gaps") == 2
    assert script.loosest([typist], "new_keyboard_keys") == 32      # closed early: any window


def test_a_stall_queues_the_keys_typed_in_it_and_delivers_them_at_machine_speed():
    import numpy as np
    script = load_script("injection_stalls")
    typist = person([0] + [150, 170, 130, 190, 120, 160] * 10).sessions[0]
    start = typist[20].t_ns
    out = script.stalled(typist, start, 1000, np.random.default_rng(0))
    assert [(e.kind, e.key, e.press_id) for e in out] == [(e.kind, e.key, e.press_id)
                                                          for e in typist]
    times = [e.t_ns for e in out]
    assert times == sorted(times)
    queued = [i for i, e in enumerate(typist) if start < e.t_ns < start + 10**9]
    assert len(queued) > 10
    steps = np.diff([out[i].t_ns for i in queued]) / 1e6
    assert out[queued[0]].t_ns == start + 10**9 and ((steps >= 1) & (steps <= 4)).all()
    late = [i for i, e in enumerate(out) if e.t_ns != typist[i].t_ns]
    assert late[0] == queued[0] and late[-1] < len(typist) - 1   # it catches up, then on time
    assert all(e == typist[i] for i, e in enumerate(out) if i < queued[0])


def test_the_catch_up_spares_a_stalled_typist_that_the_timing_rules_flag_without_it():
    from agent.sources.loading import UserSessions
    script = load_script("injection_stalls")
    typist = person([0] + [150, 170, 130, 190, 120, 160] * 10, holds_ms=(90, 70, 110, 60, 100))
    assert script.flagged([typist], 1, seed=0) == dict.fromkeys(script.RULES, 0)  # no stall
    # a 1.6 s stall anywhere in 61 keys typed 120-190 ms apart: about 10 keys queued
    counts = [script.flagged([typist], 1600, seed) for seed in range(10)]
    assert sum(c["balanced"] for c in counts) == 0
    assert sum(c["balanced without catch-up"] for c in counts) >= 8
    assert script.flagged([UserSessions("idle", [[]])], 1000) == dict.fromkeys(script.RULES, 0)
