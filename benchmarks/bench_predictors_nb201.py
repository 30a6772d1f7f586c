"""Predictor accuracy on the NAS-Bench-201 development set; prints one JSON object.

Setup (once; ~15 min on a shared 2-core box):

    for c in desktop_cpu_i7_7820x_fp32 sd855_cpu_kryo485_int8 sd855_gpu_adreno640_int8; do
      bench data import-nb201 /work/shared/datasets/nb201/latbench_nb201_dev.csv \
        --latency-column ${c}_ms --device $c --db /tmp/nb201.db
    done
    .venv/bin/python benchmarks/bench_predictors_nb201.py --db /tmp/nb201.db

For every device, kind, training size N and seed: train on N seeded rows, test on all
the rest; figures are means over seeds. ``--tune`` also runs 5-fold cross-validation of
the gbm grid inside the seed-0 training sample (never the test rows) and reports it.
"""

from __future__ import annotations

import argparse
import json
import time

from latbench.data.dataset import load_dataset
from latbench.predictor.evaluate import cv_select, device_data, learning_curve, split_indices

DEVICES = ("desktop_cpu_i7_7820x_fp32", "sd855_cpu_kryo485_int8", "sd855_gpu_adreno640_int8")
TARGETS = {900: {"acc10": {"desktop_cpu_i7_7820x_fp32": 0.88, "sd855_cpu_kryo485_int8": 0.90,
                           "sd855_gpu_adreno640_int8": 0.90}, "spearman": 0.98},
           100: {"acc10": 0.70, "spearman": 0.95}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/nb201.db")
    ap.add_argument("--kinds", default="flops,flops-clustered,gbm,gbm-layer")
    ap.add_argument("--sizes", default="100,900")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tune", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    ds = load_dataset(args.db)
    kinds = args.kinds.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict = {"date": "2026-11-23", "db": args.db, "seeds": args.seeds, "results": {}}
    for dev in DEVICES:
        data = device_data(ds, dev)
        curve = learning_curve(data, device=dev, kinds=kinds, sizes=sizes, seeds=range(args.seeds))
        mean = curve.groupby(["kind", "n_train"]).mean(numeric_only=True).drop(columns=["seed", "n_test"])
        out["results"][dev] = {f"{k}@{n}": {m: round(float(v), 4) for m, v in row.items()}
                               for (k, n), row in mean.iterrows()}
        if args.tune:
            grid = {"max_depth": [3, 4, 6], "n_estimators": [300, 500], "learning_rate": [0.05]}
            for n in sizes:
                tr, _ = split_indices(len(data.models), n, 0)
                best, table = cv_select("gbm", data.batch.take(tr), data.y[tr], grid, seed=0)
                out.setdefault("cv", {})[f"{dev}@{n}"] = {
                    "best": best, "table": table.round(4).to_dict("records")}
    best_kind = "gbm"
    checks = {}
    for dev in DEVICES:
        for n, tgt in TARGETS.items():
            r = out["results"][dev].get(f"{best_kind}@{n}")
            if r is None:
                continue
            a = tgt["acc10"][dev] if isinstance(tgt["acc10"], dict) else tgt["acc10"]
            checks[f"{dev}@{n}"] = {"acc10": r["acc10"], "acc10_target": a,
                                    "spearman": r["spearman"], "spearman_target": tgt["spearman"],
                                    "met": bool(r["acc10"] >= a and r["spearman"] >= tgt["spearman"])}
    out["targets"] = checks
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
