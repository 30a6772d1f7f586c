"""Lookup-table predictor: Σ per-layer latencies measured alone, plus a fitted overhead.

The table maps :func:`latbench.data.features.layer_key` → median latency in ms (the
``layer_latency`` frame of :class:`latbench.data.dataset.Dataset`, rows of one device).

Which layers are looked up. Inference runtimes (ONNX Runtime, TFLite) fold a batch norm
that follows a convolution or linear layer into its weights, and fuse an activation that
follows one (or follows such a folded bn) into the kernel's epilogue; those layers cost
nothing of their own and are *not* looked up (``fused_ops``). The kinds a sweep can time
alone (``lookup_ops``: convs, linear, pools) must be in the table. The remaining layers —
residual adds, concats, and bn/activations that cannot fuse (the ReLU after a residual add,
the one *before* a conv in a pre-activation block) — are elementwise and memory-bound, and
cannot be rebuilt as one-input models: they enter the fit through their bytes moved.

Overhead. On whole-model measurements the model fits
``latency ≈ Σ_k α_k·Σ lut_k + β·n_looked_up + δ·MB_elementwise + γ`` by non-negative least
squares on *relative* error (weights 1/latency², as ±10 % accuracy judges it). α_k rescales
isolated-layer timings to in-network ones per kind k (k×k conv, 1×1 conv, depthwise, linear,
pool: a small 1×1 conv timed alone is mostly call overhead, a large k×k conv is not), β is a
per-kernel dispatch cost, δ the cost per MB the elementwise layers move, γ a per-inference
cost. From fewer than 12 models one α is shared by all kinds; from fewer than 4, α = 1 and
the rest 0. On a CPU sweep of ResNet-18/VGG-11/MobileNetV2 variants (BENCHMARKS.md) the
per-kind, relative fit took ±10 % from 0.938 to 0.948 (mean of 10 70/30 splits) — a small
gain, inside the noise of 21 test models, kept because it is the right error to minimise.

A layer missing from the table raises :class:`PredictorError` naming its key — never a
silent 0 ms. With ``fallback="regressor"`` a per-layer XGBoost (trained on the table's
rows, log target) estimates it instead, and ``last_missing_`` records how many layers of
the last ``predict`` call were estimated and which keys.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

from latbench.data.features import LAYER_COLUMNS, MEASURED_ALONE_OPS, layer_key
from latbench.exceptions import PredictorError
from latbench.predictor.base import LatencyPredictor
from latbench.predictor.encode import LayerBatch, bytes_moved, layer_matrix

__all__ = ["LUTPredictor", "fused_mask", "LOOKUP_KINDS"]

_FUSE_HOSTS = ("conv", "dwconv", "linear")

#: Kinds whose isolated timings get their own scale α_k in the overhead fit.
LOOKUP_KINDS = ("conv_kxk", "conv_1x1", "dwconv", "linear", "other")


def _kind_index(rows: pd.DataFrame) -> np.ndarray:
    op = rows["op"].astype(str).to_numpy()
    k = np.maximum(rows["kernel_h"].to_numpy(), rows["kernel_w"].to_numpy())
    idx = np.full(len(op), LOOKUP_KINDS.index("other"), dtype=np.int64)
    idx[(op == "conv") & (k > 1)] = LOOKUP_KINDS.index("conv_kxk")
    idx[(op == "conv") & (k <= 1)] = LOOKUP_KINDS.index("conv_1x1")
    idx[op == "dwconv"] = LOOKUP_KINDS.index("dwconv")
    idx[op == "linear"] = LOOKUP_KINDS.index("linear")
    return idx


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
    lookup_ops : tuple of str
        Layer kinds looked up in the table; other unfused layers count by bytes moved.
    random_state : int
        Seed of the fallback regressor.

    Attributes
    ----------
    lut_ : dict
        layer_key → ms.
    coef_ : ndarray
        (α_k for each of :data:`LOOKUP_KINDS`, β, δ, γ) of the overhead fit (one shared α
        repeated when it was fitted from fewer than 12 models).
    last_missing_ : dict
        ``{"count": int, "keys": list[str]}`` of the last ``predict`` call.
    """

    def __init__(self, *, table: pd.DataFrame | None = None, fallback: str = "error",
                 fused_ops: tuple[str, ...] = ("bn", "act"),
                 lookup_ops: tuple[str, ...] = MEASURED_ALONE_OPS, random_state: int = 0) -> None:
        self.table = table
        self.fallback = fallback
        self.fused_ops = fused_ops
        self.lookup_ops = lookup_ops
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
            missing = [c for c in LAYER_COLUMNS if c not in ("name", "inputs", "fused", "graph") and c not in t.columns]
            if missing:
                raise PredictorError("fallback='regressor' needs the layer columns in the table; "
                                     f"missing {', '.join(missing)}")
            import xgboost as xgb

            self.fallback_model_ = xgb.XGBRegressor(
                n_estimators=300, learning_rate=0.1, max_depth=6, tree_method="hist",
                random_state=self.random_state, n_jobs=1,
            ).fit(layer_matrix(t).to_numpy(dtype=float), np.log(t["latency_ms"].to_numpy(dtype=float)))
        S, n, mb, _ = self._sums(batch)
        k = S.shape[1]
        if len(y) >= 4:
            # Non-negative slopes: an unconstrained fit on a few noisy models can make the
            # table's sum count *against* latency and predict negative times.
            per_kind = len(y) >= 12
            lead = S if per_kind else S.sum(axis=1, keepdims=True)
            lr = LinearRegression(positive=True).fit(
                np.column_stack([lead, n, mb]), y, sample_weight=1.0 / np.square(y))
            alpha = lr.coef_[: lead.shape[1]] if per_kind else np.repeat(lr.coef_[0], k)
            self.coef_ = np.array([*alpha, *lr.coef_[lead.shape[1]:], lr.intercept_])
        else:
            self.coef_ = np.array([1.0] * k + [0.0, 0.0, 0.0])
        self.floor_ms_ = float(np.min(y)) * 0.1 if len(y) else 0.0

    def _sums(self, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Per model: Σ lut by kind (n_models × kinds), count looked up, elementwise MB."""
        batch.require_layers("a lookup table")
        f, g = batch.frame, batch.group
        unfused = ~fused_mask(f, g, tuple(self.fused_ops))
        looked = unfused & f["op"].astype(str).isin(list(self.lookup_ops)).to_numpy()
        light = unfused & ~looked
        moved = bytes_moved(f)
        mb = np.bincount(g[light], weights=moved[light] / 1e6,
                         minlength=batch.n_models)[: batch.n_models]
        rows = f[looked]
        gk = g[looked]
        keys = [layer_key(r) for r in rows.to_dict("records")]
        ms = np.array([self.lut_.get(k, np.nan) for k in keys], dtype=float)
        miss = np.isnan(ms)
        info = {"count": int(miss.sum()), "keys": sorted({k for k, m in zip(keys, miss) if m})}
        if miss.any():
            if self.fallback_model_ is None:
                raise PredictorError(
                    f"layer {info['keys'][0]!r} is not in the lookup table "
                    f"({info['count']} layer(s) missing): measure such layers alone (`bench "
                    "sweep --per-layer` on models that have them), or let a per-layer regressor "
                    "estimate missing layers: train with fallback='regressor' (`bench "
                    "predictor train --kind lut --fallback regressor`)")
            ms[miss] = np.exp(self.fallback_model_.predict(
                layer_matrix(rows[miss]).to_numpy(dtype=float)))
        kind = _kind_index(rows)
        S = np.zeros((batch.n_models, len(LOOKUP_KINDS)))
        np.add.at(S, (gk, kind), ms)
        n = np.bincount(gk, minlength=batch.n_models)[: batch.n_models].astype(float)
        return S, n, mb, info

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        S, n, mb, info = self._sums(batch)
        self.last_missing_ = info
        k = S.shape[1]
        alpha, (b, d, c) = self.coef_[:k], self.coef_[k:]
        # a latency is positive: never predict below a tenth of the fastest model trained on
        return np.maximum(S @ alpha + b * n + d * mb + c, getattr(self, "floor_ms_", 0.0))
