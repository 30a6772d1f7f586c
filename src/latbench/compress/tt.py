"""Tensor-Train decomposition of a Conv2d, as four ordinary convolutions.

Each group's kernel ``W[o, i, h, w]`` is reordered as the 4-way tensor
``X[i, h, w, o]`` — **(Cin, kh, kw, Cout)**, the order data flows through the layers — and
split by TT-SVD into cores ``G1 (Cin×r1)``, ``G2 (r1×kh×r2)``, ``G3 (r2×kw×r3)``,
``G4 (r3×Cout)``, so ``X[i,h,w,o] = Σ G1[i,a] G2[a,h,b] G3[b,w,c] G4[c,o]``. The layers::

    1×1 conv (Cin → r1)  →  kh×1 conv (r1 → r2, vertical stride/padding/dilation)
                         →  1×kw conv (r2 → r3, horizontal)  →  1×1 conv (r3 → Cout, bias)

Rank is ``(r1, r2, r3)``. ``max_rank`` is the TT-SVD exact bound ``(min(Cin, kh·kw·Cout),
min(Cin·kh, kw·Cout), min(Cin·kh·kw, Cout))``; at it the layer is reproduced exactly.
Each TT-SVD step can only keep as many components as the matrix it splits has rows, so
``r2`` is effectively at most ``r1·kh`` and ``r3`` at most ``r2·kw``; a larger request is
clipped, the clipped rank is what ``Decomposition.rank`` and :meth:`TT.n_params` report,
and a note says so. ``fraction_base`` is ``max_rank`` (a fraction never needs clipping).
Each step is the Eckart–Young truncation from :func:`._linalg.two_factor` (float64).

Grouped convs are decomposed **per group** (ranks per group, every conv keeps
``groups=g``). Parameters: ``g·(Cin/g·r1 + r1·kh·r2 + r2·kw·r3 + r3·Cout/g)`` plus the
bias. Depthwise convs are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from latbench.compress._base import METHODS, Decomposition, LowRankSequential
from latbench.compress._conv_split import (
    conv_geometry,
    conv_support_reason,
    group_weights,
    make_conv,
)
from latbench.compress._base import check_rank, count_params
from latbench.compress._linalg import check_options, rel_error, two_factor

__all__ = ["TT", "tt_cores", "tt_decompose_conv", "tt_effective_rank", "tt_module_weight"]


def _reordered(layer: nn.Conv2d) -> Tensor:
    """``(g, Cin/g, kh, kw, Cout/g)`` float64: each group's kernel in TT order."""
    return torch.stack(group_weights(layer)).permute(0, 2, 3, 4, 1)


def tt_effective_rank(layer: nn.Conv2d, rank: tuple[int, int, int]) -> tuple[int, int, int]:
    """``rank`` clipped to what TT-SVD can keep: ``r2 <= r1·kh``, ``r3 <= r2·kw``."""
    geo = conv_geometry(layer)
    r1, r2, r3 = (int(r) for r in rank)
    r2 = min(r2, r1 * geo.kh)
    r3 = min(r3, r2 * geo.kw)
    return (r1, r2, r3)


def tt_cores(
    layer: nn.Conv2d, rank: tuple[int, int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TT-SVD cores of each group's kernel at ``rank`` (clipped by :func:`tt_effective_rank`).

    Returns
    -------
    g1 : Tensor, shape (g, Cin/g, r1)
    g2 : Tensor, shape (g, r1, kh, r2)
    g3 : Tensor, shape (g, r2, kw, r3)
    g4 : Tensor, shape (g, r3, Cout/g)
        All float64.
    """
    r1, r2, r3 = tt_effective_rank(layer, rank)
    x = _reordered(layer)
    g, cin, kh, kw, cout = x.shape
    rest, g1 = two_factor(x.reshape(g, cin, kh * kw * cout), r1)  # (g, r1, ·), (g, Cin, r1)
    rest, g2 = two_factor(rest.reshape(g, r1 * kh, kw * cout), r2)
    g4, g3 = two_factor(rest.reshape(g, r2 * kw, cout), r3)
    return g1, g2.reshape(g, r1, kh, r2), g3.reshape(g, r2, kw, r3), g4


def tt_module_weight(module: LowRankSequential) -> Tensor:
    """The ``(Cout, Cin/g, kh, kw)`` kernel a ``tt`` module computes, in float64."""
    c1, c2, c3, c4 = (m.weight.detach().double() for m in module)
    g = module[0].groups
    g1 = c1.reshape(g, -1, c1.shape[1])  # (g, r1, Cin)
    g2 = c2[..., 0].reshape(g, -1, *c2.shape[1:3])  # (g, r2, r1, kh)
    g3 = c3[:, :, 0, :].reshape(g, -1, *c3.shape[1:2], c3.shape[3])  # (g, r3, r2, kw)
    g4 = c4.reshape(g, -1, c4.shape[1])  # (g, Cout, r3)
    w = torch.einsum("gai,gbah,gcbw,goc->goihw", g1, g2, g3, g4)
    return w.reshape(-1, *w.shape[2:])


class TT:
    """Tensor-Train (TT-SVD) of a Conv2d; see the module docstring. Rank ``(r1, r2, r3)``."""

    name = "tt"

    def supports(self, layer: nn.Module) -> str | None:
        return conv_support_reason(layer)

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        """TT-SVD exact bounds of each group's ``(Cin, kh, kw, Cout)`` tensor."""
        g = conv_geometry(layer)
        return (min(g.cin, g.kh * g.kw * g.cout), min(g.cin * g.kh, g.kw * g.cout),
                min(g.cin * g.kh * g.kw, g.cout))

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        """``max_rank``: ``ceil(f·base)`` then never exceeds the clipping of ``r2``, ``r3``."""
        return self.max_rank(layer)

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        """Parameters at the effective (clipped) rank, as :meth:`decompose` builds it."""
        r1, r2, r3 = tt_effective_rank(layer, tuple(rank))  # type: ignore[arg-type]
        g = conv_geometry(layer)
        per_group = g.cin * r1 + r1 * g.kh * r2 + r2 * g.kw * r3 + r3 * g.cout
        return g.groups * per_group + (g.groups * g.cout if g.bias else 0)

    def rank_unfoldings(self, layer: nn.Module) -> list[Tensor]:
        """The three TT unfoldings of ``(Cin, kh, kw, Cout)``, stacked per group."""
        x = _reordered(layer)
        g, cin, kh, kw, cout = x.shape
        return [x.reshape(g, cin, -1), x.reshape(g, cin * kh, -1), x.reshape(g, -1, cout)]

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        """Decompose ``layer`` at ``rank = (r1, r2, r3)``; takes no options.

        Raises
        ------
        UserInputError
            For an unsupported layer, a bad rank or any option.
        """
        check_options(self.name, options, ())
        asked = check_rank(self, layer, rank)
        r1, r2, r3 = tt_effective_rank(layer, asked)  # type: ignore[arg-type]
        notes: tuple[str, ...] = ()
        if (r1, r2, r3) != asked:
            notes = (f"tt rank {asked} clipped to {(r1, r2, r3)}: TT-SVD keeps at most r1·kh "
                     "components for r2 and r2·kw for r3",)
        geo = conv_geometry(layer)
        g = geo.groups
        g1, g2, g3, g4 = tt_cores(layer, (r1, r2, r3))
        bias = None if layer.bias is None else layer.bias.detach()
        layers = (
            make_conv(g1.transpose(1, 2).reshape(g * r1, geo.cin, 1, 1), groups=g, like=layer),
            make_conv(g2.permute(0, 3, 1, 2).reshape(g * r2, r1, geo.kh, 1), groups=g,
                      like=layer, **geo.vertical()),
            make_conv(g3.permute(0, 3, 1, 2).reshape(g * r3, r2, 1, geo.kw), groups=g,
                      like=layer, **geo.horizontal()),
            make_conv(g4.transpose(1, 2).reshape(g * geo.cout, r3, 1, 1), groups=g, like=layer,
                      bias=bias),
        )
        module = LowRankSequential(*layers, method=self.name, rank=(r1, r2, r3))
        module.train(layer.training)
        return Decomposition(
            module=module, method=self.name, rank=(r1, r2, r3),
            params_before=count_params(layer), params_after=count_params(module),
            rel_error=rel_error(layer.weight, tt_module_weight(module)), notes=notes,
        )


#: The registered ``tt`` method.
METHOD = TT()
METHODS.register("tt", METHOD)


def tt_decompose_conv(layer: nn.Conv2d, ranks: Any) -> LowRankSequential:
    """Tensor-Train of ``layer`` into ``1×1 → kh×1 → 1×kw → 1×1`` convs.

    Parameters
    ----------
    layer : nn.Conv2d
    ranks : int, tuple, float or str
        ``(r1, r2, r3)`` per group, or any spelling
        :func:`latbench.compress.ranks.resolve_rank` accepts.

    Returns
    -------
    LowRankSequential
        Use ``METHODS.get("tt").decompose`` for the error and notes as well.

    Raises
    ------
    UserInputError
        If ``layer`` is not a supported Conv2d or the ranks are invalid.
    """
    from latbench.compress.ranks import resolve_rank

    return METHOD.decompose(layer, resolve_rank(ranks, layer, METHOD)).module
