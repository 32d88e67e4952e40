"""Per-user mouse model: how far a sequence of actions sits from the user's own (numpy only).

Each action feature is first put on the user's own scale (:meth:`MouseModel.normal_scores`):
its mid-rank among the user's enrolment actions, as a standard-normal quantile (a Gaussian
copula of the enrolment). Heavy tails, skew, discrete features and the odd action that went
wrong then weigh alike, and a value beyond everything the user did saturates rather than
dominating the distance. A *sequence* of ``k`` consecutive actions is summarised as the mean of
its actions' normal scores (:func:`window_vectors`); for the point-click and drag-drop flags the
mean is an affine function of their share. The summary of ``k = 1`` is the action itself, so the
same model scores single actions.

The enrolment summaries are then put through the same rank-to-normal transform (summaries of
``k`` actions are narrower than single actions, and their correlation differs) and whitened with
their covariance shrunk halfway (``SHRINKAGE``) to its mean variance: a Mahalanobis distance
that does not count twice the many features measuring one thing (speeds, time steps). A
sequence's score is its mean Euclidean distance, in that whitened space, to its
``n_neighbors`` nearest enrolment sequences. Higher is further from the user. This is pyod's
``KNN(method="mean")`` on the whitened vectors, written out in numpy so the resident agent never
imports pyod; :func:`pyod_knn` builds the pyod detector for the training path and a test holds
the two equal to 1e-9.

Why this one (measured on Balabit, 5 users to choose, 5 to check, see
:mod:`agent.evaluation.mouse`): per action, pyod IForest / ECOD / KNN on action vectors reached
AUC 0.65 / 0.62 / 0.70; averaging per-action scores over 20 actions only reached 0.72 / 0.71 /
0.76, because consecutive actions are alike and a user's later sessions drift; a per-feature
rank-shift test reached 0.76. The median of each raw feature over the sequence, standardised
(mean, sd) with a plain kNN, reached AUC 0.789 / 0.830 at 10 / 20 actions on all ten users. The
copula, the mean summary and the shrunk whitening (0.5, chosen on the tune half, which was flat
between 0.2 and 0.8) took that to 0.825 / 0.865; the tune users went from 0.832 / 0.892 to
0.851 / 0.892 and the check users from 0.754 / 0.777 to 0.823 / 0.856. Not kept: robust
(median/MAD) scaling, clipping, spread (IQR, quartiles) in the summary, weights or feature
choice from drift between the two halves of enrolment, overlapping enrolment windows, 5 or 20
neighbours, Ledoit-Wolf shrinkage (about 0.01: worse on the tune half).

Calibration (:func:`calibrate`): the user's enrolment actions in time order; a model fitted on
the first ``1 - holdout`` of them scores the windows of the rest, fresher than leave-one-out (a
left-out sequence still has its own session's neighbours). Their median is ``scale`` (scores
divided by it are comparable across users), their ``1 - contamination`` quantile the alarm
``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

N_NEIGHBORS = 10
SHRINKAGE = 0.5
_CHUNK = 1024
_MARGIN = 8


def window_vectors(Z: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """Summaries (row means) of the windows of ``k`` consecutive rows of ``Z`` (rows in time
    order, normally an action's normal scores), one every ``stride`` rows (default ``k``:
    non-overlapping). Fewer than ``k`` rows give no window."""
    Z = np.asarray(Z, dtype=float)
    stride = k if stride is None else stride
    if k < 1 or stride < 1:
        raise ValueError("window size and stride must be positive")
    if len(Z) < k:
        return np.empty((0, Z.shape[1] if Z.ndim == 2 else 0))
    starts = np.arange(0, len(Z) - k + 1, stride)
    return Z[starts[:, None] + np.arange(k)[None, :]].mean(axis=1)


def _quantiles(n: int) -> np.ndarray:
    """Standard-normal quantiles of the mid-ranks 0, 1/2, ..., n among ``n`` reference values:
    entry ``2r`` is the quantile of ``(r + 1/2) / (n + 1)``."""
    inv = NormalDist().inv_cdf
    return np.array([inv((i / 2 + 0.5) / (n + 1)) for i in range(2 * n + 1)])


def rank_normal(ref: np.ndarray, V: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """Each column of ``V`` as the normal quantile of its mid-rank among the same column of
    ``ref`` (sorted by column): ties share their mean rank, values beyond the reference take
    the outermost quantiles."""
    V = np.atleast_2d(np.asarray(V, dtype=float))
    table = _quantiles(len(ref)) if table is None else table
    out = np.empty_like(V)
    for j in range(V.shape[1]):
        lo = np.searchsorted(ref[:, j], V[:, j], "left")
        hi = np.searchsorted(ref[:, j], V[:, j], "right")
        out[:, j] = table[lo + hi]
    return out


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
    """A user's fitted model for windows of ``window`` actions: ``actions``, the enrolment
    actions sorted column by column (the per-action copula); ``summaries``, the enrolment window
    summaries sorted column by column (the second rank transform); ``center`` and ``whiten``
    (the shrunk whitening); ``train``, the enrolment summaries so transformed; and the
    calibration (``scale``, ``threshold``)."""

    window: int
    actions: np.ndarray
    summaries: np.ndarray
    center: np.ndarray
    whiten: np.ndarray
    train: np.ndarray
    n_neighbors: int = N_NEIGHBORS
    scale: float = 1.0
    threshold: float = np.inf

    def __post_init__(self) -> None:
        self._action_table = _quantiles(len(self.actions))
        self._summary_table = _quantiles(len(self.summaries))

    def normal_scores(self, X: np.ndarray) -> np.ndarray:
        """Action vectors ``X`` on the user's own scale (see the module notes)."""
        return rank_normal(self.actions, X, self._action_table)

    def summarise(self, X: np.ndarray, stride: int | None = None) -> np.ndarray:
        """Summaries of the windows of ``window`` consecutive actions of ``X``."""
        X = np.asarray(X, dtype=float)
        if len(X) < self.window:
            return np.empty((0, self.actions.shape[1]))
        return window_vectors(self.normal_scores(X), self.window, stride)

    def summary(self, X: np.ndarray) -> np.ndarray:
        """One summary of all the actions of ``X`` (a short session scored as one window)."""
        return self.normal_scores(X).mean(axis=0)

    def standardise(self, V: np.ndarray) -> np.ndarray:
        """Summaries ``V`` in the space of ``train``."""
        return (rank_normal(self.summaries, V, self._summary_table) - self.center) @ self.whiten

    def score_vectors(self, V: np.ndarray) -> np.ndarray:
        """Raw scores of window summaries ``V``."""
        V = np.atleast_2d(np.asarray(V, dtype=float))
        if V.size == 0:
            return np.empty(0)
        return knn_distances(self.train, self.standardise(V), self.n_neighbors)

    def score_actions(self, X: np.ndarray, stride: int | None = None) -> np.ndarray:
        """Raw scores of the windows of ``window`` consecutive actions of ``X``."""
        return self.score_vectors(self.summarise(X, stride))

    def loo_scores(self) -> np.ndarray:
        """Leave-one-out scores of the enrolment summaries (pyod's ``decision_scores_``)."""
        return knn_distances(self.train, self.train, self.n_neighbors, exclude_self=True)


def fit(X: np.ndarray, window: int, n_neighbors: int = N_NEIGHBORS,
        shrinkage: float = SHRINKAGE) -> MouseModel:
    """The model of a user's enrolment actions ``X`` (rows in time order) for ``window``."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or len(X) < 2 * window or not np.all(np.isfinite(X)):
        raise ValueError("need at least two finite enrolment windows")
    actions = np.sort(X, axis=0)
    V = window_vectors(rank_normal(actions, X), window)
    summaries = np.sort(V, axis=0)
    T = rank_normal(summaries, V)
    center = T.mean(axis=0)
    cov = np.atleast_2d(np.cov(T, rowvar=False))
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(cov)) * np.trace(cov) / len(cov)
    values, vectors = np.linalg.eigh(cov)
    whiten = vectors / np.sqrt(np.maximum(values, 1e-9))
    return MouseModel(window, actions, summaries, center, whiten, (T - center) @ whiten,
                      n_neighbors)


def calibrate(X: np.ndarray, window: int, n_neighbors: int = N_NEIGHBORS,
              holdout: float = 0.2, contamination: float = 0.05) -> MouseModel:
    """:func:`fit` on all of ``X``, with ``scale`` and ``threshold`` from held-out enrolment:
    a model of the first ``1 - holdout`` windows' actions scores the windows of the rest (see
    the module notes)."""
    X = np.asarray(X, dtype=float)
    model = fit(X, window, n_neighbors)
    windows = len(X) // window
    cut = int(round(windows * (1 - holdout))) * window
    if cut >= 2 * window and len(X) - cut >= window:
        held = fit(X[:cut], window, n_neighbors).score_actions(X[cut:])
    else:
        held = model.loo_scores()
    model.scale = float(np.median(held)) if np.median(held) > 0 else 1.0
    model.threshold = float(np.quantile(held, 1 - contamination))
    return model


def pyod_knn(model: MouseModel, contamination: float = 0.05):
    """pyod's KNN fitted on the model's transformed enrolment summaries (training path only:
    imports pyod). Its ``decision_function(model.standardise(V))`` equals
    ``model.score_vectors(V)`` and its ``decision_scores_`` equal ``model.loo_scores()``."""
    from pyod.models.knn import KNN

    return KNN(n_neighbors=model.n_neighbors, method="mean", algorithm="ball_tree",
               contamination=contamination).fit(model.train)
