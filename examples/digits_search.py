"""Latency-constrained rank search on a CNN trained here, with real accuracy.

Trains the small digits CNN (scikit-learn's 8×8 digits upsampled to 32×32; see
:mod:`latbench.models.digits`), measures it on the local CPU, searches per-layer
decompositions for a budget of 75 % of its latency with validation accuracy as the
fidelity, and writes the model, ``plan.json`` and the report to ``OUT``. The report
compares the searched plan's accuracy with uniform-rank plans at the same measured
latency; the final model is then fine-tuned for one epoch (the search's ``finetune``
callback).

Usage::

    .venv/bin/python examples/digits_search.py [--out digits-search] [--budget 0.75]
        [--width 16] [--size 32] [--epochs 4] [--threads 1]

It takes a few minutes on a laptop CPU (most of it training and the per-layer
measurements).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="digits-search")
    p.add_argument("--budget", type=float, default=0.75, help="share of the original's latency")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from latbench.devices.cpu import CpuDevice
    from latbench.models.digits import accuracy, load_digits_data, train_digits_cnn
    from latbench.search.search import search
    from latbench.search.report import write_search_outputs

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_digits_data(args.size, seed=0)
    net = train_digits_cnn(data, width=args.width, epochs=args.epochs, seed=0)

    def val_accuracy(model: torch.nn.Module) -> float:
        return accuracy(model, data.x_val, data.y_val)

    def finetune(model: torch.nn.Module) -> torch.nn.Module:
        return train_digits_cnn(data, model=model, epochs=1, lr=1e-3, seed=1)

    print(f"trained width {args.width} on {args.size}x{args.size} in {time.perf_counter() - t0:.0f} s: "
          f"validation accuracy {val_accuracy(net):.3f}")
    device = CpuDevice(threads=args.threads)
    result = search(net, device, speedup=1 / args.budget, input_shape=data.input_shape,
                    calib=data.x_train[:256], fidelity_fn=val_accuracy, finetune=finetune,
                    threads=args.threads, repeats=50,
                    progress=lambda stage, done, total: print(f"  {stage}: {done}/{total}")
                    if done == total else None)
    paths = write_search_outputs(result, args.out)

    print(f"\noriginal: {result.original_ms:.3f} ms, accuracy {result.original_fidelity:.3f}")
    print(f"budget:   {result.budget_ms:.3f} ms ({args.budget:.0%})")
    for r in result.rounds:
        print(f"round {r.index}: predicted {r.predicted_ms:.3f} ms, measured {r.measured_ms:.3f} ms "
              f"({'met' if r.met else 'over'}), accuracy {r.fidelity:.3f}")
    print(f"searched: measured {result.measured_ms:.3f} ms back to back with the original "
          f"(speed-up {result.speedup:.2f}x, {'met' if result.met else 'NOT met'}), "
          f"accuracy {result.fidelity_before_finetune:.3f}, after 1 epoch of fine-tuning "
          f"{result.fidelity:.3f}")
    b = result.baseline
    if b is not None:
        for d in b["measured"]:
            print(f"uniform {b['method']} @ {d['fraction']:g}: measured {d['measured_ms']:.3f} ms, "
                  f"accuracy {d['fidelity']:.3f}")
        if b["fidelity_at_equal_latency"] is not None:
            print(f"uniform {b['method']} at {b['at_latency_ms']:.3f} ms (interpolated): accuracy "
                  f"{b['fidelity_at_equal_latency']:.3f}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"plan: {result.plan.to_json()}")
    print(f"wrote {paths['markdown']} and {paths['html']}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
