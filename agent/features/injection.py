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
P / ``catch_up_ms`` key-downs, its own first, at most ``catch_up_keys``: the keys a hand could
have typed in it at 100 ms a key, faster than 95% of the Aalto typists' median pace. The cap
(24) covers the longest stall in the set (2.3 s) at that pace. Every key-down after the pause
uses one up. What the pause explains is no evidence for any timing rule: the fast gaps among
those keys are not counted by ``burst``, ``steady_burst`` or ``regular_gaps``, and their holds
of ``short_hold_ms`` or less not by ``short_holds`` or ``uniform_holds`` (a stall's queued
keys come at the steady pace of the machine handling them). The pause's own key is one of them
only if the key after it comes queued: a slow injector makes every gap a pause, with nothing
queued after it, so its short holds count. The rest of a run is counted. The
cost: an injector after a pause is judged that many keys later by timing alone (its payload's
DELAY buys it at most 24 keys). Stalls are rare, so the pauses together excuse at most
``catch_up_budget`` (48) fast key-downs in any 1,000: an injector that pauses before every
few keys to pass them off as a stall's is judged once that is spent. The Aalto typists use at
most 23 (one person; the next, 17), and a budget of 4 would flag none of them
(``scripts/injection_margins.py``): 48 is two of the longest stalls. ``new_keyboard`` does
not wait: a keyboard just attached, or typing for the first time, is judged from its first key.

Evidence, each a rule with its own threshold (:class:`InjectionPolicy`); one is enough:

``burst``
    ``burst_gaps`` press-to-press gaps in a row, each <= ``burst_gap_ms`` (25 ms: 40 keys/s),
    not caught up. Hands roll two or three keys that fast, never a dozen. In Aalto, once the
    catch-up is taken out, no run has more than 2 such gaps; the default (8) keeps a margin.
``new_keyboard``
    a keyboard was just attached (a ``NEW_KEYBOARD`` event: a USB injector enumerates as one
    moments before it types) and ``new_keyboard_gaps`` (4) press-to-press gaps in a row, each <=
    ``burst_gap_ms`` (caught up or not), end within its first ``new_keyboard_keys`` (8)
    key-downs: 5 keys at machine speed, or GUI+r, the pause a payload leaves for the Run box,
    then 5 keys. A hand on a keyboard it has just plugged in does not open that fast; the Aalto
    bursts above come mid-sentence (the earliest completes 4 gaps at a sentence's 9th key), so
    even if every one of the 16,000 streams began on a keyboard attached just before, none would
    match. The window also closes once the keyboard has typed ``new_keyboard_paced_gaps`` (2)
    gaps at a hand's pace (over ``burst_gap_ms``, under ``pause_ms``; the gap from a key before
    the arrival does not count): an injector's keys before its payload are chords (one HID
    report) and at most one DELAY, a person's are typing, and those Aalto bursts all follow a
    pause after keys at a hand's pace (with it, no window up to 32 keys matches any of them).
    On X11 the event comes before the keyboard's own first key since the agent started: an
    injector plugged in earlier, or lying dormant, is still a keyboard of its own, and a
    keyboard plugged in while the user types (a headset, a dock, a YubiKey) puts none of the
    user's keys in the window. Where the hooks cannot tell keyboards apart (Windows, macOS) it
    comes with the attach, and the keys after it may be anyone's: a stall's queued keys among
    the user's first 8 after it match (the limit ``cadence eval injection`` counts as
    ``human_false_positives_attach_at_pauses``).
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
    holds are under 41 ms, 0.05% under 12 ms). Those come singly, as clock glitches, in the
    catch-up bursts above, or in short runs from the few browsers or keyboards that report a
    release at once (letters held 1-7 ms for one person): with the catch-up taken out, at most
    6 of 20 (of two classes or more) for anyone, and that tail thins slowly (people at 2, 3, 4,
    5, 6 of 20: 8, 3, 2, 2, 1). An injector holds 1-8 ms, whatever delay it leaves between
    keys, so this rule catches "jittered" injectors that type at a human pace. Default: 16 of
    20. The human runs are short, so a longer window buys margin for a few keys: a geometric
    tail fitted to those counts puts 0.012 people per 1,000 not seen at 16 of 20, 0.07 at 12 of
    16, while four holds in 20 may still be long (a slow USB poll, a loaded machine). Fitted on
    half the people, that tail under-predicts the other half about fourfold: read it as a
    range up to a power law's 0.5 per 1,000 (``scripts/injection_margins.py``).
``uniform_holds``
    the last ``uniform_hold_window`` holds (not caught up) all within ``uniform_hold_range_ms``
    (2 ms) of each other: an injector told to hold keys for a human-looking 80 ms still holds
    them for exactly 80 ms. Human holds over 20 keys never span less than 8 ms in Aalto.
``regular_gaps``
    the last ``regular_gap_window`` gaps (not caught up, no pause among them) within
    ``regular_gap_range_ms`` (4 ms): a fixed typing delay. Humans: never under 40 ms over 16
    gaps in Aalto. Timers that tick every 8 or 16 ms (some Aalto browsers) make runs of equal
    gaps: 6 within 4 ms for 3 of the 1,000 people, 8 for none.
``chords``
    ``chord_count`` synchronous chords within ``chord_window`` key-downs: two keys pressed within
    ``chord_ms`` (1 ms) of each other *and* released within 1 ms of each other. That is one HID
    report (an injector's Shift+letter or GUI+r); hands press and release a chord's keys tens of
    ms apart. Aalto: 17 such pairs in 731k keys, never two in one window.

``burst``, ``new_keyboard``, ``steady_burst``, ``uniform_holds`` and ``regular_gaps`` also need
two key classes or more in their window, and ``short_holds`` among its short holds, so a key
held under auto-repeat that some systems report as release/press pairs (one class, a fixed
rate, equal holds), or some browsers as presses released at once (an Aalto typist's Shift),
never matches.
Auto-repeat key-downs (``repeat=True``) are ignored, as are events the OS flags as software
injected when ``allow_software_injected`` (remote desktop, password-manager auto-type). A clock
that runs backwards (a replay of overlapping recordings) starts the evidence afresh.
After a detection the evidence starts afresh, so a long injection is reported again.

A :class:`Detection` carries numbers only: the rule, the time, recent gaps and holds in ms and
how many key-downs it saw since its evidence began (start, the last detection, a lock or an
unlock), never a key's identity or class. Sensitivity presets: :data:`PRESETS`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from agent.events import Event, Kind

_NS_PER_MS = 1_000_000
_MAX_HELD = 32          # pending presses kept for pairing; older ones are forgotten
_EVIDENCE_KEYS = 16     # gaps and holds a Detection carries
_SAME_REPORT_MS = 0.5   # key-downs closer than half a USB frame came in one HID report
_BUDGET_SPAN = 1000     # key-downs over which the catch-up excuses at most catch_up_budget


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
    short_hold_window: int = 20
    short_hold_count: int = 16
    uniform_hold_window: int = 24
    uniform_hold_range_ms: float = 2.0
    regular_gap_window: int = 16
    regular_gap_range_ms: float = 4.0
    pause_ms: float = 1000.0
    catch_up_ms: float = 100.0
    catch_up_keys: int = 24
    catch_up_budget: int = 48
    chord_ms: float = 1.0
    chord_window: int = 32
    chord_count: int = 4
    allow_software_injected: bool = True

    def __post_init__(self) -> None:
        for name in ("new_keyboard_keys", "catch_up_keys", "catch_up_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"injection policy: {name} must not be negative (0: off)")
        if self.catch_up_ms <= 0:
            raise ValueError("injection policy: catch_up_ms must be positive")
        for name in ("burst_gaps", "new_keyboard_gaps", "new_keyboard_paced_gaps",
                     "steady_burst_gaps", "short_hold_window", "short_hold_count",
                     "chord_window", "chord_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"injection policy: {name} must be at least 1")
        for name in ("uniform_hold_window", "regular_gap_window"):   # two classes, two keys
            if getattr(self, name) < 2:
                raise ValueError(f"injection policy: {name} must be at least 2")
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
#: could hold (at most 24 more), jittered or unsteady ones in about 18.
#: ``strict``: no catch-up; catches any fast injector within 5 or 6 keys, and so also flags the
#: rare burst of machine-speed keys, a stalled machine's or a text expander's (4 of the 1,000
#: Aalto typists, as many as google/ukip).
#: ``relaxed``: twice the evidence of ``balanced``, and no ``new_keyboard`` rule, for machines with
#: legitimate typing hardware (a YubiKey or a scanner types at once when plugged in).
PRESETS: dict[str, InjectionPolicy] = {
    "balanced": InjectionPolicy(),
    "strict": InjectionPolicy(burst_gaps=4, steady_burst_gaps=4, short_hold_window=8,
                              short_hold_count=6, chord_count=3, catch_up_keys=0),
    "relaxed": InjectionPolicy(burst_gaps=16, steady_burst_gaps=10, short_hold_window=40,
                               short_hold_count=32,
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
        detection, a lock or an unlock. ``keys_observed`` counts the key-downs since."""
        p = self.policy
        self.keys_observed = 0
        self._new_keyboard_keys = 0    # key-downs left in which the new-keyboard rule applies
        self._arrival = 0              # keys seen when it came, and gaps at a hand's pace since
        self._paced = 0
        self._last_down_ns: int | None = None
        self._last_down_id = -1
        self._last_down_cls = -1
        self._catch_up = 0             # key-downs the last pause can explain (see catch_up_ms)
        self._excused: deque[int] = deque(maxlen=p.catch_up_budget)  # when each was (keys)
        self._pause: tuple[int, int] | None = None   # the key-down ending it: (press id, time)
        self._flush: bool | None = None              # the key-down after it came queued?
        self._pending: tuple[float, int] | None = None   # its short hold and class, waiting
        self._burst = 0
        self._burst_excused = 0        # gaps of the current burst the pause before explains
        self._burst_classes = 0    # bit set of the key classes in the current burst
        self._steady: deque[float] = deque(maxlen=p.steady_burst_gaps)  # its gaps, chords apart
        self._gaps: deque[float] = deque(maxlen=_EVIDENCE_KEYS)     # the evidence reported
        self._holds: deque[float] = deque(maxlen=_EVIDENCE_KEYS)
        self._regular: deque[float] = deque(maxlen=p.regular_gap_window)  # gaps judged for a
        self._gap_classes: deque[int] = deque(maxlen=p.regular_gap_window)  # cadence, classes
        self._uniform: deque[float] = deque(maxlen=p.uniform_hold_window)   # holds judged
        self._hold_classes: deque[int] = deque(maxlen=p.uniform_hold_window)
        self._short: deque[int | None] = deque(maxlen=p.short_hold_window)  # class if short
        self._n_short = 0
        self._chord_pair: list | None = None           # [id_a, id_b, up_a_ns, up_b_ns]
        self._chords: deque[int] = deque(maxlen=p.chord_count)

    def observe(self, event: Event) -> Detection | None:
        kind = event.kind
        if event.injected and self.policy.allow_software_injected:
            return None
        if kind != Kind.DOWN and kind != Kind.UP:
            if kind == Kind.NEW_KEYBOARD:
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
        found = self._after_pause(event.press_id, t, gap, caught_up)
        if found:
            return found
        new_keyboard = self._new_keyboard_keys > 0
        self._new_keyboard_keys -= new_keyboard
        if gap is None:
            return None
        if gap <= p.chord_ms and prev_id in self._held:
            self._chord_pair = [prev_id, event.press_id, None, None]
        self._gaps.append(gap)
        if gap >= p.pause_ms:                       # a pause ends a cadence
            self._regular.clear()
            self._gap_classes.clear()
        elif not caught_up:
            self._regular.append(gap)
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
        if (gap < p.pause_ms and not caught_up and len(self._regular) == p.regular_gap_window
                and max(self._regular) - min(self._regular) <= p.regular_gap_range_ms
                and len(set(self._gap_classes)) >= 2):
            return self._fire("regular_gaps", t)
        return None

    def _caught_up(self, gap: float | None) -> bool:
        """Is this key-down catch-up: a key typed during the pause before it, which a stalled
        machine (or browser) queued and now delivers at once? A pause of P ms (at least two
        ``catch_up_ms``) explains P / ``catch_up_ms`` key-downs (at most ``catch_up_keys``),
        itself the first; each key-down after it uses one up, fast or not. True for the fast
        ones among them: the pause's own is judged as any key (a slow injector's every gap is
        a pause)."""
        p = self.policy
        if gap is None or p.catch_up_keys == 0:
            return False
        if self._is_pause(gap):
            self._catch_up = max(self._catch_up, min(int(gap // p.catch_up_ms), p.catch_up_keys))
        if self._catch_up > 0:
            self._catch_up -= 1
            if gap > p.burst_gap_ms:
                return False
            if len(self._excused) == p.catch_up_budget and (
                    not self._excused or self.keys_observed - self._excused[0] < _BUDGET_SPAN):
                return False
            self._excused.append(self.keys_observed)
            return True
        return False

    def _is_pause(self, gap: float | None) -> bool:
        """A gap long enough to have queued keys (at least two ``catch_up_ms``; catch-up on)."""
        p = self.policy
        return gap is not None and p.catch_up_keys > 0 and gap >= 2 * p.catch_up_ms

    def _after_pause(self, press_id: int, t: int, gap: float | None,
                     caught_up: bool) -> Detection | None:
        """Note the key-down that ends a pause, and whether the next one comes queued: only
        then is the pause's own key the first of a stall's queued keys, its short hold (down
        and up handled at once) no evidence (a slow injector makes every gap a pause, and
        nothing follows fast). A short hold left waiting for this key-down is judged now."""
        found = None
        if self._pause is not None and self._flush is None:
            self._flush = caught_up
            if self._pending is not None:
                hold, cls = self._pending
                self._pending = None
                found = self._short_hold(not caught_up, cls, t)
                if not caught_up and found is None:
                    found = self._uniform_hold(hold, cls, t)
        if self._is_pause(gap):
            self._pause, self._flush = (press_id, t), None
        return found

    # --- key-up: holds and chords ----------------------------------------------------------
    def _up(self, event: Event) -> Detection | None:
        p = self.policy
        pressed = self._held.pop(event.press_id, None)
        if pressed is None:
            return None
        t = event.t_ns
        hold = (t - pressed[0]) / _NS_PER_MS
        self._holds.append(hold)
        short = hold <= p.short_hold_ms
        judged: bool | None = True
        if short and pressed[2]:                 # a queued key: down and up handled at once
            judged = False
        elif short and (event.press_id, pressed[0]) == self._pause:     # the pause's own key
            if self._flush is None:              # judged at the next key-down
                self._pending, judged = (hold, pressed[1]), None
            else:
                judged = not self._flush
        if judged is not None:
            found = self._short_hold(short and judged, pressed[1], t)
            if found:
                return found
        if self._chord_release(event.press_id, t):
            self._chords.append(self.keys_observed)
            if (len(self._chords) == p.chord_count
                    and self.keys_observed - self._chords[0] < p.chord_window):
                return self._fire("chords", t)
        return self._uniform_hold(hold, pressed[1], t) if judged else None

    def _short_hold(self, short: bool, cls: int, t: int) -> Detection | None:
        """A released key of class ``cls`` into the short-hold window (``short``: held
        ``short_hold_ms`` or less, and judged). Short holds of one class only are a key under
        auto-repeat, reported as presses released at once, not a payload."""
        if len(self._short) == self._short.maxlen and self._short[0] is not None:
            self._n_short -= 1
        self._short.append(cls if short else None)
        self._n_short += short
        if (self._n_short >= self.policy.short_hold_count
                and len(set(self._short) - {None}) >= 2):
            return self._fire("short_holds", t)
        return None

    def _uniform_hold(self, hold: float, cls: int, t: int) -> Detection | None:
        """A judged hold into the uniform-hold window."""
        p = self.policy
        self._uniform.append(hold)
        self._hold_classes.append(cls)
        if (len(self._uniform) == p.uniform_hold_window
                and max(self._uniform) - min(self._uniform) <= p.uniform_hold_range_ms
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
