"""The search's verification loop under simulated timing noise: how often it lands in the window.

A simulated device (the tests' ``MacDevice``: latency from the MACs of the exported ONNX
graph) runs ResNet-18 at 32×32. Its latency falls slower than MACs (``∝ MACs^0.85``), so the
predictor's costs (linear in MACs) are biased, and each measurement is multiplied by lognormal
noise (``--sigma``) and, with probability ``--burst``, by 1.3 (a burst of load). One
``Searcher`` answers budgets of 30 %, …, 90 % for each noise seed. Prints one JSON object:
per case the rounds (target and measured, as shares of the budget), met, in the accepted
window, within 10 % under; and the shares over all cases.

Usage: ``.venv/bin/python benchmarks/bench_search_noise.py [--seeds 0,1] [--sigma 0.04]
[--burst 0.1]`` (about 1 min per seed on 1 thread).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--sigma", type=float, default=0.04, help="lognormal sigma of each measurement")
    p.add_argument("--burst", type=float, default=0.1, help="chance of a +30 %% burst per measurement")
    p.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    args = p.parse_args(argv)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fakes import MacDevice, MacPredictor  # the simulated device, and a predictor of its law

    from latbench.data.features import layer_table
    from latbench.models import resolve_model
    from latbench.search.search import Searcher

    torch.set_num_threads(1)
    shape = (1, 3, 32, 32)
    net = resolve_model("resnet18", seed=0)
    full = int(layer_table(net, shape)["macs"].sum())
    cases = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rng = random.Random(seed)

        def factor(macs: int) -> float:
            f = (full / max(macs, 1)) ** 0.15 * math.exp(rng.gauss(0.0, args.sigma))
            return f * 1.3 if rng.random() < args.burst else f

        dev = MacDevice(overhead_ms=0.05, ms_per_mmac=0.05, factor=factor)
        searcher = Searcher(net, dev, input_shape=shape, calib=4, repeats=3, warmup=0,
                            predictor=MacPredictor(overhead_ms=0.05, ms_per_mmac=0.05),
                            fractions=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85))
        for share in (float(b) for b in args.budgets.split(",")):
            r = searcher.search(speedup=1 / share, baseline=False, front_points=2)
            b = r.budget_ms
            case = dict(seed=seed, budget_fraction=share, met=bool(r.met),
                        in_window=bool(r.met and r.measured_ms >= 0.92 * b),
                        within_10pct=bool(r.met and r.measured_ms >= 0.9 * b),
                        final_share=r.measured_ms / b,
                        rounds=[(x.target_ms / b, x.measured_ms / b) for x in r.rounds])
            print(json.dumps(case), file=sys.stderr, flush=True)
            cases.append(case)
    n = len(cases)
    out = {"date": time.strftime("%Y-%m-%d"), "sigma": args.sigma, "burst": args.burst,
           "cases": n, "met_share": sum(c["met"] for c in cases) / n,
           "within_10pct_share": sum(c["within_10pct"] for c in cases) / n,
           "mean_rounds": sum(len(c["rounds"]) for c in cases) / n, "per_case": cases}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
