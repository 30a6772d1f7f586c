"""The search on a device whose speed drifts: is the reported speed-up the true one, and met?

A simulated device (:class:`latbench.devices.simulated.SimulatedDevice`: latency from the
MACs of the exported ONNX graph) runs ResNet-18 at 32×32. Its latency falls slower than
MACs (``∝ MACs^0.85``, so the predictor's linear costs are biased and searches take several
rounds), each sample carries lognormal noise (``--sigma``), and its speed drifts during each
search by ``speed(k)`` (``k`` counts the search's measurements): steps and ramps of ±50 %,
and bursts. One :class:`~latbench.search.search.Searcher` (candidates, damages, costs made
once) answers budgets of ``--budgets`` (shares of the original's latency) under each drift.

For every search the *true* speed-up is the device's noiseless latency of the original over
that of the returned model at constant speed; ``met_truly`` is whether that meets the
budget. Prints one JSON object: per case met (as reported), met truly, within 10 % under
the budget (truly), reported and true speed-up; and the shares over all cases.

Usage: ``.venv/bin/python benchmarks/bench_search_drift.py [--budgets 0.5,0.7,0.9]
[--sigma 0.02] [--seed 0]`` (about 5 min on 1 thread). It uses only what every version of
``SearchResult.to_dict()`` has, so the same script measures an older checkout too
(``PYTHONPATH=<old>/src``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable


def drifts() -> dict[str, Callable[[int], float]]:
    """Speed multipliers of the k-th measurement of a search (1: the speed at its start)."""
    return {
        "steady": lambda k: 1.0,
        "step +50% after the original": lambda k: 1.5 if k >= 1 else 1.0,
        "step -50% after the original": lambda k: 0.5 if k >= 1 else 1.0,
        "step +50% at measurement 4": lambda k: 1.5 if k >= 4 else 1.0,
        "step -50% at measurement 4": lambda k: 0.5 if k >= 4 else 1.0,
        "ramp +50% over 10 measurements": lambda k: min(1.5, 1.0 + 0.05 * k),
        "ramp -50% over 10 measurements": lambda k: max(0.5, 1.0 - 0.05 * k),
        "ramp +50% over 30 measurements": lambda k: min(1.5, 1.0 + 0.5 * k / 30),
        "bursts +50% every 3rd measurement": lambda k: 1.5 if k % 3 == 2 else 1.0,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0.5,0.7,0.9")
    p.add_argument("--sigma", type=float, default=0.02, help="lognormal sigma of each sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args(argv)

    import torch

    from latbench.data.features import layer_table
    from latbench.devices.simulated import SimulatedDevice
    from latbench.models import resolve_model
    from latbench.search.search import Searcher

    torch.set_num_threads(1)
    shape = (1, 3, args.size, args.size)
    net = resolve_model("resnet18", seed=0)
    full = int(layer_table(net, shape)["macs"].sum())

    def factor(macs: int) -> float:
        return (full / max(macs, 1)) ** 0.15

    dev = SimulatedDevice("sim", overhead_ms=0.05, ms_per_mmac=0.05, factor=factor,
                          noise=args.sigma, seed=args.seed)

    def steady_ms(macs: int) -> float:  # noiseless, at the speed of the start
        return (dev.overhead_ms + dev.ms_per_mmac * macs / 1e6) * factor(macs)

    class LinearPredictor:  # the device's law without the MACs^0.85: a biased predictor
        device_ = "sim"

        def __init__(self) -> None:
            from latbench.data.features import FEATURE_SCHEMA_VERSION

            self.feature_schema_ = FEATURE_SCHEMA_VERSION

        def predict(self, tables):
            return [dev.overhead_ms + dev.ms_per_mmac * float(t["macs"].sum()) / 1e6 for t in tables]

    t0 = time.perf_counter()
    searcher = Searcher(net, dev, input_shape=shape, calib=4, repeats=5, warmup=0,
                        predictor=LinearPredictor(), fractions=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85))
    cases = []
    for name, speed in drifts().items():
        for share in (float(b) for b in args.budgets.split(",")):
            k0 = dev.calls
            dev.speed = lambda k, s=speed, k0=k0: s(k - k0)
            r = searcher.search(speedup=1 / share, baseline=False, front_points=2)
            d = r.to_dict()
            true = steady_ms(r.macs_before) / steady_ms(r.macs_after)
            case = dict(drift=name, budget_fraction=share, met=bool(d["met"]),
                        met_truly=bool(true >= 1 / share),
                        within_10pct=bool(true >= 1 / share and 1 / true >= 0.9 * share),
                        reported_speedup=d["speedup"], true_speedup=true,
                        speedup_error=d["speedup"] / true - 1, rounds=len(r.rounds),
                        measurements=dev.calls - k0, fidelity=d["fidelity"])
            print(json.dumps(case), file=sys.stderr, flush=True)
            cases.append(case)
    n = len(cases)
    out = {"date": time.strftime("%Y-%m-%d"), "model": "resnet18", "input_shape": list(shape),
           "sigma": args.sigma, "cases": n,
           "met_share": sum(c["met"] for c in cases) / n,
           "met_truly_share": sum(c["met_truly"] for c in cases) / n,
           "reported_met_but_not_truly": sum(c["met"] and not c["met_truly"] for c in cases),
           "within_10pct_share": sum(c["within_10pct"] for c in cases) / n,
           "max_abs_speedup_error": max(abs(c["speedup_error"]) for c in cases),
           "mean_rounds": sum(c["rounds"] for c in cases) / n,
           "wall_seconds": time.perf_counter() - t0, "per_case": cases}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
