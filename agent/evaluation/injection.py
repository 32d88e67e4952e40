"""Keystroke-injection protocol (EVALUATION.md, "Keystroke injection").

False positives: the injection rule runs over every human stream: each recorded session, and
each person's sessions back to back (one long stream per person, as the agent sees a day; see
:func:`back_to_back`). A
stream is flagged if the rule fires anywhere in it; a person is flagged if any of their streams is.

Detection: for every person and every injector, one trial on the dataset's clock. A human
session (drawn with the seed) is cut after the human's 20th to 40th key; after a pause of 0.5 to
2 s (enumeration, the payload's first DELAY) an injector types a ``PAYLOAD_CHARS``-character
payload. Timestamps are whole milliseconds, like the dataset's. Injectors:

- ``1ms`` .. ``20ms``: a key every 1, 5, 10 or 20 ms; each held for 20-80% of min(period, 10 ms)
  (a few ms, always released before the next key);
- ``jitter``: delays drawn uniformly from 20 to 120 ms between presses (Ducky Script 3's jitter),
  holds of 2 to 8 ms.

With ``keyboard_attached`` (the default) the injector is seen arriving, as the agent sees a USB
device enumerate: a ``NEW_KEYBOARD`` event at the cut, before the pause (``arrival_delay_ms``:
seen up to that much later, in time order, as a once-a-second poll sees it on Windows and
macOS, possibly after the payload's first keys; on X11 the event comes right before the
keyboard's first key, which the rule judges alike). A USB injector cannot type without
arriving, and the agent watches for arrivals on every system. The human streams then open with
a ``NEW_KEYBOARD`` each (every sentence, every day stream), as if the person had plugged in a
keyboard just before typing it; every stream is judged by every rule a stream without it is,
and more. The worse case is counted beside it (``human_false_positives_attach_at_pauses``): a
``NEW_KEYBOARD`` before every key-down that ends a pause of ``ATTACH_PAUSE_MS`` or more, where
a stalled machine's queued keys could follow (a keyboard arriving, or a Bluetooth one
reconnecting, in mid-typing). That is the agent where the hooks cannot tell keyboards apart
(Windows, macOS): there any keyboard's arrival puts the next keys in the window. On X11 only
the arriving keyboard's own keys are, so it is a Bluetooth keyboard reconnecting with keys
queued. Without ``keyboard_attached``, the rule has key timing alone (an agent that could not
see the keyboard come).

Keys are drawn as a payload looks (a command line): letters, spaces, punctuation, digits, a few
Enters and Tabs; 12% of characters need Shift, and half the payloads open with GUI+r (with no
pause for the Run box after it: with one, the new-keyboard rule fires on the 7th key-down,
tested in ``tests/test_injection.py``). A chord is
one HID report: modifier and key go down together and come up together. Keys to detect counts
every injected key-down from the first one up to and including the event where a rule fires;
a trial whose payload ends undetected is missed. The same streams go through google/ukip's
rule and duckhunt's rule (:class:`UkipRule`, :class:`DuckhuntRule`) for comparison.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from agent.events import Event, KeyClass, Kind
from agent.features.injection import InjectionDetector, InjectionPolicy
from agent.sources.loading import UserSessions

INJECTORS = ("1ms", "5ms", "10ms", "20ms", "jitter")
PERIOD_MS = {"1ms": 1.0, "5ms": 5.0, "10ms": 10.0, "20ms": 20.0}
JITTER_MS = (20.0, 120.0)
JITTER_HOLD_MS = (2.0, 8.0)
PAYLOAD_CHARS = 100
PREFIX_KEYS = (20, 40)
PAUSE_MS = (500.0, 2000.0)
ATTACH_PAUSE_MS = 200.0   # a pause a stall's queued keys could follow (two catch_up_ms)
SHIFT_P = 0.12
OPEN_WITH_GUI_R_P = 0.5
_CLASSES = np.array([KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.SPACE,
                     KeyClass.PUNCTUATION, KeyClass.DIGIT, KeyClass.ENTER, KeyClass.NAVIGATION])
_CLASS_P = np.array([0.33, 0.27, 0.14, 0.13, 0.08, 0.03, 0.02])
_SHIFTABLE = {KeyClass.LEFT_LETTER, KeyClass.RIGHT_LETTER, KeyClass.PUNCTUATION, KeyClass.DIGIT}
_NS_PER_MS = 1_000_000
RULES = ("cadence", "ukip", "duckhunt")


class UkipRule:
    """google/ukip: ``window`` consecutive key-downs whose gaps are all <= ``max_gap_ms``
    (KEYSTROKE_WINDOW = 5, ABNORMAL_TYPING = 50 ms). Auto-repeat is not a key-down there."""

    def __init__(self, window: int = 5, max_gap_ms: float = 50.0) -> None:
        self.window, self.max_gap_ns = window, max_gap_ms * _NS_PER_MS
        self._last: int | None = None
        self._run = 0

    def observe(self, event: Event) -> bool:
        if event.kind != Kind.DOWN or event.repeat:
            return False
        last, self._last = self._last, event.t_ns
        fast = last is not None and 0 <= event.t_ns - last <= self.max_gap_ns
        self._run = self._run + 1 if fast else 0
        if self._run >= self.window - 1:
            self._run = 0
            return True
        return False


class DuckhuntRule:
    """duckhunt: the mean of the last ``history`` gaps between key-downs is below
    ``mean_gap_ms`` (25 gaps, 30 ms)."""

    def __init__(self, history: int = 25, mean_gap_ms: float = 30.0) -> None:
        self.history, self.limit_ns = history, mean_gap_ms * _NS_PER_MS * history
        self._gaps: deque[int] = deque(maxlen=history)
        self._sum = 0
        self._last: int | None = None

    def observe(self, event: Event) -> bool:
        if event.kind != Kind.DOWN or event.repeat:
            return False
        last, self._last = self._last, event.t_ns
        if last is None:
            return False
        if len(self._gaps) == self.history:
            self._sum -= self._gaps[0]
        gap = event.t_ns - last
        self._gaps.append(gap)
        self._sum += gap
        if len(self._gaps) == self.history and self._sum < self.limit_ns:
            self._gaps.clear()
            self._sum = 0
            return True
        return False


def _detectors(policy: InjectionPolicy | str | None) -> dict[str, Callable[[Event], object]]:
    return {"cadence": InjectionDetector(policy).observe, "ukip": UkipRule().observe,
            "duckhunt": DuckhuntRule().observe}


def flagged_rules(events: Iterable[Event], policy: InjectionPolicy | str | None = None,
                  ) -> dict[str, str | bool]:
    """Which rules fire anywhere in a stream: rule -> False, or the first firing (ours: its
    rule name, baselines: True)."""
    detectors = _detectors(policy)
    fired: dict[str, str | bool] = dict.fromkeys(detectors, False)
    for e in events:
        for name, observe in detectors.items():
            if not fired[name]:
                hit = observe(e)
                if hit:
                    fired[name] = hit.rule if name == "cadence" else True
        if all(fired.values()):
            break
    return fired


def back_to_back(sessions: list[list[Event]], gap_ms: float = 1000.0) -> list[Event]:
    """A person's sessions as one stream. A session that starts before the previous one ended
    (91 Aalto sentences overlap their predecessor) is moved to start ``gap_ms`` after it, so
    the stream's clock never runs backwards, as a live clock never does."""
    out: list[Event] = []
    for session in sessions:
        if not session:
            continue
        if out and session[0].t_ns < out[-1].t_ns:
            shift = out[-1].t_ns + int(gap_ms * _NS_PER_MS) - session[0].t_ns
            session = [e._replace(t_ns=e.t_ns + shift) for e in session]
        out.extend(session)
    return out


def injected_keys(rng: np.random.Generator, injector: str, t0_ns: int, first_id: int,
                  chars: int = PAYLOAD_CHARS) -> list[Event]:
    """An injector's payload as events from ``t0_ns`` on, press ids from ``first_id``."""
    cls = rng.choice(_CLASSES, size=chars, p=_CLASS_P)
    shifted = rng.random(chars) < SHIFT_P
    if rng.random() < OPEN_WITH_GUI_R_P:
        cls[0], shifted[0] = KeyClass.LEFT_LETTER, True
    if injector == "jitter":
        gaps = rng.uniform(*JITTER_MS, size=chars)
        holds = rng.uniform(*JITTER_HOLD_MS, size=chars)
    else:
        period = PERIOD_MS[injector]
        gaps = np.full(chars, period)
        holds = rng.uniform(0.2, 0.8, size=chars) * min(period, 10.0)
    gaps[0] = 0.0
    press_ms = np.cumsum(gaps)                  # from t0, which is on the dataset's ms grid
    down = t0_ns + np.floor(press_ms).astype(np.int64) * _NS_PER_MS
    up = t0_ns + np.floor(press_ms + holds).astype(np.int64) * _NS_PER_MS
    events: list[Event] = []
    pid = first_id
    for i in range(chars):
        c = KeyClass(int(cls[i]))
        chord = bool(shifted[i]) and c in _SHIFTABLE
        if chord:
            events.append(Event(int(down[i]), Kind.DOWN, KeyClass.MODIFIER, pid))
        events.append(Event(int(down[i]), Kind.DOWN, c, pid + chord))
        events.append(Event(int(up[i]), Kind.UP, c, pid + chord))
        if chord:
            events.append(Event(int(up[i]), Kind.UP, KeyClass.MODIFIER, pid))
        pid += 1 + chord
    return events


def spliced_trial(rng: np.random.Generator, person: UserSessions, injector: str,
                  keyboard_attached: bool = False,
                  arrival_delay_ms: float = 0.0) -> tuple[list[Event], int]:
    """(events, index of the first injected event): a human session cut after 20-40 keys
    (``person`` typed at least one), then a pause (the injector attaching at its start, if
    ``keyboard_attached``, seen 0 to ``arrival_delay_ms`` later), then the injector's
    payload."""
    want = int(rng.integers(PREFIX_KEYS[0], PREFIX_KEYS[1] + 1))
    counts = [sum(1 for e in s if e.kind == Kind.DOWN and not e.repeat) for s in person.sessions]
    eligible = [i for i, n in enumerate(counts) if n >= want]
    session = person.sessions[int(rng.choice(eligible))] if eligible else \
        person.sessions[int(np.argmax(counts))]
    downs = [e for e in session if e.kind == Kind.DOWN and not e.repeat][:want]
    keep_ids = {e.press_id for e in downs}
    t0 = downs[-1].t_ns + int(round(rng.uniform(*PAUSE_MS))) * _NS_PER_MS
    prefix = [e for e in session if e.is_key and e.press_id in keep_ids and e.t_ns < t0]
    first_id = max((e.press_id for e in session), default=0) + 1
    payload = injected_keys(rng, injector, t0, first_id)
    if not keyboard_attached:
        return prefix + payload, len(prefix)
    seen = downs[-1].t_ns + int(round(rng.uniform(0.0, arrival_delay_ms))) * _NS_PER_MS
    if seen < t0:
        return prefix + [Event(seen, Kind.NEW_KEYBOARD)] + payload, len(prefix) + 1
    at = next((i for i, e in enumerate(payload) if e.t_ns > seen), len(payload))
    return prefix + payload[:at] + [Event(seen, Kind.NEW_KEYBOARD)] + payload[at:], len(prefix)


def attached(stream: list[Event]) -> list[Event]:
    """A human stream as if typed on a keyboard attached just before its first event."""
    return [Event(stream[0].t_ns, Kind.NEW_KEYBOARD), *stream] if stream else stream


def attached_at_pauses(stream: list[Event]) -> list[Event]:
    """A human stream with a keyboard arriving before every key-down that ends a pause of
    ``ATTACH_PAUSE_MS`` or more (and before the first)."""
    out: list[Event] = []
    last: int | None = None
    for e in stream:
        if e.kind == Kind.DOWN and not e.repeat:
            if last is None or e.t_ns - last >= ATTACH_PAUSE_MS * _NS_PER_MS:
                out.append(Event(e.t_ns, Kind.NEW_KEYBOARD))
            last = e.t_ns
        out.append(e)
    return out


def human_streams(person: UserSessions, keyboard_attached: bool = False) -> list[list[Event]]:
    """A person's streams as the false positives are counted: each session, and all of them
    back to back; each opening on a keyboard attached just before, if ``keyboard_attached``."""
    streams = [*person.sessions, back_to_back(person.sessions)]
    return [attached(s) for s in streams] if keyboard_attached else streams


def _keys_to_detect(events: list[Event], start: int,
                    detectors: dict[str, Callable[[Event], object]]) -> dict[str, int | None]:
    """Injected key-downs up to the first firing at or after ``start``, per rule (None: missed)."""
    out: dict[str, int | None] = dict.fromkeys(detectors)
    for e in events[:start]:
        for observe in detectors.values():
            observe(e)
    keys = 0
    pending = dict(detectors)
    for e in events[start:]:
        if e.kind == Kind.DOWN and not e.repeat:
            keys += 1
        for name, observe in list(pending.items()):
            if observe(e):
                out[name] = keys
                del pending[name]
        if not pending:
            break
    return out


def evaluate(people: Iterable[UserSessions], seed: int = 0,
             progress: Callable[[int], None] | None = None,
             policy: InjectionPolicy | str | None = None, keyboard_attached: bool = True,
             arrival_delay_ms: float = 0.0) -> dict:
    """The protocol above over ``people``; deterministic for a seed. Figures per rule. Each
    person is judged alone and then let go, so ``people`` may be read as it goes (a
    :class:`~agent.sources.loading.People`): memory does not grow with the dataset."""
    if not 0.0 <= arrival_delay_ms <= 60_000.0:
        raise ValueError("the arrival delay must be 0 to 60,000 ms")
    users = streams = human_keys = trials = 0
    at_pauses_streams = at_pauses_users = 0
    flagged_streams = dict.fromkeys(RULES, 0)
    flagged_users = dict.fromkeys(RULES, 0)
    by_rule: dict[str, int] = {}
    keys: dict[tuple[str, str], list[int | None]] = {(r, i): [] for r in RULES for i in INJECTORS}
    for index, person in enumerate(p for p in people if p.sessions):
        users += 1
        user_hit = dict.fromkeys(RULES, False)
        typed = sum(e.kind == Kind.DOWN and not e.repeat
                    for session in person.sessions for e in session)
        human_keys += typed
        for stream in human_streams(person, keyboard_attached):
            streams += 1
            fired = flagged_rules(stream, policy)
            for rule, hit in fired.items():
                if hit:
                    flagged_streams[rule] += 1
                    user_hit[rule] = True
            if fired["cadence"]:
                by_rule[fired["cadence"]] = by_rule.get(fired["cadence"], 0) + 1
        for rule in RULES:
            flagged_users[rule] += user_hit[rule]
        if keyboard_attached:
            hits = sum(any(map(InjectionDetector(policy).observe, attached_at_pauses(stream)))
                       for stream in human_streams(person))
            at_pauses_streams += hits
            at_pauses_users += hits > 0
        if typed:           # else (a mouse-only recording) there is no typing to splice into
            trials += 1
            for j, injector in enumerate(INJECTORS):
                rng = np.random.default_rng([seed, index, j])
                events, start = spliced_trial(rng, person, injector, keyboard_attached,
                                              arrival_delay_ms)
                for rule, k in _keys_to_detect(events, start, _detectors(policy)).items():
                    keys[(rule, injector)].append(k)
        if progress:
            progress(1)
    if not trials:
        raise ValueError("no person with a session" if not users else
                         "nobody typed a key (mouse only?); nothing to evaluate")
    result: dict = {
        "users": users,
        "seed": seed,
        "keyboard_attached": keyboard_attached,
        "payload_chars": PAYLOAD_CHARS,
        "trials_per_injector": trials,
        "human_streams": streams,
        "human_keys": human_keys,
        "human_false_positives": flagged_streams["cadence"],
        "human_users_flagged": flagged_users["cadence"],
        "human_false_positives_by_rule": dict(sorted(by_rule.items())),
    }
    if keyboard_attached:
        result["arrival_delay_ms"] = arrival_delay_ms
        result["human_false_positives_attach_at_pauses"] = at_pauses_streams
        result["human_users_flagged_attach_at_pauses"] = at_pauses_users
    for rule in RULES:
        prefix = "" if rule == "cadence" else rule + "_"
        if rule != "cadence":
            result[f"{prefix}human_false_positives"] = flagged_streams[rule]
            result[f"{prefix}human_users_flagged"] = flagged_users[rule]
        for injector in INJECTORS:
            found = [k for k in keys[(rule, injector)] if k is not None]
            total = len(keys[(rule, injector)])
            median = float(np.median(found)) if found else None
            result[f"{prefix}keys_to_detect_{injector}"] = median
            result[f"{prefix}keys_to_detect_max_{injector}"] = max(found) if found else None
            result[f"{prefix}within_5_keys_{injector}_pct"] = \
                100.0 * sum(k <= 5 for k in found) / total
            result[f"{prefix}missed_{injector}_pct"] = 100.0 * (total - len(found)) / total
    return result


def _cell(result: dict, prefix: str, injector: str) -> str:
    median = result[f"{prefix}keys_to_detect_{injector}"]
    missed = result[f"{prefix}missed_{injector}_pct"]
    keys = "   -" if median is None else f"{median:4.0f}"
    return f"{keys} keys, {missed:5.1f}% missed"


def summary_lines(result: dict) -> list[str]:
    """A human summary of :func:`evaluate`'s result: numbers only."""
    attached_note = (", each opening on a keyboard attached just before"
                     if result["keyboard_attached"] else "")
    injector_note = (", the injector seen attaching" if result["keyboard_attached"]
                     else ", timing alone (the injector not seen attaching)")
    if result.get("arrival_delay_ms"):
        injector_note += f" up to {result['arrival_delay_ms']:g} ms late"
    lines = [
        f"human streams: {result['human_streams']} ({result['users']} people, "
        f"{result['human_keys']} key-downs, each sentence and all of them back to "
        f"back{attached_note})",
        f"flagged streams (people): cadence {result['human_false_positives']} "
        f"({result['human_users_flagged']}), ukip {result['ukip_human_false_positives']} "
        f"({result['ukip_human_users_flagged']}), duckhunt "
        f"{result['duckhunt_human_false_positives']} ({result['duckhunt_human_users_flagged']})",
        *([f"cadence with a keyboard arriving before every pause of {ATTACH_PAUSE_MS:g} ms or "
           f"more: {result['human_false_positives_attach_at_pauses']} streams "
           f"({result['human_users_flagged_attach_at_pauses']} people)"]
          if result["keyboard_attached"] else []),
        f"injected payloads: {result['trials_per_injector']} per injector, "
        f"{result['payload_chars']} characters"
        f"{injector_note}; "
        "median keys to detection, share missed:",
        f"{'injector':<9}{'cadence':<26}{'ukip (5 keys <= 50 ms)':<26}"
        "duckhunt (mean of 25 < 30 ms)",
    ]
    for injector in INJECTORS:
        lines.append(f"{injector:<9}{_cell(result, '', injector):<26}"
                     f"{_cell(result, 'ukip_', injector):<26}"
                     f"{_cell(result, 'duckhunt_', injector)}")
    return lines
