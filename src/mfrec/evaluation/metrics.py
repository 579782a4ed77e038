"""Rating metrics. Ranking metrics live in :mod:`mfrec.evaluation.ranking`."""
from __future__ import annotations

import numpy as np

__all__ = ["rmse", "mae"]


def _pair(y_true, y_pred):
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    if t.size == 0:
        raise ValueError("y_true is empty: no ratings to score")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (NaN or inf found)")
    return t, p


def rmse(y_true, y_pred):
    """Root mean squared error between arrays of shape (m,)."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true, y_pred):
    """Mean absolute error between arrays of shape (m,)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))
