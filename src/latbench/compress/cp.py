"""CP decomposition of a Conv2d: 4-way ``cp`` (Lebedev et al. 2015) and 3-way ``cp3``.

``cp`` treats each kernel as a ``Cout × Cin × kh × kw`` tensor,
``W[o, i, h, w] ≈ Σ_r A[o, r] B[i, r] C[h, r] D[w, r]``, and runs it as::

    1×1 conv (Cin → R)  →  depthwise kh×1 (groups=R)  →  depthwise 1×kw (groups=R)
                        →  1×1 conv (R → Cout, bias)

The ``kh×1`` layer takes the vertical stride/padding/dilation, the ``1×kw`` layer the
horizontal ones (exact for every padding mode, see :mod:`._conv_split`).

``cp3`` treats the kernel as ``Cout × Cin × (kh·kw)`` and keeps the spatial factor whole::

    1×1 conv (Cin → R)  →  depthwise kh×kw (groups=R, the layer's stride/padding/dilation)
                        →  1×1 conv (R → Cout, bias)

Rank is ``(R,)``. ``max_rank`` is the trivial exact bound, the product of the tensor's
dimensions except the largest (e.g. ``Cin·kh·kw`` when ``Cout`` is largest); at it the
exact construction is used and the layer is reproduced to float precision. Below it the
factors come from the regularised torch ALS of :mod:`._cp_als` (options ``n_iter_max``,
``tol``, ``ridge``, ``init``, ``seed``, ``precision``, ``line_search``); fallbacks and
non-convergence are reported in ``Decomposition.notes``. ``fraction_base`` is
``max(Cin, Cout)``, because Lebedev et al. quote CP ranks relative to the channel count:
fraction 0.25 of a 512-channel layer is rank 128.

Grouped convs are decomposed **per group**: ``R`` is the rank of each group's kernel, the
1×1 convs keep ``groups=g`` and the depthwise ones carry ``g·R`` channels. Parameters:
``g·R·(Cin/g + kh + kw + Cout/g)`` for ``cp`` and ``g·R·(Cin/g + kh·kw + Cout/g)`` for
``cp3``, plus the bias. Depthwise convs are refused.
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
from latbench.compress._cp_als import cp_als, cp_trivial_rank
from latbench.compress._base import check_rank, count_params
from latbench.compress._linalg import check_options, rel_error
from latbench.exceptions import UserInputError

__all__ = ["CP", "cp_decompose_conv", "cp_factors", "cp_module_weight"]

_OPTIONS = ("n_iter_max", "tol", "ridge", "init", "seed", "precision", "line_search")
_DEFAULTS: dict[str, Any] = dict(n_iter_max=150, tol=1e-5, ridge=1e-8, init="svd", seed=0,
                                 precision="auto", line_search=True)


def _tensor_shape(layer: nn.Conv2d, three_way: bool) -> tuple[int, ...]:
    g = conv_geometry(layer)
    if three_way:
        return (g.cout, g.cin, g.kh * g.kw)
    return (g.cout, g.cin, g.kh, g.kw)


def _check_als_options(options: dict[str, Any]) -> dict[str, Any]:
    opts = {**_DEFAULTS, **options}
    n = opts["n_iter_max"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserInputError(f"CP option n_iter_max must be an int >= 1, got {n!r}")
    for key in ("tol", "ridge"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise UserInputError(f"CP option {key} must be a number >= 0, got {v!r}")
    if opts["init"] not in ("svd", "random"):
        raise UserInputError(f"CP option init must be 'svd' or 'random', got {opts['init']!r}")
    if opts["precision"] not in ("auto", "float64", "float32"):
        raise UserInputError("CP option precision must be 'auto', 'float64' or 'float32', "
                             f"got {opts['precision']!r}")
    if not isinstance(opts["line_search"], bool):
        raise UserInputError(
            f"CP option line_search must be True or False, got {opts['line_search']!r}")
    if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int):
        raise UserInputError(f"CP option seed must be an int, got {opts['seed']!r}")
    return opts


def cp_factors(
    layer: nn.Conv2d, rank: int, *, three_way: bool = False, **options: Any
) -> tuple[list[tuple[Tensor, ...]], tuple[str, ...]]:
    """CP factors of each group's kernel.

    Parameters
    ----------
    layer : nn.Conv2d
    rank : int
        CP rank per group (not validated here; see :class:`CP`).
    three_way : bool
        ``False``: factors ``(A, B, C, D)`` of ``Cout × Cin × kh × kw``; ``True``:
        ``(A, B, S)`` of ``Cout × Cin × (kh·kw)``.
    **options
        Passed to :func:`latbench.compress._cp_als.cp_als`.

    Returns
    -------
    factors : list of tuple of Tensor
        Per group, float64 ``(dim, rank)`` matrices.
    notes : tuple of str
        ALS fallbacks and non-convergence, prefixed by the group where ``groups > 1``.
    """
    shape = _tensor_shape(layer, three_way)
    out: list[tuple[Tensor, ...]] = []
    notes: list[str] = []
    weights = group_weights(layer)
    for k, w in enumerate(weights):
        res = cp_als(w.reshape(shape), rank, **options)
        out.append(res.factors)
        where = f"group {k}: " if len(weights) > 1 else ""
        notes.extend(where + n for n in res.notes)
        if not res.converged:
            notes.append(f"{where}CP-ALS stopped after n_iter_max={res.n_iter} sweeps before "
                         f"reaching tol={options.get('tol', _DEFAULTS['tol']):g}")
    return out, tuple(dict.fromkeys(notes))


class CP:
    """CP of a Conv2d, 4-way (``cp``) or 3-way (``cp3``); see the module docstring."""

    def __init__(self, *, three_way: bool) -> None:
        self.three_way = three_way
        self.name = "cp3" if three_way else "cp"

    def supports(self, layer: nn.Module) -> str | None:
        return conv_support_reason(layer)

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        """The trivial exact bound: product of the per-group kernel dims but the largest."""
        return (cp_trivial_rank(_tensor_shape(layer, self.three_way)),)

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        """``max(Cin, Cout)`` per group: CP ranks are quoted relative to the channels."""
        g = conv_geometry(layer)
        return (max(g.cin, g.cout),)

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        (r,) = rank
        g = conv_geometry(layer)
        spatial = g.kh * g.kw if self.three_way else g.kh + g.kw
        return g.groups * r * (g.cin + spatial + g.cout) + (g.groups * g.cout if g.bias else 0)

    def rank_unfoldings(self, layer: nn.Module) -> list[list[Tensor]]:
        """One entry: the output- and input-channel unfoldings, stacked per group.

        The CP rank is at least the rank of each unfolding, so the EVBMF resolver takes the
        larger of the two estimates.
        """
        w = layer.weight.detach()
        geo = conv_geometry(layer)
        w = w.reshape(geo.groups, geo.cout, geo.cin, -1)
        mode0 = w.reshape(geo.groups, geo.cout, -1)
        mode1 = w.permute(0, 2, 1, 3).reshape(geo.groups, geo.cin, -1)
        return [[mode0, mode1]]

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        """Decompose ``layer`` at ``rank = (R,)``.

        Options
        -------
        n_iter_max : int, default 150
            Cap on ALS sweeps.
        tol : float, default 1e-5
            Stop when the relative error changes by less than ``tol`` times itself.
        ridge : float, default 1e-8
            Tikhonov term of the normal equations (relative: factors have unit columns).
        init : {"svd", "random"}, default "svd"
        seed : int, default 0
        precision : {"auto", "float64", "float32"}, default "auto"
            Precision of the large products (``auto``: float32 for large kernels).
        line_search : bool, default True
            Extrapolated steps (Bro 1998); about 1.5× per sweep, far fewer sweeps.

        Raises
        ------
        UserInputError
            For an unsupported layer, a bad rank or an unknown or invalid option.
        """
        check_options(self.name, options, _OPTIONS)
        opts = _check_als_options(options)
        (r,) = check_rank(self, layer, rank)
        geo = conv_geometry(layer)
        g = geo.groups
        factors, notes = cp_factors(layer, r, three_way=self.three_way, **opts)
        a = torch.stack([f[0] for f in factors])  # (g, Cout/g, R)
        b = torch.stack([f[1] for f in factors])  # (g, Cin/g, R)
        first = make_conv(b.transpose(1, 2).reshape(g * r, geo.cin, 1, 1), groups=g, like=layer)
        bias = None if layer.bias is None else layer.bias.detach()
        last = make_conv(a.reshape(g * geo.cout, r, 1, 1), groups=g, like=layer, bias=bias)
        if self.three_way:
            s = torch.stack([f[2] for f in factors])  # (g, kh·kw, R)
            spatial = make_conv(s.transpose(1, 2).reshape(g * r, 1, geo.kh, geo.kw),
                                groups=g * r, like=layer, **geo.full())
            layers: tuple[nn.Module, ...] = (first, spatial, last)
        else:
            c = torch.stack([f[2] for f in factors])  # (g, kh, R)
            d = torch.stack([f[3] for f in factors])  # (g, kw, R)
            vertical = make_conv(c.transpose(1, 2).reshape(g * r, 1, geo.kh, 1),
                                 groups=g * r, like=layer, **geo.vertical())
            horizontal = make_conv(d.transpose(1, 2).reshape(g * r, 1, 1, geo.kw),
                                   groups=g * r, like=layer, **geo.horizontal())
            layers = (first, vertical, horizontal, last)
        module = LowRankSequential(*layers, method=self.name, rank=(r,))
        module.train(layer.training)
        return Decomposition(
            module=module, method=self.name, rank=(r,),
            params_before=count_params(layer), params_after=count_params(module),
            rel_error=rel_error(layer.weight, cp_module_weight(module)), notes=notes,
        )


def cp_module_weight(module: LowRankSequential) -> Tensor:
    """The ``(Cout, Cin/g, kh, kw)`` kernel a ``cp``/``cp3`` module computes, in float64."""
    first, last = module[0], module[-1]
    g = first.groups
    r = first.out_channels // g
    b = first.weight.detach().double().reshape(g, r, -1)  # (g, R, Cin/g)
    a = last.weight.detach().double().reshape(g, -1, r)  # (g, Cout/g, R)
    if len(module) == 3:
        s = module[1].weight.detach().double().reshape(g, r, *module[1].kernel_size)
    else:
        c = module[1].weight.detach().double().reshape(g, r, -1)  # (g, R, kh)
        d = module[2].weight.detach().double().reshape(g, r, -1)  # (g, R, kw)
        s = c.unsqueeze(-1) * d.unsqueeze(-2)  # (g, R, kh, kw)
    w = torch.einsum("gor,gri,grhw->goihw", a, b, s)
    return w.reshape(-1, *w.shape[2:])


#: The registered methods.
CP4 = CP(three_way=False)
CP3 = CP(three_way=True)
METHODS.register("cp", CP4)
METHODS.register("cp3", CP3)


def cp_decompose_conv(
    layer: nn.Conv2d, rank: Any, *, three_way: bool = False, **options: Any
) -> LowRankSequential:
    """CP of ``layer`` into the ``cp`` (or, with ``three_way``, ``cp3``) layer sequence.

    Parameters
    ----------
    layer : nn.Conv2d
    rank : int, tuple, float or str
        CP rank per group, or any spelling :func:`latbench.compress.ranks.resolve_rank`
        accepts (fractions multiply ``max(Cin, Cout)``).
    three_way : bool
        Use the 3-way variant (one depthwise ``kh×kw`` layer).
    **options
        ALS options, see :meth:`CP.decompose`.

    Returns
    -------
    LowRankSequential
        Use ``METHODS.get("cp").decompose`` for the error and notes as well.

    Raises
    ------
    UserInputError
        If ``layer`` is not a supported Conv2d, the rank is invalid, or an option is bad.
    """
    from latbench.compress.ranks import resolve_rank

    method = CP3 if three_way else CP4
    return method.decompose(layer, resolve_rank(rank, layer, method), **options).module
