"""CP-ALS of latbench against tensorly's ``parafac`` on 512×512×3×3 kernels; prints one JSON.

Cases
-----
* ``planted``: a kernel of CP rank 128 (Gaussian factors) plus 1 % Gaussian noise — the
  quality target is a relative error within 1.1× of tensorly's 100-sweep ``parafac``.
* ``gaussian``: an i.i.d. Gaussian kernel (no low-rank structure, the hard case for ALS) —
  the speed target is rank 128 in at most 15 s with no NaN.

latbench runs ``cp_als`` with its defaults (150 sweeps at most, tol 1e-5, line search,
float32 large products), and once without line search capped at 100 sweeps. tensorly runs ``parafac(init="svd", tol=0)`` with the numpy and the torch
backend; with ``--tensorly-iters N < 100`` it also runs 1 sweep, and its time for 100
sweeps is extrapolated as ``t(1) + 99 · (t(N) − t(1)) / (N − 1)`` (the JSON says so); its
error is then the error after N sweeps, not 100. Use ``--threads`` to pin torch's thread count.

Usage::

    .venv/bin/python benchmarks/bench_cp.py [--rank 128] [--tensorly-iters 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch

from latbench.compress._cp_als import cp_als, cp_to_tensor


def planted(shape: tuple[int, ...], rank: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    factors = [torch.randn(d, rank, generator=gen, dtype=torch.float64) for d in shape]
    x = cp_to_tensor(factors)
    n = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x + noise * n * x.norm() / n.norm()  # float64, as tensorly gets it


def gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_latbench(x: torch.Tensor, rank: int, **kw: object) -> dict:
    t = time.perf_counter()
    res = cp_als(x, rank, **kw)
    dt = time.perf_counter() - t
    finite = all(bool(torch.isfinite(f).all()) for f in res.factors)
    return dict(seconds=round(dt, 2), rel_error=round(res.rel_error, 5), n_iter=res.n_iter,
                converged=res.converged, finite=finite, notes=list(res.notes))


def _parafac_seconds(data, rank: int, iters: int):
    from tensorly.decomposition import parafac

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        cp = parafac(data, rank, n_iter_max=iters, init="svd", tol=0.0)
        return time.perf_counter() - t, cp


def run_tensorly(x: torch.Tensor, rank: int, iters: int, backend: str) -> dict:
    import tensorly as tl

    tl.set_backend(backend)
    data = tl.tensor(x.double().numpy()) if backend == "numpy" else x.double()
    dt, cp = _parafac_seconds(data, rank, iters)
    rec = np.asarray(tl.to_numpy(tl.cp_to_tensor(cp)))
    err = float(np.linalg.norm(x.double().numpy() - rec) / np.linalg.norm(x.double().numpy()))
    out = dict(seconds=round(dt, 2), n_iter=iters, rel_error=round(err, 5))
    if iters < 100:
        # Separate the SVD initialisation from the sweeps: time = t(1) + 99 · per-sweep.
        t1, _ = _parafac_seconds(data, rank, 1)
        per_sweep = (dt - t1) / (iters - 1)
        out.update(seconds_1_iter=round(t1, 2), seconds_per_sweep=round(per_sweep, 3),
                   seconds_100_extrapolated=round(t1 + 99 * per_sweep, 1))
    tl.set_backend("numpy")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--tensorly-iters", type=int, default=100)
    ap.add_argument("--backends", default="numpy,pytorch")
    ap.add_argument("--tensorly-cases", default="planted,gaussian")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (512, 512, 3, 3)
    kernels = {"planted": planted(shape, args.rank, 0.01, args.seed),
               "gaussian": gaussian(shape, args.seed)}
    out: dict = dict(shape=shape, rank=args.rank, torch=torch.__version__,
                     threads=torch.get_num_threads(), machine=platform.processor() or platform.machine())
    for name, x in kernels.items():
        row = dict(latbench=run_latbench(x, args.rank),
                   latbench_plain_100=run_latbench(x, args.rank, line_search=False,
                                                   n_iter_max=100))
        if args.tensorly_iters > 0 and name in args.tensorly_cases.split(","):
            for backend in args.backends.split(","):
                row[f"tensorly_{backend}"] = run_tensorly(x, args.rank, args.tensorly_iters, backend)
        out[name] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
