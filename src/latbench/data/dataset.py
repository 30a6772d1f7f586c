"""The store read back into pandas: what the predictors train and evaluate on."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latbench.data.features import (
    FEATURE_SCHEMA_VERSION, LAYER_COLUMNS, LEGACY_DEFAULTS, STRING_COLUMNS, model_features,
)
from latbench.data.store import Store, decode_layer_table
from latbench.exceptions import UserInputError

__all__ = ["Dataset", "load_dataset", "MODEL_ID_COLUMNS", "model_feature_names"]

#: The non-feature columns of :attr:`Dataset.models`, in order.
MODEL_ID_COLUMNS = ["measurement_id", "variant_id", "device", "source_model", "method",
                    "input_shape", "latency_ms"]


def model_feature_names() -> list[str]:
    """The model-level feature columns (those of :func:`latbench.data.features.model_features`)."""
    return list(model_features(_empty_layers()).keys())


def _empty_layers() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64") for c in LAYER_COLUMNS}).astype(
        {c: "str" for c in STRING_COLUMNS})


@dataclass
class Dataset:
    """Measurements with their features, as pandas tables.

    Attributes
    ----------
    models : pandas.DataFrame
        One row per measurement: ``measurement_id, variant_id, device, source_model, method,
        input_shape`` (str like ``"1x3x32x32"``), ``latency_ms`` (the median, in ms), then the
        model-level feature columns of :func:`latbench.data.features.model_features`.
    layers : pandas.DataFrame
        One row per layer per variant of ``models``, sorted by ``variant_id, layer_index``:
        ``variant_id, layer_index`` then :data:`latbench.data.features.LAYER_COLUMNS`.
    layer_latency : pandas.DataFrame
        Per-layer measurements: ``device, layer_key, latency_ms`` (median, ms) then the layer's
        :data:`~latbench.data.features.LAYER_COLUMNS` (empty when none were measured).
    """

    models: pd.DataFrame
    layers: pd.DataFrame
    layer_latency: pd.DataFrame

    def layer_tables(self, variant_ids: Iterable[int]) -> list[pd.DataFrame]:
        """The layer table of each variant, in the order given (ids may repeat).

        Each table has the columns :data:`~latbench.data.features.LAYER_COLUMNS` and a fresh
        0-based index, like :func:`latbench.data.features.layer_table`.

        Raises
        ------
        UserInputError
            If a variant id is not in this dataset.
        """
        ids = np.asarray(list(variant_ids), dtype=np.int64)
        col = self.layers["variant_id"].to_numpy(dtype=np.int64)
        order = None
        if len(col) > 1 and not np.all(col[1:] >= col[:-1]):
            # Someone re-sorted ``layers``; find rows through a stable sort instead.
            order = np.argsort(col, kind="stable")
            col = col[order]
        starts = np.searchsorted(col, ids, side="left")
        stops = np.searchsorted(col, ids, side="right")
        # A variant with no layers at all (e.g. an identity model) is in ``models`` only.
        missing = np.setdiff1d(ids[starts == stops], self.models["variant_id"].to_numpy(dtype=np.int64))
        if len(missing):
            raise UserInputError(f"variant id {int(missing[0])} is not in this dataset; "
                                 "take ids from Dataset.models['variant_id']")
        table = self.layers[LAYER_COLUMNS]
        out = []
        for a, b in zip(starts.tolist(), stops.tolist()):
            part = table.iloc[a:b] if order is None else table.iloc[order[a:b]]
            out.append(part.reset_index(drop=True))
        return out


def load_dataset(db_path: str | Path, device: str | None = None) -> Dataset:
    """Read the latency database at ``db_path`` into a :class:`Dataset`.

    Parameters
    ----------
    db_path : path
        An existing latency database.
    device : str, optional
        Keep only the measurements of this device (and the variants they measured).

    Raises
    ------
    UserInputError
        If the file does not exist or the device is not in it (the message lists devices).
    StoreError
        If the file is not a latbench store or was written by a newer latbench.
    """
    p = Path(db_path)
    if not p.is_file():
        raise UserInputError(f"latency database {str(p)!r} does not exist; create it with "
                             "`bench data import-nb201` or a sweep")
    with Store(p, read_only=True) as store:
        conn = store.connection
        where, args = "", ()
        if device is not None:
            if store.device_id(device) is None:
                names = store.devices()["name"].tolist()
                raise UserInputError(f"device {device!r} is not in {str(p)!r}; devices: "
                                     f"{', '.join(names) or '(none)'}")
            where, args = "WHERE d.name = ?", (device,)
        meas = pd.read_sql(
            "SELECT m.id AS measurement_id, m.variant_id, d.name AS device, v.source_model, "
            "v.method, v.input_shape, m.median_ms AS latency_ms, v.layer_table_id "
            "FROM measurements m JOIN variants v ON v.id = m.variant_id "
            f"JOIN devices d ON d.id = m.device_id {where} ORDER BY m.id", conn, params=args)
        variants = (meas[["variant_id", "layer_table_id"]].drop_duplicates("variant_id")
                    .sort_values("variant_id"))
        table_ids = sorted(set(variants["layer_table_id"].tolist()))
        tables: dict[int, tuple[dict[str, np.ndarray], dict[str, float]]] = {}
        pool: dict[str, str] = {}
        old = FEATURE_SCHEMA_VERSION
        lacking: set[str] = set()
        # Chunked IN lists stay under SQLite's bound-parameter limit.
        for k in range(0, len(table_ids), 900):
            chunk = table_ids[k:k + 900]
            q = ("SELECT id, features, data, feature_schema_version FROM layer_tables WHERE id IN "
                 f"({','.join('?' * len(chunk))})")
            for tid, feats, blob, version in conn.execute(q, chunk):
                tables[int(tid)] = (decode_layer_table(blob, pool), json.loads(feats))
                old = min(old, int(version))
                if int(version) < FEATURE_SCHEMA_VERSION:
                    lacking.update(set(LAYER_COLUMNS) - set(tables[int(tid)][0]))
        lat = pd.read_sql(
            "SELECT d.name AS device, l.layer_key, l.median_ms AS latency_ms, l.layer "
            f"FROM layer_measurements l JOIN devices d ON d.id = l.device_id {where} ORDER BY l.id",
            conn, params=args)
    if old < FEATURE_SCHEMA_VERSION:
        # Schema 4 was written by two lines of development (one added ``uncounted`` with MACs
        # of every compute operator, the other ``graph``/``fused``/``batch``): say what the
        # stored tables actually lack.
        missing = [c for c in LEGACY_DEFAULTS if c in lacking]
        parts = []
        if "inputs" in missing:
            parts.append("the dataflow column (read as chains, which weakens graph-aware "
                         "predictors)")
        if "uncounted" in missing:
            parts.append("MACs of every compute operator (they count Conv2d/Linear modules "
                         "only: 0 for 1-D/3-D/transposed convs and functional compute) and the "
                         "'uncounted' column")
        if {"graph", "fused", "batch"} & set(missing):
            parts.append("the record of which graph they describe (read as the PyTorch "
                         "module's layers, nothing fused, batch 1)")
        lacks = "; ".join(parts) or "nothing this latbench reads differently"
        warnings.warn(
            f"{str(p)!r} holds layer tables of feature schema {old} (this latbench writes "
            f"{FEATURE_SCHEMA_VERSION}); they lack {lacks}: re-import or re-sweep into a fresh "
            "database", stacklevel=2)
    return Dataset(models=_models_frame(meas, tables), layers=_layers_frame(variants, tables),
                   layer_latency=_layer_latency_frame(lat))


def _models_frame(meas: pd.DataFrame, tables: dict) -> pd.DataFrame:
    names = model_feature_names()
    feats = {tid: [float(f.get(n, np.nan)) for n in names] for tid, (_, f) in tables.items()}
    values = np.array([feats[t] for t in meas["layer_table_id"].tolist()], dtype=float).reshape(-1, len(names))
    out = meas[MODEL_ID_COLUMNS].reset_index(drop=True)
    out = pd.concat([out, pd.DataFrame(values, columns=names)], axis=1)
    return out.astype({"measurement_id": "int64", "variant_id": "int64", "latency_ms": "float64"})


def _layers_frame(variants: pd.DataFrame, tables: dict) -> pd.DataFrame:
    if variants.empty:
        return pd.concat([pd.DataFrame({"variant_id": pd.Series(dtype="int64"),
                                        "layer_index": pd.Series(dtype="int64")}), _empty_layers()],
                         axis=1)
    vids = variants["variant_id"].to_numpy(dtype=np.int64)
    tids = variants["layer_table_id"].tolist()
    # Concatenate each distinct table once, then gather rows per variant by index.
    uniq = sorted(set(tids))
    starts, lengths, pos = {}, {}, 0
    for t in uniq:
        n = len(tables[t][0]["name"])
        starts[t], lengths[t] = pos, n
        pos += n
    lens = np.array([lengths[t] for t in tids], dtype=np.int64)
    first = np.array([starts[t] for t in tids], dtype=np.int64)
    offsets = np.repeat(first - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    gather = np.arange(int(lens.sum()), dtype=np.int64) + offsets
    layer_index = gather - np.repeat(first, lens)
    data: dict[str, object] = {"variant_id": np.repeat(vids, lens), "layer_index": layer_index}
    for c in LAYER_COLUMNS:
        # Tables stored before feature schema 3 have no ``inputs`` (empty: no known edges),
        # before schema 5 maybe no ``uncounted`` or ``fused``/``graph``/``batch`` (module
        # layers, nothing fused, batch 1).
        col = np.concatenate([tables[t][0][c] if c in tables[t][0]
                              else np.full(lengths[t], LEGACY_DEFAULTS.get(c, ""), dtype=object)
                              for t in uniq])[gather]
        if c not in STRING_COLUMNS and col.dtype == object:
            # A model with no layers stores empty object columns; keep numbers numeric.
            col = col.astype(np.int64)
        data[c] = col
    out = pd.DataFrame(data)
    return out.astype({c: "str" for c in STRING_COLUMNS})


def _layer_latency_frame(lat: pd.DataFrame) -> pd.DataFrame:
    rows = [json.loads(s) for s in lat["layer"].tolist()]
    feats = pd.DataFrame(rows, columns=LAYER_COLUMNS) if rows else _empty_layers()
    for c, v in LEGACY_DEFAULTS.items():  # layers stored before schema 5 may lack these
        if rows:
            col = feats[c] if c not in STRING_COLUMNS else feats[c].astype(object)
            feats[c] = col.where(col.notna(), v)
    out = pd.concat([lat[["device", "layer_key", "latency_ms"]].reset_index(drop=True),
                     feats.reset_index(drop=True)], axis=1)
    return out
