"""Free-text keystroke protocol (EVALUATION.md, close to TypeNet's).

Per user: sessions in time order; users with fewer than ``MIN_SESSIONS`` are skipped and
counted. Enrol on the first ``enrol`` sessions; genuine tests are the last 5 sessions; impostor
tests the last session(s) of 100 other users drawn with the seed. A test of ``k`` sessions is k
consecutive sessions of one person (their feature windows pooled). Per-user EER; mean and
median over users. Windows go through the same feature code as live input.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from agent.evaluation.metrics import eer
from agent.features.keystroke import window_vector
from agent.model.detector import RankShift
from agent.sources.loading import UserSessions

MIN_SESSIONS = 15
TEST_SESSIONS = 5
IMPOSTORS = 100
TEST_SIZES = (1, 2, 5)


def check_enrol(enrol: int) -> None:
    """Enrolment may not reach the genuine tests: at most ``MIN_SESSIONS - TEST_SESSIONS``."""
    most = MIN_SESSIONS - TEST_SESSIONS
    if not 1 <= enrol <= most:
        raise ValueError(f"enrol = {enrol}: must be 1..{most} sessions (the last "
                         f"{TEST_SESSIONS} of each user's {MIN_SESSIONS} or more are the tests)")


def impostors_for(index: int, n_users: int, seed: int, count: int = IMPOSTORS) -> np.ndarray:
    """The seeded draw of other users' indices that impostor user ``index``."""
    others = np.delete(np.arange(n_users), index)
    rng = np.random.default_rng([seed, index])
    return rng.choice(others, size=min(count, len(others)), replace=False)


def evaluate(people: list[UserSessions], enrol: int = 10, seed: int = 0,
             progress: Callable[[int], None] | None = None) -> dict:
    check_enrol(enrol)
    eligible = [p for p in people if len(p.sessions) >= MIN_SESSIONS]
    vectors = [np.array([window_vector(s) for s in p.sessions]) for p in eligible]
    eers: dict[int, list[float]] = {k: [] for k in TEST_SIZES}
    fit_ms, score_ms = [], []
    for i, windows in enumerate(vectors):
        t0 = time.perf_counter()
        detector = RankShift().fit(windows[:enrol])
        fit_ms.append((time.perf_counter() - t0) * 1e3)
        others = impostors_for(i, len(vectors), seed)
        for k in TEST_SIZES:
            last = windows[-TEST_SESSIONS:]
            genuine = np.array([last[j:j + k].sum(axis=0) for j in range(TEST_SESSIONS - k + 1)])
            impostor = np.array([vectors[o][-k:].sum(axis=0) for o in others])
            t0 = time.perf_counter()
            g_scores = detector.decision_function(genuine)
            i_scores = detector.decision_function(impostor)
            score_ms.append((time.perf_counter() - t0) * 1e3 / (len(genuine) + len(impostor)))
            eers[k].append(eer(g_scores, i_scores))
        if progress:
            progress(1)
    if not eligible:
        raise ValueError(f"no user has {MIN_SESSIONS} sessions or more; nothing to evaluate")
    result = {
        "users": len(eligible),
        "skipped": len(people) - len(eligible),
        "enrol": enrol,
        "seed": seed,
        "impostors_per_user": min(IMPOSTORS, len(eligible) - 1),
        "eer_mean": float(np.mean(eers[1])),
        "eer_median": float(np.median(eers[1])),
        "fit_ms_mean": float(np.mean(fit_ms)),
        "score_ms_mean": float(np.mean(score_ms)),
    }
    for k in TEST_SIZES[1:]:
        result[f"eer_mean_k{k}"] = float(np.mean(eers[k]))
        result[f"eer_median_k{k}"] = float(np.median(eers[k]))
    return result
