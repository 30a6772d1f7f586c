"""The LiteRT path on this host: conversion, litert vs cpu latency, overhead, phone scheme cost.

1. Conversion: ResNet-18 and its variants by every method (Tucker-2, CP, CP3, TT, SVD on the
   residual stages; CUR on the classifier; CP and CP3 on ``layer4`` only, as their ALS is
   slow) converted with ``export_tflite`` (litert-torch, plus the check against torch on the
   LiteRT interpreter): seconds per model, and the check's relative error.
2. litert vs cpu: each variant's median latency on the ``litert`` device (LiteRT, XNNPACK)
   and the ``cpu`` device (onnxruntime) in one run, interleaved, same threads; ratio
   litert / cpu per variant kind.
3. Overhead: the ``litert`` device's median against a bare ``interpreter.invoke()`` loop
   timed with ``perf_counter_ns`` on the same model, in the same process, interleaved round
   by round. Target: ratio ≤ 1.02.
4. Phone scheme cost, on the loopback phone with the benchmark_model stand-in (the test
   suite's ``fake_adbd`` and ``standin_runner``, the real .tflite timed on ai-edge-litert):
   ``repeats`` runs as ``ceil(repeats / 3)`` calls of ≤ 3 runs (what latbench does: the only
   way to per-run samples, since neither benchmark_model prints single runs) against one
   call of ``repeats`` runs (one session, what the tool would need if it printed them). The
   extra wall time is what each call's process start, model load and warm-up cost.

Prints one JSON object. Usage::

    python benchmarks/bench_litert.py [--shape 1x3x224x224] [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def variants(shape):
    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.models import resolve_model

    net = resolve_model("resnet18")
    yield "original", net, 0.0
    for method, layers in (("tucker2", "layer*"), ("svd", "layer*"), ("tt", "layer*"),
                           ("cp", "layer4.*"), ("cp3", "layer4.*"), ("cur", "fc")):
        t0 = time.perf_counter()
        res = compress_model(net, Plan.uniform(method, 0.5, layers), input_shape=shape)
        yield method, res.model, time.perf_counter() - t0


def conversion_and_latency(args, shape, work: Path) -> tuple[dict, dict]:
    import torch

    from latbench.bench.run import measure_artifact
    from latbench.compress.export import export_onnx, export_tflite
    from latbench.devices.cpu import CpuDevice
    from latbench.devices.litert import LiteRtDevice

    conv: dict[str, dict] = {}
    lat: dict[str, dict] = {}
    cpu, lite = CpuDevice(threads=args.threads), LiteRtDevice(threads=args.threads)
    for kind, model, compress_s in variants(shape):
        t0 = time.perf_counter()
        tfl = export_tflite(model, shape, work / f"{kind}.tflite")
        convert_s = time.perf_counter() - t0
        onnx = export_onnx(model, shape, work / f"{kind}.onnx")
        # the check's figure, recomputed here so that it can be reported
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        ref = model.eval()(x).detach().numpy()
        interp = lite.interpreter(tfl.path, 1)
        interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
        conv[kind] = {"convert_s": round(convert_s, 2), "compress_s": round(compress_s, 2),
                      "max_rel_error": float(np.max(np.abs(out - ref)) / np.max(np.abs(ref))),
                      "tflite_mb": round(tfl.path.stat().st_size / 1e6, 2)}
        meds: dict[str, list[float]] = {"cpu": [], "litert": []}
        for r in range(args.rounds):
            order = (("cpu", cpu, onnx), ("litert", lite, tfl))
            for name, dev, art in (order if r % 2 == 0 else order[::-1]):
                m = measure_artifact(dev, art, warmup=args.warmup, repeats=args.repeats)
                meds[name].append(m.median_ms)
        c, l_ = float(np.median(meds["cpu"])), float(np.median(meds["litert"]))
        lat[kind] = {"cpu_ms": round(c, 3), "litert_ms": round(l_, 3),
                     "litert_over_cpu": round(l_ / c, 3)}
    return conv, lat


def overhead(args, work: Path) -> dict:
    from latbench.compress.export import export_tflite
    from latbench.devices.litert import LiteRtDevice
    from latbench.measure.timing import sample, wall_clock
    from latbench.models import resolve_model

    out = {}
    for label, shape in (("resnet18_1x3x64x64", (1, 3, 64, 64)), ("resnet18_1x3x32x32",
                                                                    (1, 3, 32, 32))):
        art = export_tflite(resolve_model("resnet18"), shape, work / f"ovh-{label}.tflite")
        dev = LiteRtDevice(threads=args.threads)
        spec = dev.make_spec(art, warmup=args.warmup, repeats=args.repeats)
        it = dev.interpreter(art.path, args.threads)
        it.set_tensor(it.get_input_details()[0]["index"],
                      np.random.default_rng(0).standard_normal(shape).astype(np.float32))

        def bare() -> list[float]:
            for _ in range(args.warmup):
                it.invoke()
            res = []
            for _ in range(args.repeats):
                t0 = time.perf_counter_ns()
                it.invoke()
                res.append((time.perf_counter_ns() - t0) * 1e-9)
            return res

        dev_s: list[float] = []
        bare_s: list[float] = []
        ratios = []
        for r in range(args.rounds * 2):
            got = {}
            for who in (("dev", "bare") if r % 2 == 0 else ("bare", "dev")):
                got[who] = list(dev.measure(art, spec).samples_s) if who == "dev" else bare()
            dev_s += got["dev"]
            bare_s += got["bare"]
            ratios.append(float(np.median(got["dev"]) / np.median(got["bare"])))
        empty = sample(wall_clock(lambda: None), warmup=100, repeats=20000).samples_s
        bare_empty = []
        for _ in range(20000):
            t0 = time.perf_counter_ns()
            bare_empty.append((time.perf_counter_ns() - t0) * 1e-9)
        timer_s = float(np.median(empty) - np.median(bare_empty))
        out[label] = {"device_median_ms": float(np.median(dev_s)) * 1e3,
                      "bare_median_ms": float(np.median(bare_s)) * 1e3,
                      "ratio_pooled_medians": float(np.median(dev_s) / np.median(bare_s)),
                      "ratio_median_of_rounds": float(np.median(ratios)),
                      "timer_overhead_us_per_sample": timer_s * 1e6,
                      "timer_overhead_fraction_of_median": timer_s / float(np.median(bare_s)),
                      "target": "<= 1.02"}
    return out


def phone_scheme(args, work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "devices" / "adb"))
    sys.path.insert(0, str(ROOT / "tests"))
    import shutil

    from adb_shell.auth.keygen import keygen
    from adb_testdata import PROPS, sysfs
    from fake_adbd import FakeAdbd

    from latbench.compress.export import export_tflite
    from latbench.devices.adb import AdbDevice
    from latbench.models import resolve_model

    shape = (1, 3, 64, 64)
    art = export_tflite(resolve_model("resnet18"), shape, work / "phone.tflite")
    keygen(str(work / "adbkey"))
    runner = work / "benchmark_model"
    shutil.copyfile(ROOT / "tests" / "devices" / "adb" / "standin_runner.py", runner)
    battery = (ROOT / "tests" / "devices" / "adb" / "fixtures" / "dumpsys_battery.txt").read_text()
    out = {"model": "resnet18", "input_shape": list(shape), "repeats": args.phone_repeats}
    with FakeAdbd(work / "phone", props=dict(PROPS), settings={"low_power": "0"}, battery=battery,
                  sysfs=sysfs(), max_command_s=600.0) as fake:
        dev = AdbDevice.from_profile("phone", {
            "kind": "adb", "host": fake.host, "runner": str(runner), "adbkey": str(work / "adbkey"),
            "cpus": "30", "threads": args.threads, "timeout_s": 600.0})
        dev.measure(art, dev.make_spec(art, warmup=0, repeats=1))  # pushes runner and model
        remote = dev._ensure_model(art)  # already there: only its remote path
        calls = dev.runner.invocations(remote, cpu_mask="30", threads=args.threads,
                                       warmup=args.warmup, repeats=args.phone_repeats,
                                       work_dir=dev.remote_dir)
        session_cmd = calls[0].command.replace(f"--num_runs={calls[0].runs}",
                                               f"--num_runs={args.phone_repeats}")
        schemes, sessions, inits = [], [], []
        for r in range(args.rounds):
            for who in (("scheme", "session") if r % 2 == 0 else ("session", "scheme")):
                t0 = time.perf_counter()
                if who == "scheme":
                    outs = []
                    for c in calls:
                        res = dev.conn.shell(c.command, timeout_s=600.0)
                        assert res.rc == 0, res.output[-500:]
                        outs.append(res.output)
                    schemes.append(time.perf_counter() - t0)
                    parsed = dev.runner.parse(outs, [None] * len(outs), warmup=args.warmup,
                                              repeats=args.phone_repeats)
                    assert len(parsed.samples_s) == args.phone_repeats
                    inits.append(parsed.summary["init_mean_s"])
                else:
                    res = dev.conn.shell(session_cmd, timeout_s=600.0)
                    assert res.rc == 0, res.output[-500:]
                    sessions.append(time.perf_counter() - t0)
        dev.close()
    s, o = float(np.median(schemes)), float(np.median(sessions))
    out.update({"calls_per_measurement": len(calls), "scheme_wall_s": round(s, 3),
                "one_session_wall_s": round(o, 3), "ratio": round(s / o, 2),
                "extra_s_per_sample": round((s - o) / args.phone_repeats, 4),
                "model_init_s_per_call": round(float(np.median(inits)), 4),
                "note": "stand-in on this host: each call starts a Python process and loads "
                        "ai-edge-litert, which a native binary on a phone does not; on a phone "
                        "the per-call cost is the model load (+ GPU kernel compile) and warm-up"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1x3x224x224")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phone-repeats", type=int, default=30)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: "
                                               "conversion,overhead,phone")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import ai_edge_litert  # noqa: F401  (fails early without the extra)
    import onnxruntime as ort

    from latbench.devices.litert import litert_version

    shape = tuple(int(s) for s in args.shape.split("x"))
    t_start = time.perf_counter()
    doc: dict = {"date": dt.date.today().isoformat(), "threads": args.threads,
                 "litert": litert_version(), "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "conversion" not in skip:
            conv, lat = conversion_and_latency(args, shape, work)
            doc["conversion"] = {"input_shape": list(shape), "per_method": conv}
            doc["litert_vs_cpu"] = {"input_shape": list(shape), "repeats": args.repeats,
                                    "rounds": args.rounds, "per_variant": lat,
                                    "median_ratio": float(np.median(
                                        [v["litert_over_cpu"] for v in lat.values()]))}
        if "overhead" not in skip:
            doc["overhead"] = overhead(args, work)
        if "phone" not in skip:
            doc["phone_runs_per_call_cost"] = phone_scheme(args, work)
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
