"""CUR decomposition of a Linear layer (or an ungrouped pointwise conv, 1-, 2- or 3-D).

Rank is ``(k,)``: ``k`` columns ``C = W[:, J]`` and ``k`` rows ``R = W[I, :]`` of the
weight ``W (m × n)`` are kept and ``W ≈ C U R`` with the Frobenius-optimal ``U = C⁺ W R⁺``.
The product is folded into ``Linear(n → k, bias=False)`` → ``Linear(k → m, bias)``; ``U``
joins the factor of the *shorter* side, so one layer holds actual weight entries:

* ``m <= n``: first layer ``R`` (it computes ``k`` of the original outputs), second ``C U``;
* ``m > n``:  first layer ``U R``, second ``C`` (actual columns).

That choice also keeps full rank well conditioned: there the shorter side is kept whole,
and ``U`` folded into it is a permutation, where folding it the other way would multiply
by the inverse of a sampled square block. Parameters ``k (m + n)`` plus the bias, as for
SVD. A 1×1 conv becomes two 1×1 convs, the first carrying stride and padding.

Selection (option ``algorithm``), always sampling **without replacement** so that at
``k = min(m, n)`` one side is kept whole and the other spans the weight's range, making
the reconstruction exact (for a weight whose every ``k`` columns/rows are independent,
which holds for generic real weights):

* ``"leverage"`` (default) — Mahoney & Drineas (2009), "CUR matrix decompositions for
  improved data analysis": probabilities are the rank-``k`` leverage scores
  ``π_j = ‖V_k[j, :]‖² / k`` (rows: ``U_k``). Its guarantee is relative to the best rank-``k``
  error, where norm sampling's is additive in ``‖W‖_F``; the extra SVD costs milliseconds
  for a layer, so it is the default.
* ``"linear-time"`` — Drineas, Kannan & Mahoney (2006), "Fast Monte Carlo algorithms for
  matrices III": probabilities ``|W[:, j]|² / ‖W‖²_F`` (rows alike), no SVD needed.

Both use ``U = C⁺ W R⁺`` rather than the papers' rescaled intersection matrices: it is
never worse in Frobenius norm, makes the scaling of sampled columns irrelevant, and makes
the full rank exact. Sampling is a Gumbel-top-``k`` draw (Efraimidis & Spirakis), which
is weighted sampling without replacement, from a ``torch.Generator`` seeded by option
``seed`` (default 0): the same seed gives the same layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latbench.compress._base import (
    METHODS,
    Decomposition,
    LowRankSequential,
    check_rank,
    conv_reason,
    count_params,
)
from latbench.compress._linalg import check_options, new_conv, new_linear, rel_error
from latbench.compress.ranks import resolve_rank
from latbench.exceptions import UserInputError

__all__ = ["CUR", "ALGORITHMS", "cur_factors", "decompose_linear", "decompose_conv"]

#: Selection algorithms, the first is the default.
ALGORITHMS = ("leverage", "linear-time")


def _matrix(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return w.reshape(w.shape[0], w.shape[1])


def _sample(probs: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices drawn with probabilities ``probs`` (Gumbel-top-k), sorted."""
    u = torch.rand(probs.shape, generator=gen, dtype=torch.float64).clamp_(1e-300, 1.0)
    keys = torch.log(probs) - torch.log(-torch.log(u))  # log p + Gumbel noise
    return torch.sort(torch.topk(keys, k).indices).values


def cur_factors(
    weight: torch.Tensor, k: int, *, algorithm: str = "leverage", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CUR factors of a matrix.

    Parameters
    ----------
    weight : Tensor, shape (m, n)
    k : int
        Columns and rows kept, ``1 <= k <= min(m, n)``.
    algorithm : {"leverage", "linear-time"}
    seed : int

    Returns
    -------
    cols : Tensor, shape (k,), int64
        Column indices ``J`` (sorted).
    rows : Tensor, shape (k,), int64
        Row indices ``I`` (sorted).
    c : Tensor, shape (m, k), float64
        ``C = W[:, J]``.
    u : Tensor, shape (k, k), float64
        ``U = C⁺ W R⁺``.
    r : Tensor, shape (k, n), float64
        ``R = W[I, :]``.

    Raises
    ------
    UserInputError
        For an unknown algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise UserInputError(f"unknown CUR algorithm {algorithm!r}; choose one of: "
                             f"{', '.join(ALGORITHMS)}")
    w = weight.detach().to("cpu", torch.float64)
    if algorithm == "leverage":
        u, _, vh = torch.linalg.svd(w, full_matrices=False)
        col_p = (vh[:k] ** 2).sum(0) / k
        row_p = (u[:, :k] ** 2).sum(1) / k
    else:
        sq = w * w
        total = sq.sum().clamp_min(1e-300)
        col_p, row_p = sq.sum(0) / total, sq.sum(1) / total
    gen = torch.Generator().manual_seed(int(seed))
    cols = _sample(col_p, k, gen)
    rows = _sample(row_p, k, gen)
    c, r = w[:, cols], w[rows, :]
    u_mid = torch.linalg.pinv(c) @ w @ torch.linalg.pinv(r)
    return cols, rows, c, u_mid, r


class CUR:
    """CUR of a Linear or ungrouped 1×1 Conv2d; see the module docstring. Rank ``(k,)``."""

    name = "cur"

    def supports(self, layer: nn.Module) -> str | None:
        if isinstance(layer, nn.Linear):
            return None
        if conv_reason(layer) is None:
            if any(k != 1 for k in layer.kernel_size):
                return "cur applies to Linear layers and 1x1 convs; use svd or tucker2 for this conv"
            if layer.groups != 1:
                return "cur does not decompose grouped convs; use svd"
            return None
        return (f"cur applies to Linear layers and 1x1 convs, not {type(layer).__name__}"
                + (" (a transposed convolution)" if isinstance(layer, nn.modules.conv._ConvTransposeNd)
                   else ""))

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        w = layer.weight
        return (min(w.shape[0], w.shape[1]),)

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        return self.max_rank(layer)

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        (k,) = rank
        w = layer.weight
        bias = 0 if layer.bias is None else layer.bias.numel()
        return k * (w.shape[0] + w.shape[1]) + bias

    def rank_unfoldings(self, layer: nn.Module) -> list[torch.Tensor]:
        """The weight matrix itself."""
        return [_matrix(layer)]

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        """Decompose ``layer`` at ``rank = (k,)``.

        Options
        -------
        algorithm : {"leverage", "linear-time"}, default "leverage"
        seed : int, default 0

        Raises
        ------
        UserInputError
            For an unsupported layer, a bad rank, or an unknown option or algorithm.
        """
        check_options(self.name, options, ("algorithm", "seed"))
        algorithm = options.get("algorithm", ALGORITHMS[0])
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserInputError(f"cur option seed must be an int, got {seed!r}")
        (k,) = check_rank(self, layer, rank)
        _, _, c, u, r = cur_factors(_matrix(layer), k, algorithm=algorithm, seed=seed)
        m, n = c.shape[0], r.shape[1]
        a, b = (r, c @ u) if m <= n else (u @ r, c)  # first-layer and second-layer weights
        bias = None if layer.bias is None else layer.bias.detach()
        if isinstance(layer, nn.Linear):
            first = new_linear(layer, layer.in_features, k, a)
            second = new_linear(layer, k, layer.out_features, b, bias)
        else:
            first = new_conv(layer, layer.in_channels, k, a, spatial=True, groups=1)
            second = new_conv(layer, k, layer.out_channels, b, spatial=False, groups=1, bias=bias)
        module = LowRankSequential(first, second, method=self.name, rank=(k,))
        module.train(layer.training)
        w_hat = second.weight.double().reshape(-1, k) @ first.weight.double().reshape(k, -1)
        return Decomposition(
            module=module, method=self.name, rank=(k,), params_before=count_params(layer),
            params_after=count_params(module),
            rel_error=rel_error(_matrix(layer), w_hat),
            notes=(f"CUR selection: {algorithm}, seed {seed}",),
        )


#: The registered ``cur`` method.
METHOD = CUR()
METHODS.register("cur", METHOD)


def decompose_linear(layer: nn.Linear, rank: Any, *, algorithm: str = "leverage",
                     seed: int = 0) -> LowRankSequential:
    """CUR of ``layer`` into two Linear layers.

    Parameters
    ----------
    layer : nn.Linear
    rank : int, tuple, float, or str
        Any spelling :func:`latbench.compress.ranks.resolve_rank` accepts.
    algorithm : {"leverage", "linear-time"}
    seed : int

    Raises
    ------
    UserInputError
        If ``layer`` is not a Linear, or the rank or algorithm is invalid.
    """
    if not isinstance(layer, nn.Linear):
        raise UserInputError(f"cur decompose_linear needs an nn.Linear, got {type(layer).__name__}")
    return METHOD.decompose(layer, resolve_rank(rank, layer, METHOD), algorithm=algorithm,
                            seed=seed).module


def decompose_conv(layer: nn.Conv2d, rank: Any, *, algorithm: str = "leverage",
                   seed: int = 0) -> LowRankSequential:
    """CUR of an ungrouped 1×1 ``layer`` into two 1×1 convs (the first carries the stride).

    Raises
    ------
    UserInputError
        If ``layer`` is not an ungrouped 1×1 Conv2d, or the rank or algorithm is invalid.
    """
    if not isinstance(layer, nn.Conv2d):
        raise UserInputError(f"cur decompose_conv needs an nn.Conv2d, got {type(layer).__name__}")
    return METHOD.decompose(layer, resolve_rank(rank, layer, METHOD), algorithm=algorithm,
                            seed=seed).module
