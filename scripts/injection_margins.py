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

    python scripts/injection_margins.py DIR [--parts 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from agent.evaluation.injection import human_streams
from agent.features.injection import PRESETS, scan
from agent.sources.datasets import aalto
from agent.sources.loading import UserSessions

#: knob -> the values tried, loosest first (fewer gaps, keys or holds is looser, except the
#: new-keyboard window, where more keys, or more gaps at a hand's pace before it closes, is
#: looser, and the catch-up, where a pause read at more ms a key explains fewer keys)
KNOBS: dict[str, Sequence[int]] = {
    "catch_up_keys": range(0, 33),
    "catch_up_ms": range(400, 40, -20),
    "burst_gaps": range(1, 13),
    "steady_burst_gaps": range(1, 7),
    "short_hold_count": range(1, 14),
    "uniform_hold_window": range(2, 25, 2),
    "regular_gap_window": range(2, 17, 2),
    "chord_count": range(1, 5),
    "new_keyboard_keys": range(32, 4, -1),
    "new_keyboard_paced_gaps": range(8, 0, -1),
}
NEW_KEYBOARD = ("new_keyboard_keys", "new_keyboard_paced_gaps")


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


def margins(people: list[UserSessions], parts: int = 2) -> dict:
    """knob -> {"default": the shipped value, "groups": [(first, last) person index],
    "curves": [per group, its :func:`curve`], "loosest": [per group, its edge or None]}."""
    size = -(-len(people) // parts)
    groups = [people[i:i + size] for i in range(0, len(people), size)]
    bounds = [(i, min(i + size, len(people)) - 1) for i in range(0, len(people), size)]
    out = {}
    for knob in KNOBS:
        curves = [curve(group, knob) for group in groups]
        out[knob] = {"default": getattr(PRESETS["balanced"], knob), "groups": bounds,
                     "curves": curves,
                     "loosest": [c[-1][0] if c[-1][1] == 0 else None for c in curves]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the Aalto 136M keystrokes folder (or its parent)")
    ap.add_argument("--parts", type=int, default=2, help="groups of participants (default 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.parts < 1:
        ap.error("--parts must be at least 1")
    people, report = aalto.load(args.dir)
    people = [p for p in people if p.sessions]
    result = margins(people, args.parts)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for knob, row in result.items():
        cells = ", ".join(f"{a}-{b}: {v}" for (a, b), v in zip(row["groups"], row["loosest"]))
        print(f"{knob:<20} default {row['default']:>3}; loosest with no human flagged: {cells}")
        for (a, b), steps in zip(row["groups"], row["curves"]):
            print(f"{'':<24} people flagged, {a}-{b}: "
                  + ", ".join(f"{value}: {n}" for value, n in steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
