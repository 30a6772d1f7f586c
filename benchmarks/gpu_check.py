"""GPU check: the ``cuda`` device on the original and two compressed ResNet-18 variants.

For each model (the original, Tucker-2 at ½ rank and SVD at ½ rank on the residual stages):

* ONNX Runtime's CUDA execution provider through the ``cuda`` device (input and output bound
  on the GPU): median, p10/p90, IQR/median of ``--repeats`` runs;
* the torch module with CUDA events (``CudaDevice.measure_torch``);
* numerics: ORT-CUDA against ORT-CPU and torch-CUDA against torch-CPU on one seeded input,
  max |difference| relative to the output's scale (convolutions may use TF32 on Ampere and
  later in both runtimes, hence the 1e-2 tolerance; the state of torch's TF32 switches is
  reported).

Prints one JSON object and exits 0; without a usable GPU it prints ``{"skipped": true,
"reason": ...}`` and exits 0 (the parts that can run, run: torch without onnxruntime-gpu
still gives the torch figures). Takes about 2-4 minutes on a recent GPU (the compression of
the two variants on the CPU is most of it); the whole run stays under 8 minutes.

Usage::

    pip install -e ".[gpu]"          # onnxruntime-gpu for the ORT part
    python benchmarks/gpu_check.py [--shape 1x3x224x224] [--repeats 100]
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

#: Largest |GPU − CPU| accepted, relative to the output scale (TF32 convolutions).
TOLERANCE = 1e-2


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.max(np.abs(b))) or 1.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale


def stats(m) -> dict:
    return {"median_ms": round(m.median_ms, 4), "p10_ms": round(m.p10_ms, 4),
            "p90_ms": round(m.p90_ms, 4), "relative_iqr": round(m.relative_iqr, 4),
            "n": len(m.samples_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1x3x224x224")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=450.0,
                    help="stop adding models past this many seconds (the check must fit 8 min)")
    args = ap.parse_args()
    t_start = time.perf_counter()

    from latbench.devices.cuda import CudaDevice, ort_cuda_status, torch_cuda_status

    ort_ok, ort_why = ort_cuda_status()
    torch_ok, torch_why = torch_cuda_status()
    if not ort_ok and not torch_ok:
        print(json.dumps({"skipped": True, "reason": f"no usable CUDA GPU: {ort_why}; {torch_why}",
                          "date": dt.date.today().isoformat()}, indent=2))
        return 0

    import onnxruntime as ort
    import torch

    from latbench.bench.run import measure_artifact
    from latbench.compress.export import export_onnx
    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.models import resolve_model

    shape = tuple(int(s) for s in args.shape.split("x"))
    dev = CudaDevice()
    doc: dict = {
        "date": dt.date.today().isoformat(), "input_shape": list(shape),
        "ort_cuda": {"available": ort_ok, "why": ort_why}, "torch_cuda": {"available": torch_ok,
                                                                           "why": torch_why},
        "onnxruntime": ort.__version__, "torch": torch.__version__, "tolerance": TOLERANCE,
        "torch_tf32": {"cudnn": bool(torch.backends.cudnn.allow_tf32),
                       "matmul": bool(torch.backends.cuda.matmul.allow_tf32)},
    }
    if torch_ok or ort_ok:
        try:
            info = dev.info()
            doc["gpu"] = {"model": info.model, "fingerprint": info.fingerprint,
                          "runtime_versions": info.runtime_versions, "state": info.state}
        except Exception as exc:  # report, keep checking what can run
            doc["gpu"] = {"error": str(exc)}
    base = resolve_model("resnet18")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    results: dict[str, dict] = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for label, plan in (("original", None), ("tucker2@0.5", Plan.uniform("tucker2", 0.5, "layer*")),
                            ("svd@0.5", Plan.uniform("svd", 0.5, "layer*"))):
            if time.perf_counter() - t_start > args.time_limit:
                results[label] = {"skipped": "time limit"}
                continue
            net = base if plan is None else compress_model(base, plan, input_shape=shape).model
            net = net.eval()
            with torch.no_grad():
                ref_cpu = net(x).numpy()
            r: dict = {"params": int(sum(p.numel() for p in net.parameters()))}
            art = export_onnx(net, shape, Path(tmp) / f"{label}.onnx")
            if ort_ok:
                m = measure_artifact(dev, art, warmup=args.warmup, repeats=args.repeats)
                r["ort_cuda"] = stats(m)
                cpu = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
                gpu = ort.InferenceSession(str(art.path), providers=["CUDAExecutionProvider",
                                                                    "CPUExecutionProvider"])
                feed = {cpu.get_inputs()[0].name: x.numpy()}
                err = rel_error(gpu.run(None, feed)[0], cpu.run(None, feed)[0])
                r["ort_cuda_vs_cpu_rel_error"] = err
                ok &= err <= TOLERANCE
            else:
                r["ort_cuda"] = {"skipped": ort_why}
            if torch_ok:
                gnet = net.to("cuda")  # measure_torch moves it too; the CPU reference is taken
                spec = dev.make_torch_spec(gnet, shape, warmup=args.warmup, repeats=args.repeats)
                r["torch_cuda_events"] = stats(dev.measure_torch(gnet, shape, spec))
                with torch.no_grad():
                    out = gnet(x.to("cuda")).float().cpu().numpy()
                err = rel_error(out, ref_cpu)
                r["torch_cuda_vs_cpu_rel_error"] = err
                ok &= err <= TOLERANCE
                base = base.cpu()
            else:
                r["torch_cuda_events"] = {"skipped": torch_why}
            results[label] = r
    doc["models"] = results
    doc["numerics_ok"] = bool(ok)
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(doc, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
