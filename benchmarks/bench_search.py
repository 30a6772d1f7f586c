"""Latency-constrained rank search on the local CPU: budgets met, tightness, fidelity vs uniform.

For each model (random weights, seed 0) a search runs at budgets of 30 %, 40 %, ..., 90 %
of the original's latency as measured at the start of that search (``speedup = 1 / share``).
Costs come from layers measured alone on the device. One
:class:`~latbench.search.search.Searcher` per model makes candidates, damages and costs once
and answers all its budgets. Fidelity is ``1 − relative output error`` on a seeded Gaussian
calibration batch. Prints one JSON object:

* per case: budget, measured latency of the final plan, ``met``, ``tight`` (measured
  within 10 % under the budget), rounds, fidelity, the uniform-rank baseline's fidelity
  interpolated at the same measured latency, and search time without device measurement
  (``search_seconds``: this budget alone; ``search_seconds_from_scratch``: plus the model's
  one-off preparation, i.e. what one ``bench search`` takes);
* per model and overall: share met, share met-and-tight, share beating the baseline,
  the largest search time.

Usage: ``.venv/bin/python benchmarks/bench_search.py [--models resnet18,vgg11]
[--size 64] [--budgets 0.3,0.4,0.5,0.6,0.7,0.8,0.9] [--threads 1] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,vgg11")
    p.add_argument("--size", type=int, default=64, help="input side (1x3xSxS)")
    p.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--calib", type=int, default=8)
    p.add_argument("--methods", default="resnet18=tucker2,svd;vgg11=tucker2,svd",
                   help="per model: name=methods;...")
    args = p.parse_args(argv)

    import onnxruntime
    import torch

    from latbench.devices.cpu import CpuDevice, cpu_model_name
    from latbench.exceptions import UserInputError
    from latbench.models import resolve_model
    from latbench.search.policy import MeasurementPolicy
    from latbench.search.search import Searcher

    torch.set_num_threads(args.threads)
    shape = (1, 3, args.size, args.size)
    dev = CpuDevice(threads=args.threads)
    out: dict = {"date": time.strftime("%Y-%m-%d"), "input_shape": list(shape),
                 "threads": args.threads, "repeats": args.repeats, "cpu": cpu_model_name(),
                 "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                 "models": {}}
    all_cases = []
    for name in args.models.split(","):
        import tempfile
        from pathlib import Path

        net = resolve_model(name, seed=0)
        note = None
        if isinstance(getattr(net, "avgpool", None), torch.nn.AdaptiveAvgPool2d) and args.size < 224 \
                and name.startswith("vgg"):
            # ONNX cannot export a 7x7 adaptive pool from a 2x2 map; nearest upsampling to 7x7
            # feeds the unchanged classifier the same shape (the pool's cost is negligible).
            net.avgpool = torch.nn.Upsample(size=(7, 7), mode="nearest")
            note = "avgpool replaced by nearest upsampling to 7x7 (ONNX export below 224x224)"
        methods = dict(kv.split("=") for kv in args.methods.split(";")).get(name, "tucker2,svd")
        methods = tuple(methods.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            meter = MeasurementPolicy(dev, shape, Path(tmp), args.threads, 10, args.repeats)
            original = min(meter.measure(net, "orig") for _ in range(3))
        searcher = Searcher(net, dev, input_shape=shape, methods=methods, calib=args.calib,
                            threads=args.threads, repeats=args.repeats)
        prepare_s = None
        t0 = time.perf_counter()
        cases = []
        for frac in (float(b) for b in args.budgets.split(",")):
            case = {"model": name, "budget_fraction": frac}
            try:
                t1 = time.perf_counter()
                # The budget is a share of the original as the search itself measures it, so
                # a burst of load between the two measurements cannot make it meaningless.
                r = searcher.search(speedup=1 / frac)
                if r.prepare_seconds:
                    prepare_s = r.prepare_seconds
                own_s = r.search_seconds - r.prepare_seconds
                budget = r.budget_ms
                b = r.baseline or {}
                eq = b.get("fidelity_at_equal_latency")
                case.update(
                    budget_ms=budget, original_ms_in_search=r.original_ms, measured_ms=r.measured_ms,
                    predicted_ms=r.predicted_ms, met=bool(r.met), speedup=r.speedup,
                    original_moved=(r.original_drift or {}).get("moved"),
                    tight=bool(r.met and r.measured_ms >= 0.9 * budget),
                    under_by=1 - r.measured_ms / budget, rounds=len(r.rounds),
                    round_measured_ms=[x.measured_ms for x in r.rounds],
                    fidelity=r.fidelity, output_rel_error=r.output_rel_error,
                    uniform_method=b.get("method"), uniform_fidelity_at_equal_latency=eq,
                    uniform_points=[(d["fraction"], d["measured_ms"], d["fidelity"])
                                    for d in b.get("measured", [])],
                    beats_uniform=None if eq is None else bool(r.fidelity >= eq),
                    search_seconds=own_s, search_seconds_from_scratch=own_s + (prepare_s or 0.0),
                    wall_seconds=time.perf_counter() - t1,
                    params_after=r.params_after, macs_after=r.macs_after)
            except UserInputError as exc:
                case.update(error=str(exc), met=False, tight=False)
            print(json.dumps(case), file=sys.stderr, flush=True)
            cases.append(case)
        all_cases += cases
        out["models"][name] = {"original_ms": original, "methods": list(methods), "note": note, "wall_seconds": time.perf_counter() - t0,
                               "prepare_seconds": prepare_s,
                               **_summary(cases), "cases": cases}
    out["overall"] = _summary(all_cases)
    print(json.dumps(out, indent=1))
    return out


def _summary(cases: list[dict]) -> dict:
    n = len(cases)
    cmp = [c for c in cases if c.get("beats_uniform") is not None]
    return {"cases": n, "met_share": sum(c["met"] for c in cases) / n,
            "met_and_within_10pct_share": sum(c["tight"] for c in cases) / n,
            "beats_uniform_share": (sum(c["beats_uniform"] for c in cmp) / len(cmp)) if cmp else None,
            "compared_with_uniform": len(cmp),
            "max_search_seconds_from_scratch": max(
                (c.get("search_seconds_from_scratch", 0.0) for c in cases), default=0.0)}


if __name__ == "__main__":
    main()
