"""CP (CANDECOMP/PARAFAC) decomposition of a small N-way tensor by regularised ALS, in torch.

Written for convolution kernels: the tensor is ``(I0, I1, *spatial)`` with ``I0, I1`` the
(large) channel modes and one or two small spatial modes. Each ALS sweep then needs only
two large matrix products (``X ×₁ B`` and ``Aᵀ X``, each ``numel · R`` multiply–adds);
everything else works on ``R × R`` or ``R × spatial`` arrays. tensorly's generic
``parafac`` does one full MTTKRP per mode and forms large Khatri–Rao products: on a
512×512×3×3 kernel at rank 128 one of its sweeps took 9 s (torch backend) to 44 s (numpy)
on the busy 2-core test machine, one sweep here about 0.05 s (``benchmarks/bench_cp.py``).
An extrapolation step after each sweep (Bro 1998) reuses the products already made.

Stability: factors are kept with unit-norm columns (the scale lives in ``weights``), so the
normal-equation matrix ``G`` (a Hadamard product of Gram matrices) has unit diagonal and a
fixed ridge ``λ`` is a scale-free Tikhonov term: ``U = M (G + λ I)⁻¹``. If an attempt goes
non-finite it is restarted with a larger ridge, then from a random start; if every attempt
fails, the ``R`` strongest terms of the exact construction are returned. Every
fallback is recorded in :attr:`CPResult.notes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["CPResult", "cp_als", "cp_exact", "cp_to_tensor", "cp_trivial_rank"]

#: ``numel · rank`` above which the large products run in float32 (about 2× faster on CPU).
_FLOAT32_ABOVE = 2**24


@dataclass(frozen=True)
class CPResult:
    """Factors of ``X ≈ Σ_r a_r ∘ b_r ∘ …``; column ``r`` of every factor forms one rank-1 term.

    Attributes
    ----------
    factors : tuple of Tensor
        One ``(I_n, R)`` matrix per mode, float64, scale balanced across modes.
    rel_error : float
        ``‖X − X̂‖_F / ‖X‖_F`` computed from the returned factors (0 for a zero tensor).
    n_iter : int
        ALS sweeps run by the successful attempt (0 for an exact construction).
    converged : bool
        Whether the relative-error change fell below ``tol`` before ``n_iter_max``.
    notes : tuple of str
        Fallbacks taken (larger ridge, random restart, truncation), if any.
    """

    factors: tuple[Tensor, ...]
    rel_error: float
    n_iter: int
    converged: bool
    notes: tuple[str, ...] = field(default=())


def cp_trivial_rank(shape: Sequence[int]) -> int:
    """The rank at which :func:`cp_exact` reproduces any tensor of ``shape``.

    It is the product of all dimensions except the largest: one rank-1 term per index of
    the other modes.
    """
    dims = [int(d) for d in shape]
    return math.prod(dims) // max(dims)


def cp_to_tensor(factors: Sequence[Tensor]) -> Tensor:
    """Rebuild the full tensor ``Σ_r ∏_n factors[n][:, r]`` (outer products)."""
    # One matrix product against the Khatri–Rao of the other modes: no (numel × R) temporary.
    return (factors[0] @ _khatri_rao(factors[1:]).T).reshape([f.shape[0] for f in factors])


def cp_exact(tensor: Tensor) -> tuple[Tensor, ...]:
    """An exact CP decomposition of rank :func:`cp_trivial_rank` (``tensor.shape``).

    The largest mode (first one on ties) carries the tensor's fibres; every other mode gets
    one-hot columns, one per multi-index of the other modes.
    """
    shape = tuple(tensor.shape)
    big = shape.index(max(shape))
    others = [n for n in range(len(shape)) if n != big]
    rank = cp_trivial_rank(shape)
    fibres = tensor.permute(*others, big).reshape(rank, shape[big])
    factors: list[Tensor] = [torch.empty(0)] * len(shape)
    factors[big] = fibres.T.clone()
    # Column r of mode n is the one-hot of r's n-th coordinate in the others' grid.
    idx = torch.arange(rank, device=tensor.device)
    stride = rank
    for n in others:
        stride //= shape[n]
        coord = (idx // stride) % shape[n]
        onehot = torch.zeros(shape[n], rank, dtype=tensor.dtype, device=tensor.device)
        onehot[coord, idx] = 1
        factors[n] = onehot
    return tuple(factors)


def _balance(weights: Tensor, factors: Sequence[Tensor]) -> tuple[Tensor, ...]:
    # Spread |w| evenly so no factor layer holds huge or tiny values in float16/32 inference.
    n = len(factors)
    share = weights.abs().pow(1.0 / n)
    out = [f * share for f in factors]
    out[0] = out[0] * torch.sign(weights).where(weights != 0, torch.ones_like(weights))
    return tuple(out)


def _normalise(u: Tensor) -> tuple[Tensor, Tensor]:
    norms = torch.linalg.vector_norm(u, dim=0)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return u / safe, norms


def _solve(m: Tensor, gram: Tensor, ridge: float) -> Tensor:
    """``M (G + λI)⁻¹`` by Cholesky; raises FloatingPointError when not solvable."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(gram + ridge * eye)
    if int(info) != 0 or not torch.isfinite(chol).all():
        raise FloatingPointError("normal equations are not positive definite")
    return torch.cholesky_solve(m.T, chol).T


def _init_factor(unfolding: Tensor, rank: int, gen: torch.Generator, init: str) -> Tensor:
    rows, cols = unfolding.shape
    dev = unfolding.device
    rand = torch.randn(rows, rank, generator=gen, dtype=torch.float64).to(dev)
    if init == "random":
        return _normalise(rand)[0]
    if rows <= rank:
        # The leading vectors span the whole mode; eigh of a rows × rows Gram is cheap here.
        _, vecs = torch.linalg.eigh(unfolding @ unfolding.T)
        rand[:, :rows] = vecs.flip(1)
        return _normalise(rand)[0]
    # Randomised SVD (one power step + Rayleigh–Ritz): eigh of a 512×512 Gram takes seconds
    # on a busy 2-core CPU, this takes tens of milliseconds at the same quality of start.
    omega = torch.randn(cols, rank, generator=gen, dtype=torch.float64).to(dev)
    basis = torch.linalg.qr(unfolding @ omega)[0]
    basis = torch.linalg.qr(unfolding @ (unfolding.T @ basis))[0]
    small = basis.T @ unfolding
    _, vecs = torch.linalg.eigh(small @ small.T)
    return _normalise(basis @ vecs.flip(1))[0]


def _unfold(x: Tensor, mode: int) -> Tensor:
    return x.movedim(mode, 0).reshape(x.shape[mode], -1)


def _khatri_rao(factors: Sequence[Tensor]) -> Tensor:
    rank = factors[0].shape[1]
    out = factors[0]
    for f in factors[1:]:
        out = (out.unsqueeze(1) * f.unsqueeze(0)).reshape(-1, rank)
    return out


def _spatial_mttkrp(t: Tensor, spatial: Sequence[Tensor], k: int) -> Tensor:
    """MTTKRP of spatial mode ``k`` from ``t`` of shape ``(R, *spatial dims)``."""
    letters = "abcdefgh"[: len(spatial)]
    operands: list[Tensor] = [t]
    subs = ["r" + letters]
    for j, f in enumerate(spatial):
        if j != k:
            operands.append(f)
            subs.append(letters[j] + "r")
    return torch.einsum(",".join(subs) + "->" + letters[k] + "r", *operands)


def _als_attempt(
    x: Tensor,
    rank: int,
    *,
    n_iter_max: int,
    tol: float,
    ridge: float,
    init: str,
    seed: int,
    big_dtype: torch.dtype,
    line_search: bool,
) -> tuple[Tensor, tuple[Tensor, ...], int, bool]:
    """One ALS run; returns ``(weights, unit factors, n_iter, converged)``."""
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(x.shape)
    i0, i1 = shape[0], shape[1]
    sdims = shape[2:]
    s = math.prod(sdims)
    # Mode 0 is solved first, so only the other modes need a start.
    b = _init_factor(_unfold(x, 1), rank, gen, init)
    spatial = [_init_factor(_unfold(x, n), rank, gen, init) for n in range(2, x.ndim)]
    a = torch.empty(0)  # set by the first sweep (n_iter_max >= 1 is checked by cp_als)
    norm_x2 = float((x * x).sum())
    # Two layouts of X for the two large products, in the precision chosen for them.
    x_is_i1 = x.reshape(i0, i1, s).transpose(1, 2).reshape(i0 * s, i1).to(big_dtype).contiguous()
    x_i0_rest = x.reshape(i0, i1 * s).to(big_dtype)

    def sq_error(factors: Sequence[Tensor], p: Tensor) -> float:
        """``‖X − X̂‖²`` of any factors, given ``p = factors[0]ᵀ X``; all small products."""
        t = torch.einsum("ris,ir->rs", p, factors[1])
        inner = float((t * _khatri_rao(factors[2:]).T).sum())
        gram = torch.ones(rank, rank, dtype=torch.float64, device=x.device)
        for f in factors:
            gram = gram * (f.T @ f)
        return norm_x2 - 2 * inner + float(gram.sum())

    weights = torch.ones(rank, dtype=torch.float64, device=x.device)
    prev = math.inf
    converged = False
    last: list[Tensor] | None = None
    last_p = torch.empty(0)
    # Extrapolation schedule of Bro (1998) as in tensorly: jump = it^(1/power), and the power
    # grows after repeated rejections so late jumps become gentle.
    power, rejections = 3.0, 0
    it = 0
    for it in range(1, n_iter_max + 1):
        k = _khatri_rao(spatial)  # (S, R)
        gk = k.T @ k
        # Mode 0: M = Σ_{i,s} X[o,i,s] B[i,r] K[s,r].
        q = (x_is_i1 @ b.to(big_dtype)).to(torch.float64).reshape(i0, s, rank)
        m = torch.einsum("osr,sr->or", q, k)
        a, _ = _normalise(_solve(m, (b.T @ b) * gk, ridge))
        # Mode 1 and the spatial modes share P = Aᵀ X.
        p = (a.T.to(big_dtype) @ x_i0_rest).to(torch.float64).reshape(rank, i1, s)
        m = torch.einsum("ris,sr->ir", p, k)
        b, _ = _normalise(_solve(m, (a.T @ a) * gk, ridge))
        t = torch.einsum("ris,ir->rs", p, b).reshape(rank, *sdims)
        gab = (a.T @ a) * (b.T @ b)
        inner = 0.0
        for j in range(len(spatial)):
            m = _spatial_mttkrp(t, spatial, j)
            g = gab.clone()
            for jj, f in enumerate(spatial):
                if jj != j:
                    g = g * (f.T @ f)
            u = _solve(m, g, ridge)
            if j == len(spatial) - 1:
                # Error from Grams: ‖X − X̂‖² = ‖X‖² − 2⟨X, X̂⟩ + ‖X̂‖², no reconstruction needed.
                inner = float((m * u).sum())
                fit2 = float(((u.T @ u) * g).sum())
            spatial[j], weights = _normalise(u)
        if not (torch.isfinite(weights).all() and math.isfinite(inner)):
            raise FloatingPointError("ALS produced non-finite values")
        err2 = norm_x2 - 2 * inner + fit2
        current = [a, b, *spatial[:-1], spatial[-1] * weights]
        if line_search and last is not None:
            jump = it ** (1.0 / power)
            trial = [old + jump * (new - old) for old, new in zip(last, current)]
            # Aᵀ X is linear in A, so the trial's P is the same extrapolation of the two P's
            # already computed: the line search costs no large product.
            trial_p = last_p + jump * (p - last_p)
            trial_err2 = sq_error(trial, trial_p)
            if math.isfinite(trial_err2) and trial_err2 < err2:
                current, err2, p = trial, trial_err2, trial_p
                a, b, *spatial = [_normalise(f)[0] for f in trial]
                weights = torch.ones_like(weights)
                for f in trial:
                    weights = weights * torch.linalg.vector_norm(f, dim=0)
            else:
                rejections += 1
                if rejections == 4:
                    power, rejections = power + 1.0, 0
        last, last_p = current, p
        err = math.sqrt(max(err2, 0.0) / norm_x2)
        if abs(prev - err) < tol * max(err, 1e-12):
            converged = True
            break
        prev = err
    return weights, (a, b, *spatial), it, converged


def cp_als(
    tensor: Tensor,
    rank: int,
    *,
    n_iter_max: int = 150,
    tol: float = 1e-5,
    ridge: float = 1e-8,
    init: str = "svd",
    seed: int = 0,
    precision: str = "auto",
    line_search: bool = True,
) -> CPResult:
    """CP decomposition of ``tensor`` at ``rank`` by ridge-regularised ALS.

    Parameters
    ----------
    tensor : Tensor
        At least 3 modes; modes 0 and 1 should be the large ones (conv ``Cout, Cin``).
    rank : int
        Number of rank-1 terms. At or above :func:`cp_trivial_rank` the exact construction
        is returned (rank-padded with zero terms above it) and no ALS runs.
    n_iter_max : int
        Cap on ALS sweeps.
    tol : float
        Stop when the relative error changes by less than ``tol`` times itself in a sweep.
    ridge : float
        Tikhonov term added to the (unit-diagonal) normal equations.
    init : {"svd", "random"}
        ``"svd"``: leading singular vectors of each unfolding, random columns beyond.
    seed : int
        Seed of the random columns.
    precision : {"auto", "float64", "float32"}
        Precision of the two large products per sweep; ``"auto"`` uses float32 when
        ``numel · rank`` exceeds 2**24. Small arithmetic is always float64.
    line_search : bool
        Try an extrapolated step after each sweep (Bro 1998) and keep it if the error is
        lower. Needs no extra large product (``Aᵀ X`` is linear in ``A``) and saves many
        sweeps on swamp-prone kernels (see ``benchmarks/bench_cp.py``).

    Returns
    -------
    CPResult

    Raises
    ------
    ValueError
        If ``rank < 1``, ``n_iter_max < 1``, the tensor has fewer than 3 modes, or an
        option is unknown.
    """
    if tensor.ndim < 3:
        raise ValueError(f"cp_als needs a tensor with at least 3 modes, got {tensor.ndim}")
    if rank < 1:
        raise ValueError(f"CP rank must be at least 1, got {rank}")
    if n_iter_max < 1:
        raise ValueError(f"n_iter_max must be at least 1, got {n_iter_max}")
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    if precision not in ("auto", "float64", "float32"):
        raise ValueError(f"precision must be 'auto', 'float64' or 'float32', got {precision!r}")
    x = tensor.detach().to(torch.float64)
    norm_x = float(torch.linalg.vector_norm(x))
    bound = cp_trivial_rank(x.shape)
    if norm_x == 0.0:
        zeros = tuple(torch.zeros(d, rank, dtype=torch.float64, device=x.device) for d in x.shape)
        return CPResult(zeros, 0.0, 0, True, ("zero tensor: factors are zero",))
    if rank >= bound:
        # Zero columns add nothing, so padding the exact construction keeps it exact.
        return CPResult(tuple(_fit_columns(f, rank) for f in cp_exact(x)), 0.0, 0, True)

    if precision == "auto":
        precision = "float32" if x.numel() * rank > _FLOAT32_ABOVE else "float64"
    big_dtype = torch.float32 if precision == "float32" else torch.float64
    attempts = [(init, ridge), (init, max(ridge * 1e4, 1e-6)), ("random", max(ridge * 1e6, 1e-3))]
    notes: list[str] = []
    for n, (how, lam) in enumerate(attempts):
        try:
            weights, unit, n_iter, converged = _als_attempt(
                x, rank, n_iter_max=n_iter_max, tol=tol, ridge=lam, init=how,
                seed=seed + n, big_dtype=big_dtype, line_search=line_search,
            )
        except FloatingPointError as exc:
            nxt = attempts[n + 1] if n + 1 < len(attempts) else None
            notes.append(
                f"CP-ALS attempt {n + 1} (init={how}, ridge={lam:g}) failed ({exc})"
                + (f"; retrying with init={nxt[0]}, ridge={nxt[1]:g}" if nxt else "")
            )
            continue
        factors = _balance(weights, unit)
        err = float(torch.linalg.vector_norm(x - cp_to_tensor(factors))) / norm_x
        if math.isfinite(err):
            if lam != ridge:
                notes.append(f"CP-ALS regularised with ridge {lam:g} to stay finite")
            return CPResult(factors, err, n_iter, converged, tuple(notes))
        notes.append(f"CP-ALS attempt {n + 1} gave a non-finite reconstruction")
    # Last resort, always finite: the R strongest terms of the exact construction.
    exact = cp_exact(x)
    big = int(max(range(x.ndim), key=lambda d: x.shape[d]))
    keep = torch.linalg.vector_norm(exact[big], dim=0).argsort(descending=True)[:rank]
    factors = tuple(f[:, keep] for f in exact)
    err = float(torch.linalg.vector_norm(x - cp_to_tensor(factors))) / norm_x
    notes.append("CP-ALS failed; used the strongest terms of the exact construction instead")
    return CPResult(factors, err, 0, False, tuple(notes))


def _fit_columns(f: Tensor, rank: int) -> Tensor:
    out = torch.zeros(f.shape[0], rank, dtype=f.dtype, device=f.device)
    out[:, : min(rank, f.shape[1])] = f[:, :rank]
    return out
