"""Time the full NAS-Bench-201 import into a temporary database and loading it back.

Prints one JSON object: rows, seconds, rows/s, database size, distinct layer tables, the
time of a rerun (idempotent: nothing imported), ``load_dataset`` time and sizes, and, for a
sample, the exact path (build every network) with a row-by-row check that the fast path's
layer tables equal it.

Usage: ``.venv/bin/python benchmarks/bench_import_nb201.py [CSV] [--sample N]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from latbench.data.dataset import load_dataset
from latbench.data.nb201_import import NB201Featurizer, import_nb201

DEFAULT_CSV = "/work/shared/datasets/nb201/latbench_nb201_dev.csv"
COLUMN = "sd855_cpu_kryo485_int8_ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="?", default=DEFAULT_CSV)
    ap.add_argument("--sample", type=int, default=200, help="archs checked against the exact path")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "nb201.db"
        t0, c0 = time.perf_counter(), time.process_time()
        res = import_nb201(args.csv, latency_column=COLUMN, device="sd855_cpu", db_path=db)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        again = import_nb201(args.csv, latency_column=COLUMN, device="sd855_cpu", db_path=db)
        rerun_s = time.perf_counter() - t0
        size = sum(os.path.getsize(p) for p in Path(tmp).glob("nb201.db*"))
        t0 = time.perf_counter()
        ds = load_dataset(db)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tables = ds.layer_tables(ds.models["variant_id"].tolist())
        tables_s = time.perf_counter() - t0

    archs = pd.read_csv(args.csv)["arch"].sample(args.sample, random_state=0).tolist()
    fast, exact = NB201Featurizer(), NB201Featurizer(exact=True)
    t0 = time.perf_counter()
    ref = [exact.table(a) for a in archs]
    exact_s = time.perf_counter() - t0
    mismatches = 0
    for a, r in zip(archs, ref):
        try:
            pd.testing.assert_frame_equal(fast.table(a), r)
        except AssertionError:
            mismatches += 1
    print(json.dumps({
        "rows": res.rows,
        "imported": res.imported,
        "seconds": round(seconds, 2),
        "rows_per_s": round(res.rows / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "distinct_networks": res.layer_tables,
        "db_bytes": size,
        "rerun_imported": again.imported,
        "rerun_seconds": round(rerun_s, 2),
        "load_dataset_seconds": round(load_s, 2),
        "models_rows": len(ds.models),
        "layers_rows": len(ds.layers),
        "layer_tables_seconds": round(tables_s, 2),
        "n_layer_tables": len(tables),
        "exact_sample": len(archs),
        "exact_seconds_per_network": round(exact_s / max(1, len(exact)), 4),
        "exact_mismatches": mismatches,
    }))


if __name__ == "__main__":
    main()
