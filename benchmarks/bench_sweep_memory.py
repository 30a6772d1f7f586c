"""Peak memory of a sweep, model by model: does RSS stay flat across the models of one sweep?

One ``run_sweep`` over ResNet-18, ResNet-34 and MobileNetV2 at 1×3×32×32 (Tucker-2 and SVD at
three fractional ranks each, plus each original: 7 variants a model) on the local CPU, in one
process. A model's *phase* runs from the end of the previous model's last variant to the end of
its own last variant (the sweep's progress events mark both). At each phase end the script reads
the kernel's peak resident set size since the phase began (``VmHWM`` of ``/proc/self/status``,
reset by writing ``5`` to ``/proc/self/clear_refs``, Linux ≥ 4.0) and the RSS left behind; a
thread sampling ``VmRSS`` every 20 ms adds each phase's lowest RSS. A phase begins while the
previous model is still held (its last progress event comes before the sweep releases it), so
a phase's peak is at least the RSS the previous phase ended with: the figure can overstate a
later phase, never understate it; the lowest sample shows what the release gave back.

Target (issue #11): the third model's phase peaks within 15 % of the first's, i.e. memory is
given back between models instead of growing with every model swept.

Measurements are short (``--repeats 5``, no adaptive sampling): the figure is memory, not
latency. Prints one JSON object. Usage::

    python benchmarks/bench_sweep_memory.py [--models resnet18,resnet34,mobilenet_v2]
        [--shape 1x3x32x32] [--methods tucker2,svd] [--ranks 0.25,0.5,0.75] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import tempfile
import threading
import time
from pathlib import Path


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M).group(1))


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,resnet34,mobilenet_v2")
    ap.add_argument("--shape", default="1x3x32x32")
    ap.add_argument("--methods", default="tucker2,svd")
    ap.add_argument("--ranks", default="0.25,0.5,0.75")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from latbench.bench.sweep import SweepConfig, Target, plan_sweep, run_sweep
    from latbench.data.store import parse_shape_str

    shape = parse_shape_str(args.shape)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    ranks = tuple(float(r) for r in args.ranks.split(","))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    cfg = SweepConfig(tuple(Target(m, shape, methods, ranks) for m in models),
                      threads=args.threads, warmup=1, repeats=args.repeats, adaptive=False)
    order = [v.model for v in plan_sweep(cfg, lambda spec: None)]  # no random plans: no model built
    phases: list[dict] = []
    start = [time.perf_counter()]
    low = [float("inf")]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            low[0] = min(low[0], _status_kib("VmRSS") / 1024)

    sampler = threading.Thread(target=sample, daemon=True)

    def on_event(ev) -> None:
        if ev.phase != "variants":
            return
        i = ev.done - 1
        if i + 1 < len(order) and order[i + 1] == order[i]:
            return
        now = time.perf_counter()
        phases.append({"model": order[i], "variants": order.count(order[i]),
                       "peak_rss_mb": round(_status_kib("VmHWM") / 1024, 1),
                       "lowest_rss_mb": round(low[0], 1),
                       "end_rss_mb": round(_status_kib("VmRSS") / 1024, 1),
                       "seconds": round(now - start[0], 1)})
        _reset_peak()
        low[0] = _status_kib("VmRSS") / 1024
        start[0] = time.perf_counter()

    before_mb = _status_kib("VmRSS") / 1024
    with tempfile.TemporaryDirectory() as tmp:
        _reset_peak()
        low[0] = before_mb
        sampler.start()
        t0 = time.perf_counter()
        try:
            summary = run_sweep(cfg, args.device, Path(tmp) / "lat.db", progress=on_event)
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - t0
    first, last = phases[0]["peak_rss_mb"], phases[-1]["peak_rss_mb"]
    print(json.dumps({
        "benchmark": "sweep_memory",
        "date": dt.date.today().isoformat(),
        "host": platform.node(),
        "device": args.device,
        "shape": list(shape),
        "methods": list(methods),
        "ranks": list(ranks),
        "rss_before_sweep_mb": round(before_mb, 1),
        "phases": phases,
        "last_vs_first_peak": round(last / first, 3),
        "target": "last model's phase peak <= 1.15 x the first's",
        "met": last <= 1.15 * first,
        "measured": summary.measured,
        "failed": summary.failed,
        "wall_s": round(wall, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
