"""Rank-shift scoring: how far a window's timings sit from a user's, cell by cell (numpy only).

For each cell (a hold of one key class, or a press-to-press flight between two classes) the
user's enrolment timings form a distribution. Each timing of a test window gets its mid-rank
position ``p`` in that distribution (0..1). For the genuine user ``p`` is uniform, so the mean
of ``n`` positions has mean 1/2 and variance ``(1/n + 1/m) / 12`` against ``m`` enrolment timings
(the Mann-Whitney variance: the reference is a sample too); the cell's evidence is
``z = |mean(p) - 1/2| * sqrt(12 n / (1 + n/m))``, capped at ``z_cap``. The
window's score is the mean of the cells' ``z``, weighted by ``n ** count_power`` times the cell's
population discriminability (``cell_weights``). Higher is further from the user.

Without the ``1 + n/m`` term (``finite_reference=False``, profiles saved before it existed) a
genuine window's z grows with its length whenever a cell holds about as many test timings as
enrolment ones, so a 200-key window of the user's own typing looks further from them than the
50-key enrolment windows the calibration scored. On the Aalto dev set the correction took the
free-text mean EER at one sentence from 4.26% to 4.00%, and let the continuous protocol lock
impostors sooner (ANIA 88 -> 79) at the same false locks and share of impostors missed.

Timings are not independent draws: a person's typing moves from one sitting (or sentence) to the
next, so the mean position of a window's timings varies around 1/2 by more than the Mann-Whitney
variance says. ``overdispersion`` = (hold, flight) is that extra spread, a standard deviation of
the mean position, added in quadrature: ``var = (1/n + 1/m) / 12 + tau**2``. A short window's
evidence hardly changes (the first term dominates), but a cell's z no longer grows without bound
with the window's length when the user's own typing has drifted a little since enrolment; it
saturates at ``|mean(p) - 1/2| / tau``, so only a shift as large as another person's keeps
counting. The values (0.05 for holds, 0.03 for flights) are the excess variance of enrolment
windows' mean positions against the rest of their user's enrolment (leave one window out), over
Aalto dev participants 0-499; holds drift more than flights. With them the free-text mean EER at
one sentence went from 4.00% to 3.73% (two sentences 0.77% -> 0.74%, five 0.13% -> 0.13%).
Profiles saved before it have (0, 0): they were calibrated without it.

Distributions are histograms over fixed log-time bins (see :mod:`agent.features.keystroke`),
so the model is a table of counts and scoring is two array products.
"""

from __future__ import annotations

import numpy as np

from agent.features.keystroke import N_BINS, N_CELLS, N_HOLD

#: (hold, flight) extra spread of a window's mean rank position (see the module docstring).
OVERDISPERSION = (0.05, 0.03)


def rank_table(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, support) from enrolment counts shaped (N_CELLS, N_BINS): the mid-rank
    position of a timing in each bin minus 1/2, and the number of enrolment timings per cell."""
    counts = np.asarray(counts, dtype=float).reshape(N_CELLS, N_BINS)
    support = counts.sum(axis=1)
    below = np.cumsum(counts, axis=1) - counts
    positions = (below + counts / 2 + 0.5) / (support[:, None] + 1) - 0.5
    return positions, support


def rank_scores(positions: np.ndarray, support: np.ndarray, cell_weights: np.ndarray,
                X: np.ndarray, *, min_support: int = 3, count_power: float = 0.25,
                z_cap: float = 8.0, finite_reference: bool = True,
                overdispersion: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Scores of the windows ``X`` (rows of histogram vectors); 0 where no cell can be compared.
    ``overdispersion`` is the (hold, flight) extra spread of a cell's mean position."""
    X = np.asarray(X, dtype=float).reshape(-1, N_CELLS, N_BINS)
    usable = support >= min_support
    n = X.sum(axis=2) * usable
    shift = np.einsum("mcb,cb->mc", X, positions)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 12 * n / (1 + n / support) if finite_reference else 12 * n
        tau = np.where(np.arange(N_CELLS) < N_HOLD, *overdispersion)
        if np.any(tau > 0):
            scale = scale / (1 + scale * tau ** 2)  # 1 / (1/scale + tau^2)
        z = np.minimum(np.abs(shift) / n * np.sqrt(scale), z_cap)
        weight = n ** count_power * cell_weights
        z = np.where(n > 0, z, 0.0)
        total = weight.sum(axis=1)
        return np.where(total > 0, (z * weight).sum(axis=1) / total, 0.0)


def estimate_overdispersion(enrolments, min_count: int = 4,
                            min_support: int = 3) -> tuple[float, float]:
    """(hold, flight) ``overdispersion`` measured on users' enrolments (how ``OVERDISPERSION``
    was set): each enrolment window's mean position, cell by cell, against the rest of its
    user's enrolment (leave that window out), less its Mann-Whitney variance:
    ``tau^2 = sum n * ((mean(p) - 1/2)^2 - (1/n + 1/m) / 12) / sum n`` over (window, cell) pairs
    with ``n >= min_count`` timings in the window and ``m >= min_support`` in the rest, pooled
    over hold cells and over flight cells separately and clipped at 0. Weighting by ``n`` counts
    every timing once; few-timing cells are left out because binned ties make their variance
    smaller than the formula's, which biases their excess down. On Aalto dev participants 0-499
    (10 windows of one sentence each) this gives (0.0497, 0.0305).
    ``enrolments``: per user, their enrolment windows (rows of histogram vectors)."""
    excess = np.zeros(2)
    timings = np.zeros(2)
    hold = np.arange(N_CELLS) < N_HOLD
    for X in enrolments:
        X = np.asarray(X, dtype=float).reshape(-1, N_CELLS, N_BINS)
        if len(X) < 2:
            continue
        total = X.sum(axis=0)
        for row in X:
            positions, m = rank_table(total - row)
            n = row.sum(axis=1)
            ok = (n >= min_count) & (m >= min_support)
            with np.errstate(divide="ignore", invalid="ignore"):
                term = n * ((row * positions).sum(axis=1) / n) ** 2 - (1 + n / m) / 12
            for k, cells in enumerate((hold, ~hold)):
                excess[k] += term[ok & cells].sum()
                timings[k] += n[ok & cells].sum()
    tau2 = np.divide(excess, timings, out=np.zeros(2), where=timings > 0)
    return float(np.sqrt(max(tau2[0], 0.0))), float(np.sqrt(max(tau2[1], 0.0)))
