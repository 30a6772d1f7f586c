"""What every decomposition method provides, and what it returns.

A method is an object registered in :data:`METHODS` under its CLI name (``svd``, ``cur``,
``cp``, ``cp3``, ``tucker2``, ``tt``). Its ``decompose`` is a pure function of the layer:
the layer is never modified, the result holds a new module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from latbench.registry import Registry

__all__ = ["Decomposition", "DecompositionMethod", "LowRankSequential", "METHODS", "check_rank",
           "conv_reason", "count_params", "describe_layer", "is_depthwise"]


class LowRankSequential(nn.Sequential):
    """A decomposed layer: its factor layers in execution order, tagged with method and rank.

    It behaves as ``nn.Sequential``; the tags let a later pass recognise it (e.g. MUSCO
    re-compression of a Tucker-2 block) and survive ``torch.save``/``torch.load``.
    """

    def __init__(self, *layers: nn.Module, method: str, rank: tuple[int, ...]) -> None:
        super().__init__(*layers)
        self.method = method
        self.rank = tuple(int(r) for r in rank)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, rank={self.rank}"


@dataclass(frozen=True)
class Decomposition:
    """The result of decomposing one layer; always this one type.

    Attributes
    ----------
    module : nn.Module
        Drop-in replacement for the layer (a :class:`LowRankSequential`).
    method : str
    rank : tuple of int
        The ranks actually used, in the method's documented order.
    params_before, params_after : int
        Parameter counts of the layer and of ``module`` (biases included).
    rel_error : float
        ``‖W − Ŵ‖_F / ‖W‖_F`` where ``Ŵ`` is the weight ``module`` computes.
    notes : tuple of str
        Anything the user should know (a fallback taken, regularisation applied...).
    """

    module: nn.Module
    method: str
    rank: tuple[int, ...]
    params_before: int
    params_after: int
    rel_error: float
    notes: tuple[str, ...] = ()

    @property
    def compression(self) -> float:
        """Parameter compression ratio ``params_before / params_after``."""
        return self.params_before / max(self.params_after, 1)


@runtime_checkable
class DecompositionMethod(Protocol):
    """The contract of a decomposition method.

    Ranks are tuples of positive ints whose meaning each method documents.
    """

    name: str

    def supports(self, layer: nn.Module) -> str | None:
        """``None`` if ``layer`` can be decomposed, else the reason it cannot (one line)."""

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        """Largest valid rank per rank dimension; at it the layer is reproduced exactly."""

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        """What a fractional rank ``f`` multiplies (``ceil(f * base)``, clipped to ``max_rank``)."""

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        """Parameters of the decomposed layer at ``rank`` (biases included)."""

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        """Decompose ``layer`` at ``rank`` into a new module.

        Raises
        ------
        UserInputError
            If the rank is invalid for this layer or the layer is not supported.
        """


#: Every decomposition method, by CLI name.
METHODS: Registry[DecompositionMethod] = Registry("decomposition method")


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module`` (biases included)."""
    return sum(p.numel() for p in module.parameters())


def is_depthwise(layer: nn.Module) -> bool:
    """Whether ``layer`` is a depthwise convolution: one input channel per group.

    Each group's kernel then has a single input channel, so there is no channel rank to
    reduce; every method refuses such layers. This is the one depthwise test of
    :mod:`latbench.compress` (the featuriser's ``dwconv`` rows use the same definition).
    """
    return (isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1
            and layer.in_channels == layer.groups)


def conv_reason(layer: nn.Module, *, dims: tuple[int, ...] = (1, 2, 3)) -> str | None:
    """``None`` if ``layer`` is an initialised plain ``nn.Conv{d}d`` with ``d`` in ``dims``,
    else why not (one line). Transposed convolutions are never plain convs here.
    """
    names = "/".join(f"Conv{d}d" for d in dims)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return (f"{type(layer).__name__} is a transposed convolution, which latbench does not "
                "decompose")
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
        return f"{type(layer).__name__} is not initialised yet: run the model once first"
    if not isinstance(layer, nn.modules.conv._ConvNd) or len(layer.kernel_size) not in dims:
        return f"only {names} layers are supported, not {type(layer).__name__}"
    return None


def describe_layer(layer: nn.Module) -> str:
    """One-line description naming the layer's type and weight shape, for error messages."""
    weight = getattr(layer, "weight", None)
    if isinstance(layer, LowRankSequential):
        inner = ", ".join(type(m).__name__ for m in layer)
        return f"{layer.method} block ({inner}) of rank {layer.rank}"
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
    extra = ""
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1:
        extra = f", groups={layer.groups}"
    return f"{type(layer).__name__} with weight shape {shape}{extra}"


def check_rank(method: DecompositionMethod, layer: nn.Module, rank: Any) -> tuple[int, ...]:
    """The one rank validator: ``rank`` as a tuple of ints, each in ``1..method.max_rank(layer)``.

    Every method's ``decompose`` and :func:`latbench.compress.ranks.resolve_rank` (after it
    has turned a spelling into ints) validate through here, so the rules and the messages
    are the same everywhere (tensorly's one ``validate_*_rank`` per decomposition).

    Parameters
    ----------
    method : DecompositionMethod
    layer : nn.Module
    rank : int or sequence of int
        A bare int is the 1-tuple ``(rank,)``; spelling an int for every dimension is the
        resolver's job.

    Returns
    -------
    tuple of int

    Raises
    ------
    UserInputError
        If the method cannot decompose the layer, ``rank`` is not ints, has the wrong
        length, or a rank is outside ``1..max``; the message names the layer's shape.
    """
    from latbench.exceptions import UserInputError

    reason = method.supports(layer)
    if reason is not None:
        raise UserInputError(f"{method.name} cannot decompose this {describe_layer(layer)}: {reason}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer, tuple, list)):
        raise UserInputError(
            f"{method.name} needs a resolved rank (int or tuple of ints), got {rank!r}; "
            "use latbench.compress.ranks.resolve_rank for fractions, 'ratio=X' or 'evbmf'")
    ranks = (rank,) if isinstance(rank, (int, np.integer)) else tuple(rank)
    if any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) for r in ranks):
        raise UserInputError(f"{method.name} ranks must be ints, got {rank!r} "
                             f"({describe_layer(layer)})")
    ranks = tuple(int(r) for r in ranks)
    limits = tuple(int(v) for v in method.max_rank(layer))
    if len(ranks) != len(limits):
        raise UserInputError(
            f"{method.name} takes {len(limits)} rank(s) for this {describe_layer(layer)}, "
            f"got {len(ranks)} ({','.join(map(str, ranks))})")
    if not all(1 <= r <= top for r, top in zip(ranks, limits)):
        allowed = " and ".join(f"1..{t}" for t in limits)
        raise UserInputError(
            f"{method.name} rank {','.join(map(str, ranks))} is out of range for this "
            f"{describe_layer(layer)}: allowed {allowed}")
    return ranks
