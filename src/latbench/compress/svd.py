"""Truncated SVD of a Linear layer, and channel SVD of a Conv1d, Conv2d or Conv3d.

Rank is ``(k,)``.

* ``Linear(n → m)`` becomes ``Linear(n → k, bias=False)`` → ``Linear(k → m, bias)``:
  ``k (m + n)`` weights plus the bias, so the compression is ``m n / (k (m + n))``.
* ``Conv2d(Cin → Cout, kh×kw)`` becomes ``kh×kw conv (Cin → k)`` carrying stride, padding,
  dilation and padding mode → ``1×1 conv (k → Cout)`` with the bias. The factorised matrix
  is the kernel reshaped to ``Cout × (Cin kh kw)``; a 1×1 conv is thus the linear SVD.
  ``Conv1d`` and ``Conv3d`` are factorised the same way (kernel ``k`` or ``kd×kh×kw`` in
  place of ``kh×kw``, a pointwise conv of the same dimensionality after it). Transposed
  convolutions are refused.
* Grouped convs are factorised **per group**: ``k`` is the rank of each group's
  ``(Cout/g) × (Cin/g kh kw)`` matrix, both factor convs keep ``groups=g`` and carry
  ``g k`` channels between them. Parameters: ``k (Cin kh kw + Cout)`` plus the bias
  (``kh kw``: the product of the kernel's sizes).
  Depthwise convs (one input channel per group) are refused: each group's matrix has
  rank 1 at most, so there is nothing to factor.
"""

from __future__ import annotations

import math
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
    is_depthwise,
)
from latbench.compress._linalg import (
    check_options,
    new_conv,
    new_linear,
    rel_error,
    squared_norm,
    two_factor,
)
from latbench.compress.ranks import resolve_rank
from latbench.exceptions import UserInputError

__all__ = ["SVD", "decompose_linear", "decompose_conv"]


def _group_matrices(layer: nn.modules.conv._ConvNd) -> torch.Tensor:
    """The conv kernel as ``g`` matrices ``(Cout/g) × (Cin/g · kernel size)``."""
    g = layer.groups
    w = layer.weight
    return w.reshape(g, w.shape[0] // g, -1)


class SVD:
    """Truncated (channel) SVD; see the module docstring for the layers it builds."""

    name = "svd"

    def supports(self, layer: nn.Module) -> str | None:
        if isinstance(layer, nn.Linear):
            return None
        reason = conv_reason(layer)
        if reason is not None:
            return f"svd applies to Linear and Conv1d/Conv2d/Conv3d layers; {reason}"
        if is_depthwise(layer):
            return ("a depthwise conv has one input channel per group, so each group's kernel "
                    "has rank 1 at most and cannot be factorised")
        return None

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        if isinstance(layer, nn.Linear):
            return (min(layer.in_features, layer.out_features),)
        m = layer.out_channels // layer.groups
        n = layer.weight[0].numel()
        return (min(m, n),)

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        return self.max_rank(layer)

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        (k,) = rank
        bias = 0 if layer.bias is None else layer.bias.numel()
        if isinstance(layer, nn.Linear):
            return k * (layer.in_features + layer.out_features) + bias
        return k * (layer.in_channels * math.prod(layer.kernel_size) + layer.out_channels) + bias

    def rank_unfoldings(self, layer: nn.Module) -> list[torch.Tensor]:
        """The matrix being factorised; a ``(g, m, n)`` stack for a grouped conv."""
        if isinstance(layer, nn.Linear):
            return [layer.weight.detach()]
        return [_group_matrices(layer).detach()]

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        check_options(self.name, options, ())
        (k,) = check_rank(self, layer, rank)
        if isinstance(layer, nn.Linear):
            module, err = _svd_linear(layer, k)
        else:
            module, w_hat = _svd_conv(layer, k)
            err = rel_error(layer.weight, w_hat)
        module.train(layer.training)
        return Decomposition(
            module=module, method=self.name, rank=(k,), params_before=count_params(layer),
            params_after=count_params(module), rel_error=err,
        )


def _svd_linear(layer: nn.Linear, k: int) -> tuple[LowRankSequential, float]:
    a, b = two_factor(layer.weight, k)
    bias = None if layer.bias is None else layer.bias.detach()
    first = new_linear(layer, layer.in_features, k, a)
    second = new_linear(layer, k, layer.out_features, b, bias)
    # The factors project W on an orthonormal basis (A = UᵀW, or B = WV), so
    # ‖W − BA‖² = ‖W‖² − ‖UᵀW‖² (or ‖W‖² − ‖WV‖²): no m×k×n product to form W_hat, which
    # for a 4096×25088 classifier at many ranks is most of a search's time. The identity
    # holds for the float64 factors; storing them in float32 adds ~1e-7 relative.
    w = layer.weight
    norm_sq = squared_norm(w)  # in float64: the difference below cancels
    kept = a if w.shape[0] <= w.shape[1] else b
    if norm_sq == 0.0:
        return LowRankSequential(first, second, method="svd", rank=(k,)), 0.0
    err = max(norm_sq - float((kept * kept).sum()), 0.0) ** 0.5 / norm_sq ** 0.5
    return LowRankSequential(first, second, method="svd", rank=(k,)), err


def _svd_conv(layer: nn.modules.conv._ConvNd, k: int) -> tuple[LowRankSequential, torch.Tensor]:
    g = layer.groups
    a, b = two_factor(_group_matrices(layer), k)  # a: (g, k, n), b: (g, m, k)
    bias = None if layer.bias is None else layer.bias.detach()
    first = new_conv(layer, layer.in_channels, g * k, a, spatial=True, groups=g)
    second = new_conv(layer, g * k, layer.out_channels, b, spatial=False, groups=g, bias=bias)
    a32 = first.weight.double().reshape(g, k, -1)
    b32 = second.weight.double().reshape(g, -1, k)
    w_hat = (b32 @ a32).reshape(layer.weight.shape)
    return LowRankSequential(first, second, method="svd", rank=(k,)), w_hat


#: The registered ``svd`` method.
METHOD = SVD()
METHODS.register("svd", METHOD)


def decompose_linear(layer: nn.Linear, rank: Any) -> LowRankSequential:
    """Truncated SVD of ``layer`` into two Linear layers.

    Parameters
    ----------
    layer : nn.Linear
    rank : int, tuple, float, or str
        Any spelling :func:`latbench.compress.ranks.resolve_rank` accepts.

    Raises
    ------
    UserInputError
        If ``layer`` is not a Linear or the rank is invalid.
    """
    if not isinstance(layer, nn.Linear):
        raise UserInputError(f"decompose_linear needs an nn.Linear, got {type(layer).__name__}")
    return METHOD.decompose(layer, resolve_rank(rank, layer, METHOD)).module


def decompose_conv(layer: nn.modules.conv._ConvNd, rank: Any) -> LowRankSequential:
    """Channel SVD of ``layer`` into a ``kh×kw`` conv and a ``1×1`` conv.

    Parameters
    ----------
    layer : nn.Conv1d, nn.Conv2d or nn.Conv3d
    rank : int, tuple, float, or str
        Rank per group; any spelling :func:`latbench.compress.ranks.resolve_rank` accepts.

    Raises
    ------
    UserInputError
        If ``layer`` is not a supported convolution or the rank is invalid.
    """
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise UserInputError(f"decompose_conv needs an nn.Conv2d (or Conv1d/Conv3d), got "
                             f"{type(layer).__name__}")
    return METHOD.decompose(layer, resolve_rank(rank, layer, METHOD)).module
