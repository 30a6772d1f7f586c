"""Reduced-Order Network (RON) on a CNN trained here: accuracy, latency and DEIM errors.

Trains the small digits CNN (scikit-learn's 8×8 digits upsampled to 32×32; see
:mod:`latbench.models.digits`), replaces the network from ``--start`` on by a RON at each
``--ranks`` (calibrated on training images, no fine-tuning), and prints for each: the
validation accuracy, the median latency measured on the local CPU (onnxruntime), MACs, and
per reduced stage the projection error, the DEIM interpolation error and its bound.

Usage::

    .venv/bin/python examples/digits_ron.py [--start 'features.3*'] [--ranks 8,16,32,64]
        [--calibration 1024] [--threads 1]

The whole comparison against Tucker-2 and SVD at equal latency is
``benchmarks/bench_ron_digits.py`` (figures in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", default="features.3*", help="layer glob where the reduced tail starts")
    p.add_argument("--ranks", default="8,16,32,64")
    p.add_argument("--calibration", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from latbench.compress.export import export_onnx
    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.devices.cpu import CpuDevice
    from latbench.models.digits import accuracy, load_digits_data, train_digits_cnn

    torch.set_num_threads(args.threads)
    data = load_digits_data(32, seed=0)
    net = train_digits_cnn(data, width=16, epochs=4, seed=0)
    device = CpuDevice(threads=args.threads)

    def latency_ms(model: torch.nn.Module, path: Path) -> float:
        art = export_onnx(model, data.input_shape, path)
        return device.measure(art, device.make_spec(art, threads=args.threads, repeats=200)).median_ms

    with tempfile.TemporaryDirectory() as tmp:
        print(f"original: accuracy {accuracy(net, data.x_val, data.y_val):.3f}, "
              f"{latency_ms(net, Path(tmp) / 'orig.onnx'):.3f} ms")
        for rank in (int(r) for r in args.ranks.split(",")):
            res = compress_model(net, Plan.uniform("ron", rank, args.start), input_shape=data.input_shape,
                                 calibration=data.x_train[: args.calibration])
            ms = latency_ms(res.model, Path(tmp) / f"ron{rank}.onnx")
            print(f"\nRON rank {rank} from {args.start}: accuracy "
                  f"{accuracy(res.model, data.x_val, data.y_val):.3f}, {ms:.3f} ms, MACs "
                  f"{res.macs_before / 1e6:.2f}M → {res.macs_after / 1e6:.3f}M, output error "
                  f"{res.output_rel_error:.3f}")
            for layer in res.layers:
                d = layer.details
                if layer.rank:
                    print(f"  {layer.name:>14}: {int(d['n']):>6} values → {layer.rank[0]:>3}, projection "
                          f"{d['projection_error']:.3f}, DEIM {d['interpolation_error']:.3f} ≤ "
                          f"{d['error_bound']:.2f}, after earlier stages {d['propagated_error']:.3f}")


if __name__ == "__main__":
    main()
