"""``bench sweep`` throughput on the local CPU, and realised speedup against MAC reduction.

1. Throughput: ``run_sweep`` on ResNet-18 at 1×3×224×224 into a fresh database; variants per
   minute, and the time split into compress / export / measure (the sweep's own counters).
2. Ratio of ratios per variant: ``(t_orig / t_variant) / (MACs_orig / MACs_variant)``;
   1.0 means the latency fell exactly as much as the MACs, below 1 means it fell less.
   MACs come from the stored layer tables. ``t_orig`` is measured by the sweep and once more
   after it (the mean of the two is used, both are reported) to show the drift of a busy machine.

The fractional ranks default to ones that cut ResNet-18's MACs 2–4× for Tucker-2 and SVD;
CP needs rank ≥ 0.8 for a cut under 4×, whose CP-ALS alone takes longer than this benchmark's
budget here, so CP runs at 0.5 (about 6×) unless ``--cp-ranks`` says otherwise.

Prints one JSON object. Usage::

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 20] [--threads 1] [--cp-ranks 0.5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",") if t.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--shape", default="1x3x224x224")
    ap.add_argument("--tucker2-ranks", type=_floats, default=(0.4, 0.55))
    ap.add_argument("--svd-ranks", type=_floats, default=(0.22, 0.4))
    ap.add_argument("--cp-ranks", type=_floats, default=(0.5,))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import onnxruntime as ort

    from latbench.bench.sweep import SweepConfig, Target, plan_sweep, run_sweep
    from latbench.compress.export import export_onnx
    from latbench.data.store import Store, parse_shape_str
    from latbench.devices.cpu import CpuDevice
    from latbench.models import resolve_model

    shape = parse_shape_str(args.shape)
    targets = tuple(Target(args.model, shape, (m,), ranks) for m, ranks in
                    (("tucker2", args.tucker2_ranks), ("svd", args.svd_ranks), ("cp", args.cp_ranks))
                    if ranks)
    cfg = SweepConfig(targets, threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    variants = plan_sweep(cfg, lambda spec: resolve_model(spec))

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "lat.db"
        per_variant: list[float] = []
        last = [time.perf_counter()]

        def on_event(ev) -> None:
            now = time.perf_counter()
            per_variant.append(now - last[0])
            last[0] = now

        t0 = time.perf_counter()
        summary = run_sweep(cfg, "cpu", db, progress=on_event)
        wall = time.perf_counter() - t0

        # the original once more, after the sweep: how far did the machine drift?
        dev = CpuDevice(threads=args.threads)
        art = export_onnx(resolve_model(args.model), shape, Path(tmp) / "orig.onnx")
        again = dev.measure(art, dev.make_spec(art, threads=args.threads, warmup=args.warmup,
                                              repeats=args.repeats))

        rows = []
        with Store(db) as store:
            for v, secs in zip(variants, per_variant):
                med, iqr = store.connection.execute(
                    "SELECT m.median_ms, m.iqr_ms FROM measurements m JOIN variants x "
                    "ON x.id = m.variant_id WHERE x.content_hash = ?", (v.key,)).fetchone()
                macs = int(store.variant_layers(v.key, shape)["macs"].sum())
                rows.append(dict(variant=v.label, method=v.method, median_ms=round(med, 3),
                                 iqr_ms=round(iqr, 3), macs=macs, seconds=round(secs, 1)))
    orig = rows[0]
    t_orig = (orig["median_ms"] + again.median_ms) / 2
    for r in rows[1:]:
        r["mac_cut"] = round(orig["macs"] / r["macs"], 2)
        r["speedup"] = round(t_orig / r["median_ms"], 2)
        r["ratio_of_ratios"] = round(r["speedup"] / r["mac_cut"], 2)

    total = sum(summary.seconds.values())
    print(json.dumps({
        "benchmark": "sweep",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.system()}",
        "onnxruntime": ort.__version__,
        "model": args.model, "input": args.shape, "threads": args.threads,
        "warmup": args.warmup, "repeats": args.repeats,
        "variants_measured": summary.measured, "failed": summary.failed,
        "wall_s": round(wall, 1),
        "variants_per_minute": round(summary.measured / (wall / 60), 2),
        "seconds": {k: round(v, 1) for k, v in summary.seconds.items()},
        "share": {k: round(v / total, 3) for k, v in summary.seconds.items()},
        "t_orig_ms": {"in_sweep": orig["median_ms"], "after_sweep": round(again.median_ms, 3),
                      "used": round(t_orig, 3)},
        "variants": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
