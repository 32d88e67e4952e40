"""Continuous-authentication protocol (EVALUATION.md): ANIA and ANGA of the real decision module.

Per user (users with fewer than ``MIN_SESSIONS`` sessions are skipped and counted): enrol on the
first ``enrol`` sessions, as in the keystroke protocol. The genuine stream is the user's last
``TEST_SESSIONS`` sessions in order; each impostor stream is the same number of keystrokes of
another user's typing (the end of their recorded typing), for ``IMPOSTORS`` other users drawn
with the seed, each started fresh (full trust, empty window) on the enrolled profile.

Streams run through the live agent's code: key events -> :func:`agent.features.keystroke.keystrokes`
-> windows (:class:`agent.decision.ScoringWindow`) -> :func:`histogram` -> the profile's numpy
scorer -> :func:`agent.decision.update`. A lock on a genuine stream is a false lock; trust is
reset and the window emptied (the user re-authenticated), and the stream goes on.

Measures (Bours & Mondal, "Performance evaluation of continuous authentication systems",
IET Biometrics 4(4), 2015):

- ANIA: mean keystrokes an impostor types before the lock; a stream never locked counts whole
  and is also counted in ``impostors_missed_pct``.
- ANGA: genuine keystrokes per false lock over all genuine streams (all genuine keystrokes if
  there was no false lock), with ``false_locks`` and ``genuine_keystrokes``.

Beside them (``injectors``), what the profile alone does against jittered keystroke injectors
typing on the enrolled session: per user, one stream per kind of :data:`INJECTORS`, the first
impostor's keys (their classes, in order) retimed by the injector: press-to-press delays drawn
uniformly from 20-120 ms (Ducky Script 3 jitter) with holds of a machine's few ms, or drawn from
a person's range; or delays and holds both at a person's pace (100-300 ms, 60-140 ms). The
injection rule catches the first by its holds (:mod:`agent.evaluation.injection`); the others
leave it nothing, so the profile is all there is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent import decision
from agent.decision import ScoringWindow, Thresholds, TrustPolicy, Verdict
from agent.evaluation.injection import JITTER_HOLD_MS, JITTER_MS
from agent.evaluation.keystroke import MIN_SESSIONS, TEST_SESSIONS, check_enrol, impostors_for
from agent.features.keystroke import histogram, keystrokes, window_vector
from agent.model import prior
from agent.model.detector import RankShift
from agent.model.profile import KeystrokeModel
from agent.model.rankshift import OVERDISPERSION
from agent.sources.loading import UserSessions

IMPOSTORS = 20
#: Jittered injectors, as (delay range, hold range) in ms.
INJECTORS = {"jitter": (JITTER_MS, JITTER_HOLD_MS),     # the injection eval's jittered injector
             "jitter_human_holds": (JITTER_MS, (60.0, 140.0)),
             "human_pace": ((100.0, 300.0), (60.0, 140.0))}


def injector_table(table: np.ndarray, delays_ms: tuple[float, float],
                   holds_ms: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``table``'s keys (classes, in order) as an injector types them: press-to-press delays
    and holds drawn uniformly from the ranges."""
    out = table.copy()
    out[:, 0] = np.concatenate([[0.0], np.cumsum(rng.uniform(*delays_ms, len(table) - 1))])
    out[:, 1] = rng.uniform(*holds_ms, len(table))
    return out


def stream_table(sessions) -> np.ndarray:
    """The keystroke table of sessions typed one after another (each an Event stream in time
    order, press ids per session): the sessions' tables in order."""
    tables = [keystrokes(events) for events in sessions]
    tables = [t for t in tables if len(t)]
    return np.concatenate(tables) if tables else np.empty((0, 3))


def window_scores(model: KeystrokeModel, weights: np.ndarray, table: np.ndarray,
                  window: ScoringWindow) -> tuple[np.ndarray, np.ndarray]:
    """(points, scores): the keystroke counts at which ``table`` (a stream from its start) is
    scored, and the score of the window at each."""
    points = decision.scoring_points(len(table), window)
    if len(points) == 0:
        return points, np.empty(0)
    X = np.array([histogram(table[slice(*decision.window_span(int(p), window))])
                  for p in points])
    return points, model.score(X, weights)


def first_lock(points: np.ndarray, scores: np.ndarray, thresholds: Thresholds,
               policy: TrustPolicy) -> int | None:
    """Keystrokes typed (since the stream's start) when the trust rule first locks; None if never."""
    state = decision.reset()
    for point, score in zip(points, scores):
        state = decision.update(state, float(score), thresholds, policy)
        if state.verdict is Verdict.IMPOSTOR:
            return int(point)
    return None


def run_stream(model: KeystrokeModel, weights: np.ndarray, table: np.ndarray,
               thresholds: Thresholds, policy: TrustPolicy, window: ScoringWindow,
               stop_at_lock: bool) -> list[int]:
    """Keystroke positions of the locks on a stream. After a lock the trust is reset and the
    window starts empty at the lock; with ``stop_at_lock`` only the first lock is sought."""
    locks: list[int] = []
    origin = 0
    while origin < len(table):
        points, scores = window_scores(model, weights, table[origin:], window)
        lock = first_lock(points, scores, thresholds, policy)
        if lock is None:
            break
        locks.append(origin + lock)
        if stop_at_lock:
            break
        origin += lock
    return locks


def enrol_model(sessions, cell_weights: np.ndarray | None = None,
                overdispersion: tuple[float, float] = OVERDISPERSION) -> KeystrokeModel:
    """The profile's keystroke model from enrolment sessions (one window per session).
    ``cell_weights`` (None: the shipped prior) and ``overdispersion`` as in :class:`RankShift`."""
    windows = np.array([window_vector(events) for events in sessions])
    return KeystrokeModel.from_detector(
        RankShift(cell_weights=cell_weights, overdispersion=overdispersion).fit(windows))


def evaluate(people: list[UserSessions], enrol: int = 10, seed: int = 0,
             progress: Callable[[int], None] | None = None,
             policy: TrustPolicy = TrustPolicy(), window: ScoringWindow = ScoringWindow(),
             cell_weights: np.ndarray | None = None,
             overdispersion: tuple[float, float] = OVERDISPERSION) -> dict:
    """The protocol of the module docstring on ``people``. ``cell_weights`` (None: the shipped
    prior, ``agent/model/prior.json``) and ``overdispersion`` (the score's tau) replace the
    shipped constants, e.g. to evaluate on participants none of them was tuned on
    (``scripts/crossval_continuous.py``)."""
    check_enrol(enrol)
    eligible = [p for p in people if len(p.sessions) >= MIN_SESSIONS]
    if len(eligible) < 2:
        raise ValueError(f"need two users with {MIN_SESSIONS} sessions or more; "
                         "nothing to evaluate")
    weights = prior.cell_weights() if cell_weights is None else np.asarray(cell_weights, float)
    whole = [stream_table(p.sessions) for p in eligible]
    ania: list[int] = []
    missed = false_locks = genuine_keystrokes = users_false_locked = 0
    injected: dict[str, list[int | None]] = {kind: [] for kind in INJECTORS}
    for i, person in enumerate(eligible):
        model = enrol_model(person.sessions[:enrol], weights, overdispersion)
        thresholds = decision.thresholds_from_calibration(model.calibration, policy,
                                                          legacy=model.legacy,
                                                          drift=model.drift)
        genuine = stream_table(person.sessions[-TEST_SESSIONS:])
        locks = run_stream(model, weights, genuine, thresholds, policy, window, False)
        false_locks += len(locks)
        users_false_locked += bool(locks)
        genuine_keystrokes += len(genuine)
        others = impostors_for(i, len(eligible), seed, IMPOSTORS)
        for other in others:
            stream = whole[other][-len(genuine):]
            lock = run_stream(model, weights, stream, thresholds, policy, window, True)
            ania.append(lock[0] if lock else len(stream))
            missed += not lock
        rng = np.random.default_rng([seed, i, 1])
        for kind, (delays, holds) in INJECTORS.items():
            stream = injector_table(whole[others[0]][-len(genuine):], delays, holds, rng)
            lock = run_stream(model, weights, stream, thresholds, policy, window, True)
            injected[kind].append(lock[0] if lock else None)
        if progress:
            progress(1)
    return {
        "users": len(eligible),
        "skipped": len(people) - len(eligible),
        "enrol": enrol,
        "seed": seed,
        "impostors_per_user": min(IMPOSTORS, len(eligible) - 1),
        "impostor_streams": len(ania),
        "ania": float(np.mean(ania)),
        "impostors_missed_pct": 100.0 * missed / len(ania),
        "anga": float(genuine_keystrokes / max(false_locks, 1)),
        "false_locks": false_locks,
        "users_false_locked": users_false_locked,
        "genuine_keystrokes": genuine_keystrokes,
        "injectors": {kind: _injector_summary(locks) for kind, locks in injected.items()},
        "window": {"size": window.size, "step": window.step, "first": window.first},
        "policy": {"tolerance": policy.tolerance, "gain": policy.gain,
                   "alert_at": policy.alert_at, "lock_at": policy.lock_at,
                   "sensitivity": policy.sensitivity},
    }


def _injector_summary(locks: list[int | None]) -> dict:
    """Keystrokes until the profile locks an injector's stream (median, 90th percentile, over
    the streams it locked) and the share never locked."""
    locked = [lock for lock in locks if lock is not None]
    return {"streams": len(locks),
            "median_keys_to_lock": float(np.median(locked)) if locked else None,
            "p90_keys_to_lock": float(np.percentile(locked, 90)) if locked else None,
            "missed_pct": 100.0 * (len(locks) - len(locked)) / len(locks)}


def summary_lines(result: dict) -> list[str]:
    """A human summary of :func:`evaluate`'s result."""
    w = result["window"]
    return [
        f"ANIA {result['ania']:.1f} keystrokes before an impostor is locked out; "
        f"{result['impostors_missed_pct']:.2f}% of {result['impostor_streams']} impostor "
        "streams never locked",
        f"ANGA {result['anga']:.0f} genuine keystrokes per false lock: {result['false_locks']} "
        f"false locks ({result['users_false_locked']} users) in "
        f"{result['genuine_keystrokes']} genuine keystrokes",
        *(f"profile alone vs injector {kind}: locked after {r['median_keys_to_lock']:g} "
          f"keystrokes median ({r['p90_keys_to_lock']:g} p90), {r['missed_pct']:.2f}% of "
          f"{r['streams']} never" if r["median_keys_to_lock"] is not None else
          f"profile alone vs injector {kind}: never locked ({r['streams']} streams)"
          for kind, r in result["injectors"].items()),
        f"windows: last {w['size']} keystrokes, every {w['step']}, from {w['first']}; "
        f"lock below trust {result['policy']['lock_at']:g}, "
        f"sensitivity {result['policy']['sensitivity']:g}",
    ]
