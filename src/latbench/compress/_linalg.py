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

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
import numpy as np

import torch
from torch import nn
from torch.nn.utils import skip_init

from torch.multiprocessing.reductions import StorageWeakRef

from latbench.exceptions import UserInputError

__all__ = [
    "reuse_subspaces",
    "leading_subspace",
    "top_eigvecs",
    "two_factor",
    "rel_error",
    "squared_norm",
    "content_key",
    "check_options",
    "new_conv",
    "new_linear",
    "CONV_BY_DIM",
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
    vecs = _CACHE.get(("subspace", content_key(a)), lambda: _all_eigvecs(a @ a.transpose(-1, -2)))
    return vecs[..., :k]


def top_eigvecs(gram: torch.Tensor, k: int) -> torch.Tensor:
    """Eigenvectors of the ``k`` largest eigenvalues (descending) of symmetric ``(..., m, m)``."""
    if _CACHE is None:
        return _all_eigvecs(gram)[..., :k]
    g = gram.detach().to(torch.float64)
    return _CACHE.get(("eigh", content_key(g)), lambda: _all_eigvecs(g))[..., :k]


def _all_eigvecs(gram: torch.Tensor) -> torch.Tensor:
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vecs.flip(-1)


class _SubspaceCache:
    """What :func:`reuse_subspaces` keeps: results keyed by the content of their input.

    ``entries`` maps ``(kind, content key)`` to a decomposition (eigenvectors, projections,
    a squared norm). ``keys`` remembers the content key of tensors already hashed, by the
    identity of their storage (address, offset, layout, dtype and version counter), so a
    weight decomposed at many ranks is read once; it holds a *weak* reference to the storage
    (checked before use, so a freed address reused by another tensor is never mistaken for
    it) and never a tensor.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple, Any] = {}
        self.keys: dict[tuple, tuple[Any, tuple]] = {}

    def get(self, key: tuple, compute) -> Any:
        hit = self.entries.get(key)
        if hit is None:
            hit = self.entries[key] = compute()
        return hit

    def nbytes(self) -> int:
        """Bytes of the tensors held (what the cache costs in memory)."""
        total = 0
        for value in self.entries.values():
            for t in value if isinstance(value, tuple) else (value,):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


# The cache of the innermost :func:`reuse_subspaces` block, or None outside every block.
_CACHE: _SubspaceCache | None = None


def _digest(a: torch.Tensor) -> str:
    """blake2b of the tensor's shape, dtype and bytes (row-major, whatever its strides)."""
    flat = a.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{tuple(a.shape)}|{a.dtype}|".encode())
    if flat.numel():
        h.update(memoryview(flat.contiguous().view(torch.uint8).numpy()))
    return h.hexdigest()


def content_key(a: torch.Tensor) -> tuple:
    """A key equal for two tensors exactly when their shape, dtype and bytes are equal.

    Inside :func:`reuse_subspaces` the hash of a tensor whose storage is still alive and
    unmodified (same version counter) is remembered, so decomposing one weight at many ranks
    hashes it once.
    """
    if a.device.type == "meta":
        raise UserInputError("a tensor on the 'meta' device has no values to decompose; "
                             "load the model's weights first")
    cache = _CACHE
    if cache is None or a.is_inference():  # inference tensors have no version counter
        return (_digest(a),)
    ident = (a.untyped_storage().data_ptr(), a.storage_offset(), tuple(a.shape), a.stride(),
             a.dtype, str(a.device), a._version)
    known = cache.keys.get(ident)
    if known is not None and not known[0].expired():
        return known[1]
    key = (_digest(a),)
    cache.keys[ident] = (StorageWeakRef(a.untyped_storage()), key)
    return key


def squared_norm(a: torch.Tensor) -> float:
    """``‖a‖²_F`` summed in float64 (computed once per tensor inside :func:`reuse_subspaces`)."""
    a = a.detach()
    if _CACHE is None:
        return _squared_norm(a)
    return _CACHE.get(("sqnorm", content_key(a)), lambda: _squared_norm(a))


def _squared_norm(a: torch.Tensor) -> float:
    flat = a.reshape(-1)
    total = 0.0
    for chunk in flat.split(1 << 22):  # float64 in pieces: no full-size float64 copy
        c = chunk.to(torch.float64)
        total += float((c * c).sum())
    return total


@contextmanager
def reuse_subspaces() -> Iterator[None]:
    """Within the block, reuse each matrix's eigendecomposition across ranks.

    Results are identical to computing afresh: bases for smaller ranks are prefixes of the
    full, descending one (see :func:`leading_subspace`), and entries are keyed by the
    content of the matrix (:func:`content_key`), never by where it lives. What the block
    kept is released when the outermost block ends, so scope it to what shares weights
    (one model of a sweep, one layer of a search); nested blocks share the outer cache.
    """
    global _CACHE
    outer = _CACHE
    if outer is None:
        _CACHE = _SubspaceCache()
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
        key = ("two_factor", content_key(mats.detach()))
        if m <= n:
            u, proj = _CACHE.get(key, lambda: _projected(mats.detach().to(torch.float64)))
            return proj[..., :k, :], u[..., :k]
        v, proj = _CACHE.get(key, lambda: _projected(mats.detach().to(torch.float64).transpose(-1, -2)))
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


#: The plain convolution class of each number of spatial dimensions.
CONV_BY_DIM: dict[int, type[nn.modules.conv._ConvNd]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def new_conv(
    like: nn.modules.conv._ConvNd,
    in_channels: int,
    out_channels: int,
    weight: torch.Tensor,
    *,
    spatial: bool,
    groups: int,
    bias: torch.Tensor | None = None,
) -> nn.modules.conv._ConvNd:
    """A conv of ``like``'s dimensionality, dtype and device holding ``weight`` (and ``bias``).

    ``like`` is an ``nn.Conv1d``, ``Conv2d`` or ``Conv3d``; the new layer is the plain class
    of the same number of spatial dimensions. ``spatial=True`` copies ``like``'s kernel size,
    stride, padding, dilation and padding mode; ``spatial=False`` makes a plain 1×…×1 conv.
    Weights skip the random initialisation (``skip_init``) as they are overwritten at once.
    Where the spatial conv follows a pointwise conv, padding still commutes with that
    pointwise, bias-free factor.
    """
    ref = like.weight
    cls = CONV_BY_DIM[len(like.kernel_size)]
    if spatial:
        conv = skip_init(
            cls, in_channels, out_channels, like.kernel_size, stride=like.stride, padding=like.padding,
            dilation=like.dilation, groups=groups, bias=bias is not None,
            padding_mode=like.padding_mode, device=ref.device, dtype=ref.dtype,
        )
    else:
        conv = skip_init(cls, in_channels, out_channels, 1, groups=groups, bias=bias is not None,
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
