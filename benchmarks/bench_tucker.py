"""Time Tucker-2 of every ResNet-18 3×3 conv at 50 % ranks; print one JSON object.

Routes compared (all on the same randomly initialised ResNet-18, seed 0):

* ``eigh_gram_factors``   — latbench's HOSVD: eigh of the float64 Gram of each channel
  unfolding (factors and core only);
* ``eigh_gram_decompose`` — the full ``tucker2`` method: factors, the three conv modules,
  and the reconstruction error;
* ``svd_unfoldings``      — the same HOSVD with ``torch.linalg.svd`` of the unfoldings;
* ``hooi_5``              — ``tucker2`` factors with ``hooi_iters=5``;
* ``tensorly_partial_tucker`` — ``tensorly.decomposition.partial_tucker`` (modes 0, 1,
  its defaults: SVD init then HOOI until ``tol``).

Usage: ``.venv/bin/python benchmarks/bench_tucker.py [--repeats 3] [--tensorly-repeats 1]
[--threads N]``.
Each figure is the median over repeats of the wall time for all 16 convs, in seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch


def _convs() -> list[torch.nn.Conv2d]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]


def _ranks(conv: torch.nn.Conv2d) -> tuple[int, int]:
    return (conv.in_channels + 1) // 2, (conv.out_channels + 1) // 2


def _svd_route(conv: torch.nn.Conv2d) -> torch.Tensor:
    r_in, r_out = _ranks(conv)
    w = conv.weight.detach()
    o, i = w.shape[:2]
    u_out = torch.linalg.svd(w.reshape(o, -1), full_matrices=False)[0][:, :r_out]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(i, -1), full_matrices=False)[0][:, :r_in]
    return torch.einsum("oikl,or,ia->rakl", w, u_out, u_in)


def _tensorly_route(conv: torch.nn.Conv2d) -> object:
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    tl.set_backend("pytorch")
    return partial_tucker(conv.weight.detach(), rank=list(reversed(_ranks(conv))), modes=[0, 1])


def _time(fn, convs, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            for c in convs:
                fn(c)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tensorly-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from latbench.compress.tucker import METHOD, tucker2_factors

    convs = _convs()
    routes = {
        "eigh_gram_factors": (lambda c: tucker2_factors(c.weight, _ranks(c)), args.repeats),
        "eigh_gram_decompose": (lambda c: METHOD.decompose(c, _ranks(c)), args.repeats),
        "svd_unfoldings": (_svd_route, args.repeats),
        "hooi_5": (lambda c: tucker2_factors(c.weight, _ranks(c), hooi_iters=5), args.repeats),
        "tensorly_partial_tucker": (_tensorly_route, args.tensorly_repeats),
    }
    result: dict[str, object] = {
        "benchmark": "tucker2, all 16 ResNet-18 3x3 convs at 50% ranks",
        "unit": "s (median wall time over repeats, all convs)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    for name, (fn, reps) in routes.items():
        samples = _time(fn, convs, reps) if reps > 0 else []
        result[name] = round(statistics.median(samples), 3) if samples else None
        result[name + "_samples"] = [round(s, 3) for s in samples]
    errs = [METHOD.decompose(c, _ranks(c)).rel_error for c in convs]
    result["mean_rel_error_hosvd"] = round(sum(errs) / len(errs), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
