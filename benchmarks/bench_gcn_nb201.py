"""gcn against gbm on both NAS-Bench-201 files, same splits and seeds; prints one JSON object.

Setup (once; ~15 min on a shared 2-core box): import the LatBench file's three devices and
some HELP devices into one store (the HELP devices get a ``help_`` prefix):

    for c in desktop_cpu_i7_7820x_fp32 sd855_cpu_kryo485_int8 sd855_gpu_adreno640_int8; do
      bench data import-nb201 /work/shared/datasets/nb201/latbench_nb201_dev.csv \\
        --latency-column ${c}_ms --device $c --db /tmp/thesis/nb201.db
    done
    for c in gtx1080ti_bs1 gold_6240 pixel3; do
      bench data import-nb201 /work/shared/datasets/nb201/help_nb201_dev.csv \\
        --latency-column ${c}_ms --device help_$c --db /tmp/thesis/nb201.db
    done
    .venv/bin/python benchmarks/bench_gcn_nb201.py --db /tmp/thesis/nb201.db

For every device, kind, training size N and seed: train on N seeded rows
(``predictor.evaluate.split_indices``), test on all the rest; figures are means over seeds,
plus each seed's figures. The import builds the dead-code-eliminated network (the LatBench
file's graph); the HELP devices ran every edge, so their features describe a smaller graph
than the one measured (see the dataset's README) — for both kinds alike.
"""

from __future__ import annotations

import argparse
import json
import time

from latbench.data.dataset import load_dataset
from latbench.predictor.evaluate import device_data, learning_curve

DEVICES = ("desktop_cpu_i7_7820x_fp32", "sd855_cpu_kryo485_int8", "sd855_gpu_adreno640_int8",
           "help_gtx1080ti_bs1", "help_gold_6240", "help_pixel3")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/thesis/nb201.db")
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--kinds", default="gbm,gcn")
    ap.add_argument("--sizes", default="100,900")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed+seeds−1")
    ap.add_argument("--gcn-steps", type=int, default=None, help="override gcn's max_steps")
    args = ap.parse_args()
    t0 = time.time()
    ds = load_dataset(args.db)
    kinds = args.kinds.split(",")
    params = {"gcn": {"max_steps": args.gcn_steps}} if args.gcn_steps else None
    out: dict = {"date": "2026-11-30", "db": args.db, "seeds": args.seeds, "first_seed": args.first_seed,
                 "params": params,
                 "results": {}, "per_seed": {}, "seconds_per_device": {}}
    for dev in args.devices.split(","):
        t1 = time.time()
        data = device_data(ds, dev)
        curve = learning_curve(data, device=dev, kinds=kinds, sizes=[int(s) for s in args.sizes.split(",")],
                               seeds=range(args.first_seed, args.first_seed + args.seeds),
                               params=params)
        mean = curve.groupby(["kind", "n_train"]).mean(numeric_only=True).drop(columns=["seed", "n_test"])
        out["results"][dev] = {f"{k}@{n}": {m: round(float(v), 4) for m, v in row.items()}
                               for (k, n), row in mean.iterrows()}
        out["per_seed"][dev] = curve[["kind", "n_train", "seed", "acc10", "spearman", "mape"]].round(4) \
            .to_dict("records")
        out["seconds_per_device"][dev] = round(time.time() - t1, 1)
    wins = {}
    for dev, res in out["results"].items():
        for n in args.sizes.split(","):
            a, b = res.get(f"gcn@{n}"), res.get(f"gbm@{n}")
            if a and b:
                wins[f"{dev}@{n}"] = {"gcn_acc10": a["acc10"], "gbm_acc10": b["acc10"],
                                      "gcn_spearman": a["spearman"], "gbm_spearman": b["spearman"],
                                      "gcn_better_acc10": bool(a["acc10"] > b["acc10"])}
    out["gcn_vs_gbm"] = wins
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
