"""Train on N measurements of one device, test on all the rest; learning curves; CV tuning.

Everything here works on a :class:`latbench.data.dataset.Dataset` and returns data
(dataclasses, DataFrames); rendering lives in :mod:`latbench.predictor.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from latbench.exceptions import UserInputError
from latbench.predictor.encode import LayerBatch, as_layer_batch
from latbench.predictor.metrics import regression_metrics
from latbench.predictor.registry import make_predictor

__all__ = [
    "DeviceData",
    "Evaluation",
    "device_data",
    "split_indices",
    "new_predictor",
    "train_predictor",
    "evaluate_predictor",
    "learning_curve",
    "cv_select",
    "MIN_TEST_MEASUREMENTS",
    "MIN_TRAIN_MEASUREMENTS",
    "small_data_notes",
    "device_features",
    "evaluate_transfer",
    "train_transfer",
    "TRANSFER_KINDS",
]

#: Predictor kinds ``--source-devices`` works with (the kind of the source devices' models).
TRANSFER_KINDS = ("gbm",)

#: Fewer test measurements than this and the metrics say little: ±10 % moves in steps of a
#: tenth or more, and R² and the rank correlations of a handful of points swing between
#: seeds (of one point they are undefined, NaN).
MIN_TEST_MEASUREMENTS = 10

#: Learned predictors (``gbm``, ``gbm-layer``, ``gcn``) fitted on fewer measurements than this
#: extrapolate wildly (a GBM trained on 11 models predicted negative latencies); the MAC
#: lines (``flops``) and the lookup table (``lut``) need only a few.
MIN_TRAIN_MEASUREMENTS = 30

_FEW_PARAMETER_KINDS = ("flops", "flops-clustered", "lut")


def small_data_notes(device: str, kind: str, n_train: int, n_test: int | None = None) -> list[str]:
    """What to tell a user whose training or test set is too small to trust (may be empty).

    Parameters
    ----------
    device, kind : str
        For the message.
    n_train : int
        Measurements trained on.
    n_test : int, optional
        Measurements tested on (``None``: training only, as ``bench predictor train``).
    """
    notes = []
    if n_test is not None and n_test < MIN_TEST_MEASUREMENTS:
        notes.append(
            f"{device}: tested on only {n_test} measurement(s) (trained on {n_train}): metrics "
            f"from fewer than {MIN_TEST_MEASUREMENTS} say little (NaN for R² and the rank "
            f"correlations of a single one); measure more variants (e.g. `bench sweep --device "
            f"{device} --random-plans 30`) or train on fewer (--train-size)")
    if kind not in _FEW_PARAMETER_KINDS and n_train < MIN_TRAIN_MEASUREMENTS:
        notes.append(
            f"{kind} was trained on only {n_train} measurement(s) of {device}: a learned "
            f"predictor needs {MIN_TRAIN_MEASUREMENTS} or more to be trusted; measure more "
            f"variants (`bench sweep --device {device} --random-plans 30`) or use --kind flops "
            "or lut")
    return notes


@dataclass(frozen=True)
class DeviceData:
    """The measurements of one device with their layer tables, ready for predictors.

    Attributes
    ----------
    device : str
    models : pandas.DataFrame
        Rows of ``Dataset.models`` for this device (fresh 0-based index).
    batch : LayerBatch
        Layer tables in the order of ``models``.
    layer_latency : pandas.DataFrame
        Per-layer measurements of this device (may be empty).
    """

    device: str
    models: pd.DataFrame
    batch: LayerBatch
    layer_latency: pd.DataFrame

    @property
    def y(self) -> np.ndarray:
        """Measured latency in ms."""
        return self.models["latency_ms"].to_numpy(dtype=np.float64)


@dataclass
class Evaluation:
    """One train/test evaluation: metrics plus the test predictions they came from."""

    kind: str
    device: str
    seed: int
    n_train: int
    n_test: int
    metrics: dict[str, float]
    y_test: np.ndarray = field(repr=False)
    y_pred: np.ndarray = field(repr=False)
    test_rows: np.ndarray = field(repr=False)
    #: Warnings about the data (too few test or training measurements; :func:`small_data_notes`).
    notes: list[str] = field(default_factory=list)
    source_devices: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Metrics plus ``kind, device, seed, n_train, n_test`` (and ``source_devices`` for a
        transfer) as one flat dict."""
        out = {**self.metrics, "n_train": self.n_train, "n_test": self.n_test,
               "kind": self.kind, "device": self.device, "seed": self.seed}
        if self.source_devices:
            out["source_devices"] = list(self.source_devices)
        return out


def device_data(dataset, device: str) -> DeviceData:
    """Select one device's measurements and their layer tables from a ``Dataset``.

    Raises
    ------
    UserInputError
        If the dataset has no measurement of ``device`` (the message lists devices).
    """
    models = dataset.models
    rows = models[models["device"] == device].reset_index(drop=True)
    if rows.empty:
        names = sorted(models["device"].unique().tolist())
        raise UserInputError(f"no measurements of device {device!r}; devices: "
                             f"{', '.join(names) or '(none)'}")
    uniq, inverse = np.unique(rows["variant_id"].to_numpy(dtype=np.int64), return_inverse=True)
    layers = dataset.layers[dataset.layers["variant_id"].isin(uniq)]
    base = as_layer_batch(layers.drop(columns=["layer_index"], errors="ignore")
                          .sort_values(["variant_id"], kind="stable"))
    # as_layer_batch numbers variants by first appearance, i.e. ascending id = ``uniq`` order.
    batch = base.take(inverse) if len(uniq) != len(rows) or not np.all(np.diff(
        rows["variant_id"].to_numpy()) > 0) else base
    ll = dataset.layer_latency
    ll = ll[ll["device"] == device].reset_index(drop=True) if len(ll) else ll
    return DeviceData(device, rows, batch, ll)


def split_indices(n: int, train_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split: ``train_size`` rows to train on, all the rest to test.

    ``None`` trains on everything (the test part is then empty).

    Raises
    ------
    UserInputError
        If ``train_size`` is not in 1…n−1 (or ``n`` for training on everything).
    """
    perm = np.random.default_rng(seed).permutation(n)
    if train_size is None:
        return np.sort(perm), np.zeros(0, dtype=np.int64)
    if not 1 <= train_size < n:
        raise UserInputError(f"--train-size must be between 1 and {n - 1} (the device has {n} "
                             f"measurements), got {train_size}")
    return np.sort(perm[:train_size]), np.sort(perm[train_size:])


def new_predictor(kind: str, data: DeviceData, params: dict | None = None, seed: int = 0):
    """An unfitted predictor of ``kind`` wired to ``data``'s per-layer table where it needs one."""
    kw = dict(params or {})
    if kind == "lut":
        kw.setdefault("table", data.layer_latency)
    elif kind == "gbm-layer" and len(data.layer_latency):
        kw.setdefault("layer_latency", data.layer_latency)
    p = make_predictor(kind, **kw)
    if "random_state" in p.get_params() and "random_state" not in kw:
        p.set_params(random_state=seed)
    return p


def train_predictor(dataset, *, device: str, kind: str, train_size: int | None = None,
                    seed: int = 0, params: dict | None = None):
    """Fit a predictor of ``kind`` on ``train_size`` seeded rows of ``device`` (all if None)."""
    data = device_data(dataset, device)
    tr, _ = split_indices(len(data.models), train_size, seed)
    return new_predictor(kind, data, params, seed).fit(data.batch.take(tr), data.y[tr],
                                                        device=device)


def _evaluate(data: DeviceData, kind: str, train_size: int, seed: int,
              params: dict | None) -> Evaluation:
    tr, te = split_indices(len(data.models), train_size, seed)
    pred = new_predictor(kind, data, params, seed).fit(data.batch.take(tr), data.y[tr],
                                                       device=data.device)
    y_pred = pred.predict(data.batch.take(te))
    y_test = data.y[te]
    return Evaluation(kind, data.device, seed, len(tr), len(te),
                      regression_metrics(y_test, y_pred), y_test, y_pred, te,
                      small_data_notes(data.device, kind, len(tr), len(te)))


def evaluate_predictor(dataset_or_data, *, device: str, kind: str, train_size: int,
                       seed: int = 0, params: dict | None = None) -> Evaluation:
    """Train on ``train_size`` seeded rows of ``device``, test on all the others.

    Parameters
    ----------
    dataset_or_data : Dataset or DeviceData
        Passing a :class:`DeviceData` skips re-selecting the device (for repeated calls).
    """
    data = dataset_or_data if isinstance(dataset_or_data, DeviceData) else \
        device_data(dataset_or_data, device)
    return _evaluate(data, kind, train_size, seed, params)


def learning_curve(dataset_or_data, *, device: str, kinds: Sequence[str],
                   sizes: Iterable[int], seeds: Iterable[int] = (0,),
                   params: dict[str, dict] | None = None) -> pd.DataFrame:
    """Metrics for every (kind, training size, seed): one row each.

    Sizes not below the number of measurements are skipped.
    """
    data = dataset_or_data if isinstance(dataset_or_data, DeviceData) else \
        device_data(dataset_or_data, device)
    rows = []
    for kind, n, seed in product(kinds, list(sizes), list(seeds)):
        if n >= len(data.models):
            continue
        rows.append(_evaluate(data, kind, n, seed, (params or {}).get(kind)).as_dict())
    return pd.DataFrame(rows)


def cv_select(kind: str, batch: LayerBatch, y: np.ndarray, grid: dict[str, Sequence[Any]],
              *, n_splits: int = 5, seed: int = 0, score: str = "acc10") -> tuple[dict, pd.DataFrame]:
    """Choose hyper-parameters by K-fold cross-validation on training data only.

    Returns
    -------
    (best_params, table)
        The grid point with the highest mean ``score`` and one row per grid point.
    """
    keys = list(grid)
    folds = list(KFold(n_splits, shuffle=True, random_state=seed).split(np.arange(len(y))))
    rows = []
    for values in product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        scores = []
        for a, b in folds:
            p = make_predictor(kind, **params).fit(batch.take(a), y[a])
            scores.append(regression_metrics(y[b], p.predict(batch.take(b)))[score])
        rows.append({**params, score: float(np.mean(scores))})
    table = pd.DataFrame(rows)
    best = table.sort_values(score, ascending=False, kind="stable").iloc[0]
    return {k: _py(best[k]) for k in keys}, table


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# --------------------------------------------------------------------------- transfer
def device_features(db_path, devices: Sequence[str], *,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, DeviceData]:
    """Each device's measurements with the model features of their layer tables.

    Devices whose measurements cover the same variants (one import or sweep: same build,
    same batch) are featurised once. The batches carry only model features
    (:meth:`~latbench.predictor.encode.LayerBatch.from_features`): what the ``gbm`` and
    transfer predictors read, at a fraction of the memory of the layer rows.

    Raises
    ------
    UserInputError
        If the database or a device is missing (the message lists the devices).
    """
    from pathlib import Path

    from latbench.data.dataset import load_dataset
    from latbench.data.store import Store

    p = Path(db_path)
    if not p.is_file():
        raise UserInputError(f"latency database {str(p)!r} does not exist")
    names = list(dict.fromkeys(devices))
    with Store(p) as store:
        known = set(store.devices()["name"].tolist())
        missing = [d for d in names if d not in known]
        if missing:
            raise UserInputError(f"device {missing[0]!r} is not in {str(p)!r}; devices: "
                                 f"{', '.join(sorted(known)) or '(none)'}")
        ids = {d: tuple(int(v) for (v,) in store.connection.execute(
            "SELECT m.variant_id FROM measurements m JOIN devices d ON d.id = m.device_id "
            "WHERE d.name = ? ORDER BY m.id", (d,))) for d in names}
    out: dict[str, DeviceData] = {}
    done: dict[tuple[int, ...], LayerBatch] = {}
    for i, d in enumerate(names):
        if ids[d] not in done:
            data = device_data(load_dataset(p, d), d)
            done[ids[d]] = LayerBatch.from_features(data.batch.with_features().features)
            models = data.models
        else:  # same variants as a device already featurised: read its rows only
            models = _models_only(p, d)
        out[d] = DeviceData(d, models, done[ids[d]], pd.DataFrame())
        if progress is not None:
            progress("features", i + 1, len(names))
    return out


def _models_only(db_path, device: str) -> pd.DataFrame:
    """``Dataset.models``-like rows of one device, without reading layer tables."""
    from latbench.data.store import Store

    with Store(db_path) as store:
        return pd.read_sql(
            "SELECT m.id AS measurement_id, m.variant_id, d.name AS device, v.source_model, "
            "v.method, v.input_shape, m.median_ms AS latency_ms FROM measurements m "
            "JOIN variants v ON v.id = m.variant_id JOIN devices d ON d.id = m.device_id "
            "WHERE d.name = ? ORDER BY m.id", store.connection, params=(device,))


def _transfer_setup(db_path, device: str, source_devices: Sequence[str], kind: str, progress):
    if kind not in TRANSFER_KINDS:
        raise UserInputError(f"--source-devices works with --kind {', '.join(TRANSFER_KINDS)} "
                             f"(the kind of the source devices' models), not {kind!r}")
    sources = [s for s in dict.fromkeys(source_devices) if s]
    if not sources:
        raise UserInputError("--source-devices names no device; give A,B,…")
    if device in sources:
        raise UserInputError(f"{device!r} is the new device and cannot also be a source")
    data = device_features(db_path, [device, *sources], progress=progress)
    return data[device], {s: (data[s].batch, data[s].y) for s in sources}


def evaluate_transfer(db_path, *, device: str, source_devices: Sequence[str], kind: str = "gbm",
                      train_size: int, seed: int = 0, params: dict | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> Evaluation:
    """Train on every row of the source devices plus ``train_size`` seeded rows of ``device``,
    test on all its other rows (:class:`~latbench.predictor.transfer.TransferPredictor`).

    Raises
    ------
    UserInputError
        Unknown device, a source that is also the target, an unsupported kind, or a bad size.
    PredictorError
        If no source covers the new device's models.
    """
    from latbench.predictor.transfer import SourceModels, TransferPredictor

    target, sources = _transfer_setup(db_path, device, source_devices, kind, progress)
    tr, te = split_indices(len(target.models), train_size, seed)
    fitted = SourceModels.fit(sources, random_state=seed, progress=progress)
    pred = TransferPredictor(sources=fitted, random_state=seed, **(params or {}))
    pred.fit(target.batch.take(tr), target.y[tr], device=device)
    y_pred = pred.predict(target.batch.take(te))
    y_test = target.y[te]
    return Evaluation(kind, device, seed, len(tr), len(te), regression_metrics(y_test, y_pred),
                      y_test, y_pred, te, source_devices=tuple(sources))


def train_transfer(db_path, *, device: str, source_devices: Sequence[str], kind: str = "gbm",
                   train_size: int | None = None, seed: int = 0, params: dict | None = None,
                   progress: Callable[[str, int, int], None] | None = None):
    """Fit a transfer predictor for ``device`` on every row of the sources plus ``train_size``
    seeded rows of ``device`` (all of them when ``None``).

    Raises
    ------
    UserInputError, PredictorError
        As :func:`evaluate_transfer`.
    """
    from latbench.predictor.transfer import SourceModels, TransferPredictor

    target, sources = _transfer_setup(db_path, device, source_devices, kind, progress)
    tr, _ = split_indices(len(target.models), train_size, seed)
    fitted = SourceModels.fit(sources, random_state=seed, progress=progress)
    pred = TransferPredictor(sources=fitted, random_state=seed, **(params or {}))
    return pred.fit(target.batch.take(tr), target.y[tr], device=device)
