"""The population prior shipped with the agent: one weight per feature cell, no person's data.

``prior.json`` holds, for each cell, how well it tells people apart on public data: the spread
of per-person medians across people divided by the typical spread within a person (both of
log-milliseconds). It is made by ``scripts/make_prior.py`` from the Aalto dev set; cells too
rare to measure get the median weight.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from agent.features.keystroke import N_CELLS, keystrokes, samples

PRIOR_VERSION = 1


@lru_cache(maxsize=1)
def cell_weights() -> np.ndarray:
    data = json.loads(resources.files("agent.model").joinpath("prior.json").read_text())
    weights = np.asarray(data["cell_weights"], dtype=float)
    if data.get("version") != PRIOR_VERSION or weights.shape != (N_CELLS,):
        raise ValueError("agent/model/prior.json does not match this version; "
                         "rebuild it with scripts/make_prior.py")
    weights.flags.writeable = False
    return weights


def person_samples(sessions) -> tuple[np.ndarray, np.ndarray]:
    """One person's timing samples over all their sessions (each an Event stream), as
    :func:`discriminability` takes them: (cells, log-ms values)."""
    tables = [samples(keystrokes(s)) for s in sessions]
    cells = np.concatenate([c for c, _ in tables])
    values = np.log(np.maximum(np.concatenate([v for _, v in tables]), 1.0))
    return cells, values


def discriminability(per_person: list[tuple[np.ndarray, np.ndarray]], min_samples: int = 5,
                     min_people: int = 20) -> np.ndarray:
    """Cell weights from each person's (cells, log-ms values): between-person spread of
    medians over median within-person spread (1.4826 MAD)."""
    medians = np.full((len(per_person), N_CELLS), np.nan)
    spreads = np.full((len(per_person), N_CELLS), np.nan)
    for i, (cells, values) in enumerate(per_person):
        for cell in np.unique(cells):
            v = values[cells == cell]
            if len(v) >= min_samples:
                med = np.median(v)
                medians[i, cell] = med
                spreads[i, cell] = 1.4826 * np.median(np.abs(v - med))
    enough = np.sum(~np.isnan(medians), axis=0) >= min_people
    if not enough.any():
        raise ValueError(f"no feature cell has {min_samples} samples from each of {min_people} "
                         f"people; {len(per_person)} people are too few for cell weights")
    weights = np.full(N_CELLS, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nanstd(medians[:, enough], axis=0)
        within = np.nanmedian(spreads[:, enough], axis=0)
        weights[enough] = between / within
    weights[~np.isfinite(weights)] = np.nan
    return np.where(np.isnan(weights), np.nanmedian(weights), weights)
