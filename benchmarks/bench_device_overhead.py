"""Overhead and repeatability of the built-in ``cpu`` device.

1. Overhead: the ``cpu`` device's median latency against a bare onnxruntime
   ``session.run`` loop timed with ``perf_counter_ns``, on the same model, in the same
   process. The two are interleaved round by round (A B, then B A, ...) so that a busy
   spell on the shared machine hits both alike. Target: ratio ≤ 1.02.
2. Repeatability: the same model measured twice by the device in one run; the medians
   should agree within 3 %.

Prints one JSON object. Usage::

    .venv/bin/python benchmarks/bench_device_overhead.py [--rounds 10] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--shape", default="1x3x112x112")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat-runs", type=int, default=60, help="samples per repeatability run")
    args = ap.parse_args()

    import onnxruntime as ort

    from latbench.compress.export import export_onnx
    from latbench.devices.cpu import CpuDevice, random_input
    from latbench.models import resolve_model

    shape = tuple(int(s) for s in args.shape.split("x"))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = export_onnx(resolve_model(args.model), shape, Path(tmp) / "model.onnx")
        dev = CpuDevice(threads=args.threads)
        spec = dev.make_spec(artifact, warmup=args.warmup, repeats=args.repeats)

        # The bare loop: the same session settings, no latbench code between the runs.
        sess = ort.InferenceSession(str(artifact.path), dev.session_options(args.threads),
                                    providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: random_input(shape, np.float32, dev.seed)}

        def bare() -> list[float]:
            for _ in range(args.warmup):
                sess.run(None, feed)
            out = []
            for _ in range(args.repeats):
                t0 = time.perf_counter_ns()
                sess.run(None, feed)
                out.append((time.perf_counter_ns() - t0) * 1e-9)
            return out

        dev_samples: list[float] = []
        bare_samples: list[float] = []
        round_ratios: list[float] = []
        for r in range(args.rounds):
            order = ("dev", "bare") if r % 2 == 0 else ("bare", "dev")
            got: dict[str, list[float]] = {}
            for who in order:
                got[who] = list(dev.measure(artifact, spec).samples_s) if who == "dev" else bare()
            dev_samples += got["dev"]
            bare_samples += got["bare"]
            round_ratios.append(float(np.median(got["dev"]) / np.median(got["bare"])))

        rep_spec = dev.make_spec(artifact, warmup=args.warmup, repeats=args.repeat_runs)
        first = dev.measure(artifact, rep_spec)
        second = dev.measure(artifact, rep_spec)

    # The loop's own cost, free of the machine's noise: time an empty call through the
    # device's timer and through a bare perf_counter_ns pair.
    from latbench.measure.timing import sample, wall_clock

    empty = sample(wall_clock(lambda: None), warmup=100, repeats=20000).samples_s
    bare_empty = []
    for _ in range(20000):
        t0 = time.perf_counter_ns()
        bare_empty.append((time.perf_counter_ns() - t0) * 1e-9)
    timer_overhead_s = float(np.median(empty) - np.median(bare_empty))

    def riqr(s: list[float]) -> float:
        q75, q50, q25 = np.percentile(s, [75, 50, 25])
        return float((q75 - q25) / q50)

    med_dev, med_bare = float(np.median(dev_samples)), float(np.median(bare_samples))
    rep_diff = abs(first.median_ms - second.median_ms) / min(first.median_ms, second.median_ms)
    print(json.dumps({
        "date": dt.date.today().isoformat(),
        "model": args.model, "input_shape": list(shape), "threads": args.threads,
        "onnxruntime": ort.__version__,
        "overhead": {
            "rounds": args.rounds, "repeats_per_round": args.repeats,
            "device_median_ms": med_dev * 1e3, "bare_median_ms": med_bare * 1e3,
            "ratio_pooled_medians": med_dev / med_bare,
            "ratio_median_of_rounds": float(np.median(round_ratios)),
            "round_ratios": [round(x, 4) for x in round_ratios],
            "device_relative_iqr": riqr(dev_samples), "bare_relative_iqr": riqr(bare_samples),
            "target": "<= 1.02",
            "timer_overhead_us_per_sample": timer_overhead_s * 1e6,
            "timer_overhead_fraction_of_median": timer_overhead_s / med_bare,
        },
        "repeatability": {
            "repeats": args.repeat_runs,
            "median_ms": [first.median_ms, second.median_ms],
            "relative_difference": rep_diff,
            "relative_iqr": [first.relative_iqr, second.relative_iqr],
            "target": "<= 0.03",
        },
        "wall_s": time.perf_counter() - t_start,
    }, indent=2))


if __name__ == "__main__":
    main()
