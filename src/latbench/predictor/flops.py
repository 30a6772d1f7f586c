"""FLOP-linear predictors: latency ≈ a·MACs + b, fitted robustly with RANSAC.

``flops-clustered`` follows LETI: models are first clustered by (log) memory traffic,
since models that move very different amounts of data sit on different lines, and one
RANSAC line is fitted per cluster.

Below the smallest model trained on, a line fitted to larger models often crosses zero (a
one-layer ``Linear(3, 3)`` got −0.63 ms from a line fitted to CNN variants). There the
prediction is proportional to MACs instead: ``y(m) = y_lo · m / m_lo``, with ``m_lo`` the
smallest training MACs and ``y_lo`` the line's value there (the fastest training latency if
that value is not positive) — latency shrinking with work towards zero, never below it.
Such models are also reported out of range (:func:`latbench.predictor.base.out_of_range`).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression, RANSACRegressor
from sklearn.metrics import silhouette_score

from latbench.exceptions import PredictorError
from latbench.predictor.base import LatencyPredictor
from latbench.predictor.encode import LayerBatch

__all__ = ["FlopsPredictor", "FlopsClusteredPredictor", "model_macs", "model_traffic"]

_GMAC = 1e9


def model_macs(batch: LayerBatch) -> np.ndarray:
    """Total multiply–accumulates of each model."""
    batch.require_layers("a FLOP-linear predictor")
    return np.bincount(batch.group, weights=batch.frame["macs"].to_numpy(dtype=float),
                       minlength=batch.n_models)[: batch.n_models]


def model_traffic(batch: LayerBatch) -> np.ndarray:
    """Bytes each model moves: weights plus every layer's input and output activations."""
    batch.require_layers("a FLOP-linear predictor")
    f = batch.frame
    b = (f["weight_bytes"].to_numpy(dtype=float) + f["act_in_bytes"].to_numpy(dtype=float)
         + f["act_out_bytes"].to_numpy(dtype=float))
    return np.bincount(batch.group, weights=b, minlength=batch.n_models)[: batch.n_models]


def _fit_line(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """(slope, intercept) of a RANSAC line; plain least squares when too few points."""
    X = x.reshape(-1, 1)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(np.median(y))
    if len(x) < 6:
        lr = LinearRegression().fit(X, y)
        return float(lr.coef_[0]), float(lr.intercept_)
    # Residual threshold: the median absolute deviation of y, sklearn's own default rule.
    r = RANSACRegressor(LinearRegression(), random_state=seed)
    try:
        r.fit(X, y)
        est = r.estimator_
    except ValueError:  # RANSAC found no consensus set; fall back to least squares
        est = LinearRegression().fit(X, y)
    return float(est.coef_[0]), float(est.intercept_)


def _below_range(pred: np.ndarray, gmacs: np.ndarray, slope: np.ndarray | float,
                 intercept: np.ndarray | float, train_range: dict) -> np.ndarray:
    """Proportional extrapolation below the smallest trained model (see the module notes)."""
    lo = train_range["macs"][0] / _GMAC
    below = gmacs < lo
    if not below.any() or lo <= 0:
        return pred
    y_lo = np.broadcast_to(np.asarray(slope, dtype=float) * lo + np.asarray(intercept, dtype=float),
                           pred.shape)
    y_lo = np.where(y_lo > 0, y_lo, train_range["latency_ms"][0])
    return np.where(below, y_lo * gmacs / lo, pred)


def _nearest(t: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each value (KMeans' assignment rule in one dimension)."""
    return np.argmin(np.abs(t[:, None] - centers[None, :]), axis=1)


class FlopsPredictor(LatencyPredictor):
    """latency ≈ a·GMACs + b, fitted with RANSAC.

    Parameters
    ----------
    random_state : int
        Seed of RANSAC's sampling.

    Attributes
    ----------
    slope_ : float
        ms per GMAC.
    intercept_ : float
        ms.
    """

    def __init__(self, *, random_state: int = 0) -> None:
        self.random_state = random_state

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        self.slope_, self.intercept_ = _fit_line(model_macs(batch) / _GMAC, y, self.random_state)

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        x = model_macs(batch) / _GMAC
        return _below_range(self.slope_ * x + self.intercept_, x, self.slope_, self.intercept_,
                            self.train_range_)


class FlopsClusteredPredictor(LatencyPredictor):
    """LETI's clustered FLOP-linear model: KMeans on log memory traffic, a RANSAC line each.

    Parameters
    ----------
    n_clusters : int or "auto"
        Number of clusters; ``"auto"`` picks 1…``max_clusters`` by silhouette score
        (1 when no split scores above ``min_silhouette``).
    max_clusters : int
        Upper bound for ``"auto"``.
    min_cluster_size : int
        A cluster with fewer training models uses the global line instead of its own.
    min_silhouette : float
        A split must score at least this to be preferred over one cluster.
    random_state : int
        Seed of KMeans and RANSAC.

    Attributes
    ----------
    centers_ : ndarray, shape (n_clusters_,)
        Cluster centres in log(1 + bytes moved); a model takes the nearest one's line.
    lines_ : list of (float, float)
        (ms per GMAC, ms) of each cluster.
    """

    def __init__(self, *, n_clusters: int | str = "auto", max_clusters: int = 4,
                 min_cluster_size: int = 8, min_silhouette: float = 0.5,
                 random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.min_silhouette = min_silhouette
        self.random_state = random_state

    def __setstate__(self, state: dict) -> None:
        # pickles of latbench-predictor/1 kept the fitted KMeans itself (trust_file loading)
        km = state.pop("kmeans_", None)
        if km is not None and "centers_" not in state:
            state["centers_"] = km.cluster_centers_[:, 0].astype(np.float64)
        super().__setstate__(state)

    def _validate_params(self) -> None:
        if self.n_clusters != "auto" and not (isinstance(self.n_clusters, int) and self.n_clusters >= 1):
            raise PredictorError(f"n_clusters must be 'auto' or a positive int, got {self.n_clusters!r}")

    def _choose_k(self, t: np.ndarray) -> int:
        if self.n_clusters != "auto":
            return int(min(self.n_clusters, len(np.unique(t))))
        best_k, best = 1, self.min_silhouette
        for k in range(2, min(self.max_clusters, len(np.unique(t))) + 1):
            labels = KMeans(k, n_init=10, random_state=self.random_state).fit_predict(t)
            if not 2 <= len(np.unique(labels)) <= len(t) - 1:
                continue  # the silhouette is defined for 2 … n-1 clusters (few measurements)
            s = silhouette_score(t, labels)
            if s > best:
                best_k, best = k, s
        return best_k

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        t = np.log1p(model_traffic(batch)).reshape(-1, 1)
        x = model_macs(batch) / _GMAC
        k = self._choose_k(t)
        km = KMeans(k, n_init=10, random_state=self.random_state).fit(t)
        # Only the centres are kept (plain numbers, so the predictor saves without pickling).
        self.centers_ = km.cluster_centers_[:, 0].astype(np.float64)
        labels = km.labels_
        self.global_line_ = _fit_line(x, y, self.random_state)
        self.lines_ = []
        for c in range(k):
            m = labels == c
            self.lines_.append(_fit_line(x[m], y[m], self.random_state)
                               if m.sum() >= self.min_cluster_size else self.global_line_)
        self.n_clusters_ = k

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        labels = _nearest(np.log1p(model_traffic(batch)), self.centers_)
        lines = np.array(self.lines_)
        x = model_macs(batch) / _GMAC
        a, b = lines[labels, 0], lines[labels, 1]
        return _below_range(a * x + b, x, a, b, self.train_range_)
