"""Numerical helpers shared by the matrix/Tucker methods (``svd``, ``cur``, ``tucker2``).

Leading singular subspaces are taken from ``torch.linalg.eigh`` of the Gram matrix of the
*shorter* side, formed in float64. For the small-by-wide matrices of conv layers this is
several times faster than ``torch.linalg.svd`` (see ``benchmarks/bench_tucker.py``), and
float64 keeps the squared condition number harmless for float32 weights: singular values
down to ~1e-8 of the largest are still resolved. Factors are formed by *projecting* the
weight onto the subspace instead of dividing by singular values, so a full-rank
reconstruction is exact even when the weight is rank-deficient.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from latbench.compress._base import DecompositionMethod, check_rank
from latbench.exceptions import UserInputError

__all__ = [
    "reuse_subspaces",
    "leading_subspace",
    "top_eigvecs",
    "two_factor",
    "rel_error",
    "squared_norm",
    "count_params",
    "describe_layer",
    "validated_rank",
    "check_options",
    "new_conv",
    "new_linear",
    "maxvol",
]


def leading_subspace(mats: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal basis of the leading ``k``-dimensional left singular subspace.

    Parameters
    ----------
    mats : Tensor, shape (..., m, n)
        A matrix or a batch of matrices (any float dtype; computed in float64).
    k : int
        Subspace dimension, ``1 <= k <= m``.

    Returns
    -------
    Tensor, shape (..., m, k), float64
        Columns ordered by decreasing singular value. Bases for different ``k`` are
        nested (prefixes of one eigendecomposition), which makes the truncation error
        non-increasing in ``k``.
    """
    a = mats.detach().to(torch.float64)
    if _CACHE is None:
        return top_eigvecs(a @ a.transpose(-1, -2), k)
    vecs = _cached(("subspace",) + _fingerprint(a), lambda: _all_eigvecs(a @ a.transpose(-1, -2)))
    return vecs[..., :k]


def top_eigvecs(gram: torch.Tensor, k: int) -> torch.Tensor:
    """Eigenvectors of the ``k`` largest eigenvalues (descending) of symmetric ``(..., m, m)``."""
    if _CACHE is None:
        return _all_eigvecs(gram)[..., :k]
    g = gram.detach().to(torch.float64)
    return _cached(("eigh",) + _fingerprint(g), lambda: _all_eigvecs(g))[..., :k]


def _all_eigvecs(gram: torch.Tensor) -> torch.Tensor:
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vecs.flip(-1)


# Eigendecompositions kept while :func:`reuse_subspaces` is active: decomposing one layer at
# many ranks (a rank search, a sweep) then costs one eigendecomposition, not one per rank.
_CACHE: dict[tuple, torch.Tensor] | None = None


def _fingerprint(a: torch.Tensor) -> tuple:
    # Shape plus three reductions (float64) of the matrix: equal keys mean equal matrices for
    # every practical purpose, and the cache only lives inside one ``reuse_subspaces`` block.
    # Sums accumulate in float64 whatever the matrix's dtype, so a float32 weight can be
    # fingerprinted without first being copied to float64. The same unmodified tensor (a
    # layer's weight, decomposed at many ranks) is read once: memoised by its storage, layout
    # and version counter, holding a reference so the address cannot be reused meanwhile.
    if _CACHE is not None:
        ident = ("tensor", a.data_ptr(), tuple(a.shape), a.stride(), a.dtype, a._version)
        hit = _CACHE.get(ident)
        if hit is None:
            hit = _CACHE[ident] = (a, _reductions(a))
        return hit[1]
    return _reductions(a)


def _reductions(a: torch.Tensor) -> tuple:
    flat = a.reshape(-1).to(torch.float64)
    sample = flat[:: max(1, flat.numel() // 65536)]
    ramp = torch.linspace(1.0, 2.0, sample.numel(), dtype=torch.float64)
    return (tuple(a.shape), str(a.dtype), float(flat.sum()), float((flat * flat).sum()),
            float((sample * ramp).sum()))


def squared_norm(a: torch.Tensor) -> float:
    """``‖a‖²_F`` summed in float64 (read once per tensor inside :func:`reuse_subspaces`)."""
    return _fingerprint(a.detach())[3]


def _cached(key: tuple, compute) -> Any:
    assert _CACHE is not None
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = compute()
    return hit


@contextmanager
def reuse_subspaces() -> Iterator[None]:
    """Within the block, reuse each matrix's eigendecomposition across ranks (nested use is fine).

    Results are identical to computing afresh: bases for smaller ranks are prefixes of the
    full, descending one (see :func:`leading_subspace`).
    """
    global _CACHE
    outer = _CACHE
    if outer is None:
        _CACHE = {}
    try:
        yield
    finally:
        if outer is None:
            _CACHE = None


def two_factor(mats: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``k`` factorisation ``W ≈ B @ A`` (Eckart–Young) of a batch of matrices.

    Parameters
    ----------
    mats : Tensor, shape (..., m, n)
    k : int
        Rank, ``1 <= k <= min(m, n)``.

    Returns
    -------
    A : Tensor, shape (..., k, n), float64
        Applied first (``x ↦ A x``).
    B : Tensor, shape (..., m, k), float64
        Applied second.
    """
    m, n = mats.shape[-2], mats.shape[-1]
    if _CACHE is not None:
        # Project once on the whole descending basis; every rank is a prefix of that product
        # (for a 4096×25088 classifier at nine ranks: one product instead of nine).
        key = ("two_factor",) + _fingerprint(mats.detach())
        if m <= n:
            u, proj = _cached(key, lambda: _projected(mats.detach().to(torch.float64)))
            return proj[..., :k, :], u[..., :k]
        v, proj = _cached(key, lambda: _projected(mats.detach().to(torch.float64).transpose(-1, -2)))
        return v[..., :k].transpose(-1, -2), proj[..., :k, :].transpose(-1, -2)
    a = mats.detach().to(torch.float64)
    if m <= n:
        u = leading_subspace(a, k)  # (..., m, k)
        return u.transpose(-1, -2) @ a, u
    v = leading_subspace(a.transpose(-1, -2), k)  # (..., n, k)
    return v.transpose(-1, -2), a @ v


def _projected(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full descending left basis ``U`` of ``a`` (wide: m <= n) and ``Uᵀ a``."""
    u = _all_eigvecs(a @ a.transpose(-1, -2))
    return u, u.transpose(-1, -2) @ a


def rel_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """``‖w − w_hat‖_F / ‖w‖_F`` in float64 (0 when both are zero)."""
    w = w.detach().to(torch.float64)
    diff = float(torch.linalg.norm(w - w_hat.detach().to(torch.float64)))
    norm = float(torch.linalg.norm(w))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / norm


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module`` (biases included)."""
    return sum(p.numel() for p in module.parameters())


def describe_layer(layer: nn.Module) -> str:
    """One-line description naming the layer's type and weight shape, for error messages."""
    weight = getattr(layer, "weight", None)
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
    extra = ""
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:
        extra = f", groups={layer.groups}"
    return f"{type(layer).__name__} with weight shape {shape}{extra}"


def validated_rank(method: DecompositionMethod, layer: nn.Module, rank: Any) -> tuple[int, ...]:
    """``check_rank`` that also accepts a bare int and names the layer in its error.

    Raises
    ------
    UserInputError
        If the layer is unsupported or the rank is out of range.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, tuple, list)):
        raise UserInputError(
            f"{method.name} needs a resolved rank (int or tuple of ints), got {rank!r}; "
            "use latbench.compress.ranks.resolve_rank for fractions, 'ratio=X' or 'evbmf'"
        )
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        raise UserInputError(f"{method.name} ranks must be ints, got {rank!r}")
    try:
        return check_rank(method, layer, ranks)
    except UserInputError as exc:
        raise UserInputError(f"{exc} ({describe_layer(layer)})") from None


def check_options(method: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse options a method does not know.

    Raises
    ------
    UserInputError
        Naming the first unknown option and the allowed ones.
    """
    allowed = sorted(allowed)
    for key in options:
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise UserInputError(f"{method} has no option {key!r}; its options are: {known}")


def new_conv(
    like: nn.Conv2d,
    in_channels: int,
    out_channels: int,
    weight: torch.Tensor,
    *,
    spatial: bool,
    groups: int,
    bias: torch.Tensor | None = None,
) -> nn.Conv2d:
    """A conv with ``like``'s dtype and device holding ``weight`` (and ``bias``).

    ``spatial=True`` copies ``like``'s kernel size, stride, padding, dilation and padding
    mode; ``spatial=False`` makes a plain 1×1 conv. Weights skip the random initialisation
    (``skip_init``) as they are overwritten at once. Where the spatial conv follows a 1×1
    conv, padding still commutes with that pointwise, bias-free factor.
    """
    ref = like.weight
    if spatial:
        conv = skip_init(
            nn.Conv2d, in_channels, out_channels, like.kernel_size, stride=like.stride, padding=like.padding,
            dilation=like.dilation, groups=groups, bias=bias is not None,
            padding_mode=like.padding_mode, device=ref.device, dtype=ref.dtype,
        )
    else:
        conv = skip_init(nn.Conv2d, in_channels, out_channels, 1, groups=groups, bias=bias is not None,
                         device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def new_linear(like: nn.Linear, in_features: int, out_features: int, weight: torch.Tensor,
               bias: torch.Tensor | None = None) -> nn.Linear:
    """A Linear with ``like``'s dtype and device holding ``weight`` (and ``bias``)."""
    ref = like.weight
    lin = skip_init(nn.Linear, in_features, out_features, bias=bias is not None,
                    device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def maxvol(basis: Any, *, tol: float = 1.05, max_iters: int = 100) -> "np.ndarray":
    """Rows of a tall matrix whose square submatrix has (locally) maximal volume.

    The rows ``I`` make ``basis[I]`` a ``tol``-dominant submatrix: every entry of
    ``basis @ inv(basis[I])`` is at most ``tol`` in modulus, so ``‖inv(basis[I])‖₂ ≤
    sqrt(1 + tol² r (n − r))`` for an orthonormal ``basis`` (Goreinov, Oseledets,
    Savostyanov, Tyrtyshnikov, Zamarashkin, "How to find a good submatrix", 2010). This is
    the row selection of DEIM and of the Reduced-Order Network (:mod:`latbench.compress.ron`).
    The swaps are ``teneva.maxvol``'s (a maintained implementation of that algorithm).

    Parameters
    ----------
    basis : array-like, shape (n, r), n >= r
        Full column rank.
    tol : float
        Dominance to stop at (>= 1; 1.05 is teneva's default).
    max_iters : int
        Most row swaps.

    Returns
    -------
    numpy.ndarray of int, shape (r,)
        Row indices, distinct.

    Raises
    ------
    UserInputError
        If ``basis`` is not a tall 2-D matrix of full column rank or ``tol < 1``.
    """
    import numpy as np
    try:
        import teneva
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserInputError('MaxVol needs teneva: pip install "teneva>=0.14"') from None

    a = np.asarray(basis.detach().cpu().numpy() if isinstance(basis, torch.Tensor) else basis,
                   dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < a.shape[1] or a.shape[1] < 1:
        raise UserInputError(f"maxvol needs a tall n×r matrix with n >= r >= 1, got shape {a.shape}")
    if not tol >= 1.0:
        raise UserInputError(f"maxvol tolerance must be >= 1, got {tol}")
    n, r = a.shape
    if np.linalg.matrix_rank(a) < r:
        raise UserInputError(f"maxvol needs a matrix of full column rank; this {n}×{r} one is "
                             "rank-deficient")
    if n == r:
        return np.arange(n)
    rows, _ = teneva.maxvol(a, e=float(tol), k=int(max_iters))
    return np.asarray(rows, dtype=np.int64)
