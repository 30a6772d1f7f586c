"""Transfer to a new device: learn it from a few of its measurements and other devices' many.

Method (``bench predictor evaluate|train --source-devices A,B,…``). Each source device gets
a model of its log-latency from the architecture's features (XGBoost on
:func:`~latbench.predictor.encode.model_matrix`, trained on every row of that device). For
any model ``x`` these give a vector ``z(x)`` — how long each source device would take to run
it: the device embedding HELP (Lee et al., NeurIPS 2021) builds from reference models'
latencies, turned around into an *architecture* embedding priced by known devices. On the new
device, ``log latency ≈ a + Σ_d w_d · z_d(x)`` with ``w ≥ 0`` is fitted to its N measured
models by non-negative least squares with a ridge penalty chosen by leave-one-out on those N
(a new device is a non-negative mix of known ones, plus an offset; the sign constraint keeps
ten points from fitting noise with cancelling weights). From 8 rows on, the new device's own
``gbm`` joins the mix as one more column, entering the fit with out-of-fold predictions — a
device unlike every source (a runtime that runs branches in parallel, one that prunes dead
code) is then learned from its own rows as they come. With one similar source the predictor
is that source rescaled; with none it becomes the device's own ``gbm``.

Why this (BENCHMARKS.md, leave-one-device-out over the 22 shared NAS-Bench-201 columns): in a
development run (5 seeds, before per-sample features), mean Spearman at N = 10 was 0.945 for
ridge on ``z``, 0.941 for the best-correlated single source, 0.948 for ridge on ``z`` plus
architecture features, 0.958 for the non-negative mix and 0.961 with its leave-one-out ridge;
choosing *which* N models to measure (k-means in ``z`` space) did not beat random rows (0.949),
so the predictor takes the rows it is given. The own model added nothing at N = 10 and lifted
the devices unlike the others at N = 50 (i7 0.873 → 0.947, Pixel 3 0.912 → 0.941).

Features are per sample (:mod:`latbench.predictor.encode`), so a source measured at batch 1
describes an architecture for a target measured at batch 256. A source is used only where it
was trained on models like the new device's: at least ``min_coverage`` of the N training
models must lie within its training MACs range (:func:`latbench.predictor.base.out_of_range`).

A fitted predictor is saved in latbench's pickle-free file (:func:`~latbench.predictor.base.
save_predictor`): the source models as XGBoost's JSON text, the own model as a nested ``gbm``,
the mix as numbers. The ``sources`` a fit was given are not saved (they may be whole training
sets); a loaded predictor predicts, and is refitted from new ``sources``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from latbench.exceptions import PredictorError, UserInputError
from latbench.predictor.base import MACS_MARGIN, LatencyPredictor, training_range
from latbench.predictor.encode import LayerBatch, as_layer_batch, model_matrix, model_matrix_columns

__all__ = ["SourceModels", "TransferPredictor", "SOURCE_PARAMS", "RIDGE_GRID", "OWN_MIN_ROWS"]

#: XGBoost parameters of the per-source models (trained on thousands of rows each).
SOURCE_PARAMS = {"n_estimators": 300, "max_depth": 6, "learning_rate": 0.1, "subsample": 0.8,
                 "colsample_bytree": 0.8}

#: Ridge penalties (per unit of the N rows) tried by leave-one-out for the non-negative mix.
RIDGE_GRID = (0.0, 1e-3, 1e-2, 1e-1, 1.0)

#: The new device's own ``gbm`` joins the mix from this many measured rows on.
OWN_MIN_ROWS = 8

#: Folds of the out-of-fold predictions the own model enters the mix with.
_OWN_FOLDS = 5

#: Name of the own model in :meth:`TransferPredictor.source_weights`.
OWN = "(own features)"

Progress = Callable[[str, int, int], None]


def _booster(json_text: str):
    import xgboost as xgb

    b = xgb.Booster()
    b.load_model(bytearray(json_text.encode()))
    return b


@dataclass
class SourceModels:
    """One fitted log-latency model per source device (XGBoost JSON, JSON-able).

    Attributes
    ----------
    names : list of str
        Source device names.
    boosters : list of str
        Each device's XGBoost model as JSON text.
    ranges : list of dict
        Each device's :func:`~latbench.predictor.base.training_range`.
    feature_names : list of str
        The :func:`~latbench.predictor.encode.model_matrix` columns they were trained on.
    """

    names: list[str]
    boosters: list[str]
    ranges: list[dict]
    feature_names: list[str]

    @classmethod
    def fit(cls, sources: Mapping[str, tuple[Any, Any]], *, params: dict | None = None,
            random_state: int = 0, n_jobs: int = 1, progress: Progress | None = None) -> "SourceModels":
        """Fit one model per source device on all of its rows.

        Parameters
        ----------
        sources : mapping
            device name → ``(X, y)``: layer tables (any form of
            :func:`~latbench.predictor.encode.as_layer_batch`) and latencies in ms.
        params : dict, optional
            XGBoost parameters (default :data:`SOURCE_PARAMS`).
        progress : callable, optional
            ``progress("source models", done, total)`` after each device.

        Raises
        ------
        PredictorError
            If no source is given, or a source's data is malformed.
        """
        import xgboost as xgb

        if not sources:
            raise PredictorError("transfer needs at least one source device with measurements")
        names, boosters, ranges = [], [], []
        for i, (name, (X, y)) in enumerate(sources.items()):
            batch = as_layer_batch(X)
            y = np.asarray(y, dtype=np.float64).reshape(-1)
            if len(y) != batch.n_models or not np.all(np.isfinite(y)) or np.any(y <= 0):
                raise PredictorError(f"source device {name!r}: need one finite positive latency "
                                     "(ms) per model")
            M = model_matrix(batch).to_numpy(dtype=np.float32)
            model = xgb.XGBRegressor(tree_method="hist", n_jobs=n_jobs, random_state=random_state,
                                     **(params or SOURCE_PARAMS)).fit(M, np.log(y))
            names.append(str(name))
            boosters.append(model.get_booster().save_raw("json").decode())
            ranges.append(training_range(batch, y))
            if progress is not None:
                progress("source models", i + 1, len(sources))
        return cls(names, boosters, ranges, model_matrix_columns())

    def subset(self, names: Sequence[str]) -> "SourceModels":
        """The models of ``names`` only (in that order).

        Raises
        ------
        UserInputError
            If a name is not among the sources.
        """
        idx = []
        for n in names:
            if n not in self.names:
                raise UserInputError(f"{n!r} is not a source device; sources: {', '.join(self.names)}")
            idx.append(self.names.index(n))
        return SourceModels([self.names[i] for i in idx], [self.boosters[i] for i in idx],
                            [self.ranges[i] for i in idx], list(self.feature_names))

    def _models(self) -> list:
        cache = self.__dict__.setdefault("_loaded", {})
        key = tuple(self.names)
        if key not in cache:
            cache.clear()
            cache[key] = [_booster(b) for b in self.boosters]
        return cache[key]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_loaded", None)  # loaded boosters are rebuilt from the JSON
        return state

    def to_dict(self) -> dict:
        """The models as plain values (``SourceModels(**d)`` rebuilds them)."""
        return {"names": list(self.names), "boosters": list(self.boosters),
                "ranges": [dict(r) for r in self.ranges], "feature_names": list(self.feature_names)}

    def log_predict(self, X: Any) -> np.ndarray:
        """``z``: log-latency of every model on every source device, shape (n_models, n_sources).

        Raises
        ------
        PredictorError
            If the features are not those the source models were trained on.
        """
        M = model_matrix(as_layer_batch(X))
        if list(M.columns) != self.feature_names:
            raise PredictorError("the source models were trained on other features; refit them")
        A = M.to_numpy(dtype=np.float32)
        if not len(A):
            return np.zeros((0, len(self.names)))
        return np.column_stack([m.inplace_predict(A) for m in self._models()]).astype(np.float64)

    def coverage(self, X: Any) -> np.ndarray:
        """Share of the models of ``X`` inside each source's training MACs range (per sample,
        within :data:`~latbench.predictor.base.MACS_MARGIN`), shape (n_sources,)."""
        M = model_matrix(as_layer_batch(X))
        macs = np.expm1(M["log_macs"].to_numpy(dtype=float))
        out = []
        for r in self.ranges:
            lo, hi = r["macs"]
            inside = (macs >= lo * (1 - MACS_MARGIN)) & (macs <= hi * (1 + MACS_MARGIN))
            out.append(float(inside.mean()) if len(macs) else 0.0)
        return np.array(out)


def _nnls_fit(Z: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Non-negative weights on centred ``Z`` (ridge ``lam`` per row), the centre, the offset."""
    zm, tm = Z.mean(axis=0), float(t.mean())
    A, b = Z - zm, t - tm
    if lam > 0:
        k = A.shape[1]
        A = np.vstack([A, np.sqrt(lam * len(t)) * np.eye(k)])
        b = np.concatenate([b, np.zeros(k)])
    w, _ = nnls(A, b)
    return w, zm, tm


def _loo_lambda(Z: np.ndarray, t: np.ndarray, grid: Sequence[float]) -> tuple[float, dict]:
    """The ridge penalty with the smallest leave-one-out squared error (ties: the smaller)."""
    scores = {}
    n = len(t)
    for lam in grid:
        err = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            w, zm, tm = _nnls_fit(Z[keep], t[keep], lam)
            err += float(((Z[i] - zm) @ w + tm - t[i]) ** 2)
        scores[float(lam)] = err / n
    best = min(scores, key=lambda k: (scores[k], k))
    return best, scores


class TransferPredictor(LatencyPredictor):
    """Latency on a new device from N of its measurements and source devices' many (see the
    module notes for the method and why).

    Parameters
    ----------
    sources : mapping or SourceModels
        device name → ``(X, y)`` of every source device (fitted at ``fit``), or already
        fitted :class:`SourceModels` (reused as they are, e.g. across evaluations).
    min_coverage : float
        A source is used when at least this share of the new device's training models lies
        within its training MACs range.
    own_model : bool
        From :data:`OWN_MIN_ROWS` rows on, a ``gbm`` on the new device's own rows joins the
        mix (entering the fit with out-of-fold predictions, so it weighs only what it
        predicts on rows it has not seen): what a device unlike every source needs.
    ridge_grid : sequence of float
        Ridge penalties tried by leave-one-out for the non-negative mix.
    source_params : dict, optional
        XGBoost parameters of the source models (default :data:`SOURCE_PARAMS`).
    n_jobs, random_state : int
        XGBoost threads and seed.

    Attributes
    ----------
    source_models_ : SourceModels
        The sources used (JSON-able).
    weights_ : ndarray, shape (n_used,) or (n_used + 1,)
        Non-negative weight of each used source's log-latency (and last, of the own model's).
    own_model_ : GBMPredictor or None
        The new device's own ``gbm`` (``None`` below :data:`OWN_MIN_ROWS` rows or with
        ``own_model=False``).
    z_mean_ : ndarray
    offset_ : float
        ``log latency = offset_ + (z − z_mean_) · weights_``.
    ridge_ : float
        The penalty leave-one-out chose.
    coverage_ : dict
        source name → share of the training models inside its range (all sources offered).
    """

    def __init__(self, *, sources: Mapping[str, tuple[Any, Any]] | SourceModels | None = None,
                 min_coverage: float = 0.9, own_model: bool = True,
                 ridge_grid: Sequence[float] = RIDGE_GRID,
                 source_params: dict | None = None, n_jobs: int = 1, random_state: int = 0) -> None:
        self.sources = sources
        self.min_coverage = min_coverage
        self.own_model = own_model
        self.ridge_grid = ridge_grid
        self.source_params = source_params
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self) -> None:
        if self.sources is None or (not isinstance(self.sources, SourceModels) and not len(self.sources)):
            raise PredictorError("a transfer predictor needs source devices: give sources= "
                                 "(bench predictor … --source-devices A,B)")
        if not 0 <= self.min_coverage <= 1:
            raise PredictorError(f"min_coverage must be in [0, 1], got {self.min_coverage}")
        if not len(self.ridge_grid) or any(v < 0 for v in self.ridge_grid):
            raise PredictorError("ridge_grid needs at least one non-negative penalty")

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        sm = self.sources if isinstance(self.sources, SourceModels) else SourceModels.fit(
            self.sources, params=self.source_params, random_state=self.random_state,
            n_jobs=self.n_jobs)
        cov = sm.coverage(batch)
        self.coverage_ = {n: float(c) for n, c in zip(sm.names, cov)}
        used = [n for n, c in zip(sm.names, cov) if c >= self.min_coverage]
        if not used:
            raise PredictorError(
                "no source device was trained on models like these: each has fewer than "
                f"{self.min_coverage:.0%} of them inside its MACs range ("
                + ", ".join(f"{n} {c:.0%}" for n, c in self.coverage_.items())
                + "); add sources measured on similar models")
        self.source_models_ = sm.subset(used)
        Z = self.source_models_.log_predict(batch)
        t = np.log(y)
        self.own_model_ = None
        if self.own_model and len(t) >= OWN_MIN_ROWS:
            oof, self.own_model_ = self._own(batch, y)
            Z = np.column_stack([Z, oof])
        if len(t) >= 3:
            self.ridge_, self.ridge_scores_ = _loo_lambda(Z, t, self.ridge_grid)
            self.weights_, self.z_mean_, self.offset_ = _nnls_fit(Z, t, self.ridge_)
        else:
            # Too few rows to weigh sources: their mean, shifted onto the new device.
            self.ridge_, self.ridge_scores_ = float("nan"), {}
            self.weights_ = np.full(Z.shape[1], 1.0 / Z.shape[1])
            self.z_mean_ = Z.mean(axis=0)
            self.offset_ = float(np.mean(t - (Z - self.z_mean_) @ self.weights_))
        # All weights zero: nothing on the sources tracks these N latencies, and the
        # prediction is their geometric mean (source_weights() shows it).
        self.offset_ = float(self.offset_)
        # What the predictor knows: the sources' models (where the new device was measured
        # too), at the new device's batch.
        own = self.train_range_
        rs = self.source_models_.ranges
        self.train_range_ = {
            "macs": [min(r["macs"][0] for r in rs), max(r["macs"][1] for r in rs)],
            "batch": own["batch"], "latency_ms": own["latency_ms"],
            "kinds": sorted(set(own["kinds"]).union(*(r["kinds"] for r in rs))),
            "kinds_from": "features" if any(r.get("kinds_from") == "features" for r in rs)
            or own.get("kinds_from") == "features" else "tables",
            "graphs": sorted(set(own["graphs"]).union(*(r["graphs"] for r in rs))),
        }

    def _own(self, batch: LayerBatch, y: np.ndarray) -> tuple[np.ndarray, Any]:
        """Out-of-fold log-predictions of a ``gbm`` on the N rows, and its state on all N."""
        from sklearn.model_selection import KFold

        from latbench.predictor.gbm import GBMPredictor

        oof = np.zeros(len(y))
        folds = KFold(min(_OWN_FOLDS, len(y)), shuffle=True, random_state=self.random_state)
        for a, b in folds.split(np.arange(len(y))):
            g = GBMPredictor(random_state=self.random_state, n_jobs=self.n_jobs)
            g.fit(batch.take(a), y[a])
            oof[b] = np.log(g._predict(batch.take(b)))
        g = GBMPredictor(random_state=self.random_state, n_jobs=self.n_jobs).fit(batch, y)
        return oof, g

    def own_log_predict(self, X: Any) -> np.ndarray | None:
        """The own model's log-latency of each model of ``X`` (``None`` when there is none)."""
        self._check_fitted()
        if self.own_model_ is None:
            return None
        return np.log(self.own_model_._predict(as_layer_batch(X)))

    # ------------------------------------------------------------------ saved state
    def _saved_params(self) -> dict[str, Any]:
        # The sources a fit was given (whole training sets, or fitted models) are not kept:
        # what prediction needs is in the state (source_models_).
        return {**super()._saved_params(), "sources": None}

    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        if isinstance(state.get("source_models_"), SourceModels):
            state["source_models_"] = state["source_models_"].to_dict()
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        from latbench.predictor._persist import FileFormatError
        from latbench.predictor.gbm import GBMPredictor

        state = dict(state)
        sm = state.get("source_models_")
        if isinstance(sm, dict):
            try:
                state["source_models_"] = SourceModels(**sm)
            except TypeError as exc:
                raise FileFormatError(f"its source models are malformed ({exc})") from None
        own = state.get("own_model_")
        if own is not None and not isinstance(own, GBMPredictor):
            raise FileFormatError("its own model is not a gbm predictor")
        super()._set_state(state)

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        return self.combine(self.source_models_.log_predict(batch), self.own_log_predict(batch))

    def combine(self, z: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """Latency in ms from the used sources' log-latencies ``z`` (columns in the order of
        ``source_models_.names``, e.g. :meth:`SourceModels.log_predict` computed once for many
        evaluations) and, when the predictor has one, the own model's (:meth:`own_log_predict`).
        No floor or range check: :meth:`predict` adds those."""
        z = np.asarray(z, dtype=np.float64)
        n_src = len(self.source_models_.names)
        if z.ndim != 2 or z.shape[1] != n_src:
            raise PredictorError(f"z needs {n_src} columns (the used sources), got shape {z.shape}")
        if self.own_model_ is not None:
            if own is None:
                raise PredictorError("this predictor mixes in its own model: give own=")
            z = np.column_stack([z, np.asarray(own, dtype=np.float64).reshape(-1)])
        return np.exp(self.offset_ + (z - self.z_mean_) @ self.weights_)

    def source_weights(self) -> pd.Series:
        """The weight of each used source device (what the new device is a mix of)."""
        self._check_fitted()
        names = self.source_models_.names + ([OWN] if self.own_model_ is not None else [])
        return pd.Series(self.weights_, index=names, name="weight")
