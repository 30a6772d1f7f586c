"""What every latency predictor shares: input checks, fitted-state checks, save and load.

A predictor is a scikit-learn regressor whose ``X`` is a list of models' layer tables
(see :func:`latbench.predictor.encode.as_layer_batch` for every accepted form) and whose
``y`` is latency in milliseconds. Fitting records
:data:`latbench.data.features.FEATURE_SCHEMA_VERSION`; a predictor made for another schema
refuses to predict or load, because its features would silently mean something else.

Every predictor also records what it was trained on (``train_range_``: the models' MACs,
the layer kinds and graphs of their tables, their latencies) and, on ``predict``, says which
models lie outside it (``last_out_of_range_``, an :class:`~latbench.exceptions.
OutOfRangeWarning`): a prediction there is an extrapolation. And a latency is positive:
``predict`` never returns one below :data:`FLOOR_SHARE` of the fastest training latency
(FLOP-linear models, whose lines cross zero below their data, extrapolate proportionally
there instead — see :mod:`latbench.predictor.flops`).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from latbench.data.features import FEATURE_SCHEMA_VERSION
from latbench.exceptions import (
    NotFittedPredictorError, OutOfRangeWarning, PredictorError, UserInputError,
)
from latbench.predictor.encode import OP_KINDS, LayerBatch, as_layer_batch, layer_batch_sizes

__all__ = [
    "NotFittedPredictorError",
    "LatencyPredictor",
    "check_predictor",
    "save_predictor",
    "load_predictor",
    "SAVE_FORMAT",
    "training_range",
    "out_of_range",
    "FLOOR_SHARE",
    "MACS_MARGIN",
]

#: No prediction is below this share of the fastest latency the predictor was trained on.
FLOOR_SHARE = 1e-3

#: A model's MACs count as inside the training range within this relative margin of it.
MACS_MARGIN = 0.10

#: Identifies a saved predictor file (bumped if the envelope changes).
SAVE_FORMAT = "latbench-predictor/1"



class LatencyPredictor(RegressorMixin, BaseEstimator):
    """Base class: shared validation of ``X``/``y`` and of the fitted state.

    Subclasses implement ``_fit(batch, y)`` and ``_predict(batch) -> ndarray`` in ms.
    """

    def fit(self, X: Any, y: Any, *, device: str | None = None) -> "LatencyPredictor":
        """Fit on models' layer tables ``X`` and their latencies ``y`` (ms); return ``self``.

        ``device`` names the device the latencies were measured on; it is kept as
        ``device_`` (with ``feature_schema_``, the schema of the tables) and checked by
        :func:`check_predictor` wherever the predictor is used.

        Raises
        ------
        PredictorError
            If ``X`` is malformed, lengths differ, or a latency is not finite and positive.
        """
        batch = as_layer_batch(X)
        y_arr = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(y_arr) != batch.n_models:
            raise PredictorError(f"X has {batch.n_models} models but y has {len(y_arr)} latencies")
        if not np.all(np.isfinite(y_arr)) or np.any(y_arr <= 0):
            raise PredictorError("every latency in y must be a finite positive number of ms")
        self._validate_params()
        self.train_range_ = training_range(batch, y_arr)
        self._fit(batch, y_arr)
        self.feature_schema_ = FEATURE_SCHEMA_VERSION
        self.device_ = device
        self.n_train_ = int(batch.n_models)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency in ms of each model in ``X`` (always positive).

        Models outside what the predictor was trained on are listed in
        ``last_out_of_range_`` (one list of reasons per model, empty when inside) and
        announced by one :class:`~latbench.exceptions.OutOfRangeWarning`.

        Raises
        ------
        NotFittedPredictorError
            If the predictor has not been fitted.
        PredictorError
            If it was fitted under another feature schema, or ``X`` is malformed.
        """
        self._check_fitted()
        batch = as_layer_batch(X)
        raw = np.asarray(self._predict(batch), dtype=np.float64)
        rng = getattr(self, "train_range_", None)
        floor = FLOOR_SHARE * rng["latency_ms"][0] if rng else 0.0
        out = np.where(np.isfinite(raw) & (raw > floor), raw, max(floor, np.finfo(float).tiny))
        self.last_out_of_range_ = out_of_range(rng, batch) if rng else [[] for _ in range(len(out))]
        n_out = sum(1 for r in self.last_out_of_range_ if r)
        if n_out:
            first = next(r for r in self.last_out_of_range_ if r)
            warnings.warn(OutOfRangeWarning(
                f"{n_out} of {len(out)} model(s) lie outside what this {type(self).__name__} was "
                f"trained on ({'; '.join(first)}{'; …' if n_out > 1 else ''}): their predictions "
                "are extrapolations"), stacklevel=2)
        return out

    def _check_fitted(self) -> None:
        check_predictor(self)

    def _validate_params(self) -> None:
        """Check constructor arguments (sklearn style: in ``fit``, not ``__init__``)."""

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, batch: LayerBatch) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def training_range(batch: LayerBatch, y: np.ndarray) -> dict[str, Any]:
    """What a predictor is trained on, as JSON-able values (its ``train_range_``).

    Returns
    -------
    dict
        ``macs``: [min, max] of the models' MACs per sample; ``batch``: [min, max] of their
        batch sizes; ``latency_ms``: [min, max] of ``y``;
        ``kinds``: the layer kinds (``op`` values) of the tables, or of
        :data:`~latbench.predictor.encode.OP_KINDS` for a features-only batch;
        ``graphs``: the ``graph`` labels of the tables (empty when unknown).
    """
    macs, kinds, graphs, bsz = _batch_summary(batch)
    return {"macs": [float(macs.min()), float(macs.max())] if len(macs) else [0.0, 0.0],
            "batch": [int(bsz.min()), int(bsz.max())] if len(bsz) else [1, 1],
            "latency_ms": [float(np.min(y)), float(np.max(y))] if len(y) else [0.0, 0.0],
            "kinds": sorted(set().union(*kinds)) if kinds else [],
            "kinds_from": "features" if batch.features_only else "tables",
            "graphs": sorted(set().union(*graphs)) if graphs else []}


def _batch_summary(batch: LayerBatch) -> tuple[np.ndarray, list[set[str]], list[set[str]], np.ndarray]:
    """Per model: MACs per sample, the set of layer kinds, the set of graph labels, batch."""
    n = batch.n_models
    if batch.features_only:
        f = batch.features
        macs = np.expm1(f["log_macs"].to_numpy(dtype=float))
        bsz = np.rint(np.exp(f["log_batch"].to_numpy(dtype=float)))
        kinds = [set() for _ in range(n)]
        for k in OP_KINDS:
            col = f"n_{k}"
            if col in f.columns:
                for i in np.flatnonzero(f[col].to_numpy() > 0):
                    kinds[int(i)].add(k)
        return macs, kinds, [set() for _ in range(n)], bsz
    fr, g = batch.frame, batch.group
    rows_b = layer_batch_sizes(fr)
    macs = np.bincount(g, weights=fr["macs"].to_numpy(dtype=float) / rows_b, minlength=n)[:n] \
        if len(g) else np.zeros(n)
    bsz = np.ones(n)
    if len(g):
        np.maximum.at(bsz, g, rows_b)
    kinds = [set() for _ in range(n)]
    graphs = [set() for _ in range(n)]
    if len(g):
        ops = fr["op"].astype(str).to_numpy()
        gl = (fr["graph"].astype(object).where(fr["graph"].notna(), "torch").astype(str).to_numpy()
              if "graph" in fr.columns else np.full(len(g), "torch", dtype=object))
        pairs = pd.DataFrame({"g": g, "op": ops, "graph": gl}).drop_duplicates()
        for gi, op in zip(pairs["g"].tolist(), pairs["op"].tolist()):
            kinds[gi].add(op)
        for gi, lab in pairs[["g", "graph"]].drop_duplicates().itertuples(index=False):
            graphs[gi].add(lab)
    return macs, kinds, graphs, bsz


def out_of_range(train_range: dict[str, Any] | LatencyPredictor, X: Any) -> list[list[str]]:
    """Why each model of ``X`` lies outside ``train_range`` (a predictor's ``train_range_``,
    or the fitted predictor itself); an empty list for a model inside.

    A model is outside when its MACs per sample fall more than :data:`MACS_MARGIN` below the
    smallest or above the largest trained, when its batch size was never trained on, when its table holds a layer kind no training table held,
    or when its table describes another graph (``graph``: e.g. an ONNX Runtime graph for a
    predictor trained on PyTorch module tables).
    """
    rng = getattr(train_range, "train_range_", train_range)
    if not rng:
        raise NotFittedPredictorError("this predictor records no training range; fit it first")
    batch = as_layer_batch(X)
    macs, kinds, graphs, bsz = _batch_summary(batch)
    lo, hi = rng["macs"]
    blo, bhi = rng.get("batch", [1, 1])
    seen_k, seen_g = set(rng["kinds"]), set(rng["graphs"])
    # Where either side knows only the encoder's kinds (features-only), compare those.
    coarse = rng.get("kinds_from") == "features" or batch.features_only
    if coarse:
        seen_k = {o if o in OP_KINDS else "other" for o in seen_k}
    out: list[list[str]] = []
    for i in range(batch.n_models):
        why = []
        if macs[i] < lo * (1 - MACS_MARGIN):
            why.append(f"{macs[i]:.4g} MACs, below the smallest trained ({lo:.4g})")
        elif macs[i] > hi * (1 + MACS_MARGIN):
            why.append(f"{macs[i]:.4g} MACs, above the largest trained ({hi:.4g})")
        if not blo <= bsz[i] <= bhi:
            why.append(f"batch {int(bsz[i])}, trained on batch "
                       f"{blo if blo == bhi else f'{blo}–{bhi}'}")
        k = {o if o in OP_KINDS else "other" for o in kinds[i]} if coarse else kinds[i]
        new = sorted(k - seen_k)
        if new:
            why.append(f"layer kinds never trained on: {', '.join(new)}")
        if seen_g and graphs[i] - seen_g:
            why.append(f"graph {', '.join(sorted(graphs[i] - seen_g))}, trained on "
                       f"{', '.join(sorted(seen_g))}")
        out.append(why)
    return out


def check_predictor(predictor: Any, device: str | None = None) -> list[str]:
    """The one check of a predictor before use: fitted, fitted on this latbench's feature
    schema, and (when ``device`` is given) fitted for that device.

    A predictor records both as scikit-learn style fitted attributes: ``feature_schema_``
    and ``device_`` (``None`` when unknown). Any object with ``predict`` and these attributes
    passes; nothing else is probed.

    Returns
    -------
    list of str
        Notes for reports (e.g. that the predictor does not record its device).

    Raises
    ------
    PredictorError
        If it has no ``predict``, or was fitted for another schema or another device.
    NotFittedPredictorError
        If it is not fitted.
    """
    if not callable(getattr(predictor, "predict", None)):
        raise PredictorError(f"{type(predictor).__name__} is not a latency predictor "
                             "(no predict method)")
    schema = getattr(predictor, "feature_schema_", None)
    if schema is None:
        raise NotFittedPredictorError(
            f"this {type(predictor).__name__} is not fitted yet; call fit(X, y) first")
    if schema != FEATURE_SCHEMA_VERSION:
        raise PredictorError(
            f"predictor was fitted with feature schema {schema}, this latbench computes schema "
            f"{FEATURE_SCHEMA_VERSION}; retrain it")
    fitted_for = getattr(predictor, "device_", None)
    if device is None:
        return []
    if fitted_for is None:
        return [f"the predictor does not record its device; it was assumed to be {device!r}"]
    if fitted_for != device:
        raise PredictorError(
            f"the predictor was trained for device {fitted_for!r}, not {device!r}; train one on "
            f"{device!r} data (bench predictor train)")
    return []


def save_predictor(predictor: LatencyPredictor, path: str | Path, *, device: str,
                   kind: str | None = None) -> Path:
    """Write a fitted predictor with its feature-schema version and device name.

    Raises
    ------
    NotFittedPredictorError
        If the predictor is not fitted.
    """
    check_predictor(predictor, device)
    if predictor.device_ is None:
        predictor.device_ = device
    envelope = {
        "format": SAVE_FORMAT,
        "feature_schema_version": predictor.feature_schema_,
        "device": device,
        "kind": kind,
        "predictor": predictor,
    }
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as fh:
        pickle.dump(envelope, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return p


def load_predictor(path: str | Path, *, device: str | None = None) -> tuple[LatencyPredictor, dict]:
    """Read a predictor written by :func:`save_predictor`.

    Parameters
    ----------
    path : path
        The file. It is unpickled: load only files you trust.
    device : str, optional
        When given, refuse a predictor trained for another device.

    Returns
    -------
    (predictor, info)
        ``info`` holds ``device``, ``kind`` and ``feature_schema_version``.

    Raises
    ------
    UserInputError
        If the file is missing or not a latbench predictor.
    PredictorError
        If it was made for another feature schema or another device.
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"predictor file {str(p)!r} does not exist")
    try:
        with open(p, "rb") as fh:
            env = pickle.load(fh)
    except Exception as exc:  # unpickling raises many types for a foreign file
        raise UserInputError(f"{str(p)!r} is not a latbench predictor file: {exc}") from None
    if not isinstance(env, dict) or env.get("format") != SAVE_FORMAT:
        raise UserInputError(f"{str(p)!r} is not a latbench predictor file")
    if env["feature_schema_version"] != FEATURE_SCHEMA_VERSION:
        raise PredictorError(
            f"predictor {str(p)!r} was trained on feature schema {env['feature_schema_version']}, "
            f"this latbench computes schema {FEATURE_SCHEMA_VERSION}; retrain it")
    if device is not None and env["device"] != device:
        raise PredictorError(
            f"predictor {str(p)!r} was trained for device {env['device']!r}, not {device!r}")
    pred = env["predictor"]
    if getattr(pred, "device_", None) is None:  # files written before predictors kept it
        pred.device_ = env["device"]
    if getattr(pred, "feature_schema_", None) is None:
        pred.feature_schema_ = getattr(pred, "feature_schema_version_", None)
    check_predictor(pred, device)
    info = {k: env[k] for k in ("device", "kind", "feature_schema_version")}
    return pred, info
