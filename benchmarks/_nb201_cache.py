"""Shared by the NAS-Bench-201 benchmark scripts: every device column of a latency database
with its model features, cached on disk so a rerun does not featurise 60k networks again.

Devices whose measurements cover the same variants (one import: same build, same batch)
share one feature matrix. The cache is keyed by the database's path, size and mtime, the
variant ids, and the columns :func:`latbench.predictor.encode.model_matrix` makes, so a new
import or a new feature schema recomputes it.

Import the shared files first (about 10 min on the shared 2-core VM)::

    D=/work/shared/datasets/nb201; H=$D/help_nb201_dev.csv
    bench data import-nb201 $D/latbench_nb201_dev.csv --db /tmp/nb.db --edges live \\
        --latency-column desktop_cpu_i7_7820x_fp32_ms --latency-column sd855_cpu_kryo485_int8_ms \\
        --latency-column sd855_gpu_adreno640_int8_ms
    bench data import-nb201 $H --db /tmp/nb.db --edges all --batch 1 \\
        $(for c in gtx1080ti rtx2080ti titanx titanxp; do echo --latency-column ${c}_bs1_ms; done) \\
        $(for c in silver_4114 silver_4210r gold_6240 pixel3 samsung_a50 samsung_s7 essential_ph1; \\
          do echo --latency-column ${c}_ms; done)
    for b in 32 256; do bench data import-nb201 $H --db /tmp/nb.db --edges all --batch $b \\
        $(for c in gtx1080ti rtx2080ti titanx titanxp; do echo --latency-column ${c}_bs${b}_ms; done); done
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latbench.data.features import FEATURE_SCHEMA_VERSION
from latbench.predictor.encode import LayerBatch, model_matrix_columns

#: The 22 device columns of the two shared files, by the device names the import gives them.
LATBENCH = ("desktop_cpu_i7_7820x_fp32", "sd855_cpu_kryo485_int8", "sd855_gpu_adreno640_int8")
HELP = tuple(f"{g}_bs{b}" for g in ("gtx1080ti", "rtx2080ti", "titanx", "titanxp")
             for b in (1, 32, 256)) + ("silver_4114", "silver_4210r", "gold_6240", "pixel3",
                                       "samsung_a50", "samsung_s7", "essential_ph1")
ALL_DEVICES = LATBENCH + HELP
PHONES = ("sd855_cpu_kryo485_int8", "sd855_gpu_adreno640_int8", "pixel3", "samsung_a50",
          "samsung_s7", "essential_ph1")


@dataclass
class Column:
    """One device's measurements: variant ids, architecture strings, latencies (ms) and the
    features of its models (a features-only :class:`LayerBatch`)."""

    device: str
    variant_ids: np.ndarray
    archs: np.ndarray
    y: np.ndarray
    batch: LayerBatch
    group: str


def _measurements(db: Path, devices: list[str]) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        q = ("SELECT d.name AS device, m.variant_id, v.source_model, v.input_shape, m.median_ms, "
             "t.table_hash FROM measurements m JOIN devices d ON d.id = m.device_id "
             "JOIN variants v ON v.id = m.variant_id "
             "JOIN layer_tables t ON t.id = v.layer_table_id WHERE d.name IN "
             f"({','.join('?' * len(devices))}) ORDER BY d.name, m.variant_id")
        return pd.read_sql(q, conn, params=devices)


def load_columns(db: str | Path, devices: list[str] | tuple[str, ...] = ALL_DEVICES,
                 cache_dir: str | Path = "/tmp/latbench-bench-cache",
                 progress=print) -> dict[str, Column]:
    """Every named device's column, with features from the cache or computed once per group."""
    from latbench.data.dataset import load_dataset
    from latbench.predictor.evaluate import device_data

    db = Path(db)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    meas = _measurements(db, list(devices))
    missing = sorted(set(devices) - set(meas["device"]))
    if missing:
        raise SystemExit(f"{db} lacks the devices {', '.join(missing)}: import them first "
                         "(see benchmarks/_nb201_cache.py)")
    cols = model_matrix_columns()
    feats: dict[str, pd.DataFrame] = {}
    out: dict[str, Column] = {}
    for dev in devices:
        m = meas[meas["device"] == dev]
        ids = m["variant_id"].to_numpy(dtype=np.int64)
        # The tables' content hashes and the encoder's columns: a re-import or a new feature
        # schema gives another key.
        key = hashlib.sha256(ids.tobytes() + json.dumps(cols).encode() + str(FEATURE_SCHEMA_VERSION).encode()
                             + "".join(m["table_hash"]).encode()).hexdigest()[:16]
        if key not in feats:
            path = cache / f"features_{key}.npy"
            if path.is_file():
                M = pd.DataFrame(np.load(path), columns=cols)
            else:
                progress(f"featurising the {len(ids)} models of {dev} (cached for the others)")
                data = device_data(load_dataset(db, dev), dev)
                assert np.array_equal(data.models["variant_id"].to_numpy(), ids)
                M = data.batch.with_features().features
                np.save(path, M.to_numpy(dtype=np.float64))
            feats[key] = M
        src = m["source_model"].astype(str)
        archs = src.str.split(":", n=1).str[1].to_numpy()
        out[dev] = Column(dev, ids, archs, m["median_ms"].to_numpy(dtype=np.float64),
                          LayerBatch.from_features(feats[key]), key)
    return out
