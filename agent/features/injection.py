"""Keystroke-injection rule: does a machine, not a hand, drive the keyboard right now?

A USB keystroke injector ("Rubber Ducky", O.MG cable, a flashed microcontroller) enumerates as
a keyboard, so the OS does *not* flag its keys as injected. Its timing gives it away: it types
faster than fingers can, holds each key for about one USB report (a few ms) and does so every
time. :class:`InjectionDetector` watches key timing only (never which key) and runs on every
event from the first one, independent of enrolment. It is a pure streaming object: time comes
only from ``Event.t_ns``; work per event is constant (fixed-size windows, no history).

Catch-up (``catch_up_ms``, ``catch_up_keys``): a machine that stalls queues the keys typed
meanwhile and then delivers them at once, at machine speed. Over the 1,000 Aalto typists
(15,000 sentences, 731k keys) runs of 3 or more gaps <= 25 ms occur 10 times, nearly all of
keys held 1-4 ms right after a pause of 0.4-2.3 s: the recording browser handling keys queued
while it stalled (in several the key before is "held" for the whole pause, its release queued
too). The longest: 10 gaps of 2-10 ms after 1,325 ms (one person), 4 of 3-4 ms after 2,187 ms.
The agent's own hooks can do the same on a loaded machine (on Windows and macOS a key is timed
when its callback runs). So a pause of P ms (at least 2 x ``catch_up_ms``) explains the next
P / ``catch_up_ms`` key-downs, its own first, at most ``catch_up_keys`` (16): the keys a hand
could have typed in it at 100 ms a key, faster than 95% of the Aalto typists' median pace.
Every key-down after the pause uses one up; the fast ones among them are not counted by
``burst`` or ``steady_burst``, and their holds not by ``short_holds``. The rest of a run is.
The cost: an injector after a pause is judged that many keys later by timing alone (its
payload's DELAY buys it at most 16 keys); ``new_keyboard`` and the regularity rules do not
wait (a fixed cadence with no Shift in it meets ``regular_gaps`` by its 17th key).

Evidence, each a rule with its own threshold (:class:`InjectionPolicy`); one is enough:

``burst``
    ``burst_gaps`` press-to-press gaps in a row, each <= ``burst_gap_ms`` (25 ms: 40 keys/s),
    not caught up. Hands roll two or three keys that fast, never a dozen. In Aalto, once the
    catch-up is taken out, no run has more than 2 such gaps; the default (8) keeps a margin.
``new_keyboard``
    a keyboard was just attached (an ``ATTACH`` event: a USB injector enumerates as one moments
    before it types) and ``new_keyboard_gaps`` (4) press-to-press gaps in a row, each <=
    ``burst_gap_ms`` (caught up or not), end within its first ``new_keyboard_keys`` (8)
    key-downs: 5 keys at machine speed, or GUI+r, the pause a payload leaves for the Run box,
    then 5 keys. A hand on a keyboard it has just plugged in does not open that fast; the Aalto
    bursts above come mid-sentence (the earliest completes 4 gaps at a sentence's 9th key), so
    even if every one of the 16,000 streams began on a keyboard attached just before, none would
    match. The window also closes once the keyboard has typed ``new_keyboard_paced_gaps`` (2)
    gaps at a hand's pace (over ``burst_gap_ms``, under ``pause_ms``; the gap from a key before
    the arrival does not count): an injector's keys before its payload are chords (one HID
    report) and at most one DELAY, a person's are typing, and those Aalto bursts all follow a
    pause after keys at a hand's pace (with it, no window up to 32 keys matches any of them). On
    X11 a ``NEW_KEYBOARD`` event (a keyboard's first key since the agent started) opens the same
    window: an injector plugged in earlier, or lying dormant, is still a keyboard of its own.
``steady_burst``
    ``steady_burst_gaps`` press-to-press gaps in a row, each <= ``burst_gap_ms``, not caught up,
    and all within ``steady_burst_range_ms`` (2 ms) of each other: a machine's fixed delay at
    machine speed (5 gaps: 6 keys, and Shift or GUI chords in them, whose keys share one HID
    report, are not counted as steps). Two ms allow a millisecond clock and scheduling on
    either side. Once the catch-up is taken out, no Aalto run of fast gaps is longer than 2:
    the default (5) keeps two steps of margin.
``short_holds``
    ``short_hold_count`` of the last ``short_hold_window`` released keys held <= ``short_hold_ms``
    (12 ms), not caught up. A finger needs 30 ms or more to press and lift a key (Aalto: 1% of
    holds are under 41 ms, 0.05% under 12 ms, and those come singly, as clock glitches, or in
    the catch-up bursts above; with those taken out, at most 4 of 16 for anyone). An injector
    holds 1-8 ms, whatever delay it leaves between keys, so this rule catches "jittered"
    injectors that type at a human pace. Default: 10 of 16.
``uniform_holds``
    the last ``uniform_hold_window`` holds all within ``uniform_hold_range_ms`` (2 ms) of each
    other: an injector told to hold keys for a human-looking 80 ms still holds them for exactly
    80 ms. Human holds over 20 keys never span less than 8 ms in Aalto.
``regular_gaps``
    the last ``regular_gap_window`` gaps (none a pause) within ``regular_gap_range_ms`` (4 ms):
    a fixed typing delay. Humans: never under 40 ms over 16 gaps in Aalto.
``chords``
    ``chord_count`` synchronous chords within ``chord_window`` key-downs: two keys pressed within
    ``chord_ms`` (1 ms) of each other *and* released within 1 ms of each other. That is one HID
    report (an injector's Shift+letter or GUI+r); hands press and release a chord's keys tens of
    ms apart. Aalto: 17 such pairs in 731k keys, never two in one window.

``burst``, ``new_keyboard``, ``steady_burst``, ``uniform_holds`` and ``regular_gaps`` also need
two key classes or more in their window, so a key held under auto-repeat that some systems
report as release/press pairs (one class, a fixed rate, equal holds) never matches.
Auto-repeat key-downs (``repeat=True``) are ignored, as are events the OS flags as software
injected when ``allow_software_injected`` (remote desktop, password-manager auto-type). A clock
that runs backwards (a replay of overlapping recordings) starts the evidence afresh.
After a detection the evidence starts afresh, so a long injection is reported again.

A :class:`Detection` carries numbers only: the rule, the time, recent gaps and holds in ms and
how many keys it saw, never a key's identity or class. Sensitivity presets: :data:`PRESETS`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from agent.events import ARRIVALS, Event, Kind

_NS_PER_MS = 1_000_000
_MAX_HELD = 32          # pending presses kept for pairing; older ones are forgotten
_EVIDENCE_KEYS = 16     # gaps and holds a Detection carries
_SAME_REPORT_MS = 0.5   # key-downs closer than half a USB frame came in one HID report


@dataclass(frozen=True)
class InjectionPolicy:
    """Thresholds of the injection rule (see the module docstring for where each comes from)."""

    burst_gap_ms: float = 25.0
    burst_gaps: int = 8
    new_keyboard_gaps: int = 4
    new_keyboard_keys: int = 8
    new_keyboard_paced_gaps: int = 2
    steady_burst_gaps: int = 5
    steady_burst_range_ms: float = 2.0
    short_hold_ms: float = 12.0
    short_hold_window: int = 16
    short_hold_count: int = 10
    uniform_hold_window: int = 24
    uniform_hold_range_ms: float = 2.0
    regular_gap_window: int = 16
    regular_gap_range_ms: float = 4.0
    pause_ms: float = 1000.0
    catch_up_ms: float = 100.0
    catch_up_keys: int = 16
    chord_ms: float = 1.0
    chord_window: int = 32
    chord_count: int = 4
    allow_software_injected: bool = True

    def __post_init__(self) -> None:
        for name in ("new_keyboard_keys", "catch_up_keys"):
            if getattr(self, name) < 0:
                raise ValueError(f"injection policy: {name} must not be negative (0: off)")
        if self.catch_up_ms <= 0:
            raise ValueError("injection policy: catch_up_ms must be positive")
        for name in ("burst_gaps", "new_keyboard_gaps", "new_keyboard_paced_gaps",
                     "steady_burst_gaps", "short_hold_window",
                     "short_hold_count", "uniform_hold_window", "regular_gap_window",
                     "chord_window", "chord_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"injection policy: {name} must be at least 1")
        if self.short_hold_count > self.short_hold_window:
            raise ValueError("injection policy: short_hold_count exceeds short_hold_window")
        if self.chord_count > self.chord_window:
            raise ValueError("injection policy: chord_count exceeds chord_window")
        for name in ("burst_gap_ms", "steady_burst_range_ms", "short_hold_ms", "uniform_hold_range_ms",
                     "regular_gap_range_ms", "pause_ms", "chord_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"injection policy: {name} must not be negative")


#: ``balanced`` (default): no detection on any of the 1,000 Aalto typists' streams, a margin above
#: the machine-speed bursts found in them (catch-up taken out); injectors at a fixed delay caught
#: in 5 keys when their keyboard is seen arriving, else in 6 plus the keys the pause before them
#: could hold (at most 16 more), jittered or unsteady ones in about 13.
#: ``strict``: no catch-up; catches any fast injector within 5 or 6 keys, and so also flags the
#: rare burst of machine-speed keys, a stalled machine's or a text expander's (4 of the 1,000
#: Aalto typists, as many as google/ukip).
#: ``relaxed``: twice the evidence of ``balanced``, and no ``new_keyboard`` rule, for machines with
#: legitimate typing hardware (a YubiKey or a scanner types at once when plugged in).
PRESETS: dict[str, InjectionPolicy] = {
    "balanced": InjectionPolicy(),
    "strict": InjectionPolicy(burst_gaps=4, steady_burst_gaps=4, short_hold_window=8,
                              short_hold_count=6, chord_count=3, catch_up_keys=0),
    "relaxed": InjectionPolicy(burst_gaps=16, steady_burst_gaps=10, short_hold_window=32,
                               short_hold_count=20,
                               uniform_hold_window=32, regular_gap_window=24, chord_count=6,
                               new_keyboard_keys=0),
}


@dataclass(frozen=True)
class Detection:
    """Why the rule fired, in numbers only: no key identity, no key class, no text."""

    rule: str
    t_ns: int
    keys_observed: int
    recent_gaps_ms: tuple[float, ...]
    recent_holds_ms: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"rule": self.rule, "t_ns": self.t_ns, "keys_observed": self.keys_observed,
                "recent_gaps_ms": list(self.recent_gaps_ms),
                "recent_holds_ms": list(self.recent_holds_ms)}


class InjectionDetector:
    """Streaming injection rule. ``observe`` every event; it returns a :class:`Detection` on
    the event where the evidence becomes sufficient, else None."""

    def __init__(self, policy: InjectionPolicy | str | None = None) -> None:
        if policy is None:
            policy = PRESETS["balanced"]
        elif isinstance(policy, str):
            if policy not in PRESETS:
                raise ValueError(f"unknown injection sensitivity {policy!r}; "
                                 f"expected one of {sorted(PRESETS)}")
            policy = PRESETS[policy]
        self.policy = policy
        self.keys_observed = 0
        self.detections = 0
        self._held: dict[int, tuple[int, int, bool]] = {}  # press_id -> (t_ns, class, caught up)
        self._last_t = None
        self.reset()

    @classmethod
    def with_overrides(cls, base: str = "balanced", **overrides) -> InjectionDetector:
        """A detector from a preset with some thresholds changed (policy from settings)."""
        return cls(replace(PRESETS[base], **overrides))

    def reset(self) -> None:
        """Forget the evidence, a new keyboard's window included (not the held keys): after a
        detection, a lock or a pause."""
        p = self.policy
        self._new_keyboard_keys = 0    # key-downs left in which the new-keyboard rule applies
        self._arrival = 0              # keys seen when it came, and gaps at a hand's pace since
        self._paced = 0
        self._last_down_ns: int | None = None
        self._last_down_id = -1
        self._last_down_cls = -1
        self._catch_up = 0             # key-downs the last pause can explain (see catch_up_ms)
        self._burst = 0
        self._burst_excused = 0        # gaps of the current burst the pause before explains
        self._burst_classes = 0    # bit set of the key classes in the current burst
        self._steady: deque[float] = deque(maxlen=p.steady_burst_gaps)  # its gaps, chords apart
        self._gaps: deque[float] = deque(maxlen=max(p.regular_gap_window, _EVIDENCE_KEYS))
        self._gap_classes: deque[int] = deque(maxlen=p.regular_gap_window)
        self._holds: deque[float] = deque(maxlen=max(p.uniform_hold_window, _EVIDENCE_KEYS))
        self._hold_classes: deque[int] = deque(maxlen=p.uniform_hold_window)
        self._short: deque[bool] = deque(maxlen=p.short_hold_window)
        self._n_short = 0
        self._chord_pair: list | None = None           # [id_a, id_b, up_a_ns, up_b_ns]
        self._chords: deque[int] = deque(maxlen=p.chord_count)

    def observe(self, event: Event) -> Detection | None:
        kind = event.kind
        if event.injected and self.policy.allow_software_injected:
            return None
        if kind != Kind.DOWN and kind != Kind.UP:
            if kind in ARRIVALS:
                self._new_keyboard_keys = self.policy.new_keyboard_keys
                self._arrival, self._paced = self.keys_observed, 0
            return None
        t = event.t_ns
        if self._last_t is not None and t < self._last_t:
            self.reset()
            self._held.clear()
        self._last_t = t
        if kind == Kind.DOWN:
            return None if event.repeat else self._down(event)
        return self._up(event)

    # --- key-down: gaps, bursts, chords ----------------------------------------------------
    def _down(self, event: Event) -> Detection | None:
        p = self.policy
        t, cls = event.t_ns, int(event.key) if event.key is not None else -1
        self.keys_observed += 1
        prev_t, prev_id, prev_cls = self._last_down_ns, self._last_down_id, self._last_down_cls
        self._last_down_ns, self._last_down_id, self._last_down_cls = t, event.press_id, cls
        gap = None if prev_t is None else (t - prev_t) / _NS_PER_MS
        caught_up = self._caught_up(gap)
        self._held.pop(event.press_id, None)    # a reused id is a new press: keep order fresh
        self._held[event.press_id] = (t, cls, caught_up)
        if len(self._held) > _MAX_HELD:
            del self._held[next(iter(self._held))]
        new_keyboard = self._new_keyboard_keys > 0
        self._new_keyboard_keys -= new_keyboard
        if gap is None:
            return None
        if gap <= p.chord_ms and prev_id in self._held:
            self._chord_pair = [prev_id, event.press_id, None, None]
        self._gaps.append(gap)
        self._gap_classes.append(cls)
        if gap <= p.burst_gap_ms:
            if self._burst == 0:
                self._burst_classes = 1 << (prev_cls + 1)
            self._burst += 1
            self._burst_excused += caught_up
            self._burst_classes |= 1 << (cls + 1)
            mixed = self._burst_classes & (self._burst_classes - 1)
            if self._burst - self._burst_excused >= p.burst_gaps and mixed:
                return self._fire("burst", t)
            if new_keyboard and self._burst >= p.new_keyboard_gaps and mixed:
                return self._fire("new_keyboard", t)
            if gap > _SAME_REPORT_MS and not caught_up:  # a chord (one HID report) is no step
                self._steady.append(gap)
                if (len(self._steady) == p.steady_burst_gaps and mixed
                        and max(self._steady) - min(self._steady) <= p.steady_burst_range_ms):
                    return self._fire("steady_burst", t)
        else:
            self._burst = self._burst_excused = 0
            self._steady.clear()
            if new_keyboard and gap < p.pause_ms and self.keys_observed > self._arrival + 1:
                self._paced += 1
                if self._paced >= p.new_keyboard_paced_gaps:
                    self._new_keyboard_keys = 0     # a hand has the new keyboard
        if gap < p.pause_ms and len(self._gap_classes) == p.regular_gap_window:
            recent = list(self._gaps)[-p.regular_gap_window:]
            if (max(recent) - min(recent) <= p.regular_gap_range_ms
                    and max(recent) < p.pause_ms and len(set(self._gap_classes)) >= 2):
                return self._fire("regular_gaps", t)
        return None

    def _caught_up(self, gap: float | None) -> bool:
        """Is this key-down catch-up: a key typed during the pause before it, which a stalled
        machine (or browser) queued and now delivers at once? A pause of at least two
        ``catch_up_ms`` explains that many key-downs, itself the first; each key-down after it
        uses one up, fast or not."""
        p = self.policy
        if gap is None or p.catch_up_keys == 0:
            return False
        if gap >= 2 * p.catch_up_ms:
            self._catch_up = max(self._catch_up, min(int(gap // p.catch_up_ms), p.catch_up_keys))
        if self._catch_up > 0:
            self._catch_up -= 1
            return gap <= p.burst_gap_ms or gap >= 2 * p.catch_up_ms
        return False

    # --- key-up: holds and chords ----------------------------------------------------------
    def _up(self, event: Event) -> Detection | None:
        p = self.policy
        pressed = self._held.pop(event.press_id, None)
        if pressed is None:
            return None
        t = event.t_ns
        hold = (t - pressed[0]) / _NS_PER_MS
        self._holds.append(hold)
        self._hold_classes.append(pressed[1])
        if len(self._short) == self._short.maxlen and self._short[0]:
            self._n_short -= 1
        short = hold <= p.short_hold_ms and not pressed[2]
        self._short.append(short)
        self._n_short += short
        if self._n_short >= p.short_hold_count:
            return self._fire("short_holds", t)
        if self._chord_release(event.press_id, t):
            self._chords.append(self.keys_observed)
            if (len(self._chords) == p.chord_count
                    and self.keys_observed - self._chords[0] < p.chord_window):
                return self._fire("chords", t)
        if len(self._hold_classes) == p.uniform_hold_window:
            recent = list(self._holds)[-p.uniform_hold_window:]
            if (max(recent) - min(recent) <= p.uniform_hold_range_ms
                    and len(set(self._hold_classes)) >= 2):
                return self._fire("uniform_holds", t)
        return None

    def _chord_release(self, press_id: int, t: int) -> bool:
        """Record a release of the pending chord's keys; True when both came within chord_ms."""
        pair = self._chord_pair
        if pair is None or press_id not in (pair[0], pair[1]):
            return False
        pair[2 if press_id == pair[0] else 3] = t
        if pair[2] is None or pair[3] is None:
            return False
        self._chord_pair = None
        return abs(pair[2] - pair[3]) / _NS_PER_MS <= self.policy.chord_ms

    def _fire(self, rule: str, t: int) -> Detection:
        detection = Detection(
            rule=rule, t_ns=t, keys_observed=self.keys_observed,
            recent_gaps_ms=tuple(round(g, 3) for g in list(self._gaps)[-_EVIDENCE_KEYS:]),
            recent_holds_ms=tuple(round(h, 3) for h in list(self._holds)[-_EVIDENCE_KEYS:]))
        self.detections += 1
        self.reset()
        return detection


def scan(events, policy: InjectionPolicy | str | None = None) -> list[Detection]:
    """Every detection in a stream of events (a replay helper; the agent streams)."""
    detector = InjectionDetector(policy)
    return [d for d in map(detector.observe, events) if d is not None]
