"""Mouse protocols (EVALUATION.md, "Mouse").

Training layout: per user, sessions in time order, segmented into actions by the live agent's
own code (:mod:`agent.features.mouse`); the first 70% of a user's actions enrol, the last 30%
are the genuine tests. Impostor tests are the same number of actions taken from the other users'
last 30%: an equal share from each other user, a run of consecutive actions starting at a point
drawn with the seed. Scores per action and per sequence of 10 and 20 consecutive actions
(non-overlapping windows; a genuine window may span the boundary between two of the user's
sessions, an impostor window stays inside one other user's run). AUC per user, then the mean.

Challenge layout (``test_files/`` and ``public_labels.csv``): each user is trained on all their
training actions; each labelled test session in that user's folder is scored as the mean score
of its windows of ``CHALLENGE_WINDOW`` actions (a shorter session: one window of all its
actions), divided by the user's calibration ``scale`` so users compare; AUC over all labelled
sessions together (``challenge_auc``). A session with no action is not scored and is counted.

Hyper-parameters (pause 0.5 s, at least 4 points per action, kNN with 10 neighbours, no
direction features; the copula, mean summary and shrunk whitening of :mod:`agent.model.mouse`)
were chosen on the even-indexed users in name order and checked
on the odd-indexed ones.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from agent.evaluation.metrics import auc
from agent.features.mouse import N_FEATURES, features
from agent.model import mouse as model
from agent.sources.loading import UserSessions

ENROL_SHARE = 0.7
WINDOWS = (1, 10, 20)
CHALLENGE_WINDOW = 20
MIN_ACTIONS = 200


def user_actions(person: UserSessions, dropped: Counter | None = None) -> np.ndarray:
    """All of a user's action vectors, sessions in order (each session segmented alone)."""
    blocks = []
    for events in person.sessions:
        X, lost = features(events)
        blocks.append(X)
        if dropped is not None:
            dropped.update(lost)
    return np.concatenate(blocks) if blocks else np.empty((0, N_FEATURES))


def split(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(round(ENROL_SHARE * len(X)))
    return X[:cut], X[cut:]


def impostor_runs(tests: list[np.ndarray], index: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` actions for impostor-testing user ``index``: an equal run from each other user's
    test part, each starting at a seeded point."""
    others = [j for j in range(len(tests)) if j != index]
    per = max(1, count // len(others))
    rng = np.random.default_rng([seed, index])
    runs = []
    for j in others:
        T = tests[j]
        start = int(rng.integers(0, max(1, len(T) - per + 1)))
        runs.append(T[start:start + per])
    return runs


def evaluate(people: list[UserSessions], seed: int = 0,
             progress: Callable[[int], None] | None = None) -> dict:
    dropped: Counter = Counter()
    actions = [user_actions(p, dropped) for p in people]
    eligible = [i for i, X in enumerate(actions) if len(X) >= MIN_ACTIONS]
    if len(eligible) < 2:
        raise ValueError(f"need two users with {MIN_ACTIONS} actions or more; nothing to evaluate")
    parts = [split(actions[i]) for i in eligible]
    tests = [t for _, t in parts]
    aucs: dict[int, list[float]] = {k: [] for k in WINDOWS}
    per_user: dict[str, dict] = {}
    fit_ms, score_us = [], []
    for n, (enrol, genuine) in enumerate(parts):
        runs = impostor_runs(tests, n, len(genuine), seed)
        user = people[eligible[n]].user
        per_user[user] = {"enrol_actions": len(enrol), "test_actions": len(genuine)}
        for k in WINDOWS:
            t0 = time.perf_counter()
            fitted = model.fit(enrol, k)
            fit_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            g = fitted.score_actions(genuine)
            i = np.concatenate([fitted.score_actions(run) for run in runs])
            score_us.append((time.perf_counter() - t0) * 1e6 / max(1, len(g) + len(i)))
            value = auc(g, i)
            aucs[k].append(value)
            per_user[user][f"auc_{k}"] = round(value, 4)
        if progress:
            progress(1)
    result = {
        "users": len(eligible),
        "skipped_users": len(people) - len(eligible),
        "seed": seed,
        "actions": int(sum(len(X) for X in actions)),
        "dropped": dict(sorted(dropped.items())),
    }
    for k in WINDOWS:
        result[f"auc_mean_{k}"] = float(np.mean(aucs[k]))
    for k in WINDOWS:
        result[f"auc_median_{k}"] = float(np.median(aucs[k]))
    result["fit_ms_mean"] = float(np.mean(fit_ms))
    result["score_us_per_window"] = float(np.mean(score_us))
    result["per_user"] = per_user
    return result


def session_score(fitted: model.MouseModel, X: np.ndarray) -> float:
    """A test session's score: the mean over its windows, or one window of all its actions."""
    if len(X) >= fitted.window:
        return float(np.mean(fitted.score_actions(X))) / fitted.scale
    return float(fitted.score_vectors(fitted.summary(X))[0]) / fitted.scale


def evaluate_challenge(people: list[UserSessions], tests: list[tuple[str, list, bool]],
                       progress: Callable[[int], None] | None = None) -> dict:
    """The challenge protocol: ``tests`` as from :func:`agent.sources.datasets.balabit.
    load_challenge` (user, events, is_illegal)."""
    models = {}
    for person in people:
        X = user_actions(person)
        if len(X) >= 2 * CHALLENGE_WINDOW:
            models[person.user] = model.calibrate(X, CHALLENGE_WINDOW)
        if progress:
            progress(1)
    genuine, impostor = [], []
    unscored = Counter()
    for user, events, illegal in tests:
        if user not in models:
            unscored["no_model_for_user"] += 1
            continue
        X, _ = features(events)
        if len(X) == 0:
            unscored["no_action"] += 1
            continue
        (impostor if illegal else genuine).append(session_score(models[user], X))
    result = {"challenge_sessions": len(genuine) + len(impostor),
              "challenge_illegal": len(impostor),
              "challenge_unscored": dict(unscored)}
    if genuine and impostor:
        result["challenge_auc"] = auc(genuine, impostor)
    return result


def summary_lines(result: dict) -> list[str]:
    lines = [f"users: {result.get('users', 0)} (skipped {result.get('skipped_users', 0)}), "
             f"actions: {result.get('actions', 0)}"]
    for k in WINDOWS:
        key = f"auc_mean_{k}"
        if key in result:
            label = "1 action" if k == 1 else f"{k} actions"
            lines.append(f"AUC over {label}: mean {result[key]:.3f}, "
                         f"median {result.get(f'auc_median_{k}', float('nan')):.3f}")
    if "challenge_auc" in result:
        lines.append(f"challenge AUC: {result['challenge_auc']:.3f} over "
                     f"{result['challenge_sessions']} labelled sessions "
                     f"({result['challenge_illegal']} illegal)")
    if result.get("dropped"):
        lines.append("dropped while segmenting: " + ", ".join(
            f"{k} {v}" for k, v in result["dropped"].items()))
    return lines
