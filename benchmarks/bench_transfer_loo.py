"""Leave-one-device-out transfer over the 22 shared NAS-Bench-201 columns; prints one JSON object.

For every device column t, N ∈ ``--sizes`` and seed: a :class:`~latbench.predictor.transfer.
TransferPredictor` learns from every row of the 21 other columns plus N seeded rows of t
(:func:`latbench.predictor.evaluate.split_indices`) and is tested on all other rows of t —
what ``bench predictor evaluate --device t --source-devices <the others> --train-size N``
does, with the source models fitted once (they never see t) and their predictions on t's
models computed once per target (``TransferPredictor.combine``; the predictor's own model of
t's N rows is evaluated as ``predict`` does).

Beside it, on the same rows: **FLOPs** — Spearman of MACs against latency (a ranking needs no
training) and ±10 % of a least-squares line ``a·MACs + b`` fitted to the same N rows; and
**single** — the single-device ``gbm`` trained on the same N rows only.

    OMP_NUM_THREADS=1 python benchmarks/bench_transfer_loo.py --db /tmp/nb.db --sizes 10,20,50 --seeds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nb201_cache import ALL_DEVICES, PHONES, load_columns  # noqa: E402

from latbench.exceptions import OutOfRangeWarning  # noqa: E402
from latbench.predictor.evaluate import split_indices  # noqa: E402
from latbench.predictor.metrics import regression_metrics, spearman, within  # noqa: E402
from latbench.predictor.registry import make_predictor  # noqa: E402
from latbench.predictor.transfer import SOURCE_PARAMS, SourceModels, TransferPredictor  # noqa: E402

#: HELP (Lee et al., NeurIPS 2021, Table 3, NAS-Bench-201, 10 samples of the unseen device) and
#: the figures it quotes, as given in issue 13: Spearman ρ.
HELP_FIGURES = {"help_10_samples": {"titan_rtx_bs256": 0.987, "xeon_gold_6226": 0.989,
                                    "pixel2": 0.802, "raspberry_pi4": 0.890},
                "brp_nas_900_samples": [0.666, 0.847], "flops": [0.765, 0.950]}
TARGETS = {"spearman@10": 0.95, "acc10@20": 0.60}


def source_models(cols, cache: Path, progress) -> SourceModels:
    key = hashlib.sha256(json.dumps([[d, cols[d].group] for d in cols] + [SOURCE_PARAMS],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"sources_{key}.json"
    if path.is_file():
        return SourceModels(**json.loads(path.read_text()))
    t0 = time.time()
    sm = SourceModels.fit({d: (c.batch, c.y) for d, c in cols.items()},
                          progress=lambda s, i, n: progress(f"source model {i}/{n} {time.time() - t0:.0f}s"))
    path.write_text(json.dumps(sm.to_dict()))
    return sm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/nb.db")
    ap.add_argument("--devices", default=",".join(ALL_DEVICES))
    ap.add_argument("--sizes", default="10,20,50")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--single", action="store_true", help="also the single-device gbm on N rows")
    ap.add_argument("--cache", default="/tmp/latbench-bench-cache")
    args = ap.parse_args()
    t0 = time.time()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    devices = args.devices.split(",")
    cols = load_columns(args.db, ALL_DEVICES, args.cache, progress=log)
    sm = source_models(cols, Path(args.cache), log)
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict = {"date": "2026-11-30", "db": args.db, "seeds": args.seeds, "sizes": sizes,
                 "source_params": SOURCE_PARAMS, "help_and_flops_published": HELP_FIGURES,
                 "per_device": {}}
    for t in devices:
        c = cols[t]
        others = [d for d in ALL_DEVICES if d != t]
        sub = sm.subset(others)
        Z = sub.log_predict(c.batch)  # every source on every model of t, once
        macs = np.expm1(c.batch.features["log_macs"].to_numpy())
        res = {"flops_spearman": round(float(spearman(c.y, macs)), 4)}
        for n in sizes:
            rows = {"transfer": [], "flops_line": [], "single_gbm": []}
            for seed in range(args.seeds):
                tr, te = split_indices(len(c.y), n, seed)
                p = TransferPredictor(sources=sub, random_state=seed).fit(c.batch.take(tr), c.y[tr], device=t)
                cols_used = [others.index(s) for s in p.source_models_.names]
                own = p.own_log_predict(c.batch.take(te))
                rows["transfer"].append(regression_metrics(c.y[te], p.combine(Z[te][:, cols_used], own)))
                a, b = np.polyfit(macs[tr], c.y[tr], 1)
                line = np.maximum(a * macs[te] + b, 1e-3 * c.y[tr].min())
                rows["flops_line"].append({"acc10": within(c.y[te], line, 0.1), "spearman": spearman(c.y[te], line)})
                if args.single:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", OutOfRangeWarning)
                        g = make_predictor("gbm", random_state=seed).fit(c.batch.take(tr), c.y[tr])
                        rows["single_gbm"].append(regression_metrics(c.y[te], g.predict(c.batch.take(te))))
            for kind, rr in rows.items():
                if rr:
                    res[f"{kind}@{n}"] = {k: round(float(np.mean([r[k] for r in rr])), 4) for k in rr[0]}
            last = p.source_weights()
            res[f"weights@{n}_seed{args.seeds - 1}"] = {k: round(float(v), 3) for k, v in last[last > 0].items()}
        out["per_device"][t] = res
        log(f"{t}: " + ", ".join(f"N={n} ρ {res[f'transfer@{n}']['spearman']:.3f} "
                                f"±10% {res[f'transfer@{n}']['acc10']:.3f}" for n in sizes)
            + f"  ({time.time() - t0:.0f}s)")
    mean = {}
    for n in sizes:
        for kind in ("transfer", "flops_line", "single_gbm"):
            vals = [out["per_device"][d].get(f"{kind}@{n}") for d in devices]
            if all(v is not None for v in vals):
                mean[f"{kind}@{n}"] = {k: round(float(np.mean([v[k] for v in vals])), 4)
                                      for k in ("acc10", "spearman")}
    mean["flops_spearman"] = round(float(np.mean([out["per_device"][d]["flops_spearman"] for d in devices])), 4)
    out["mean"] = mean
    phones = [d for d in devices if d in PHONES]
    out["mean_phones"] = {f"transfer@{n}": {k: round(float(np.mean([out["per_device"][d][f"transfer@{n}"][k]
                                                                      for d in phones])), 4)
                                            for k in ("acc10", "spearman")} for n in sizes} if phones else {}
    out["targets"] = {
        "spearman@10": {"value": mean.get("transfer@10", {}).get("spearman"), "target": 0.95},
        "acc10@20": {"value": mean.get("transfer@20", {}).get("acc10"), "target": 0.60}}
    for v in out["targets"].values():
        v["met"] = v["value"] is not None and v["value"] >= v["target"]
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
