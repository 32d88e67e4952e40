"""Would a stall longer than any in the data flag people? Stalls put into real typing.

A machine (or a browser) that stalls for S ms queues the key events typed meanwhile and then
handles them at once, each in 1-4 ms, before it catches up with the typing. The Aalto
set holds such stalls of up to 2.3 s. This script puts one stall of each length into every
participant's day (their sentences back to back, as ``cadence eval injection`` counts them) at
a key-down drawn with the seed, and counts the people the injection rule then flags: the
balanced rule as shipped, and the same without its catch-up (``catch_up_keys = 0``), whose
timing rules see the queued keys as a machine's.

    python scripts/injection_stalls.py DIR [--stall-ms 500 1000 2000 4000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from agent.evaluation.injection import back_to_back
from agent.events import Event, Kind
from agent.features.injection import PRESETS, scan
from agent.sources.datasets import aalto
from agent.sources.loading import UserSessions

STALLS_MS = (500, 1000, 2000, 4000)
STEP_MS = (1.0, 4.0)  # each queued event takes 1-4 ms to handle: holds of 1-4 ms, gaps of 2-8
#                       (the Aalto stalls: holds of 1-4 ms, gaps of 2-10)
RULES = {"balanced": PRESETS["balanced"],
         "balanced without catch-up": replace(PRESETS["balanced"], catch_up_keys=0)}


def stalled(events: list[Event], start_ns: int, stall_ms: float,
            rng: np.random.Generator, step_ms: tuple[float, float] = STEP_MS) -> list[Event]:
    """``events`` (in time order) as a machine stalled from ``start_ns`` for ``stall_ms``
    delivers them: each event that came during the stall, and each after it until the machine
    has caught up, handled a step drawn from ``step_ms`` after the one before, from the stall's
    end on."""
    end = start_ns + int(stall_ms * 1e6)
    out, free = [], None    # while catching up: the earliest the next event can be handled
    for e in events:
        t = end if start_ns < e.t_ns < end else e.t_ns
        if free is not None and t < free:
            t = free
        free = t + int(rng.uniform(*step_ms) * 1e6) if t != e.t_ns else None
        out.append(e._replace(t_ns=t))
    return out


def flagged(people: list[UserSessions], stall_ms: float, seed: int = 0) -> dict[str, int]:
    """rule -> people whose day, with one stall of ``stall_ms`` put in, the rule flags."""
    counts = dict.fromkeys(RULES, 0)
    for index, person in enumerate(people):
        day = back_to_back(person.sessions)
        downs = [e.t_ns for e in day if e.kind == Kind.DOWN and not e.repeat]
        if not downs:
            continue
        rng = np.random.default_rng([seed, index, int(stall_ms)])
        stream = stalled(day, downs[int(rng.integers(len(downs)))], stall_ms, rng)
        for name, policy in RULES.items():
            counts[name] += bool(scan(stream, policy))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the Aalto 136M keystrokes folder (or its parent)")
    ap.add_argument("--stall-ms", type=float, nargs="+", default=list(STALLS_MS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if any(s <= 0 for s in args.stall_ms):
        ap.error("--stall-ms must be positive")
    people, _ = aalto.load(args.dir)
    people = [p for p in people if p.sessions]
    result = {"people": len(people), "seed": args.seed,
              "flagged": {f"{s:g}": flagged(people, s, args.seed) for s in args.stall_ms}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"one stall in each of {len(people)} people's days; people flagged:")
    for stall, counts in result["flagged"].items():
        cells = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"  stall {stall:>5} ms: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
