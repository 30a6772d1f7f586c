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

import shlex
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
from latbench.predictor import _persist
from latbench.predictor.encode import OP_KINDS, LayerBatch, as_layer_batch, layer_batch_sizes

__all__ = [
    "NotFittedPredictorError",
    "LatencyPredictor",
    "check_predictor",
    "save_predictor",
    "load_predictor",
    "convert_predictor",
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

#: Identifies a saved predictor file (bumped if the envelope changes); ``/1`` was a pickle.
SAVE_FORMAT = _persist.FORMAT


#: Fitted-looking attributes that describe the last call, not the fit: never saved.
_TRANSIENT = frozenset({"last_out_of_range_"})


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

    # ------------------------------------------------------------------ saved state
    def _saved_params(self) -> dict[str, Any]:
        """The constructor parameters :func:`save_predictor` writes (``get_params(deep=False)``;
        a predictor whose parameters hold training data overrides this to leave it out)."""
        return self.get_params(deep=False)

    def _get_state(self) -> dict[str, Any]:
        """The fitted state :func:`save_predictor` writes (constructor parameters go apart).

        By default every public fitted attribute (a name ending in ``_``, scikit-learn's
        convention), ``feature_schema_``, ``device_`` and ``train_range_`` included, but not
        ``last_out_of_range_`` (about the last call to :meth:`predict`). The values may be
        ``None``, bools, ints, floats, strings, lists, tuples, dicts of these, numpy arrays
        and scalars (not of object dtype), pandas DataFrames, XGBoost scikit-learn models and
        other latency predictors — what the file format stores without pickling (see
        :mod:`latbench.predictor._persist`). A predictor holding anything else overrides this
        and :meth:`_set_state` to turn it into such values and back.

        Returns
        -------
        dict
            Attribute name → value.
        """
        return {k: v for k, v in vars(self).items()
                if k.endswith("_") and not k.startswith("_") and k not in _TRANSIENT}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_get_state` returned, on a predictor built from the saved
        constructor parameters.

        Raises
        ------
        ValueError
            (``FileFormatError``) If a name is not a public fitted-attribute name.
        """
        for k, v in state.items():
            if not (isinstance(k, str) and k.isidentifier() and k.endswith("_")
                    and not k.startswith("_")):
                raise _persist.FileFormatError(f"its state names {k!r}, which is not a fitted attribute")
            setattr(self, k, v)


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
    """Write a fitted predictor with its feature-schema version, device and kind.

    The file is a zip holding a JSON envelope (format, schema, device, kind, class,
    constructor parameters, fitted state), ``.npy`` arrays and XGBoost JSON models — data
    only, so :func:`load_predictor` never runs code from it (the layout is described in
    :mod:`latbench.predictor._persist`). It is written beside ``path`` and renamed over it.

    Parameters
    ----------
    predictor : LatencyPredictor
        Fitted; its state must be what :meth:`LatencyPredictor._get_state` can hold.
    path : path
        The file to write (its folder is created).
    device : str
        The device it predicts for; recorded as ``device_`` when the predictor has none.
    kind : str, optional
        The registry name (``bench predictor --kind``), kept for reports.

    Returns
    -------
    Path

    Raises
    ------
    NotFittedPredictorError
        If the predictor is not fitted.
    PredictorError
        If it was fitted for another device, or holds state the format cannot store.
    UserInputError
        If the file cannot be written (a folder in the way, no permission, disk full).
    """
    from latbench import __version__

    check_predictor(predictor, device)
    if predictor.device_ is None:
        predictor.device_ = device
    envelope = {
        "format": _persist.FORMAT,
        "latbench_version": __version__,
        "feature_schema_version": predictor.feature_schema_,
        "device": device,
        "kind": kind,
    }
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        _persist.write_file(p, envelope, predictor)
    except _persist.FileFormatError as exc:
        raise PredictorError(f"cannot save this {type(predictor).__name__}: {exc}") from None
    except OSError as exc:
        raise UserInputError(f"cannot write predictor file {str(p)!r}: {exc.strerror or exc}"
                             ) from None
    return p


def load_predictor(path: str | Path, *, device: str | None = None,
                   trust_file: bool = False) -> tuple[LatencyPredictor, dict]:
    """Read a predictor written by :func:`save_predictor`.

    Reading runs no code from the file. Files of latbench's older pickle format
    (``latbench-predictor/1``) could run arbitrary code when unpickled, so they are refused
    unless ``trust_file=True`` (the CLI's ``--trust-file``); save such a predictor again
    (``bench predictor convert``) to get the safe format.

    Parameters
    ----------
    path : path
        The file.
    device : str, optional
        When given, refuse a predictor trained for another device.
    trust_file : bool
        Unpickle an old-format file. Only for files you made yourself or otherwise trust.

    Returns
    -------
    (predictor, info)
        ``info`` holds ``device``, ``kind``, ``feature_schema_version`` and ``format``.

    Raises
    ------
    UserInputError
        If the file is missing, malformed or not a latbench predictor, or is an old pickle
        and ``trust_file`` is false.
    PredictorError
        If it was made for another feature schema or another device.
    """
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"predictor file {str(p)!r} does not exist")
    if not p.is_file():
        raise UserInputError(f"predictor file {str(p)!r} is not a file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UserInputError(f"cannot read predictor file {str(p)!r}: {exc.strerror}") from None
    if head == b"PK\x03\x04":
        return _load_zip(p, device)
    if head[:1] == b"\x80":  # pickle protocol 2 and later: latbench-predictor/1
        if not trust_file:
            raise UserInputError(
                f"{str(p)!r} is a pickled predictor (an older latbench format), and unpickling "
                "can run any code the file holds; if you made it yourself, convert it once with "
                f"'bench predictor convert {shlex.quote(str(p))} --out NEW.predictor --trust-file' "
                "(or load it as is with --trust-file / trust_file=True); otherwise retrain it "
                "with 'bench predictor train'")
        return _load_pickle(p, device)
    raise UserInputError(f"{str(p)!r} is not a latbench predictor file "
                         f"({'empty' if not head else 'neither a zip nor a pickle'}); write one "
                         "with 'bench predictor train'")


def _check_envelope(p: Path, env: dict, device: str | None) -> dict:
    fmt = env.get("format")
    if fmt != _persist.FORMAT:
        if isinstance(fmt, str) and fmt.startswith("latbench-predictor/"):
            raise UserInputError(f"{str(p)!r} is a predictor file of format {fmt!r}; this "
                                 f"latbench reads {_persist.FORMAT!r}: upgrade latbench or retrain")
        raise UserInputError(f"{str(p)!r} is not a latbench predictor file (no format mark)")
    schema, dev, kind = env.get("feature_schema_version"), env.get("device"), env.get("kind")
    if not (isinstance(schema, int) and isinstance(dev, str) and (kind is None or isinstance(kind, str))):
        raise UserInputError(f"{str(p)!r} is a damaged predictor file: its schema, device or "
                             "kind is missing; retrain it")
    if schema != FEATURE_SCHEMA_VERSION:
        raise PredictorError(
            f"predictor {str(p)!r} was trained on feature schema {schema}, "
            f"this latbench computes schema {FEATURE_SCHEMA_VERSION}; retrain it")
    if device is not None and dev != device:
        raise PredictorError(
            f"predictor {str(p)!r} was trained for device {dev!r}, not {device!r}")
    return {"device": dev, "kind": kind, "feature_schema_version": schema, "format": fmt}


def _load_zip(p: Path, device: str | None) -> tuple[LatencyPredictor, dict]:
    import zipfile

    try:
        with zipfile.ZipFile(p) as zf:
            doc = _persist.read_envelope(zf)
            info = _check_envelope(p, doc, device)
            pred = _persist.read_file(zf, doc)
    except _persist.FileFormatError as exc:
        raise UserInputError(f"{str(p)!r} is a damaged or foreign predictor file: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        # a truncated zip: no directory at its end
        raise UserInputError(f"{str(p)!r} is a damaged predictor file "
                             f"({_persist._first_line(exc)}); retrain or copy it again") from None
    if getattr(pred, "device_", None) != info["device"] or \
            getattr(pred, "feature_schema_", None) != info["feature_schema_version"]:
        raise UserInputError(f"{str(p)!r} is a damaged predictor file: its state disagrees with "
                             "its envelope about device or feature schema")
    check_predictor(pred, device)
    return pred, info


def _load_pickle(p: Path, device: str | None) -> tuple[LatencyPredictor, dict]:
    """The old format: a pickled dict (``latbench-predictor/1``). Runs the file's code."""
    import pickle

    try:
        with open(p, "rb") as fh:
            env = pickle.load(fh)
    except Exception as exc:  # unpickling raises many types for a foreign file
        raise UserInputError(f"{str(p)!r} is not a latbench predictor file: {exc}") from None
    if not isinstance(env, dict) or env.get("format") != "latbench-predictor/1" \
            or not isinstance(env.get("predictor"), LatencyPredictor):
        raise UserInputError(f"{str(p)!r} is not a latbench predictor file")
    info = _check_envelope(p, dict(env, format=SAVE_FORMAT), device)
    info["format"] = "latbench-predictor/1"
    pred = env["predictor"]
    if getattr(pred, "device_", None) is None:  # files written before predictors kept it
        pred.device_ = env["device"]
    if getattr(pred, "feature_schema_", None) is None:
        pred.feature_schema_ = getattr(pred, "feature_schema_version_", None)
    check_predictor(pred, device)
    return pred, info



def convert_predictor(old: str | Path, out: str | Path, *, trust_file: bool = False) -> dict:
    """Read a predictor file (an old pickle needs ``trust_file``) and write it to ``out`` in
    the current format.

    Returns
    -------
    dict
        ``info`` of the written file (as :func:`load_predictor` returns it).

    Raises
    ------
    UserInputError, PredictorError
        As :func:`load_predictor` and :func:`save_predictor`.
    """
    pred, info = load_predictor(old, trust_file=trust_file)
    save_predictor(pred, out, device=info["device"], kind=info["kind"])
    return dict(info, format=SAVE_FORMAT)
