"""The keystroke-injection rule (agent.features.injection) and its evaluation protocol."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from dataclasses import fields

import numpy as np
import pytest
from conftest import CATCH_UP_GAPS, CATCH_UP_HOLDS
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Event, KeyClass, Kind
from agent.evaluation import injection as protocol
from agent.features.injection import (PRESETS, Detection, InjectionDetector, InjectionPolicy,
                                      scan)
from agent.sources.datasets import aalto
from agent.sources.loading import UserSessions

MS = 1_000_000
T0 = 1_700_000_000_000 * MS       # an epoch-ms clock, like the Aalto data's
LETTERS = [KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE]


def typing(gaps_ms, holds_ms, classes=None, t0=T0, first_id=0, injected=False,
           chords=()) -> list[Event]:
    """Key events of keystrokes pressed ``gaps_ms`` apart (the first gap from ``t0``) and held
    ``holds_ms``; keystroke i in ``chords`` is a modifier pressed and released with it."""
    n = len(holds_ms)
    classes = classes if classes is not None else [LETTERS[i % 3] for i in range(n)]
    press = t0 + np.round(np.cumsum(gaps_ms) * MS).astype(np.int64)
    events, pid = [], first_id
    for i in range(n):
        down, up = int(press[i]), int(press[i] + round(holds_ms[i] * MS))
        if i in chords:
            events += [Event(down, Kind.DOWN, KeyClass.MODIFIER, pid, injected=injected),
                       Event(up, Kind.UP, KeyClass.MODIFIER, pid, injected=injected)]
            pid += 1
        events += [Event(down, Kind.DOWN, classes[i], pid, injected=injected),
                   Event(up, Kind.UP, classes[i], pid, injected=injected)]
        pid += 1
    return sorted(events, key=lambda e: (e.t_ns, e.kind))


def human(n=60, seed=0, gap_median=140.0, gap_sigma=0.45, hold_median=95.0, hold_sigma=0.3,
          t0=T0, first_id=0) -> list[Event]:
    rng = np.random.default_rng(seed)
    gaps = rng.lognormal(np.log(gap_median), gap_sigma, n)
    holds = rng.lognormal(np.log(hold_median), hold_sigma, n)
    classes = list(rng.choice(list(KeyClass)[:9], size=n))
    return typing(gaps, holds, [KeyClass(int(c)) for c in classes], t0=t0, first_id=first_id)


def injector(n, period_ms=None, jitter=None, hold=(1.0, 4.0), seed=1, t0=None, first_id=1000,
             injected=False, constant_hold=None) -> list[Event]:
    """Injected keystrokes in press-release order (hold shorter than the gap)."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(*jitter, n) if jitter else np.full(n, float(period_ms))
    holds = np.full(n, constant_hold) if constant_hold else rng.uniform(*hold, n)
    classes = [KeyClass(int(c)) for c in rng.choice([0, 1, 3, 8], size=n)]
    return typing(gaps, holds, classes, t0=t0 if t0 is not None else T0, first_id=first_id,
                  injected=injected)


def keys_to_detect(prefix: list[Event], payload: list[Event], policy=None):
    """(injected key-downs up to the detection, the detection), or (None, None)."""
    detector = InjectionDetector(policy)
    for e in prefix:
        assert detector.observe(e) is None, "fired on the human prefix"
    keys = 0
    for e in payload:
        keys += e.kind == Kind.DOWN and not e.repeat
        found = detector.observe(e)
        if found:
            return keys, found
    return None, None


def after(events: list[Event], pause_ms=800.0) -> int:
    return events[-1].t_ns + int(pause_ms * MS)


#: the key-downs the 800 ms pause of :func:`after` could hold at a hand's fastest pace (100 ms a
#: key), which the timing rules take for a stalled machine's catch-up (the pause's key among them)
HELD_OFF = 8


# --- injectors are caught -------------------------------------------------------------------

def paced(n=30) -> list[Event]:
    """A person typing at 120-190 ms a key: no pause that could hold queued keys."""
    return typing(np.resize([150.0, 170, 130, 190, 120, 160], n), np.resize([90.0, 70, 110], n))


def after_down(events: list[Event], gap_ms: float) -> int:
    """``gap_ms`` after the last key-down of ``events``."""
    return max(e.t_ns for e in events if e.kind == Kind.DOWN) + int(gap_ms * MS)


@pytest.mark.parametrize("period", [1, 5, 10, 20])
def test_fast_injector_caught_within_6_keys_by_default(period):
    prefix = paced()
    keys, found = keys_to_detect(prefix, injector(60, period, t0=after_down(prefix, 150)))
    assert keys == PRESETS["balanced"].steady_burst_gaps + 1 == 6
    assert found.rule == "steady_burst"


@pytest.mark.parametrize(("pause_ms", "keys", "rule"), [
    (150, 6, "steady_burst"), (199, 6, "steady_burst"), (200, 2 + 5, "steady_burst"),
    (800, 8 + 5, "steady_burst"), (1199, 11 + 5, "steady_burst"),
    (1650, 16 + 5, "steady_burst"), (2450, 24 + 5, "steady_burst"),
    (60_000, 24 + 5, "steady_burst")])
def test_a_pause_holds_the_timing_rules_off_for_the_keys_it_could_hold(pause_ms, keys, rule):
    """A pause of P ms could hold P / 100 keys typed at a hand's fastest pace, which a stalled
    machine delivers at once when it wakes: that many key-downs from the pause's own (none for
    a pause under 200 ms), at most 24, are no timing evidence (the regular-gap window, 16
    gaps, is held off too); the steady rule then needs its 5 gaps. So a fixed cadence is
    caught by its 29th key whatever the pause."""
    prefix = paced()
    payload = injector(60, 5, t0=after_down(prefix, pause_ms - 5))    # its 1st key 5 ms after t0
    found = keys_to_detect(prefix, payload)
    assert (found[0], found[1].rule) == (keys, rule)


def test_the_strict_preset_takes_no_pause_for_a_stall():
    prefix = paced()
    keys, found = keys_to_detect(prefix, injector(60, 5, t0=after(prefix, 60_000)), "strict")
    assert keys == 5
    no_catch_up = InjectionPolicy(catch_up_keys=0)
    assert keys_to_detect(prefix, injector(60, 5, t0=after(prefix, 60_000)), no_catch_up)[0] == 6


@pytest.mark.parametrize("period", [1, 5, 10, 20])
def test_steady_cadence_survives_clock_jitter_and_chords(period):
    """A USB cadence seen through an OS clock (+-0.9 ms) with Shift chords is still steady."""
    rng = np.random.default_rng(period)
    prefix = human(30)
    gaps = np.maximum(period + rng.uniform(-0.9, 0.9, 40), 0.6)
    payload = typing(gaps, rng.uniform(0.2, 0.8, 40) * min(period, 10), t0=after(prefix),
                     first_id=1000, chords={1, 4})
    keys, found = keys_to_detect(prefix, payload)
    assert found is not None and found.rule == "steady_burst"
    assert keys <= HELD_OFF + PRESETS["balanced"].steady_burst_gaps + 2  # two of them Shift


def test_keys_a_stalled_machine_delivers_after_a_pause_are_not_flagged():
    prefix = human(30)
    burst = typing(CATCH_UP_GAPS, CATCH_UP_HOLDS, t0=prefix[-1].t_ns, first_id=1000)
    assert scan(prefix + burst + human(30, seed=2, t0=after(burst), first_id=2000)) == []


def test_a_keyboard_arriving_in_the_pause_before_a_stall_is_flagged():
    """The limit the eval counts (``human_false_positives_attach_at_pauses``): a keyboard
    arriving (or a Bluetooth one reconnecting) in the pause before a stall's queued keys opens
    the new-keyboard window, which does not wait for a stall: those keys look like a payload
    typed right after the injector arrived."""
    prefix = human(30)
    burst = typing(CATCH_UP_GAPS, CATCH_UP_HOLDS, t0=prefix[-1].t_ns, first_id=1000)
    stream = prefix + burst
    arrived = protocol.attached_at_pauses(stream)
    downs = [e.t_ns for e in stream if e.kind == Kind.DOWN]
    pauses = sum(b - a >= protocol.ATTACH_PAUSE_MS * MS for a, b in zip(downs, downs[1:]))
    assert pauses >= 1 and sum(e.kind == Kind.NEW_KEYBOARD for e in arrived) == 1 + pauses
    assert arrived[0].kind == Kind.NEW_KEYBOARD and [e for e in arrived if e.is_key] == stream
    assert [d.rule for d in scan(arrived)] == ["new_keyboard"]
    assert scan(protocol.attached(stream)) == []          # arriving at the start: not flagged


def test_a_keyboard_attached_is_no_evidence_of_its_own():
    """Where the hooks tell keyboards apart (X11) an ``ATTACH`` only says that some keyboard
    came: the same stall right after it is the user's keyboard's, not flagged; the new
    keyboard's own keys come after a ``NEW_KEYBOARD`` and are judged from their first."""
    prefix = human(30)
    burst = typing(CATCH_UP_GAPS, CATCH_UP_HOLDS, t0=prefix[-1].t_ns, first_id=1000)
    plugged = Event(burst[0].t_ns, Kind.ATTACH)
    assert scan(prefix + [plugged] + burst) == []
    assert [d.rule for d in scan(prefix + [arrival_at(burst[0].t_ns)] + burst)] == \
        ["new_keyboard"]
    payload = injector(20, 5, t0=after(prefix))
    keys, found = keys_to_detect(prefix + [plugged, arrival_at(payload[0].t_ns)], payload)
    assert (keys, found.rule) == (5, "new_keyboard")


def test_the_same_keys_with_no_pause_to_hold_them_are_flagged():
    """10 gaps at machine speed right after a hand's key (no stall that could have queued them):
    an injector's burst. Catch-up is what spares the recorded typist above."""
    prefix = paced()
    burst = typing([150.0] + CATCH_UP_GAPS[1:], CATCH_UP_HOLDS, t0=after_down(prefix, 0),
                   first_id=1000)
    assert [d.rule for d in scan(prefix + burst)] == ["burst"]


def test_a_stall_explains_no_more_keys_than_its_pause_could_hold():
    """Half the pause (662 ms: 6 keys, its own among them) explains 5 of 13 fast gaps; the other
    8 are a burst."""
    prefix = paced()
    burst = typing([662.0] + CATCH_UP_GAPS[1:] + [4.0] * 3, CATCH_UP_HOLDS + [3] * 3,
                   t0=after_down(prefix, 0), first_id=1000)
    assert [d.rule for d in scan(prefix + burst)] == ["burst"]


def test_a_long_stall_at_a_steady_pace_is_not_taken_for_a_cadence():
    """A 2 s stall of fast typing: 17 keys delivered 3-4 ms apart, held 2-3 ms (the steadiest
    of the Aalto stalls' pace, for longer). Its 16 gaps lie within the regular-gap range (4 ms)
    and its holds within the uniform-hold range (2 ms), but the pause explains its keys, and
    what a pause explains is no evidence for the regularity rules either. The same keys with
    no pause before them are a burst."""
    prefix = paced()
    gaps, holds = [3.0, 4.0] * 8, [2.0, 3.0] * 8 + [2.0]
    stall = typing([2000.0] + gaps, holds, t0=after_down(prefix, 0), first_id=1000)
    tail = typing([150.0, 170, 130, 190, 120, 160] * 3, [90.0, 70, 110] * 6,
                  t0=after_down(stall, 0), first_id=2000)
    assert scan(prefix + stall + tail) == []
    tight = InjectionPolicy(uniform_hold_window=12)    # a window the stall's holds fill
    assert scan(prefix + stall + tail, tight) == []
    no_pause = typing([150.0] + gaps, holds, t0=after_down(prefix, 0), first_id=1000)
    assert {d.rule for d in scan(prefix + no_pause)} == {"steady_burst"}


def test_repeated_pauses_buy_no_more_than_the_catch_up_budget():
    """An injector that pauses 2.4 s before every 24 keys would have each block taken for a
    stall's queued keys. The catch-up excuses at most ``catch_up_budget`` key-downs in 1,000
    (the Aalto typists: at most 23), so the third block is judged as it types."""
    prefix = paced()
    blocks, t, first = [], after_down(prefix, 0), 1000
    for b in range(10):
        block = injector(24, 10, t0=t + 2_400 * MS - 10 * MS, first_id=first, seed=b)
        blocks += block
        t, first = after_down(block, 0), first + 24
    found = scan(prefix + blocks)
    assert found, "repeated pauses hid the injector"
    assert found[0].keys_observed <= 30 + 3 * 24       # within the third block
    no_budget = InjectionPolicy(catch_up_budget=10**6)
    assert scan(prefix + blocks, no_budget) == []       # what the budget closes


def test_the_catch_up_budget_renews_as_keys_go_by():
    """Stalls spread over a day (each under the budget within any 1,000 key-downs) are each
    explained."""
    events, first = paced(), 1000
    for _ in range(6):
        stall = typing([2000.0] + [4.0] * 20, [3.0] * 21, t0=after_down(events, 0),
                       first_id=first)
        tail = paced(600)
        tail = [e._replace(t_ns=e.t_ns - tail[0].t_ns + after_down(stall, 150),
                           press_id=e.press_id + first + 100) for e in tail]
        events += stall + tail
        first += 1000
    assert scan(events) == []


@pytest.mark.parametrize("period", [1, 5, 10, 20])
def test_fast_injector_caught_within_5_keys_when_strict(period):
    prefix = human(30)
    keys, found = keys_to_detect(prefix, injector(60, period, t0=after(prefix)), "strict")
    assert keys is not None and keys <= 5


def arrival_at(t_ns: int) -> Event:
    """A keyboard new here: the keys next may be its own (``NEW_KEYBOARD``)."""
    return Event(t_ns, Kind.NEW_KEYBOARD)


@pytest.mark.parametrize("period", [1, 5, 10, 20])
def test_injector_seen_attaching_is_caught_within_5_keys(period):
    prefix = human(30)
    payload = injector(60, period, t0=after(prefix))
    keys, found = keys_to_detect(prefix + [arrival_at(prefix[-1].t_ns)], payload)
    assert (keys, found.rule) == (5, "new_keyboard")      # a stall does not excuse a new keyboard
    assert keys_to_detect(prefix, payload)[0] == HELD_OFF + 5  # not seen attaching: the steady rule


def test_new_keyboard_rule_covers_gui_r_and_a_pause_before_the_string():
    """GUI+r (one HID report), 600 ms for the Run box, then the command at 5 ms a key: the
    fifth key of the string is the seventh key-down since the keyboard attached."""
    prefix = human(30)
    t0 = after(prefix)
    opener = typing([0.0], [3.0], [KeyClass.LEFT_LETTER], t0=t0, first_id=1000, chords={0})
    string = injector(20, 5, t0=t0 + 600 * MS, first_id=1100)
    keys, found = keys_to_detect(prefix + [arrival_at(prefix[-1].t_ns)], opener + string)
    assert (keys, found.rule) == (7, "new_keyboard")


def test_an_attach_seen_late_counts_the_fast_run_so_far():
    """A poll that sees the keyboard after its 4th key: the 5th key fires, not the 6th."""
    payload = injector(20, 5)
    downs = [i for i, e in enumerate(payload) if e.kind == Kind.DOWN]
    late = payload[:downs[4]] + [arrival_at(payload[downs[3]].t_ns)] + payload[downs[4]:]
    keys, found = keys_to_detect([], late)
    assert (keys, found.rule) == (5, "new_keyboard")


def test_new_keyboard_rule_lapses_after_its_keys():
    """Past the first ``new_keyboard_keys`` key-downs a keyboard is no longer new, even one
    that has only pecked keys seconds apart: the same 5-key burst needs the default's
    evidence."""
    policy = PRESETS["balanced"]
    pecks = typing([1500.0] * policy.new_keyboard_keys, [90.0] * policy.new_keyboard_keys)
    burst = typing([800.0, 4, 3, 3, 3], [3, 2, 2, 2, 2], t0=pecks[-1].t_ns, first_id=1000)
    detector = InjectionDetector(policy)
    events = [arrival_at(pecks[0].t_ns - MS), *pecks, *burst]
    assert [d for d in map(detector.observe, events) if d] == []
    fresh = InjectionDetector(policy)
    fired = [d for d in map(fresh.observe, [*pecks, arrival_at(pecks[-1].t_ns), *burst]) if d]
    assert [d.rule for d in fired] == ["new_keyboard"]


def test_new_keyboard_window_closes_once_a_hand_types_on_it():
    """Two gaps at a hand's pace on the new keyboard (between a burst's and a pause's) show a
    person typing: a machine-speed burst after them needs the default's evidence. One such
    gap (an injector's DELAY) leaves the window open, and so does a pause of a second or
    more, which is neither."""
    def after_attach(gaps_ms):
        keys = typing(gaps_ms, [90.0] * len(gaps_ms))
        burst = typing([1500.0, 4, 3, 3, 3], [3, 2, 2, 2, 2], t0=keys[-1].t_ns, first_id=1000)
        return [d.rule for d in map(InjectionDetector().observe,
                                    [arrival_at(T0 - MS), *keys, *burst]) if d]
    assert after_attach([0.0, 150.0, 180.0]) == []
    assert after_attach([0.0, 150.0]) == ["new_keyboard"]
    assert after_attach([0.0, 1200.0, 1100.0]) == ["new_keyboard"]
    assert after_attach([0.0, 1200.0, 150.0, 1100.0, 180.0]) == []


def test_the_gap_from_a_key_typed_before_the_arrival_is_not_the_new_keyboards():
    """The user types, a keyboard attaches 100 ms later and sends GUI+r 300 ms after the
    user's last key, then waits 600 ms for the Run box: one DELAY of the new keyboard's own,
    so the string's 5th key (the 7th key-down since the arrival) still fires."""
    prefix = human(30)
    last = max(e.t_ns for e in prefix)
    opener = typing([0.0], [3.0], [KeyClass.LEFT_LETTER], t0=last + 300 * MS, first_id=1000,
                    chords={0})
    string = injector(20, 5, t0=last + 900 * MS, first_id=1100)
    keys, found = keys_to_detect(prefix + [arrival_at(last + 100 * MS)], opener + string)
    assert (keys, found.rule) == (7, "new_keyboard")


def test_a_human_on_a_keyboard_just_attached_is_not_flagged():
    """Fast typing with rollover (two keys down at once) opening on a new keyboard."""
    for seed in range(20):
        stream = human(40, seed=seed, gap_median=90.0, gap_sigma=0.5)
        assert scan([arrival_at(stream[0].t_ns), *stream]) == [], seed


def test_relaxed_has_no_new_keyboard_rule():
    prefix = human(30)
    payload = injector(60, 5, t0=after(prefix))
    keys, found = keys_to_detect(prefix + [arrival_at(prefix[-1].t_ns)], payload, "relaxed")
    assert found is not None and found.rule != "new_keyboard" and keys > 5


def test_5ms_injector_detected_by_its_speed_alone():
    """Holds of a human length do not hide a 5 ms cadence (the burst rules need no hold)."""
    prefix = human(30)
    payload = injector(40, 5, hold=(3.0, 4.5), t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload, InjectionPolicy(short_hold_ms=0.0))
    assert found.rule == "steady_burst" and keys == HELD_OFF + PRESETS["balanced"].steady_burst_gaps


def test_fast_unsteady_injector_caught_by_the_burst():
    """Delays drawn from 2-24 ms: never steady, always faster than hands."""
    prefix = human(30)
    payload = injector(40, jitter=(2.0, 24.0), hold=(3.0, 4.5), t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload, InjectionPolicy(short_hold_ms=0.0))
    assert found.rule == "burst" and keys == HELD_OFF + PRESETS["balanced"].burst_gaps


@pytest.mark.parametrize("seed", range(5))
def test_jittered_injector_with_few_ms_holds_caught_within_40_keys(seed):
    prefix = human(30, seed=seed)
    payload = injector(80, jitter=(20.0, 120.0), hold=(2.0, 8.0), seed=seed, t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload)
    assert keys is not None and keys <= 40
    assert found.rule == "short_holds"


@pytest.mark.parametrize("gaps", [(200.0, 400.0), (250.0, 250.0)])
def test_a_slow_injector_is_not_excused_as_a_stall(gaps):
    """An injector that leaves 200 ms or more between keys makes every gap a pause that could
    hold keys. The catch-up excuses the keys a stall queued, the pause's own among them only if
    a queued key follows it; nothing follows a slow injector's keys fast, so its 1-4 ms holds
    count (each judged at the next key-down), and a fixed delay is still a cadence."""
    prefix = paced()
    payload = injector(40, jitter=gaps, hold=(1.0, 4.0), t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload)
    assert (keys, found.rule) == (PRESETS["balanced"].short_hold_count + 1, "short_holds")
    payload = injector(40, jitter=gaps, constant_hold=80.0, t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload)
    if gaps[0] == gaps[1]:
        assert (keys, found.rule) == (PRESETS["balanced"].regular_gap_window + 1, "regular_gaps")
    else:
        assert (keys, found.rule) == (PRESETS["balanced"].uniform_hold_window, "uniform_holds")


def test_a_pause_key_held_short_is_excused_only_when_queued_keys_follow_it():
    """Ten micro-stalls: a key after 300 ms, then one more 4 ms later, each held 3 ms (the
    pause's own key released before the queued one comes). Both are the stall's: no short hold
    counts. The same pause keys with nothing queued after them are a slow injector's."""
    policy = InjectionPolicy(short_hold_count=5)
    prefix = paced()
    stalls = typing([300.0, 4.0] * 10, [3.0] * 20, t0=after_down(prefix, 0), first_id=1000)
    assert scan(prefix + stalls, policy) == []
    slow = typing([300.0] * 10, [3.0] * 10, t0=after_down(prefix, 0), first_id=1000)
    assert [d.rule for d in scan(prefix + slow, policy)] == ["short_holds"]


def test_constant_human_length_holds_are_caught():
    """An injector told to hold keys 80 ms at a human pace still holds them for exactly 80 ms."""
    prefix = human(30)
    payload = injector(60, jitter=(90.0, 250.0), constant_hold=80.0, t0=after(prefix))
    keys, found = keys_to_detect(prefix, payload)
    assert found is not None and found.rule == "uniform_holds"
    assert keys <= PRESETS["balanced"].uniform_hold_window + 1


def test_fixed_delay_at_human_pace_is_caught():
    prefix = human(30)
    rng = np.random.default_rng(4)
    payload = typing(np.full(60, 95.0), rng.uniform(50, 130, 60), t0=after(prefix),
                     first_id=1000)
    keys, found = keys_to_detect(prefix, payload)
    assert found is not None and found.rule == "regular_gaps"
    assert keys <= PRESETS["balanced"].regular_gap_window + 1


def test_synchronous_chords_are_caught():
    """Modifier and key pressed and released in the same ms, again and again: HID reports."""
    rng = np.random.default_rng(5)
    payload = typing(rng.uniform(90, 300, 60), rng.uniform(50, 140, 60), first_id=1000,
                     chords=set(range(0, 60, 3)))
    found = scan(payload)
    assert [d.rule for d in found][:1] == ["chords"]


def test_a_long_injection_is_reported_again():
    found = scan(injector(200, 5))
    assert len(found) >= 10 and {d.rule for d in found} <= {"steady_burst", "burst", "short_holds"}
    # each counts the keys since the evidence began afresh, not since the detector was made
    assert sum(d.keys_observed for d in found) <= 200 and max(d.keys_observed for d in found) <= 20


# --- people, auto-repeat and allowed automation are not -----------------------------------

def test_fast_human_typing_with_rollover_is_not_detected():
    """120 ms median gaps, rollovers under 25 ms in pairs and triples, human holds."""
    rng = np.random.default_rng(7)
    gaps = rng.lognormal(np.log(120), 0.5, 400)
    gaps[::7] = rng.uniform(5, 25, len(gaps[::7]))       # rollover pairs
    gaps[1::7] = rng.uniform(5, 25, len(gaps[1::7]))      # ... and triples
    holds = rng.lognormal(np.log(85), 0.3, 400)
    assert scan(typing(gaps, holds)) == []


def test_auto_repeat_is_ignored():
    held = [Event(T0, Kind.DOWN, KeyClass.BACKSPACE, 1)]
    held += [Event(T0 + (500 + 30 * i) * MS, Kind.DOWN, KeyClass.BACKSPACE, 1, repeat=True)
             for i in range(200)]
    held += [Event(T0 + 6600 * MS, Kind.UP, KeyClass.BACKSPACE, 1)]
    assert scan(human(30) + [e._replace(t_ns=e.t_ns + 60_000 * MS) for e in held]) == []


@pytest.mark.parametrize("interval", [15.0, 20.0, 33.0, 40.0])
def test_auto_repeat_reported_as_release_press_pairs_is_not_injection(interval):
    """Some X setups report a repeating key as release+press pairs, unflagged: one class, a
    fixed rate, holds equal to the interval."""
    n = 200
    events = typing(np.full(n, interval), np.full(n, interval), [KeyClass.BACKSPACE] * n)
    assert scan(events) == []


@pytest.mark.parametrize("interval", [33.0, 100.0, 150.0])
def test_auto_repeat_reported_as_presses_released_at_once_is_not_injection(interval):
    """Some browsers report a held key's repeats as presses released within a few ms (an Aalto
    typist's Shift, at a slow typematic rate): one class of short holds is not a payload, but
    the same holds on two classes are."""
    prefix = paced()
    held = typing(np.full(40, interval), np.resize([1.0, 3.0, 7.0], 40),
                  [KeyClass.MODIFIER] * 40, t0=after_down(prefix, 150), first_id=1000)
    assert scan(prefix + held) == []
    mixed = typing(np.full(40, interval), np.resize([1.0, 3.0, 7.0], 40),
                   [KeyClass.MODIFIER, KeyClass.LEFT_LETTER] * 20, t0=after_down(prefix, 150),
                   first_id=1000)
    assert [d.rule for d in scan(prefix + mixed)][:1] == ["short_holds"]


def test_software_injected_keys_are_skipped_when_allowed():
    payload = injector(80, 5, injected=True)
    assert scan(payload, InjectionPolicy(allow_software_injected=True)) == []
    assert scan(payload) == []     # allowed by default


def test_software_injected_keys_are_judged_when_not_allowed():
    payload = injector(80, 5, injected=True)
    found = scan(payload, InjectionPolicy(allow_software_injected=False))
    assert found and found[0].rule in ("steady_burst", "burst", "short_holds")


def test_clock_running_backwards_starts_afresh():
    """Sessions replayed from one start time (overlapping recordings): negative gaps are not
    fast typing."""
    events = []
    for s in range(30):
        events += human(40, seed=s, t0=T0 + s * MS, first_id=0)
    assert scan(events) == []


def test_a_backwards_clock_is_not_evidence():
    """A jump back in time (a replay of overlapping recordings) starts the evidence afresh:
    keys held 1-4 ms before the jump and 3 after it are not a run of ``short_hold_count``."""
    paced = (30.0, 120.0)   # a hand's pace, machine holds: only the short holds are evidence
    n = PRESETS["balanced"].short_hold_count
    before = injector(n - 3, jitter=paced)
    later = injector(3, jitter=paced, t0=T0 - 10_000 * MS, first_id=2000)
    assert scan(before) == [] and scan(before + later) == []
    found = scan(before + injector(3, jitter=paced, t0=after(before, 30), first_id=2000))
    assert [d.rule for d in found] == ["short_holds"]


def test_repeat_flagged_key_downs_are_ignored_whatever_their_timing():
    """Even at 5 ms with changing classes: a source that says repeat is believed."""
    events = []
    for i in range(100):
        t = T0 + 5 * i * MS
        events.append(Event(t, Kind.DOWN, LETTERS[i % 3], i, repeat=True))
    detector = InjectionDetector()
    assert [d for d in map(detector.observe, events) if d] == []
    assert detector.keys_observed == 0


def test_unreleased_keys_are_bounded():
    detector = InjectionDetector()
    for i in range(10_000):
        detector.observe(Event(T0 + i * 200 * MS, Kind.DOWN, KeyClass.LEFT_LETTER, i))
    assert len(detector._held) <= 32


def test_mouse_events_are_ignored():
    detector = InjectionDetector()
    assert all(detector.observe(Event(T0 + i * MS, Kind.MOVE, x=i, y=i)) is None
               for i in range(1000))
    assert detector.keys_observed == 0


# --- what a detection says ------------------------------------------------------------------

def _values(obj):
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _values(item)
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield key
            yield from _values(item)
    else:
        yield obj


def test_detection_holds_numbers_only_never_a_key_class():
    found = scan(injector(60, 5))[0]
    assert {f.name for f in fields(Detection)} == {"rule", "t_ns", "keys_observed",
                                                   "recent_gaps_ms", "recent_holds_ms"}
    for value in _values([getattr(found, f.name) for f in fields(Detection)]):
        assert not isinstance(value, KeyClass)
        assert type(value) in (str, int, float)
    assert found.rule in ("steady_burst", "burst", "short_holds")
    assert len(found.recent_gaps_ms) <= 16 and len(found.recent_holds_ms) <= 16
    assert max(found.recent_gaps_ms) <= 5.0 + 1e-6 and max(found.recent_holds_ms) <= 4.0 + 1e-6
    json.dumps(found.as_dict())


def test_detection_does_not_depend_on_which_keys_were_typed():
    """Only timing, and whether consecutive keys are alike, count: any renaming of classes
    finds the same."""
    payload = injector(60, 5)
    renamed = {KeyClass.LEFT_LETTER: KeyClass.DIGIT, KeyClass.RIGHT_LETTER: KeyClass.PUNCTUATION,
               KeyClass.SPACE: KeyClass.ENTER, KeyClass.PUNCTUATION: KeyClass.NAVIGATION}
    relabelled = [e._replace(key=renamed[e.key]) for e in payload]
    assert scan(payload) and scan(payload) == scan(relabelled)


def test_policy_is_validated():
    with pytest.raises(ValueError):
        InjectionPolicy(short_hold_window=8, short_hold_count=9)
    with pytest.raises(ValueError):
        InjectionPolicy(burst_gaps=0)
    with pytest.raises(ValueError, match="new_keyboard_keys"):
        InjectionPolicy(new_keyboard_keys=-1)
    with pytest.raises(ValueError, match="catch_up_keys"):
        InjectionPolicy(catch_up_keys=-1)
    with pytest.raises(ValueError, match="catch_up_ms must be positive"):
        InjectionPolicy(catch_up_ms=0)
    with pytest.raises(ValueError, match="catch_up_budget"):
        InjectionPolicy(catch_up_budget=-1)
    for name in ("uniform_hold_window", "regular_gap_window"):   # two classes need two keys
        with pytest.raises(ValueError, match=name):
            InjectionPolicy(**{name: 1})
    with pytest.raises(ValueError, match="sensitivity"):
        InjectionDetector("paranoid")
    assert InjectionDetector.with_overrides("strict", burst_gaps=6).policy.burst_gaps == 6


# --- open-ended human timing never fires ---------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       gap_median=st.floats(80.0, 600.0), gap_sigma=st.floats(0.25, 0.9),
       hold_median=st.floats(45.0, 220.0), hold_sigma=st.floats(0.15, 0.6),
       n=st.integers(20, 400))
def test_human_like_timing_never_fires(seed, gap_median, gap_sigma, hold_median, hold_sigma, n):
    events = human(n, seed, gap_median, gap_sigma, hold_median, hold_sigma)
    assert scan(events) == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), period=st.floats(0.5, 20.0), n=st.integers(14, 80))
def test_any_fast_injector_with_short_holds_is_caught(seed, period, n):
    rng = np.random.default_rng(seed)
    holds = rng.uniform(0.1, 0.9, n) * min(period, 10.0)
    payload = typing(np.full(n, period), holds, first_id=1000)
    found = scan(payload)
    assert found and found[0].keys_observed <= 13


# --- the evaluation protocol ------------------------------------------------------------------

def test_ukip_and_duckhunt_rules():
    fast = injector(30, 10)
    assert protocol.UkipRule().observe is not None
    ukip, duck = protocol.UkipRule(), protocol.DuckhuntRule()
    downs = [i for i, e in enumerate(fast) if e.kind == Kind.DOWN]
    ukip_hits = [i for i, e in enumerate(fast) if ukip.observe(e)]
    duck_hits = [i for i, e in enumerate(fast) if duck.observe(e)]
    assert ukip_hits[0] == downs[4]            # the 5th key-down: 4 gaps of 10 ms
    assert duck_hits[0] == downs[25]           # 25 gaps averaging under 30 ms
    slow = human(200)
    assert not any(protocol.UkipRule().observe(e) for e in slow)


@pytest.mark.parametrize("name", protocol.INJECTORS)
def test_synthetic_injection_is_well_formed(name):
    rng = np.random.default_rng(3)
    events = protocol.injected_keys(rng, name, T0, 100, chars=200)
    times = [e.t_ns for e in events]
    assert times == sorted(times) and times[0] == T0
    assert all(t % MS == 0 for t in times)                       # the dataset's ms clock
    downs = {e.press_id: e.t_ns for e in events if e.kind == Kind.DOWN}
    ups = {e.press_id: e.t_ns for e in events if e.kind == Kind.UP}
    assert downs.keys() == ups.keys() and min(downs) == 100
    holds = np.array([ups[k] - downs[k] for k in downs]) / MS
    assert holds.min() >= 0 and holds.max() <= 8
    presses = np.array(sorted(set(downs.values()))) / MS
    gaps = np.diff(presses)
    if name == "jitter":
        assert 19 <= gaps.min() and gaps.max() <= 121
    else:
        assert np.all(np.abs(gaps - protocol.PERIOD_MS[name]) <= 1)
    order = {}                                    # each key is up before the next one goes down
    for e in events:
        if e.kind == Kind.DOWN and e.key != KeyClass.MODIFIER:
            assert all(k == KeyClass.MODIFIER for k in order.values())
        if e.kind == Kind.DOWN:
            order[e.press_id] = e.key
        else:
            order.pop(e.press_id)
    assert any(e.key == KeyClass.MODIFIER for e in events)


def test_back_to_back_never_runs_backwards():
    a = human(30, seed=1)
    b = human(30, seed=2, t0=T0 + 500 * MS)      # starts before a ends
    joined = protocol.back_to_back([a, b])
    times = [e.t_ns for e in joined]
    assert times == sorted(times) and len(joined) == len(a) + len(b)
    assert joined[len(a)].t_ns >= a[-1].t_ns + 1000 * MS


# --- real typists (Aalto) --------------------------------------------------------------------

@pytest.fixture(scope="module")
def twenty_people(aalto_dir):
    people, _ = aalto.load(aalto_dir, users=20, seed=11)
    assert len(people) == 20
    return people


def test_real_typists_never_trigger_the_rule(twenty_people):
    for person in twenty_people:
        for session in person.sessions:
            assert scan(session) == []
        assert scan(protocol.back_to_back(person.sessions)) == []


def test_evaluation_on_twenty_real_typists(twenty_people):
    result = protocol.evaluate(twenty_people, seed=2)
    assert result["users"] == 20 and result["trials_per_injector"] == 20
    assert result["human_streams"] == sum(len(p.sessions) + 1 for p in twenty_people)
    assert result["human_keys"] == sum(e.kind == Kind.DOWN and not e.repeat for p in twenty_people
                                       for session in p.sessions for e in session) > 20 * 300
    assert result["human_false_positives"] == 0 and result["human_users_flagged"] == 0
    enough = PRESETS["balanced"].short_hold_count    # the evidence the slowest rule needs
    for name in protocol.INJECTORS:
        assert result[f"missed_{name}_pct"] == 0.0
        assert result[f"keys_to_detect_{name}"] <= enough + 4
        assert result[f"keys_to_detect_max_{name}"] <= 30
        for rule in ("ukip_", "duckhunt_"):
            assert f"{rule}keys_to_detect_{name}" in result and f"{rule}missed_{name}_pct" in result
    assert result["ukip_keys_to_detect_5ms"] == 5.0
    assert result["duckhunt_missed_jitter_pct"] == 100.0        # duckhunt is blind to jitter
    assert protocol.evaluate(twenty_people, seed=2) == result    # deterministic for a seed
    assert result["human_false_positives_attach_at_pauses"] >= 0
    for name in ("1ms", "5ms", "10ms", "20ms"):
        assert result[f"within_5_keys_{name}_pct"] >= 95.0
    lines = protocol.summary_lines(result)
    assert len(lines) == 5 + len(protocol.INJECTORS)
    text = json.dumps(result) + "\n".join(lines)
    assert "KeyClass" not in text and "LETTER" not in text


def test_real_typists_on_a_keyboard_just_attached_are_not_flagged(twenty_people):
    result = protocol.evaluate(twenty_people, seed=2, keyboard_attached=True)
    assert result["keyboard_attached"] is True
    assert result["human_false_positives"] == 0
    for name in ("1ms", "5ms", "10ms", "20ms"):
        assert result[f"keys_to_detect_{name}"] == 5.0 and result[f"missed_{name}_pct"] == 0.0
    plain = protocol.evaluate(twenty_people, seed=2, keyboard_attached=False)
    assert plain["keyboard_attached"] is False
    assert plain["keys_to_detect_5ms"] > 5              # the attach is what buys the 5th key
    assert result["keys_to_detect_jitter"] == plain["keys_to_detect_jitter"]
    assert any("attached" in line for line in protocol.summary_lines(result))
    assert any("timing alone" in line for line in protocol.summary_lines(plain))


@pytest.mark.parametrize("delay_ms", [0.0, 60_000.0])
def test_an_arrival_seen_late_lands_in_time_order(twenty_people, delay_ms):
    """Windows and macOS see a keyboard arrive at their next poll: with ``arrival_delay_ms``
    the arrival comes up to that much after the cut, among the payload's keys if it is later
    than their start; the keys are counted from the first injected one all the same."""
    person = twenty_people[0]
    events, start = protocol.spliced_trial(np.random.default_rng(1), person, "5ms", True,
                                           delay_ms)
    (at,) = [i for i, e in enumerate(events) if e.kind == Kind.NEW_KEYBOARD]
    if delay_ms == 0:
        assert at == start - 1 and events[at].t_ns < events[start].t_ns
    else:                                       # seen after the payload began: in time order
        assert start < at and events[at - 1].t_ns <= events[at].t_ns
        assert all(e.t_ns > events[at].t_ns for e in events[at + 1:])
    assert events[start].kind == Kind.DOWN
    late = protocol.evaluate(twenty_people[:5], seed=1, arrival_delay_ms=1000.0)
    assert late["arrival_delay_ms"] == 1000.0
    assert any("1000 ms late" in line for line in protocol.summary_lines(late))
    with pytest.raises(ValueError, match="arrival delay"):
        protocol.evaluate(twenty_people[:1], arrival_delay_ms=-1.0)


def test_the_eval_command_sees_the_injector_arrive_unless_told_not_to(aalto_dir):
    """``cadence eval injection``: by default the injector arrives as the agent sees it (and
    every human stream opens on a new keyboard); ``--no-keyboard-attached`` is timing alone."""
    def run(*flags):
        out = subprocess.run([sys.executable, "-m", "agent", "eval", "injection", str(aalto_dir),
                              "--format", "aalto", "--users", "8", "--seed", "3", "--json",
                              *flags], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    default, timing = run(), run("--no-keyboard-attached")
    assert default["keyboard_attached"] is True and timing["keyboard_attached"] is False
    assert default["keys_to_detect_5ms"] == 5.0 < timing["keys_to_detect_5ms"]
    assert run("--keyboard-attached") == default


def test_the_evaluation_judges_people_as_they_are_read_and_lets_each_go(twenty_people):
    """A dataset larger than memory (the full Aalto download) streams through: no more than
    the person being judged is held while the next is read, and the figures are the same."""
    held = []

    def stream():
        for person in twenty_people[:6]:
            gc.collect()
            held.append(sum(ref() is not None for ref in refs))
            copy = UserSessions(person.user, [list(s) for s in person.sessions])
            refs.append(weakref.ref(copy))
            yield copy
            del copy

    refs: list = []
    result = protocol.evaluate(stream(), seed=4)
    assert held == [0, 1, 1, 1, 1, 1]       # the loop's current person only, never the earlier
    assert result == protocol.evaluate(twenty_people[:6], seed=4)
    with pytest.raises(ValueError, match="no person with a session"):
        protocol.evaluate(iter([UserSessions("empty", [])]))


def test_a_person_who_only_moved_the_mouse_gets_no_trial(twenty_people):
    """A recording may hold mouse-only users: their streams are judged, no payload is spliced
    into typing they never did, and a dataset of nothing else says so."""
    mouse = UserSessions("mouse", [[Event(i * 10 * MS, Kind.MOVE, x=i, y=i) for i in range(50)]])
    result = protocol.evaluate([*twenty_people[:3], mouse], seed=1)
    assert result["users"] == 4 and result["trials_per_injector"] == 3
    assert result["human_streams"] == sum(len(p.sessions) + 1 for p in twenty_people[:3]) + 2
    assert result["human_false_positives"] == 0 and result["missed_5ms_pct"] == 0.0
    with pytest.raises(ValueError, match="nobody typed a key"):
        protocol.evaluate([mouse])


def test_progress_is_reported_per_person(twenty_people):
    calls = []
    protocol.evaluate(twenty_people[:3], seed=0, progress=calls.append)
    assert calls == [1, 1, 1]
