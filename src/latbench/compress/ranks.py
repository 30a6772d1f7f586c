"""One resolver from every rank spelling to a method's rank tuple.

Spellings (Python value, or CLI text via :func:`parse_rank_spec`):

========================  ==========================================================
``16`` / ``"16"``         absolute; an int applies to every rank dimension
``(16, 32)`` / ``"16,32"``  absolute, one value per rank dimension (method's order)
``0.5`` / ``"0.5"``       fraction ``f`` in (0, 1]: ``ceil(f * base)`` per dimension,
                          ``base = method.fraction_base(layer)``, clipped to
                          ``1..max_rank``. ``1`` is the int rank 1; ``1.0`` is "full".
``"ratio=3"``             the largest rank whose replacement (the whole new module,
                          biases included, ``method.n_params``) has at most
                          ``params_before / 3`` parameters, one rank up having more
                          (see "Ratio ranks" below)
``"evbmf"``               EVBMF rank of each rank dimension's unfolding(s)
``"evbmf:0.6"``           MUSCO's weakened EVBMF (see below)
========================  ==========================================================

Ratio ranks
-----------
A method with one rank dimension gets the largest ``r`` in ``1..max_rank`` with
``n_params(layer, (r,)) <= params_before / X``; ``r + 1`` would break the budget (or is past
``max_rank``). CP's ``max_rank`` is far above its channel counts, so a ratio can ask for a
CP rank beyond ``max(Cin, Cout)`` (``Conv2d(32, 48, 5)`` at ``ratio=2``: rank 213). A method
with several rank dimensions scales them together: the ranks are
``clip(ceil(t · fraction_base), 1, max_rank)`` for the largest ``t`` that keeps within the
budget, and the next ``t`` at which any rank grows breaks it. ``t`` may exceed 1 where
``max_rank`` exceeds ``fraction_base``. The search is exact: the ranks only change at the
breakpoints ``t = j / base`` and ``n_params`` never decreases in ``t``, so the breakpoints
are bisected. ``params_before`` is the parameter count of what is replaced: the layer, or
the whole Tucker-2 block on a MUSCO step.

EVBMF ranks
-----------
For rank dimension ``d`` the method supplies the matrices whose rank bounds it (the
protocol below). For each, :func:`latbench.compress.evbmf.evbmf_rank` estimates
``r_evbmf`` and ``r_full = min(rows, cols)`` is the matrix's own full rank. MUSCO's
weakening (Gusak et al. 2019) then keeps

    r = ceil(r_full − w · (r_full − r_evbmf)),   w ∈ [0, 1],

so ``w = 1`` (plain ``"evbmf"``) is the EVBMF rank itself and ``w = 0`` the full rank.
Over several matrices of one dimension the largest ``r`` wins. The result is clipped to
``1..max_rank``: a matrix EVBMF calls pure noise still gets rank 1, never an empty layer.

Method protocol extension: ``rank_unfoldings``
----------------------------------------------
A method that supports ``evbmf`` ranks defines::

    def rank_unfoldings(self, layer) -> list[Tensor | list[Tensor]]

returning **one entry per rank dimension, in the method's rank order**. An entry is

* a 2-D tensor: the matrix whose rank that dimension is (e.g. for Tucker-2's ``R_in``
  the mode-1 / input-channel unfolding ``Cin × (Cout kh kw)``);
* a 3-D tensor ``(g, m, n)``: a stack of per-group matrices sharing one rank (grouped
  convs decomposed per group); the largest per-group rank is used;
* a list of such tensors: several matrices bound the one rank (e.g. a CP rank bounded
  by both channel unfoldings); the largest rank is used.

Methods without ``rank_unfoldings`` reject ``evbmf`` ranks with a clear error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Union, runtime_checkable

import numpy as np
import torch
from torch import nn

from latbench.compress._base import METHODS, DecompositionMethod, check_rank, count_params, describe_layer
from latbench.exceptions import UserInputError

__all__ = [
    "RankSpec",
    "RankLike",
    "SupportsRankUnfoldings",
    "parse_rank_spec",
    "as_rank_spec",
    "resolve_rank",
    "weaken_rank",
]

RankKind = Literal["absolute", "fraction", "ratio", "evbmf"]

_HELP = ("give an int (16), ints per dimension (16,32), a fraction in (0, 1] (0.5), "
         "'ratio=X' with X > 1, 'evbmf' or 'evbmf:W' with W in [0, 1]")


@dataclass(frozen=True)
class RankSpec:
    """A parsed, not yet resolved rank.

    Attributes
    ----------
    kind : {"absolute", "fraction", "ratio", "evbmf"}
    value : tuple of int or float
        ``absolute``: the ranks (a 1-tuple applies to every dimension); ``fraction``: f in
        (0, 1]; ``ratio``: the target parameter compression X > 1; ``evbmf``: the
        weakening factor w in [0, 1].
    """

    kind: RankKind
    value: Union[tuple[int, ...], float]

    def __str__(self) -> str:
        if self.kind == "absolute":
            return ",".join(str(v) for v in self.value)  # type: ignore[union-attr]
        if self.kind == "fraction":
            return repr(float(self.value))  # type: ignore[arg-type]
        if self.kind == "ratio":
            return f"ratio={self.value:g}"
        return "evbmf" if self.value == 1.0 else f"evbmf:{self.value:g}"


#: Any rank a user may write.
RankLike = Union[int, float, str, Sequence[int], RankSpec]


@runtime_checkable
class SupportsRankUnfoldings(Protocol):
    """Optional extension of ``DecompositionMethod`` enabling ``evbmf`` ranks (see module doc)."""

    def rank_unfoldings(self, layer: nn.Module) -> list[Any]:
        """One entry (matrix, stack of matrices, or list of them) per rank dimension."""


_INT = re.compile(r"^[+-]?\d+$")


def _fraction(f: float, source: Any) -> RankSpec:
    if not math.isfinite(f) or not 0.0 < f <= 1.0:
        raise UserInputError(
            f"bad rank {source!r}: a fractional rank must be in (0, 1] (for an absolute rank "
            f"give an int); {_HELP}"
        )
    return RankSpec("fraction", float(f))


def _absolute(values: Sequence[Any], source: Any) -> RankSpec:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise UserInputError(f"bad rank {source!r}: every rank in a tuple must be an int; {_HELP}")
        if int(v) < 1:
            raise UserInputError(f"bad rank {source!r}: ranks must be at least 1; {_HELP}")
        out.append(int(v))
    if not out:
        raise UserInputError(f"bad rank {source!r}: empty rank; {_HELP}")
    return RankSpec("absolute", tuple(out))


def parse_rank_spec(text: str) -> RankSpec:
    """Parse a CLI rank string (``"16"``, ``"16,32"``, ``"0.5"``, ``"ratio=3"``, ``"evbmf:0.6"``).

    Raises
    ------
    UserInputError
        On bad syntax, a rank below 1, a fraction outside (0, 1], a ratio <= 1, or an
        EVBMF weakening outside [0, 1].
    """
    if not isinstance(text, str):
        raise UserInputError(f"bad rank {text!r}: expected text; {_HELP}")
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise UserInputError(f"empty rank; {_HELP}")
    if t.startswith("ratio"):
        m = re.fullmatch(r"ratio[=:]([0-9.eE+-]+)", t)
        x = _float(m.group(1)) if m else None
        if x is None:
            raise UserInputError(f"bad rank {text!r}: write a target compression as 'ratio=3'")
        if not math.isfinite(x) or x <= 1.0:
            raise UserInputError(f"bad rank {text!r}: the compression ratio must be > 1 "
                                 "(params before / params after)")
        return RankSpec("ratio", x)
    if t.startswith("evbmf"):
        if t == "evbmf":
            return RankSpec("evbmf", 1.0)
        m = re.fullmatch(r"evbmf:([0-9.eE+-]+)", t)
        w = _float(m.group(1)) if m else None
        if w is None or not 0.0 <= w <= 1.0:
            raise UserInputError(f"bad rank {text!r}: write 'evbmf' or 'evbmf:W' with weakening "
                                 "W in [0, 1] (1 = the EVBMF rank, 0 = full rank)")
        return RankSpec("evbmf", w)
    if "," in t:
        parts = [p for p in t.strip("()[]").split(",")]
        if not all(_INT.match(p) for p in parts):
            raise UserInputError(f"bad rank {text!r}: a rank tuple is ints separated by commas, "
                                 "e.g. 16,32")
        return _absolute([int(p) for p in parts], text)
    if _INT.match(t):
        return _absolute([int(t)], text)
    f = _float(t)
    if f is None:
        raise UserInputError(f"bad rank {text!r}: {_HELP}")
    return _fraction(f, text)


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def as_rank_spec(spec: RankLike) -> RankSpec:
    """Parse any rank spelling (Python value or CLI text) into a :class:`RankSpec`.

    Raises
    ------
    UserInputError
        If the spelling is malformed (see :func:`parse_rank_spec`).
    """
    if isinstance(spec, RankSpec):
        return spec
    if isinstance(spec, str):
        return parse_rank_spec(spec)
    if isinstance(spec, bool) or spec is None:
        raise UserInputError(f"bad rank {spec!r}: {_HELP}")
    if isinstance(spec, (int, np.integer)):
        return _absolute([spec], spec)
    if isinstance(spec, float):
        return _fraction(spec, spec)
    if isinstance(spec, (tuple, list)):
        return _absolute(list(spec), spec)
    raise UserInputError(f"bad rank {spec!r}: {_HELP}")


def weaken_rank(r_full: int, r_evbmf: int, weakening: float) -> int:
    """MUSCO's weakened rank ``ceil(r_full − w (r_full − r_evbmf))``, at least 1.

    Raises
    ------
    UserInputError
        If ``weakening`` is outside [0, 1].
    """
    if not 0.0 <= weakening <= 1.0:
        raise UserInputError(f"EVBMF weakening must be in [0, 1], got {weakening}")
    # The tiny slack keeps e.g. 10 − 0.6·(10 − 5) = 7.000000000000001 from rounding up to 8.
    return max(1, math.ceil(r_full - weakening * (r_full - r_evbmf) - 1e-9))


def _evbmf_ranks(spec: RankSpec, layer: nn.Module, method: DecompositionMethod,
                 limits: tuple[int, ...]) -> tuple[int, ...]:
    from latbench.compress.evbmf import evbmf_rank

    if not isinstance(method, SupportsRankUnfoldings):
        raise UserInputError(f"{method.name} does not support EVBMF ranks; give an int, a fraction "
                             "or 'ratio=X'")
    entries = method.rank_unfoldings(layer)
    if len(entries) != len(limits):
        raise RuntimeError(f"{method.name}.rank_unfoldings returned {len(entries)} entries for "
                           f"{len(limits)} rank dimensions")  # a method bug, not a user error
    out = []
    for entry, top in zip(entries, limits):
        mats = entry if isinstance(entry, (list, tuple)) else [entry]
        best = 1
        for mat in mats:
            mat = torch.as_tensor(mat).detach()
            r_full = min(mat.shape[-2], mat.shape[-1])
            r = weaken_rank(r_full, evbmf_rank(mat), float(spec.value))
            best = max(best, r)
        out.append(min(best, top))
    return tuple(out)


def _fraction_ranks(f: float, base: tuple[int, ...], limits: tuple[int, ...]) -> tuple[int, ...]:
    # The small slack keeps e.g. 0.3 * 10 = 3.0000000000000004 from becoming 4.
    return tuple(min(top, max(1, math.ceil(f * b - 1e-9))) for b, top in zip(base, limits))


def _ratio_ranks(x: float, layer: nn.Module, method: DecompositionMethod,
                 base: tuple[int, ...], limits: tuple[int, ...]) -> tuple[int, ...]:
    before = count_params(layer)
    budget = before / x
    ones = tuple(1 for _ in limits)
    smallest = method.n_params(layer, ones)
    if smallest > budget:
        raise UserInputError(
            f"ratio={x:g} is out of reach for {method.name} on this {describe_layer(layer)}: "
            f"even rank {ones} keeps {smallest} of {before} parameters "
            f"(best ratio {before / smallest:.3g})"
        )
    # The ranks at scale t are ceil(t b) clipped to 1..top, so they change only at t = j / b
    # (j = 1..top per dimension); n_params never decreases in t: bisect those breakpoints.
    points = sorted({j / b for b, top in zip(base, limits) for j in range(1, top + 1)})

    def ranks_at(t: float) -> tuple[int, ...]:
        return _fraction_ranks(t, base, limits)

    if method.n_params(layer, ranks_at(points[0])) > budget:
        return ones
    lo, hi = 0, len(points) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if method.n_params(layer, ranks_at(points[mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return ranks_at(points[lo])


def resolve_rank(spec: RankLike, layer: nn.Module, method: DecompositionMethod | str) -> tuple[int, ...]:
    """Turn any rank spelling into the rank tuple ``method`` takes for ``layer``.

    Parameters
    ----------
    spec : int, float, str, sequence of int, or RankSpec
        See the module docstring.
    layer : nn.Module
        The layer to decompose.
    method : DecompositionMethod or str
        The method object, or its registered name.

    Returns
    -------
    tuple of int
        One rank per rank dimension, each in ``1..method.max_rank(layer)``.

    Raises
    ------
    UserInputError
        If the spec is malformed, the method cannot decompose the layer, an absolute rank
        is outside ``1..max_rank`` or has the wrong length, a ratio cannot be reached, or
        the method has no EVBMF support.
    """
    if isinstance(method, str):
        import latbench.compress  # noqa: F401  (registers the built-in methods)

        method = METHODS.get(method)
    rank_spec = as_rank_spec(spec)
    reason = method.supports(layer)
    if reason is not None:
        raise UserInputError(f"{method.name} cannot decompose this {describe_layer(layer)}: {reason}")
    limits = tuple(int(v) for v in method.max_rank(layer))
    if rank_spec.kind == "absolute":
        ranks = tuple(rank_spec.value)  # type: ignore[arg-type]
        return check_rank(method, layer, ranks * len(limits) if len(ranks) == 1 else ranks)
    base = tuple(int(v) for v in method.fraction_base(layer))
    if rank_spec.kind == "fraction":
        return _fraction_ranks(float(rank_spec.value), base, limits)  # type: ignore[arg-type]
    if rank_spec.kind == "ratio":
        return _ratio_ranks(float(rank_spec.value), layer, method, base, limits)  # type: ignore[arg-type]
    return _evbmf_ranks(rank_spec, layer, method, limits)
