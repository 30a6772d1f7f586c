"""Accuracy of latency predictions: the one place metrics are defined."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau, spearmanr

__all__ = ["within", "mape", "rmse", "r2", "spearman", "kendall", "regression_metrics",
           "METRIC_KEYS"]

#: Keys of :func:`regression_metrics`, in display order.
METRIC_KEYS = ("acc5", "acc10", "mape", "rmse_ms", "r2", "spearman", "kendall")


def _arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    if t.shape != p.shape or len(t) == 0:
        raise ValueError(f"need equally long, non-empty arrays; got {t.shape} and {p.shape}")
    return t, p


def within(y_true, y_pred, tol: float) -> float:
    """Share of predictions within ±``tol`` (relative, e.g. 0.1) of the measured latency."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) <= tol * np.abs(t)))


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error, in percent."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / np.abs(t)) * 100.0)


def rmse(y_true, y_pred) -> float:
    """Root mean squared error, in the unit of the inputs (ms)."""
    t, p = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination (1 is perfect; NaN when ``y_true`` is constant)."""
    t, p = _arrays(y_true, y_pred)
    ss = float(np.sum((t - t.mean()) ** 2))
    return float(1.0 - np.sum((t - p) ** 2) / ss) if ss > 0 else float("nan")


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation ρ (NaN when either side is constant: no ranking to compare)."""
    t, p = _arrays(y_true, y_pred)
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(spearmanr(t, p)[0])


def kendall(y_true, y_pred) -> float:
    """Kendall rank correlation τ (τ-b)."""
    t, p = _arrays(y_true, y_pred)
    return float(kendalltau(t, p)[0]) if len(t) > 1 else float("nan")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """All metrics of :data:`METRIC_KEYS` at once (acc5/acc10 as fractions, MAPE in %)."""
    return {
        "acc5": within(y_true, y_pred, 0.05), "acc10": within(y_true, y_pred, 0.10),
        "mape": mape(y_true, y_pred), "rmse_ms": rmse(y_true, y_pred), "r2": r2(y_true, y_pred),
        "spearman": spearman(y_true, y_pred), "kendall": kendall(y_true, y_pred),
    }
