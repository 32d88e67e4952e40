"""How far each threshold of the balanced injection rule sits from the nearest human flag, per
group of participants: does a margin seen on some people hold on people not seen?

The participants are split into ``--parts`` groups in file order. For each group and each knob
of :data:`agent.features.injection.PRESETS` ``["balanced"]`` (the others at their defaults), the
script counts the people flagged at each value, from the loosest tried until one flags nobody:
that value is the group's edge. (A person is flagged if any of their human streams is: each
sentence, and the sentences back to back, as ``cadence eval injection`` counts them; for the
new-keyboard knobs every stream opens on a keyboard attached just before it, the worst case.)
If the groups' edges disagree widely, a threshold fitted on one group would flag people in
another; how fast the counts fall, step by step, says how much a larger group could hold.

That last is put in a number for each rule's own threshold (:data:`RULE_KNOBS`; the catch-up
and new-keyboard knobs gate those rules, and ``injection_stalls.py`` measures the stalls the
catch-up is for). The groups' counts, added up, are fitted with a geometric tail (each step
looser multiplies the people flagged by one factor: a Poisson regression of the count on the
value), and the fit at the shipped value gives the people expected to be flagged among 1,000
not seen. It is an extrapolation, not a measurement. It leans high where it has least to go on:
the edge's zero counts as half a person, so a count that falls to zero in one step still gets a
finite slope. Summed over the rules, it is the people expected to be flagged among 1,000 more
who type as these do. A power law (log count linear in the value's log) is fitted beside it:
a heavier tail, the reading if a few people differ in kind rather than degree.

Which tail to believe is checked on people each fit has not seen (:func:`cross_check`): each
group's fit predicts the other groups' counts at every value from its own edge on, where it
saw nobody flagged and a threshold set on it alone could sit; the script sets the predictions
beside the counts, and sums them over the rules.

    python scripts/injection_margins.py DIR [--parts 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from agent.evaluation.injection import human_streams
from agent.features.injection import PRESETS, scan
from agent.sources.datasets import aalto
from agent.sources.loading import UserSessions

#: knob -> the values tried, loosest first (fewer gaps, keys or holds is looser, except the
#: new-keyboard window, where more keys, or more gaps at a hand's pace before it closes, is
#: looser, and the catch-up, where a pause read at more ms a key explains fewer keys, and a
#: smaller budget excuses fewer in all)
KNOBS: dict[str, Sequence[int]] = {
    "catch_up_keys": range(33),
    "catch_up_ms": range(400, 40, -20),
    "catch_up_budget": range(49),
    "burst_gaps": range(1, 13),
    "steady_burst_gaps": range(1, 7),
    "short_hold_count": range(1, 17),
    "uniform_hold_window": range(2, 25, 2),
    "regular_gap_window": range(2, 17, 2),
    "chord_count": range(1, 5),
    "new_keyboard_keys": range(32, 4, -1),
    "new_keyboard_paced_gaps": range(8, 0, -1),
}
NEW_KEYBOARD = ("new_keyboard_keys", "new_keyboard_paced_gaps")
#: the rules' own thresholds, one a rule (the catch-up and new-keyboard knobs gate those rules,
#: so their flags are the rules' flags again)
RULE_KNOBS = ("burst_gaps", "steady_burst_gaps", "short_hold_count", "uniform_hold_window",
              "regular_gap_window", "chord_count")


def streams(people: list[UserSessions], keyboard_attached: bool = False) -> list:
    """Every human stream of ``people``, as ``cadence eval injection`` counts them."""
    return [s for p in people for s in human_streams(p, keyboard_attached)]


def flagged(people: list[UserSessions], knob: str, value: int) -> int:
    """How many of ``people`` the balanced rule, with ``knob`` set to ``value``, flags."""
    policy = replace(PRESETS["balanced"], **{knob: value})
    attach = knob in NEW_KEYBOARD
    return sum(any(scan(s, policy) for s in streams([p], attach)) for p in people)


def curve(people: list[UserSessions], knob: str) -> list[tuple[int, int]]:
    """(value, people flagged) for the values of ``knob`` in order, up to the first that flags
    nobody (the edge), or all of them if every one flags someone."""
    out = []
    for value in KNOBS[knob]:
        out.append((value, flagged(people, knob, value)))
        if out[-1][1] == 0:
            break
    return out


def loosest(people: list[UserSessions], knob: str) -> int | None:
    """The loosest value of ``knob`` (the balanced rule otherwise) that flags none of
    ``people``; None if even the tightest tried flags someone."""
    value, n = curve(people, knob)[-1]
    return value if n == 0 else None


def added(curves: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """The groups' curves added up value by value (a group counts 0 past its edge), as far as
    the longest goes."""
    longest = max(curves, key=len)
    out = []
    for i, (value, _) in enumerate(longest):
        out.append((value, sum(c[i][1] for c in curves if i < len(c))))
    return out


def expected(steps: list[tuple[int, int]], value: float, power: bool = False) -> float | None:
    """People a tail fitted to ``steps`` (a :func:`curve`) predicts at ``value``: the Poisson
    regression of each count on its value (geometric: log count linear in the value) or, with
    ``power``, on the value's log (a power law: a heavier tail), with the edge's 0 counted as
    half a person. None if the curve flagged nobody at all, or has one value only (no slope)."""
    if len(steps) < 2 or not any(n for _, n in steps):
        return None
    scale = np.log if power else np.asarray
    v = scale(np.array([s[0] for s in steps], dtype=float))
    n = np.array([s[1] or 0.5 for s in steps], dtype=float)
    x = np.column_stack([np.ones_like(v), v - v.mean()])
    beta = np.array([np.log(n.mean()), 0.0])
    for _ in range(100):                         # Newton's method on the Poisson likelihood
        lam = np.exp(x @ beta)
        step = np.linalg.solve(x.T @ (x * lam[:, None]), x.T @ (n - lam))
        beta += step
        if np.abs(step).max() < 1e-12:
            break
    return float(np.exp(beta[0] + beta[1] * (scale(float(value)) - v.mean())))


def cross_check(curves: list[list[tuple[int, int]]], sizes: list[int],
                power: bool = False) -> list[dict]:
    """Each group's tail (:func:`expected`) predicting the other groups, people it has not
    seen: at each value from the group's own edge on (where it flags nobody, and a threshold
    set on it alone could sit), the people it predicts among the others (scaled by their
    number) beside those the others' curves flagged there. One entry a group with an edge and
    a tail: {"group": its index, "values", "predicted", "observed"}."""
    out = []
    for g, own in enumerate(curves):
        others = [c for h, c in enumerate(curves) if h != g]
        if not others or own[-1][1] != 0 or expected(own, own[-1][0], power) is None:
            continue
        seen = added(others)
        values = [v for v, _ in added(curves)]
        start = values.index(own[-1][0])
        scale = (sum(sizes) - sizes[g]) / sizes[g]
        out.append({"group": g, "values": values[start:],
                    "predicted": [expected(own, v, power) * scale for v in values[start:]],
                    "observed": [seen[i][1] if i < len(seen) else 0
                                 for i in range(start, len(values))]})
    return out


def margins(people: list[UserSessions], parts: int = 2) -> dict:
    """knob -> {"default": the shipped value, "groups": [(first, last) person index],
    "curves": [per group, its :func:`curve`], "loosest": [per group, its edge or None], and
    for :data:`RULE_KNOBS` (None for the other knobs, or if nobody was flagged):
    "expected_per_1000" / "expected_power_per_1000": the people :func:`expected` (geometric /
    power-law tail) at the default, per 1,000; "cross_check" / "cross_check_power": its
    :func:`cross_check`}."""
    size = -(-len(people) // parts)
    groups = [people[i:i + size] for i in range(0, len(people), size)]
    bounds = [(i, min(i + size, len(people)) - 1) for i in range(0, len(people), size)]
    sizes = [len(group) for group in groups]
    out = {}
    for knob in KNOBS:
        curves = [curve(group, knob) for group in groups]
        default = getattr(PRESETS["balanced"], knob)
        row = {"default": default, "groups": bounds, "curves": curves,
               "loosest": [c[-1][0] if c[-1][1] == 0 else None for c in curves]}
        for suffix, power in (("", False), ("_power", True)):
            tail = expected(added(curves), default, power) if knob in RULE_KNOBS else None
            row[f"expected{suffix}_per_1000"] = (None if tail is None
                                                 else tail * 1000 / len(people))
            row[f"cross_check{suffix}"] = (cross_check(curves, sizes, power)
                                           if knob in RULE_KNOBS else None)
        out[knob] = row
    return out


def expected_total(result: dict, power: bool = False) -> float:
    """People expected to be flagged among 1,000 not seen, summed over :data:`RULE_KNOBS`
    (geometric tails, or with ``power`` power-law ones)."""
    key = "expected_power_per_1000" if power else "expected_per_1000"
    return sum(result[knob][key] or 0.0 for knob in RULE_KNOBS)


def cross_totals(result: dict, power: bool = False) -> tuple[float, int]:
    """(predicted, observed): every :func:`cross_check` of :data:`RULE_KNOBS` summed."""
    checks = [c for knob in RULE_KNOBS
              for c in result[knob]["cross_check_power" if power else "cross_check"]]
    return (sum(sum(c["predicted"]) for c in checks),
            sum(sum(c["observed"]) for c in checks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the Aalto 136M keystrokes folder (or its parent)")
    ap.add_argument("--parts", type=int, default=2, help="groups of participants (default 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.parts < 1:
        ap.error("--parts must be at least 1")
    people, _report = aalto.load(args.dir)
    people = [p for p in people if p.sessions]
    result = margins(people, args.parts)
    (geo_p, seen), (pow_p, _) = cross_totals(result), cross_totals(result, power=True)
    if args.json:
        print(json.dumps({**result, "rules_expected_per_1000": expected_total(result),
                          "rules_expected_power_per_1000": expected_total(result, power=True),
                          "cross_check_totals": {"predicted": geo_p, "predicted_power": pow_p,
                                                 "observed": seen}}, indent=2))
        return 0
    for knob, row in result.items():
        cells = ", ".join(f"{a}-{b}: {v}" for (a, b), v in zip(row["groups"], row["loosest"]))
        print(f"{knob:<20} default {row['default']:>3}; loosest with no human flagged: {cells}")
        for (a, b), steps in zip(row["groups"], row["curves"]):
            print(f"{'':<24} people flagged, {a}-{b}: "
                  + ", ".join(f"{value}: {n}" for value, n in steps))
        if row["expected_per_1000"] is not None:
            print(f"{'':<24} tail at {row['default']}, people per 1,000 not seen: geometric "
                  f"{row['expected_per_1000']:.2g}, power law "
                  f"{row['expected_power_per_1000']:.2g}")
        for geo, pow_ in zip(row["cross_check"] or [], row["cross_check_power"] or []):
            a, b = row["groups"][geo["group"]]
            print(f"{'':<24} fitted on {a}-{b}, the others at "
                  + ", ".join(map(str, geo["values"])) + ": predicted "
                  + " ".join(f"{x:.2g}" for x in geo["predicted"]) + " (power law "
                  + " ".join(f"{x:.2g}" for x in pow_["predicted"]) + "), flagged "
                  + " ".join(map(str, geo["observed"])))
    print(f"people expected to be flagged per 1,000 not seen, the rules' thresholds summed: "
          f"geometric {expected_total(result):.2g}, power law "
          f"{expected_total(result, power=True):.2g}")
    print(f"each group's tails predicting the others from its own edge on, summed: geometric "
          f"{geo_p:.3g}, power law {pow_p:.3g}; flagged {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
