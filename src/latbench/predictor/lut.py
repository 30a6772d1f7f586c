"""Lookup-table predictor: Σ per-layer latencies measured alone, plus a fitted overhead.

The table maps :func:`latbench.data.features.layer_key` → median latency in ms (the
``layer_latency`` frame of :class:`latbench.data.dataset.Dataset`, rows of one device).

Which layers are looked up. Inference runtimes (ONNX Runtime, TFLite) fold a batch norm
that follows a convolution or linear layer into its weights, and fuse an activation that
follows one (or follows such a folded bn) into the kernel's epilogue; those layers cost
nothing of their own and are *not* looked up (``fused_ops``). Every other layer — convs,
linear, pools, and bn/activations that cannot fuse (e.g. the ReLU *before* a conv in a
pre-activation block) — must be in the table. What fusion leaves behind (memory traffic
of the fused epilogue, per-layer dispatch) is absorbed by the overhead fit.

Overhead. On whole-model measurements the model fits
``latency ≈ α·Σ lut + β·n_looked_up + γ`` by least squares (α rescales isolated-layer
timings to in-network ones, β is a per-kernel dispatch cost, γ a per-inference cost).
With fewer than 3 models it uses α = 1, β = γ = 0.

A layer missing from the table raises :class:`PredictorError` naming its key — never a
silent 0 ms. With ``fallback="regressor"`` a per-layer XGBoost (trained on the table's
rows, log target) estimates it instead, and ``last_missing_`` records how many layers of
the last ``predict`` call were estimated and which keys.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

from latbench.data.features import LAYER_COLUMNS, layer_key
from latbench.exceptions import PredictorError
from latbench.predictor.base import LatencyPredictor
from latbench.predictor.encode import LayerBatch, layer_matrix

__all__ = ["LUTPredictor", "fused_mask"]

_FUSE_HOSTS = ("conv", "dwconv", "linear")


def fused_mask(frame: pd.DataFrame, group: np.ndarray, fused_ops: tuple[str, ...]) -> np.ndarray:
    """True for layers folded into the conv/linear just before them (same model)."""
    op = frame["op"].astype(str).to_numpy()
    fused = np.zeros(len(op), dtype=bool)
    for i in range(1, len(op)):
        if group[i] != group[i - 1] or op[i] not in fused_ops:
            continue
        prev = op[i - 1]
        if prev in _FUSE_HOSTS:
            fused[i] = True
        elif fused[i - 1] and prev == "bn" and op[i] != "bn":
            fused[i] = True  # conv → bn → act: the act fuses too
    return fused


class LUTPredictor(LatencyPredictor):
    """Sum of per-layer lookup-table latencies plus a fitted overhead.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-layer measurements: ``layer_key`` and ``latency_ms`` (ms); with
        ``fallback="regressor"`` also the layer columns. Repeated keys are averaged (median).
    fallback : {"error", "regressor"}
        What to do with a layer whose key is not in the table.
    fused_ops : tuple of str
        Layer kinds folded into a preceding conv/linear (see the module docstring).
    random_state : int
        Seed of the fallback regressor.

    Attributes
    ----------
    lut_ : dict
        layer_key → ms.
    coef_ : ndarray
        (α, β, γ) of the overhead fit.
    last_missing_ : dict
        ``{"count": int, "keys": list[str]}`` of the last ``predict`` call.
    """

    def __init__(self, *, table: pd.DataFrame | None = None, fallback: str = "error",
                 fused_ops: tuple[str, ...] = ("bn", "act"), random_state: int = 0) -> None:
        self.table = table
        self.fallback = fallback
        self.fused_ops = fused_ops
        self.random_state = random_state

    def _validate_params(self) -> None:
        if self.fallback not in ("error", "regressor"):
            raise PredictorError(f"fallback must be 'error' or 'regressor', got {self.fallback!r}")
        if self.table is None or len(self.table) == 0:
            raise PredictorError("the lookup table is empty: measure layers alone first "
                                 "(Dataset.layer_latency has no rows for this device)")
        for c in ("layer_key", "latency_ms"):
            if c not in self.table.columns:
                raise PredictorError(f"the lookup table lacks the column {c!r}")

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        t = self.table
        self.lut_ = t.groupby("layer_key")["latency_ms"].median().astype(float).to_dict()
        self.fallback_model_ = None
        if self.fallback == "regressor":
            missing = [c for c in LAYER_COLUMNS if c not in ("name", "inputs") and c not in t.columns]
            if missing:
                raise PredictorError("fallback='regressor' needs the layer columns in the table; "
                                     f"missing {', '.join(missing)}")
            import xgboost as xgb

            self.fallback_model_ = xgb.XGBRegressor(
                n_estimators=300, learning_rate=0.1, max_depth=6, tree_method="hist",
                random_state=self.random_state, n_jobs=1,
            ).fit(layer_matrix(t).to_numpy(dtype=float), np.log(t["latency_ms"].to_numpy(dtype=float)))
        s, n, _ = self._sums(batch)
        if len(y) >= 3:
            # Non-negative slopes: an unconstrained fit on a few noisy models can make the
            # table's sum count *against* latency and predict negative times.
            lr = LinearRegression(positive=True).fit(np.column_stack([s, n]), y)
            self.coef_ = np.array([lr.coef_[0], lr.coef_[1], lr.intercept_])
        else:
            self.coef_ = np.array([1.0, 0.0, 0.0])
        self.floor_ms_ = float(np.min(y)) * 0.1 if len(y) else 0.0

    def _sums(self, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        f, g = batch.frame, batch.group
        keep = ~fused_mask(f, g, tuple(self.fused_ops))
        rows = f[keep]
        gk = g[keep]
        keys = [layer_key(r) for r in rows.to_dict("records")]
        ms = np.array([self.lut_.get(k, np.nan) for k in keys], dtype=float)
        miss = np.isnan(ms)
        info = {"count": int(miss.sum()), "keys": sorted({k for k, m in zip(keys, miss) if m})}
        if miss.any():
            if self.fallback_model_ is None:
                raise PredictorError(
                    f"layer {info['keys'][0]!r} is not in the lookup table "
                    f"({info['count']} layer(s) missing); measure it or use fallback='regressor'")
            ms[miss] = np.exp(self.fallback_model_.predict(
                layer_matrix(rows[miss]).to_numpy(dtype=float)))
        s = np.bincount(gk, weights=ms, minlength=batch.n_models)[: batch.n_models]
        n = np.bincount(gk, minlength=batch.n_models)[: batch.n_models].astype(float)
        return s, n, info

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        s, n, info = self._sums(batch)
        self.last_missing_ = info
        a, b, c = self.coef_
        # a latency is positive: never predict below a tenth of the fastest model trained on
        return np.maximum(a * s + b * n + c, getattr(self, "floor_ms_", 0.0))
