"""RON against Tucker-2 and SVD on the digits CNN: accuracy vs measured cpu latency, no fine-tuning.

Trains :class:`latbench.models.digits.DigitsCNN` (width 16, 32×32 input, 4 epochs, seed 0)
on scikit-learn's digits, then makes, without any fine-tuning:

* RON (``compress.ron``) with the tail starting at ``features.0`` (everything), ``features.3``
  (the last two conv blocks) and ``features.5`` (the last block), ranks 8–64, calibrated on
  the first 1,024 training images;
* Tucker-2 and SVD of every conv at uniform rank fractions.

Every variant is exported to ONNX and measured on the ``cpu`` device (onnxruntime, one
thread), all variants interleaved over several rounds (the median of the rounds' medians),
so that load drifting on a shared machine hits all alike. Validation accuracy on the 449
held-out images. For each RON variant the Tucker-2 / SVD accuracy at the same measured
latency is interpolated linearly between their measured points (``null`` where RON is
faster than every one of them). Prints one JSON object.

    .venv/bin/python benchmarks/bench_ron_digits.py [--rounds 5] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def interpolate(points: list[tuple[float, float]], ms: float) -> float | None:
    """Accuracy of a latency→accuracy curve (its upper envelope) at ``ms``; None outside it."""
    pts = sorted(points)
    if not pts or ms < pts[0][0]:
        return None
    if ms >= pts[-1][0]:
        return max(a for _, a in pts)
    xs = np.array([p[0] for p in pts])
    best = np.maximum.accumulate(np.array([p[1] for p in pts]))  # faster never beats slower's best
    return float(np.interp(ms, xs, best))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--calibration", type=int, default=1024)
    args = ap.parse_args()

    import torch

    from latbench.compress.export import export_onnx
    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.devices.cpu import CpuDevice
    from latbench.models.digits import accuracy, load_digits_data, train_digits_cnn

    torch.set_num_threads(1)
    t0 = time.time()
    data = load_digits_data(32, seed=0)
    net = train_digits_cnn(data, width=16, epochs=4, seed=0)
    shape = data.input_shape
    calib = data.x_train[: args.calibration]
    variants: list[dict] = [{"method": "original", "model": net, "macs": None}]
    for start in ("*", "features.3*", "features.5*"):
        for rank in (8, 16, 32, 64):
            res = compress_model(net, Plan.uniform("ron", rank, start), input_shape=shape, calibration=calib)
            variants.append({"method": "ron", "start": start, "rank": rank, "model": res.model,
                             "macs": res.macs_after, "seconds": round(res.seconds, 1),
                             "output_rel_error": round(res.output_rel_error, 4),
                             "stages": [{"name": r.name, "rank": list(r.rank),
                                         **{k: round(float(v), 4) for k, v in r.details.items()}}
                                        for r in res.layers]})
    for method, fractions in (("tucker2", (0.1, 0.2, 0.3, 0.5, 0.7)), ("svd", (0.1, 0.2, 0.3, 0.5, 0.7))):
        for f in fractions:
            res = compress_model(net, Plan.uniform(method, f, "features.*"), input_shape=shape)
            variants.append({"method": method, "rank": f, "model": res.model, "macs": res.macs_after})
    from latbench.data.features import layer_table

    variants[0]["macs"] = int(layer_table(net, shape)["macs"].sum())
    device = CpuDevice(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        arts = [export_onnx(v["model"], shape, Path(tmp) / f"v{i}.onnx") for i, v in enumerate(variants)]
        medians: list[list[float]] = [[] for _ in variants]
        for _ in range(args.rounds):
            for i, art in enumerate(arts):
                m = device.measure(art, device.make_spec(art, threads=1, warmup=20, repeats=args.repeats))
                medians[i].append(m.median_ms)
    for v, meds in zip(variants, medians):
        v["latency_ms"] = round(float(np.median(meds)), 4)
        v["latency_rounds_ms"] = [round(x, 4) for x in meds]
        v["accuracy"] = round(accuracy(v.pop("model"), data.x_val, data.y_val), 4)
    base = {m: [(v["latency_ms"], v["accuracy"]) for v in variants if v["method"] == m]
            for m in ("tucker2", "svd")}
    for v in variants:
        if v["method"] == "ron":
            for m, pts in base.items():
                acc = interpolate(pts, v["latency_ms"])
                v[f"{m}_accuracy_at_equal_latency"] = None if acc is None else round(acc, 4)
    out = {"date": "2026-11-30", "device": "cpu (onnxruntime, 1 thread)", "rounds": args.rounds,
           "repeats": args.repeats, "calibration": int(calib.shape[0]),
           "val_images": int(len(data.y_val)), "variants": variants,
           "seconds": round(time.time() - t0, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
