"""Gradient-boosted predictors (XGBoost): whole-model ``gbm`` and additive ``gbm-layer``.

``gbm`` encodes each model with :func:`~latbench.predictor.encode.model_matrix` and
predicts ``log(latency)``: optionally a ridge regression on the standardised features first
(it extrapolates the near-additive part of latency sensibly from few models), then boosted
trees on its residual (interactions, saturation). The log target makes errors relative,
which is what ±5 %/±10 % accuracy measures. Whether the ridge base helps depends on the
device: on a sequential runtime latency is near-additive and it does; where branches run in
parallel (a max over paths, not a sum) it hurts. ``linear_base="auto"`` (the default) decides
by 3-fold cross-validation on the training rows.

``gbm-layer`` is an additive model, latency = α·Σ f(layer) + β, with ``f`` one XGBoost
regressor on single-layer features (:func:`~latbench.predictor.encode.layer_matrix`), so
it applies to layers and networks it has not seen. Whole-model latencies do not say how
much each layer cost, so the per-layer targets are found by back-fitting: start from
shares proportional to a roofline cost proxy, set each layer's target to model latency ×
share, fit ``f`` on log targets, recompute shares from ``f``'s predictions, repeat
``n_rounds`` times; finally α, β by least squares on the training models (β absorbs the
per-inference overhead). Layers measured alone (a ``layer_latency`` table with
``layer_key`` rows) join the training rows with their measured latency as the target.

Default hyper-parameters were checked by 5-fold cross-validation inside the training
samples (100 and 900 rows) of the NB201 development set (benchmarks/bench_predictors_nb201.py
``--tune``), never on its test rows: over max_depth {3, 4, 6} × n_estimators {300, 500}
the CV ±10 % differed by at most 0.01, so the defaults were kept. With the graph features of
schema 3 the same CV (2026-11-23) found the ridge base worth +0.1 on SD855 CPU at 100 rows but
−0.02…−0.08 on the i7 at 100 and 900 — hence ``"auto"``; the robust losses moved CV ±10 % by
under ±0.02 either way, so ``"squared"`` stays the default; learning rate 0.02 (was 0.05)
at 500 trees was better in CV at N=900 on all three devices (+0.006 / +0.001 / +0.001 ±10 %,
higher ρ) and even at N=100 (±10 % −0.02 / 0 / +0.01, ρ higher or equal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import KFold

from latbench.exceptions import PredictorError
from latbench.predictor.base import LatencyPredictor
from latbench.predictor.encode import LayerBatch, layer_cost_proxy, layer_matrix, model_matrix

__all__ = ["GBMPredictor", "GBMLayerPredictor"]


def _xgb(params: dict, seed: int, n_jobs: int):
    import xgboost as xgb  # imported here: no work (and no heavy import) at package import

    return xgb.XGBRegressor(tree_method="hist", random_state=seed, n_jobs=n_jobs, **params)


_OBJECTIVES = {"squared": "reg:squarederror", "huber": "reg:pseudohubererror",
               "absolute": "reg:absoluteerror"}


class GBMPredictor(LatencyPredictor):
    """Whole-model XGBoost on model-level features, log target, optional ridge base model.

    Parameters
    ----------
    n_estimators, learning_rate, max_depth, subsample, colsample_bytree, min_child_weight, reg_lambda
        XGBoost's parameters of the same names.
    linear_base : bool or "auto"
        Fit a ridge regression first and boost its residual; ``"auto"`` chooses by 3-fold
        cross-validation (±10 % accuracy) on the training rows, using the ridge base below
        15 rows.
    log_target : bool
        Learn ``log(latency)`` rather than latency.
    loss : {"squared", "huber", "absolute"}
        The boosting loss: squared error, pseudo-Huber (slope ``huber_slope``, in target
        units: with the log target 0.05 ≈ 5 %), or absolute error (the conditional median —
        robust to the occasional disturbed measurement).
    huber_slope : float
        Where pseudo-Huber turns from quadratic to linear.
    n_jobs : int
        XGBoost threads.
    random_state : int
        Seed.
    """

    def __init__(self, *, n_estimators: int = 500, learning_rate: float = 0.02,
                 max_depth: int = 4, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 1.0, reg_lambda: float = 1.0,
                 linear_base: bool | str = "auto", log_target: bool = True, loss: str = "squared",
                 huber_slope: float = 0.05, n_jobs: int = 1, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.linear_base = linear_base
        self.log_target = log_target
        self.loss = loss
        self.huber_slope = huber_slope
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __setstate__(self, state: dict) -> None:
        # pickles of latbench-predictor/1 kept the fitted RidgeCV itself (trust_file loading)
        if "ridge_" in state and "ridge_coef_" not in state:
            ridge = state.pop("ridge_")
            state["ridge_coef_"] = None if ridge is None else np.asarray(ridge.coef_, np.float64)
            state["ridge_intercept_"] = None if ridge is None else float(ridge.intercept_)
        super().__setstate__(state)

    def _validate_params(self) -> None:
        if self.n_estimators < 1 or self.max_depth < 1 or not 0 < self.learning_rate <= 1:
            raise PredictorError("n_estimators and max_depth must be ≥ 1, learning_rate in (0, 1]")
        if self.loss not in _OBJECTIVES:
            raise PredictorError(f"unknown loss {self.loss!r}: choose {', '.join(_OBJECTIVES)}")
        if self.huber_slope <= 0:
            raise PredictorError(f"huber_slope must be > 0, got {self.huber_slope}")
        if self.linear_base not in (True, False, "auto"):
            raise PredictorError(f"linear_base must be True, False or 'auto', got {self.linear_base!r}")

    def _xgb_params(self) -> dict:
        extra = {"huber_slope": self.huber_slope} if self.loss == "huber" else {}
        return dict(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                    max_depth=self.max_depth, subsample=self.subsample,
                    colsample_bytree=self.colsample_bytree,
                    min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda,
                    objective=_OBJECTIVES[self.loss], **extra)

    def _base(self, X: np.ndarray) -> np.ndarray:
        if self.ridge_coef_ is None:
            return np.zeros(len(X))
        # what Ridge.predict computes, from the kept coefficients (saved without pickling)
        return ((X[:, self.keep_] - self.mean_) / self.scale_) @ self.ridge_coef_ \
            + self.ridge_intercept_

    def _fit_matrix(self, X: np.ndarray, t: np.ndarray, linear_base: bool) -> None:
        self.ridge_coef_ = self.ridge_intercept_ = None
        if linear_base and len(t) >= 3:
            sd = X.std(axis=0)
            self.keep_ = sd > 0
            self.mean_, self.scale_ = X[:, self.keep_].mean(axis=0), sd[self.keep_]
            ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(
                (X[:, self.keep_] - self.mean_) / self.scale_, t)
            self.ridge_coef_ = np.asarray(ridge.coef_, dtype=np.float64)
            self.ridge_intercept_ = float(ridge.intercept_)
        resid = t - self._base(X)
        # Start the trees at the median: robust losses have bounded gradients and would take
        # many rounds to walk there from XGBoost's default start.
        params = dict(self._xgb_params(), base_score=float(np.median(resid)))
        self.booster_ = _xgb(params, self.random_state, self.n_jobs).fit(X, resid)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self._base(X) + self.booster_.predict(X)

    def _choose_base(self, X: np.ndarray, t: np.ndarray) -> tuple[bool, dict[bool, float]]:
        """``linear_base="auto"``: K-fold CV on the training rows (never anything else)."""
        if len(t) < 5 * _AUTO_FOLDS:
            return True, {}
        folds = KFold(_AUTO_FOLDS, shuffle=True, random_state=self.random_state).split(X)
        hits = {True: [], False: []}
        for a, b in folds:
            for option in (True, False):
                self._fit_matrix(X[a], t[a], option)
                err = self._raw(X[b]) - t[b]
                rel = np.abs(np.expm1(err)) if self.log_target else np.abs(err / t[b])
                hits[option].append(float(np.mean(rel <= 0.10)))
        score = {k: float(np.mean(v)) for k, v in hits.items()}
        return score[True] >= score[False], score

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        M = model_matrix(batch)
        self.feature_names_ = list(M.columns)
        X = M.to_numpy(dtype=np.float64)
        t = np.log(y) if self.log_target else y
        self.base_cv_scores_: dict[bool, float] = {}
        use = self.linear_base
        if use == "auto":
            use, self.base_cv_scores_ = self._choose_base(X, t)
        self.linear_base_ = bool(use)
        self._fit_matrix(X, t, self.linear_base_)

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        t = self._raw(model_matrix(batch).to_numpy(dtype=np.float64))
        return np.exp(t) if self.log_target else t


#: Folds of the ``linear_base="auto"`` choice.
_AUTO_FOLDS = 3


class GBMLayerPredictor(LatencyPredictor):
    """Additive per-layer XGBoost: latency = α·Σ f(layer) + β (see the module docstring).

    Parameters
    ----------
    n_rounds : int
        Back-fitting rounds (≥ 1).
    layer_latency : pandas.DataFrame, optional
        Layers measured alone: ``latency_ms`` plus the layer columns; used as extra rows.
    n_estimators, learning_rate, max_depth, subsample, colsample_bytree, min_child_weight
        XGBoost's parameters.
    n_jobs, random_state
        Threads and seed.

    Attributes
    ----------
    alpha_, beta_ : float
        Calibration of the summed layer predictions (β in ms).
    """

    def __init__(self, *, n_rounds: int = 3, layer_latency: pd.DataFrame | None = None,
                 n_estimators: int = 300, learning_rate: float = 0.1, max_depth: int = 6,
                 subsample: float = 0.8, colsample_bytree: float = 1.0,
                 min_child_weight: float = 1.0, n_jobs: int = 1, random_state: int = 0) -> None:
        self.n_rounds = n_rounds
        self.layer_latency = layer_latency
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self) -> None:
        if self.n_rounds < 1:
            raise PredictorError(f"n_rounds must be ≥ 1, got {self.n_rounds}")

    def _new_model(self):
        return _xgb(dict(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                         max_depth=self.max_depth, subsample=self.subsample,
                         colsample_bytree=self.colsample_bytree,
                         min_child_weight=self.min_child_weight),
                    self.random_state, self.n_jobs)

    def _layer_sums(self, batch: LayerBatch, model) -> tuple[np.ndarray, np.ndarray]:
        batch.require_layers("gbm-layer")
        if len(batch.frame) == 0:
            return np.zeros(0), np.zeros(batch.n_models)
        p = np.exp(model.predict(layer_matrix(batch.frame).to_numpy(dtype=np.float64)))
        return p, np.bincount(batch.group, weights=p, minlength=batch.n_models)[: batch.n_models]

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        batch.require_layers("gbm-layer")
        if len(batch.frame) == 0:
            raise PredictorError("the training models have no layers")
        L = layer_matrix(batch.frame).to_numpy(dtype=np.float64)
        g = batch.group
        extra_X, extra_t = np.zeros((0, L.shape[1])), np.zeros(0)
        if self.layer_latency is not None and len(self.layer_latency):
            ll = self.layer_latency
            extra_X = layer_matrix(ll).to_numpy(dtype=np.float64)
            extra_t = np.log(ll["latency_ms"].to_numpy(dtype=np.float64))
        w = layer_cost_proxy(batch.frame) + 1.0
        for _ in range(self.n_rounds):
            share = w / np.bincount(g, weights=w, minlength=batch.n_models)[g]
            target = np.log(y[g] * share)
            model = self._new_model().fit(np.vstack([L, extra_X]), np.concatenate([target, extra_t]))
            w = np.exp(model.predict(L))
        self.booster_ = model
        _, s = self._layer_sums(batch, model)
        if len(y) >= 3:
            lr = LinearRegression().fit(s.reshape(-1, 1), y)
            self.alpha_, self.beta_ = float(lr.coef_[0]), float(lr.intercept_)
        else:
            self.alpha_, self.beta_ = 1.0, 0.0

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        _, s = self._layer_sums(batch, self.booster_)
        return self.alpha_ * s + self.beta_

    def predict_layers(self, X) -> np.ndarray:
        """Each layer's estimated share of latency in ms (before the α, β calibration)."""
        from latbench.predictor.encode import as_layer_batch

        self._check_fitted()
        p, _ = self._layer_sums(as_layer_batch(X), self.booster_)
        return p
