"""The per-user keystroke detector in pyod's framework (imports pyod: training path only).

:class:`RankShift` is a pyod ``BaseDetector``: hyper-parameters in ``__init__``, learned state
in attributes ending in ``_``, ``fit`` returns self, scoring never mutates, so it combines with
pyod's thresholds and ensembles. Its ``decision_scores_`` are leave-one-window-out scores of the
enrolment windows, an honest picture of how the user's own fresh typing scores; pyod's
``contamination`` turns them into ``threshold_``. Rows are enrolment windows in time order:
``drift_`` is how much further the user's typing moved across enrolment than its order-free
spread says (:func:`enrolment_drift`), which widens their thresholds
(:func:`agent.decision.thresholds_from_calibration`). The resident agent scores with the same
numpy function (:func:`agent.model.rankshift.rank_scores`) and never imports pyod.
"""

from __future__ import annotations

import numpy as np
from pyod.models.base import BaseDetector

from agent.features.keystroke import N_FEATURES
from agent.model import prior
from agent.model.rankshift import OVERDISPERSION, rank_scores, rank_table


class RankShift(BaseDetector):
    """Mann-Whitney rank shift of a window's timings against the user's, per cell."""

    def __init__(self, contamination: float = 0.05, min_support: int = 3,
                 count_power: float = 0.25, z_cap: float = 8.0,
                 cell_weights: np.ndarray | None = None, finite_reference: bool = True,
                 overdispersion: tuple[float, float] = OVERDISPERSION) -> None:
        super().__init__(contamination=contamination)
        self.min_support = min_support
        self.count_power = count_power
        self.z_cap = z_cap
        self.finite_reference = finite_reference
        self.overdispersion = overdispersion
        self.cell_weights = cell_weights

    def fit(self, X, y=None):
        X = self._check(X)
        self.counts_ = X.sum(axis=0)
        self.n_windows_ = len(X)
        self.weights_ = (prior.cell_weights() if self.cell_weights is None
                         else np.asarray(self.cell_weights, dtype=float))
        self.positions_, self.support_ = rank_table(self.counts_)
        self.decision_scores_ = np.array([
            self._score(*rank_table(self.counts_ - row), row[None, :])[0] for row in X
        ]) if len(X) > 1 else np.zeros(len(X))
        self.drift_ = enrolment_drift(X, lambda ref, x: self._score(*rank_table(ref), x[None])[0])
        self._process_decision_scores()
        return self

    def decision_function(self, X):
        return self._score(self.positions_, self.support_, self._check(X))

    def _score(self, positions, support, X):
        return rank_scores(positions, support, self.weights_, X, min_support=self.min_support,
                           count_power=self.count_power, z_cap=self.z_cap,
                           finite_reference=self.finite_reference,
                           overdispersion=tuple(self.overdispersion))

    @staticmethod
    def _check(X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != N_FEATURES:
            raise ValueError(f"expected windows of {N_FEATURES} histogram counts, got {X.shape}")
        if len(X) == 0 or np.any(X < 0) or not np.all(np.isfinite(X)):
            raise ValueError("windows must be a non-empty set of finite, non-negative counts")
        return X


def enrolment_drift(X: np.ndarray, score) -> float:
    """How much more the user's typing moved across enrolment than at random, in score units:
    the score of the late half of the windows (pooled) against the early half, and of the early
    against the late, less the same for the interleaved halves (odd windows against even ones
    and back), which see the same amount of typing but no trend. About 0 for a user whose typing
    is steady; large when it drifts (say, faster and faster) over enrolment. ``X``: enrolment
    windows in time order; ``score(reference_counts, window)``. 0 with fewer than 4 windows."""
    if len(X) < 4:
        return 0.0
    half = len(X) // 2
    early, late = X[:half].sum(axis=0), X[half:].sum(axis=0)
    even, odd = X[0::2].sum(axis=0), X[1::2].sum(axis=0)
    ordered = score(early, late) + score(late, early)
    interleaved = score(even, odd) + score(odd, even)
    return float((ordered - interleaved) / 2)
