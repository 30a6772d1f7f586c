"""Predictor accuracy on a CPU sweep of compressed ResNet-18, VGG-11 and MobileNetV2 variants.

Setup (the sweep; ~30 min on a shared 2-core box, resumable):

    bench sweep --config benchmarks/sweep_cpu_three_models.toml --db /tmp/sweep3.db
    .venv/bin/python benchmarks/bench_predictors_sweep.py --db /tmp/sweep3.db

For every kind and seed: train on a seeded 70 % of the device's measured variants, test on
the other 30 %; figures are means (and minima) over seeds. Target (issue #5): ``lut`` or
``gbm`` ±10 % ≥ 0.95, FLOP-linear reported beside them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from latbench.data.dataset import load_dataset
from latbench.predictor.evaluate import device_data, evaluate_predictor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/sweep3.db")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", default="flops,flops-clustered,lut,gbm,gbm-layer")
    ap.add_argument("--train-share", type=float, default=0.7)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    data = device_data(load_dataset(args.db), args.device)
    n = len(data.models)
    n_train = int(round(args.train_share * n))
    out: dict = {"date": time.strftime("%Y-%m-%d"), "db": args.db, "device": args.device,
                 "n_models": n, "n_train": n_train, "n_test": n - n_train,
                 "models": data.models["source_model"].value_counts().to_dict(),
                 "layer_configs_measured": int(len(data.layer_latency)), "results": {}}
    for kind in args.kinds.split(","):
        rows = [evaluate_predictor(data, device=args.device, kind=kind, train_size=n_train,
                                   seed=s).metrics for s in range(args.seeds)]
        out["results"][kind] = {
            m: round(float(np.mean([r[m] for r in rows])), 4) for m in rows[0]}
        out["results"][kind]["acc10_min_over_seeds"] = round(min(r["acc10"] for r in rows), 4)
    best = max(("lut", "gbm"), key=lambda k: out["results"].get(k, {}).get("acc10", -1))
    out["target"] = {"kind": best, "acc10": out["results"].get(best, {}).get("acc10"),
                     "acc10_target": 0.95,
                     "met": out["results"].get(best, {}).get("acc10", 0) >= 0.95}
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
