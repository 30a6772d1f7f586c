"""Compression throughput of a farm sweep with 1 and 2 workers (issue #16).

The same sweep (ResNet-18 at 1×3×32×32: the original, each of ``--methods`` (default Tucker-2
and SVD) at ¼, ½, ¾ ranks, and 2 random per-layer plans: 9 variants, 12 with ``cp`` added) runs on the ``cpu`` device into a fresh store once per
worker count, in one run, alternating counts for ``--rounds`` rounds. Each run gets its own
local Ray cluster with that many CPUs, started before the clock starts (its start-up, ~8 s
here, is not the sweep's); the ``cpu`` device measures each variant with 3 fixed repeats
(its host gate keeps compression off the CPU while it measures, so measuring is in the
figure but small). Throughput = variants / wall seconds of ``run_farm_sweep`` × 60.

    python benchmarks/bench_farm_workers.py            # prints one JSON object
    python benchmarks/bench_farm_workers.py --methods tucker2,cp,svd --rounds 2

Needs the farm extra (``pip install "latbench[farm]"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def one_sweep(workers: int, cfg, folder: Path) -> dict:
    import ray

    from latbench.farm import run_farm_sweep

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        db = folder / f"w{workers}-{time.time_ns()}.db"
        t0 = time.perf_counter()
        s = run_farm_sweep(cfg, ["cpu"], db, workers=workers)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    n = s.devices["cpu"].measured
    return {"variants": n, "wall_s": round(wall, 2),
            "variants_per_min": round(60.0 * n / wall, 2),
            "compress_cpu_s": round(s.seconds["compress"], 2),
            "export_cpu_s": round(s.seconds["export"], 2),
            "measure_s": round(s.devices["cpu"].seconds["measure"], 2)}


def main() -> None:
    from latbench.bench.sweep import SweepConfig, Target

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--input", default="1x3x32x32")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--methods", default="tucker2,svd")
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.input.split("x"))
    methods = tuple(m for m in args.methods.split(",") if m)
    cfg = SweepConfig((Target(args.model, shape, methods, (0.25, 0.5, 0.75)),),
                      random_plans=2, threads=1, warmup=1, repeats=3, adaptive=False)
    counts = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="latbench-bench-farm-") as tmp:
        for _ in range(args.rounds):
            for w in counts:
                runs[w].append(one_sweep(w, cfg, Path(tmp)))
    med = {w: statistics.median(r["variants_per_min"] for r in rs) for w, rs in runs.items()}
    out = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "input": args.input,
           "methods": list(methods), "variants": runs[counts[0]][0]["variants"],
           "device": "cpu", "rounds": args.rounds,
           "runs": {str(w): rs for w, rs in runs.items()},
           "median_variants_per_min": {str(w): v for w, v in med.items()}}
    if len(counts) >= 2:
        out[f"speedup_{counts[-1]}_vs_{counts[0]}"] = round(med[counts[-1]] / med[counts[0]], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
