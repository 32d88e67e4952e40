"""Per-user mouse model: how far a sequence of actions sits from the user's own (numpy only).

A *sequence* of ``k`` consecutive actions is summarised as one vector (:func:`window_vectors`):
the share of point-and-clicks and drag-and-drops among them, and the median of every other
action feature. The median of a few actions is robust to the odd action that went wrong, and
the summary of ``k = 1`` is the action itself, so the same model scores single actions.

The model is a standardised nearest-neighbour distance: enrolment sequences are standardised
feature by feature (mean and standard deviation of the enrolment sequences), and a sequence's
score is its mean Euclidean distance to its ``n_neighbors`` nearest enrolment sequences. Higher
is further from the user. This is pyod's ``KNN(method="mean")`` on the standardised vectors,
written out in numpy so the resident agent never imports pyod; :func:`pyod_knn` builds the pyod
detector for the training path and a test holds the two equal to 1e-9.

Why this one (measured on Balabit, 5 users to choose, 5 to check, see
:mod:`agent.evaluation.mouse`): per action, pyod IForest / ECOD / KNN on action vectors reached
AUC 0.65 / 0.62 / 0.70; averaging per-action scores over 20 actions only reached 0.72 / 0.71 /
0.76, because consecutive actions are alike and a user's later sessions drift. Scoring the
sequence's summary against summaries of the user's enrolment sequences reached 0.84-0.85 at
20 actions; a per-feature rank-shift test reached 0.76 and adding it to the kNN made it worse.

Calibration (:func:`calibrate`): the user's enrolment sequences in time order; a model fitted on
the first ``1 - holdout`` of them scores the rest, fresher than leave-one-out (a left-out
sequence still has its own session's neighbours). Their median is ``scale`` (scores divided by
it are comparable across users), their ``1 - contamination`` quantile the alarm ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.features.mouse import FEATURE_NAMES

N_NEIGHBORS = 10
SHARE_COLUMNS = (FEATURE_NAMES.index("is_point_click"), FEATURE_NAMES.index("is_drag_drop"))
_CHUNK = 1024
_MARGIN = 8


def window_vectors(X: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """Summaries of the windows of ``k`` consecutive actions of ``X`` (rows in time order),
    one every ``stride`` actions (default ``k``: non-overlapping). Fewer than ``k`` actions
    give no window."""
    X = np.asarray(X, dtype=float)
    stride = k if stride is None else stride
    if k < 1 or stride < 1:
        raise ValueError("window size and stride must be positive")
    if len(X) < k:
        return np.empty((0, X.shape[1] if X.ndim == 2 else 0))
    starts = np.arange(0, len(X) - k + 1, stride)
    W = X[starts[:, None] + np.arange(k)[None, :]]
    out = np.median(W, axis=1)
    cols = list(SHARE_COLUMNS)
    out[:, cols] = W[:, :, cols].mean(axis=1)
    return out


def summary(X: np.ndarray) -> np.ndarray:
    """One summary vector of all the actions of ``X`` (a short session scored as one window)."""
    return window_vectors(X, len(X))[0]


def knn_distances(train: np.ndarray, query: np.ndarray, n_neighbors: int,
                  exclude_self: bool = False) -> np.ndarray:
    """Mean Euclidean distance from each query row to its ``n_neighbors`` nearest train rows
    (``exclude_self``: the query is ``train`` and each row's own entry is skipped, as in pyod's
    training scores). Candidates come from a matrix product; the chosen distances are then
    computed exactly from differences, so results match a brute-force search."""
    train = np.asarray(train, dtype=float)
    query = np.asarray(query, dtype=float)
    k = min(n_neighbors, len(train) - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("not enough enrolment rows for a neighbour search")
    t2 = np.einsum("ij,ij->i", train, train)
    out = np.empty(len(query))
    take = min(k + _MARGIN + (1 if exclude_self else 0), len(train))
    for start in range(0, len(query), _CHUNK):
        block = query[start:start + _CHUNK]
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + t2[None, :] - 2 * block @ train.T
        if exclude_self:
            d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        cand = np.argpartition(d2, take - 1, axis=1)[:, :take] if take < len(train) else \
            np.broadcast_to(np.arange(len(train)), (len(block), len(train)))
        diff = block[:, None, :] - train[cand]
        exact = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        if exclude_self:
            exact[cand == np.arange(start, start + len(block))[:, None]] = np.inf
        out[start:start + len(block)] = np.sort(exact, axis=1)[:, :k].mean(axis=1)
    return out


@dataclass
class MouseModel:
    """A user's fitted model for windows of ``window`` actions: the standardisation, the
    standardised enrolment summaries, and the calibration (``scale``, ``threshold``)."""

    window: int
    mean: np.ndarray
    std: np.ndarray
    train: np.ndarray
    n_neighbors: int = N_NEIGHBORS
    scale: float = 1.0
    threshold: float = np.inf

    def standardise(self, V: np.ndarray) -> np.ndarray:
        return (np.asarray(V, dtype=float) - self.mean) / self.std

    def score_vectors(self, V: np.ndarray) -> np.ndarray:
        """Raw scores of window summaries ``V``."""
        V = np.atleast_2d(np.asarray(V, dtype=float))
        if len(V) == 0:
            return np.empty(0)
        return knn_distances(self.train, self.standardise(V), self.n_neighbors)

    def score_actions(self, X: np.ndarray, stride: int | None = None) -> np.ndarray:
        """Raw scores of the windows of ``window`` consecutive actions of ``X``."""
        return self.score_vectors(window_vectors(X, self.window, stride))

    def loo_scores(self) -> np.ndarray:
        """Leave-one-out scores of the enrolment summaries (pyod's ``decision_scores_``)."""
        return knn_distances(self.train, self.train, self.n_neighbors, exclude_self=True)


def fit_vectors(V: np.ndarray, window: int, n_neighbors: int = N_NEIGHBORS) -> MouseModel:
    V = np.asarray(V, dtype=float)
    if len(V) < 2 or not np.all(np.isfinite(V)):
        raise ValueError("need at least two finite enrolment windows")
    mean = V.mean(axis=0)
    std = V.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return MouseModel(window, mean, std, (V - mean) / std, n_neighbors)


def fit(X: np.ndarray, window: int, n_neighbors: int = N_NEIGHBORS) -> MouseModel:
    """The model of a user's enrolment actions ``X`` (rows in time order) for ``window``."""
    return fit_vectors(window_vectors(X, window), window, n_neighbors)


def calibrate(X: np.ndarray, window: int, n_neighbors: int = N_NEIGHBORS,
              holdout: float = 0.2, contamination: float = 0.05) -> MouseModel:
    """:func:`fit` on all of ``X``, with ``scale`` and ``threshold`` from held-out enrolment:
    a model of the first ``1 - holdout`` windows scores the last ones (see the module notes)."""
    V = window_vectors(X, window)
    model = fit_vectors(V, window, n_neighbors)
    cut = int(round(len(V) * (1 - holdout)))
    if cut >= 2 and len(V) - cut >= 1:
        held = fit_vectors(V[:cut], window, n_neighbors).score_vectors(V[cut:])
    else:
        held = model.loo_scores()
    model.scale = float(np.median(held)) if np.median(held) > 0 else 1.0
    model.threshold = float(np.quantile(held, 1 - contamination))
    return model


def pyod_knn(model: MouseModel, contamination: float = 0.05):
    """pyod's KNN fitted on the model's standardised enrolment summaries (training path only:
    imports pyod). Its ``decision_function(model.standardise(V))`` equals
    ``model.score_vectors(V)`` and its ``decision_scores_`` equal ``model.loo_scores()``."""
    from pyod.models.knn import KNN

    return KNN(n_neighbors=model.n_neighbors, method="mean", algorithm="ball_tree",
               contamination=contamination).fit(model.train)
