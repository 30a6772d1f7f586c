"""Export the store as one flat table (CSV or Parquet): one row per measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from latbench.data.store import Store
from latbench.exceptions import UserInputError

__all__ = ["EXPORT_FORMATS", "flat_table", "export_table"]

EXPORT_FORMATS = ("csv", "parquet")


def flat_table(db_path: str | Path) -> pd.DataFrame:
    """One row per measurement with its provenance, statistics, plan and model features.

    Columns: ``measurement_id, device, device_kind, variant_id, content_hash, source_model,
    method, input_shape, plan`` (JSON or empty), ``runtime, runtime_version, provider,
    threads, format`` (``onnx``, ``tflite``; empty for imported latencies) ``, spec_key,
    latency_ms`` (the median), ``mean_ms, std_ms, min_ms, p10_ms, p90_ms,
    iqr_ms, n_samples, confident, throttled, timestamp, source``, then the model-level
    features of :func:`latbench.data.features.model_features`.

    Raises
    ------
    UserInputError
        If the database file does not exist.
    StoreError
        If it is not a latbench store.
    """
    p = Path(db_path)
    if not p.is_file():
        raise UserInputError(f"latency database {str(p)!r} does not exist")
    with Store(p, read_only=True) as store:
        df = pd.read_sql(
            "SELECT m.id AS measurement_id, d.name AS device, d.kind AS device_kind, m.variant_id, "
            "v.content_hash, v.source_model, v.method, v.input_shape, COALESCE(v.plan, '') AS plan, "
            "m.runtime, m.runtime_version, m.provider, m.threads, m.format, m.spec_key, "
            "m.median_ms AS latency_ms, m.mean_ms, m.std_ms, m.min_ms, m.p10_ms, m.p90_ms, m.iqr_ms, "
            "m.n_samples, m.confident, m.throttled, m.timestamp, m.source, t.features "
            "FROM measurements m JOIN variants v ON v.id = m.variant_id "
            "JOIN devices d ON d.id = m.device_id JOIN layer_tables t ON t.id = v.layer_table_id "
            "ORDER BY m.id", store.connection)
    from latbench.data.dataset import model_feature_names  # imports torch: only when exporting

    names = model_feature_names()
    feats = pd.DataFrame([json.loads(f) for f in df["features"].tolist()], columns=names,
                         dtype=float)
    # confident/throttled are unknown (NULL) for imported latencies: keep them nullable booleans.
    for c in ("confident", "throttled"):
        df[c] = df[c].astype("boolean")
    return pd.concat([df.drop(columns="features"), feats], axis=1)


def export_table(db_path: str | Path, out: str | Path, fmt: str = "csv") -> int:
    """Write :func:`flat_table` of ``db_path`` to ``out`` as ``csv`` or ``parquet``.

    Returns
    -------
    int
        Number of rows written.

    Raises
    ------
    UserInputError
        If the format is unknown, the output directory does not exist, or the database is
        missing.
    """
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    o = Path(out)
    if not o.parent.exists():
        raise UserInputError(f"output directory {str(o.parent)!r} does not exist; create it first")
    df = flat_table(db_path)
    if fmt == "csv":
        df.to_csv(o, index=False)
    else:
        df.to_parquet(o, index=False)
    return len(df)
