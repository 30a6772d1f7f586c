"""Single-device ``gbm`` against an XGBoost on a one-hot of the six NAS-Bench-201 edges, on
every device column of both shared files; prints one JSON object.

For every column, training size N and seed: the same seeded split
(:func:`latbench.predictor.evaluate.split_indices`) trains both on N rows and tests both on
all the others, in the same run. ``gbm`` sees only our featuriser's layer tables (the build
the column's publisher measured: ``--edges live`` for LatBench, ``all`` for HELP); the
baseline sees the architecture string as 6 edges × 5 operations = 30 binary inputs and
learns ``log(latency)`` (its errors are relative, as ±10 % judges them) with a fixed XGBoost
configuration: 500 trees, depth 4, learning rate 0.05, subsample and column sample 0.8 —
chosen as the best of a {depth 3, 4, 6} × {0.02, 0.05, 0.1} grid on the seed-0 N=100 and
N=900 splits of six columns, i.e. favouring the baseline.

    OMP_NUM_THREADS=1 python benchmarks/bench_nb201_onehot.py --db /tmp/nb.db --sizes 100,900 --seeds 3

(imports: see benchmarks/_nb201_cache.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nb201_cache import ALL_DEVICES, load_columns  # noqa: E402

from latbench.exceptions import OutOfRangeWarning  # noqa: E402
from latbench.models.nb201 import OPS, parse_arch  # noqa: E402
from latbench.predictor.evaluate import split_indices  # noqa: E402
from latbench.predictor.metrics import regression_metrics  # noqa: E402
from latbench.predictor.registry import make_predictor  # noqa: E402

ONEHOT_PARAMS = dict(n_estimators=500, max_depth=4, learning_rate=0.05, subsample=0.8,
                     colsample_bytree=0.8)


def onehot(archs) -> np.ndarray:
    """6 edges × 5 operations → 30 binary columns."""
    out = np.zeros((len(archs), 6 * len(OPS)), dtype=np.float32)
    for i, a in enumerate(archs):
        for e, (op, _, _) in enumerate(parse_arch(a)):
            out[i, e * len(OPS) + OPS.index(op)] = 1.0
    return out


def onehot_xgb(X, y, Xte, seed, params=ONEHOT_PARAMS):
    import xgboost as xgb

    m = xgb.XGBRegressor(tree_method="hist", n_jobs=1, random_state=seed, **params)
    m.fit(X, np.log(y))
    return np.exp(m.predict(Xte))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/nb.db")
    ap.add_argument("--devices", default=",".join(ALL_DEVICES))
    ap.add_argument("--sizes", default="100,900")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", default="/tmp/latbench-bench-cache")
    args = ap.parse_args()
    t0 = time.time()
    devices = args.devices.split(",")
    cols = load_columns(args.db, devices, args.cache, progress=lambda m: print(m, file=sys.stderr))
    sizes = [int(s) for s in args.sizes.split(",")]
    out = {"date": "2026-11-30", "db": args.db, "seeds": args.seeds, "onehot_params": ONEHOT_PARAMS,
           "results": {}, "targets": {}}
    for dev in devices:
        c = cols[dev]
        H = onehot(c.archs)
        res = {}
        for n in sizes:
            acc = {"gbm": [], "onehot_xgb": []}
            for seed in range(args.seeds):
                tr, te = split_indices(len(c.y), n, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", OutOfRangeWarning)
                    p = make_predictor("gbm", random_state=seed).fit(c.batch.take(tr), c.y[tr],
                                                                     device=dev)
                    acc["gbm"].append(regression_metrics(c.y[te], p.predict(c.batch.take(te))))
                acc["onehot_xgb"].append(regression_metrics(c.y[te], onehot_xgb(H[tr], c.y[tr], H[te], seed)))
            for kind, rows in acc.items():
                res[f"{kind}@{n}"] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
            g, b = res[f"gbm@{n}"], res[f"onehot_xgb@{n}"]
            out["targets"][f"{dev}@{n}"] = {
                "gbm_acc10": g["acc10"], "onehot_acc10": b["acc10"], "gbm_spearman": g["spearman"],
                "onehot_spearman": b["spearman"],
                "met": bool(g["acc10"] > b["acc10"] and g["spearman"] > b["spearman"])}
            print(dev, n, out["targets"][f"{dev}@{n}"], f"{time.time() - t0:.0f}s", file=sys.stderr)
        out["results"][dev] = res
    t = out["targets"].values()
    out["met"] = f"{sum(v['met'] for v in t)}/{len(t)}"
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
