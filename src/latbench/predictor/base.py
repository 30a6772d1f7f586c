"""What every latency predictor shares: input checks, fitted-state checks, save and load.

A predictor is a scikit-learn regressor whose ``X`` is a list of models' layer tables
(see :func:`latbench.predictor.encode.as_layer_batch` for every accepted form) and whose
``y`` is latency in milliseconds. Fitting records
:data:`latbench.data.features.FEATURE_SCHEMA_VERSION`; a predictor made for another schema
refuses to predict or load, because its features would silently mean something else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from latbench.data.features import FEATURE_SCHEMA_VERSION
from latbench.exceptions import NotFittedPredictorError, PredictorError, UserInputError
from latbench.predictor.encode import LayerBatch, as_layer_batch

__all__ = [
    "NotFittedPredictorError",
    "LatencyPredictor",
    "check_predictor",
    "save_predictor",
    "load_predictor",
    "SAVE_FORMAT",
]

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
        self._fit(batch, y_arr)
        self.feature_schema_ = FEATURE_SCHEMA_VERSION
        self.device_ = device
        self.n_train_ = int(batch.n_models)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency in ms of each model in ``X``.

        Raises
        ------
        NotFittedPredictorError
            If the predictor has not been fitted.
        PredictorError
            If it was fitted under another feature schema, or ``X`` is malformed.
        """
        self._check_fitted()
        return np.asarray(self._predict(as_layer_batch(X)), dtype=np.float64)

    def _check_fitted(self) -> None:
        check_predictor(self)

    def _validate_params(self) -> None:
        """Check constructor arguments (sklearn style: in ``fit``, not ``__init__``)."""

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, batch: LayerBatch) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


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
