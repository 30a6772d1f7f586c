"""What every decomposition method provides, and what it returns.

A method is an object registered in :data:`METHODS` under its CLI name (``svd``, ``cur``,
``cp``, ``cp3``, ``tucker2``, ``tt``). Its ``decompose`` is a pure function of the layer:
the layer is never modified, the result holds a new module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from latbench.registry import Registry

__all__ = ["Decomposition", "DecompositionMethod", "LowRankSequential", "METHODS", "check_rank"]


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


def check_rank(method: DecompositionMethod, layer: nn.Module, rank: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a resolved rank tuple against ``method.max_rank(layer)``.

    Raises
    ------
    UserInputError
        If the layer is unsupported, the tuple has the wrong length, or a rank is
        outside ``1..max``.
    """
    from latbench.exceptions import UserInputError

    reason = method.supports(layer)
    if reason is not None:
        raise UserInputError(f"{method.name} cannot decompose this {type(layer).__name__}: {reason}")
    limits = method.max_rank(layer)
    rank = tuple(int(r) for r in rank)
    if len(rank) != len(limits):
        raise UserInputError(
            f"{method.name} takes {len(limits)} rank(s) for this layer, got {len(rank)} ({rank})"
        )
    for r, top in zip(rank, limits):
        if not 1 <= r <= top:
            raise UserInputError(
                f"{method.name} rank {rank} is out of range for this layer: each rank must be "
                f"between 1 and {limits}"
            )
    return rank
