"""Biometric error measures. Scores: higher means less like the genuine user."""

from __future__ import annotations

import numpy as np


def eer(genuine, impostor) -> float:
    """Equal error rate: where the false-reject rate (genuine scored above the threshold)
    meets the false-accept rate (impostor at or below it), over every observed threshold."""
    genuine = np.sort(np.asarray(genuine, dtype=float))
    impostor = np.sort(np.asarray(impostor, dtype=float))
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("EER needs genuine and impostor scores")
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([genuine, impostor]))])
    frr = 1 - np.searchsorted(genuine, thresholds, side="right") / len(genuine)
    far = np.searchsorted(impostor, thresholds, side="right") / len(impostor)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def auc(genuine, impostor) -> float:
    """Probability that an impostor scores above a genuine sample (ties count half)."""
    genuine = np.asarray(genuine, dtype=float)
    impostor = np.sort(np.asarray(impostor, dtype=float))
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("AUC needs genuine and impostor scores")
    above = len(impostor) - np.searchsorted(impostor, genuine, side="right")
    ties = np.searchsorted(impostor, genuine, side="right") - np.searchsorted(impostor, genuine)
    return float((above + ties / 2).sum() / (len(genuine) * len(impostor)))
