"""What is learned about a user, and its versioned, numbers-only serialisation.

A profile is JSON with a format tag and version; every value in it is a number or a list of
numbers (counts of timings per class cell and log-time bin, calibration scores). It holds no
key identity and no text, and nothing executable: loading it never unpickles anything. The live
agent stores it encrypted (``agent.store``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from agent.features.keystroke import N_BINS, N_CELLS, N_FEATURES
from agent.model.mouse import MouseModel
from agent.model.rankshift import rank_scores, rank_table

log = logging.getLogger(__name__)

FORMAT = "cadence-profile"
VERSION = 1


class ProfileError(ValueError):
    """A profile that cannot be used; the message says what is wrong and what to do."""


@dataclass
class KeystrokeModel:
    """A user's keystroke model: enrolment timing counts plus its calibration.

    ``calibration`` holds the leave-one-window-out scores of the enrolment windows (sorted);
    ``threshold`` the score above which a window is an outlier for this user; ``drift`` how far
    their typing moved across enrolment (:func:`agent.model.detector.enrolment_drift`; 0 in a
    profile saved before it, which then keeps the thresholds it had).
    """

    counts: np.ndarray
    windows: int
    threshold: float
    calibration: np.ndarray
    min_support: int = 3
    count_power: float = 0.25
    z_cap: float = 8.0
    finite_reference: bool = True  # False: a profile saved before the Mann-Whitney correction
    overdispersion: tuple = (0.0, 0.0)  # (hold, flight); (0, 0): a profile saved before it
    drift: float = 0.0
    _table: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_detector(cls, detector) -> "KeystrokeModel":
        """Capture a fitted :class:`agent.model.detector.RankShift`."""
        return cls(counts=np.array(detector.counts_, dtype=float),
                   windows=int(detector.n_windows_),
                   threshold=float(detector.threshold_),
                   calibration=np.sort(np.asarray(detector.decision_scores_, dtype=float)),
                   min_support=detector.min_support, count_power=detector.count_power,
                   z_cap=detector.z_cap, finite_reference=detector.finite_reference,
                   overdispersion=tuple(float(v) for v in detector.overdispersion),
                   drift=float(getattr(detector, "drift_", 0.0)))

    def score(self, X: np.ndarray, cell_weights: np.ndarray) -> np.ndarray:
        """Scores of windows (numpy only; equal to the pyod detector's)."""
        if self._table is None:
            self._table = rank_table(self.counts)
        return rank_scores(*self._table, cell_weights, X, min_support=self.min_support,
                           count_power=self.count_power, z_cap=self.z_cap,
                           finite_reference=self.finite_reference,
                           overdispersion=self.overdispersion)

    @property
    def legacy(self) -> bool:
        """Saved before the overdispersion term: scored without it, as it was calibrated."""
        return not any(self.overdispersion)

    def to_dict(self) -> dict:
        nonzero = np.flatnonzero(self.counts)
        return {
            "windows": self.windows,
            "threshold": self.threshold,
            "calibration": [float(x) for x in self.calibration],
            "drift": float(self.drift),
            "params": {"min_support": self.min_support, "count_power": self.count_power,
                       "z_cap": self.z_cap, "finite_reference": int(self.finite_reference),
                       "overdispersion_hold": float(self.overdispersion[0]),
                       "overdispersion_flight": float(self.overdispersion[1])},
            "shape": [N_CELLS, N_BINS],
            "counts": [[int(i), float(self.counts[i])] for i in nonzero],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "KeystrokeModel":
        if data.get("shape") != [N_CELLS, N_BINS]:
            raise ProfileError("the keystroke model was made by an incompatible version; "
                               "re-enrol (cadence enroll --restart)")
        counts = np.zeros(N_FEATURES)
        for pair in data["counts"]:
            index, value = pair
            if not (isinstance(index, int) and 0 <= index < N_FEATURES) or not _number(value) \
                    or value < 0:
                raise ProfileError("the keystroke model holds an invalid count; re-enrol")
            counts[index] = value
        params = data["params"]
        drift = data.get("drift", 0.0)  # absent from profiles saved before it: no widening
        values = [data["threshold"], *data["calibration"], drift, *params.values()]
        # absent from profiles saved before it existed: they were calibrated without it
        finite_reference = params.get("finite_reference", 0)
        overdispersion = (params.get("overdispersion_hold", 0.0),
                          params.get("overdispersion_flight", 0.0))
        if finite_reference not in (0, 1) or not all(_number(v) and 0 <= v < 1
                                                     for v in overdispersion):
            raise ProfileError("the keystroke model holds an invalid setting; re-enrol")
        if not all(_number(v) for v in values) or not isinstance(data["windows"], int):
            raise ProfileError("the keystroke model holds a value that is not a number; re-enrol")
        return cls(counts=counts, windows=data["windows"], threshold=float(data["threshold"]),
                   calibration=np.array(data["calibration"], dtype=float),
                   min_support=int(params["min_support"]),
                   count_power=float(params["count_power"]), z_cap=float(params["z_cap"]),
                   finite_reference=bool(finite_reference),
                   overdispersion=tuple(float(v) for v in overdispersion),
                   drift=float(drift))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=object)
    if array.size and not all(_number(v) for v in array.ravel()):
        raise ProfileError(f"the {what} holds a value that is not a number; re-enrol")
    return array.astype(float)


def mouse_to_dict(model: MouseModel) -> dict:
    return {"window": model.window, "n_neighbors": model.n_neighbors, "scale": model.scale,
            "threshold": model.threshold, "actions": model.actions.tolist(),
            "summaries": model.summaries.tolist(), "center": model.center.tolist(),
            "whiten": model.whiten.tolist(), "train": model.train.tolist()}


def mouse_from_dict(data: dict) -> MouseModel:
    arrays = {name: _numbers(data[name], "mouse model")
              for name in ("actions", "summaries", "center", "whiten", "train")}
    actions, summaries, center = arrays["actions"], arrays["summaries"], arrays["center"]
    whiten, train = arrays["whiten"], arrays["train"]
    window, neighbours = data["window"], data["n_neighbors"]
    width = center.size
    if not (isinstance(window, int) and isinstance(neighbours, int) and window > 0
            and neighbours > 0 and center.ndim == 1 and actions.ndim == 2
            and actions.shape[1] == width and summaries.shape == train.shape
            and whiten.shape == (width, width) and train.ndim == 2 and train.shape[1] == width
            and len(train) > neighbours and np.all(np.diff(actions, axis=0) >= 0)
            and np.all(np.diff(summaries, axis=0) >= 0)
            and _number(data["scale"]) and _number(data["threshold"])):
        raise ProfileError("the mouse model is inconsistent; re-enrol")
    return MouseModel(window, actions, summaries, center, whiten, train, neighbours,
                      float(data["scale"]), float(data["threshold"]))


@dataclass
class Profile:
    """Everything learned about one user: the keystroke model, and the mouse model when the
    user moved the mouse enough while learning."""

    keystroke: KeystrokeModel
    mouse: MouseModel | None = None

    def to_json(self) -> bytes:
        data = {"format": FORMAT, "version": VERSION, "keystroke": self.keystroke.to_dict()}
        if self.mouse is not None:
            data["mouse"] = mouse_to_dict(self.mouse)
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> "Profile":
        try:
            data = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProfileError(f"the profile is not valid JSON ({exc.__class__.__name__}); "
                               "re-enrol (cadence enroll --restart)") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProfileError("not a Cadence profile; re-enrol (cadence enroll --restart)")
        if data.get("version") != VERSION:
            raise ProfileError(f"profile version {data.get('version')!r} is not supported by "
                               f"this agent (expects {VERSION}); re-enrol")
        try:
            mouse = data.get("mouse")
            if isinstance(mouse, dict) and "mean" in mouse and "actions" not in mouse:
                # a mouse model of before the copula: keep protecting with the typing model
                log.warning("the profile's mouse model is from an older version and is not "
                            "used; `cadence enroll --restart` learns a new one")
                mouse = None
            return cls(keystroke=KeystrokeModel.from_dict(data["keystroke"]),
                       mouse=None if mouse is None else mouse_from_dict(mouse))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError("the profile is incomplete or malformed; re-enrol "
                               "(cadence enroll --restart)") from None
