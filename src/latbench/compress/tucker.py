"""Tucker-2 decomposition of a Conv2d (Kim et al. 2016, "Compression of deep convolutional
neural networks for fast and low power mobile applications").

Rank is ``(R_in, R_out)`` — **input-channel rank first**, in execution order::

    1×1 conv (Cin → R_in)  →  kh×kw conv (R_in → R_out)  →  1×1 conv (R_out → Cout, bias)

The middle conv carries the layer's stride, padding, dilation and padding mode (padding
commutes with the bias-free pointwise conv before it). The kernel
``W[o, i, :, :] ≈ Σ U_out[o, b] U_in[i, a] G[b, a, :, :]`` is found by HOSVD of the two
channel modes, each factor from ``torch.linalg.eigh`` of the unfolding's Gram matrix in
float64 — about 3.4× faster than ``torch.linalg.svd`` of the unfoldings on all ResNet-18
3×3 convs (``benchmarks/bench_tucker.py``) — optionally refined by HOOI sweeps (option
``hooi_iters``, default 0).

Grouped convs are decomposed **per group**: ``(R_in, R_out)`` are ranks of each group's
``(Cout/g, Cin/g, kh, kw)`` kernel; all three convs keep ``groups=g`` and carry
``g R_in`` and ``g R_out`` channels. Parameters:
``Cin R_in + g R_in R_out kh kw + R_out Cout`` plus the bias (``g = 1``: Kim et al.'s
``Cin R_in + R_in R_out k² + R_out Cout``). Depthwise convs are refused (one input
channel per group leaves nothing to factor). ``Conv1d`` and ``Conv3d`` are decomposed the
same way (the kernel's spatial modes stay in the core); transposed convs are refused.

MUSCO re-compression (Gusak et al. 2019, "Automated multi-stage compression of neural
networks"): a Tucker-2 block this method made (a :class:`LowRankSequential` tagged
``tucker2``) is itself a layer ``tucker2`` takes. Its core is decomposed again at rank
``(R_in', R_out') <= (R_in, R_out)`` and the new pointwise factors are folded into the old
ones, so the block stays three layers deep. Every rank spelling is resolved against the
whole block: ``max_rank`` is the core's ranks, :meth:`Tucker2.n_params` the parameters of
the whole new block (so ``ratio=2`` halves the block, not its core), and ``evbmf`` ranks
come from the core's unfoldings, as in MUSCO. Grouped blocks are refused.
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
from latbench.compress._linalg import check_options, new_conv, rel_error, top_eigvecs
from latbench.compress.ranks import resolve_rank
from latbench.exceptions import UserInputError

__all__ = ["Tucker2", "tucker2_factors", "tucker2_weight", "tucker2_block_weight",
           "is_tucker2_block", "decompose_conv"]


def _grouped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(Cout, Cin/g, kh, kw)`` → ``(g, Cout/g, Cin/g, kh kw)`` in float64."""
    cout, cin_g = weight.shape[0], weight.shape[1]
    return weight.detach().to(torch.float64).reshape(groups, cout // groups, cin_g, -1)


def _mode1(w: torch.Tensor) -> torch.Tensor:
    """``(g, O, I, s)`` → input-channel unfoldings ``(g, I, O s)``."""
    g, o, i, s = w.shape
    return w.permute(0, 2, 1, 3).reshape(g, i, o * s)


def _subspaces(w: torch.Tensor, rank: tuple[int, int], hooi_iters: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """HOSVD (+ HOOI) channel factors ``u_in (g, I, R_in)``, ``u_out (g, O, R_out)``."""
    r_in, r_out = rank
    g, o, i, s = w.shape
    w0 = w.reshape(g, o, i * s)  # output-channel unfoldings
    w1 = _mode1(w)
    # Plain bmm on the two unfoldings: several times faster than einsum's generic path.
    u_out = top_eigvecs(w0 @ w0.transpose(1, 2), r_out)
    u_in = top_eigvecs(w1 @ w1.transpose(1, 2), r_in)
    for _ in range(hooi_iters):
        # Each sweep fixes one factor and takes the other as the leading subspace of the
        # projected tensor; the fit never decreases (De Lathauwer et al. 2000).
        y = _mode1((u_out.transpose(1, 2) @ w0).reshape(g, r_out, i, s))  # (g, I, R_out s)
        u_in = top_eigvecs(y @ y.transpose(1, 2), r_in)
        z = (u_in.transpose(1, 2) @ w1).reshape(g, r_in, o, s)
        z = z.permute(0, 2, 1, 3).reshape(g, o, r_in * s)  # (g, O, R_in s)
        u_out = top_eigvecs(z @ z.transpose(1, 2), r_out)
    return u_in, u_out


def _core(w: torch.Tensor, u_in: torch.Tensor, u_out: torch.Tensor) -> torch.Tensor:
    """``G = W ×_out u_outᵀ ×_in u_inᵀ`` as ``(g, R_out, R_in, s)``, float64."""
    g, o, i, s = w.shape
    r_out = u_out.shape[2]
    t = (u_out.transpose(1, 2) @ w.reshape(g, o, i * s)).reshape(g, r_out, i, s)
    return (t.transpose(2, 3) @ u_in.unsqueeze(1)).transpose(2, 3)  # (g, R_out, R_in, s)


def tucker2_factors(
    weight: torch.Tensor, rank: tuple[int, int], *, groups: int = 1, hooi_iters: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 factors of a conv kernel over its two channel modes (per group).

    Parameters
    ----------
    weight : Tensor, shape (Cout, Cin/g, kh, kw)
    rank : (R_in, R_out)
        Ranks per group.
    groups : int
    hooi_iters : int
        HOOI sweeps after the HOSVD initialisation (0: plain truncated HOSVD).

    Returns
    -------
    u_in : Tensor, shape (g, Cin/g, R_in), float64, orthonormal columns
    core : Tensor, shape (g, R_out, R_in, kh, kw), float64
    u_out : Tensor, shape (g, Cout/g, R_out), float64, orthonormal columns
    """
    w = _grouped(weight, groups)  # (g, O, I, s)
    u_in, u_out = _subspaces(w, tuple(rank), hooi_iters)
    core = _core(w, u_in, u_out)
    return u_in, core.reshape(core.shape[:3] + tuple(weight.shape[2:])), u_out


def tucker2_weight(u_in: torch.Tensor, core: torch.Tensor, u_out: torch.Tensor) -> torch.Tensor:
    """The conv kernel ``(Cout, Cin/g, kh, kw)`` the factors of :func:`tucker2_factors` make."""
    g, o, r_out = u_out.shape
    r_in, i = u_in.shape[2], u_in.shape[1]
    ksize = tuple(core.shape[3:])
    t = (u_out @ core.reshape(g, r_out, -1)).reshape(g, o, r_in, -1)  # (g, O, R_in, s)
    w = (t.transpose(2, 3) @ u_in.transpose(1, 2).unsqueeze(1))  # (g, O, s, I)
    return w.transpose(2, 3).reshape((g * o, i) + ksize)


def _stored_error(w: torch.Tensor, u_in: torch.Tensor, u_out: torch.Tensor,
                  core64: torch.Tensor, core: torch.Tensor) -> float:
    """``‖W − Ŵ‖/‖W‖`` for ``Ŵ = u_out · core · u_inᵀ`` without forming ``Ŵ``.

    ``core64`` must be ``_core(w, u_in, u_out)`` for these very ``u``'s, so that
    ``⟨W, Ŵ⟩ = ⟨core64, core⟩`` exactly; ``‖Ŵ‖²`` needs only the small factor Grams.
    Everything is float64, so the cancellation leaves ~1e-8 of relative resolution.
    """
    ww = float((w * w).sum())
    if ww == 0.0:
        return 0.0
    cross = float((core64 * core).sum())
    m_in = u_in.transpose(1, 2) @ u_in  # (g, R_in, R_in), ≈ I up to rounding
    m_out = u_out.transpose(1, 2) @ u_out
    g, r_out, r_in, s = core.shape
    c = core.transpose(2, 3) @ m_in.unsqueeze(1)  # (g, R_out, s, R_in): G ×_in M_in
    c = (m_out @ c.reshape(g, r_out, -1)).reshape(g, r_out, s, r_in).transpose(2, 3)
    hat = float((core * c).sum())
    return max(ww - 2.0 * cross + hat, 0.0) ** 0.5 / ww ** 0.5


def is_tucker2_block(layer: nn.Module) -> bool:
    """Whether ``layer`` is a Tucker-2 block (``pointwise → core → pointwise``) made here."""
    return isinstance(layer, LowRankSequential) and layer.method == "tucker2" and len(layer) == 3


def tucker2_block_weight(block: LowRankSequential) -> torch.Tensor:
    """The ``(Cout, Cin, *kernel)`` kernel an ungrouped Tucker-2 block computes, in float64."""
    first, core, last = block[0], block[1], block[2]
    a = first.weight.detach().double().reshape(first.out_channels, -1)  # (R_in, Cin)
    c = last.weight.detach().double().reshape(last.out_channels, -1)  # (Cout, R_out)
    g = core.weight.detach().double()
    r_out, r_in = g.shape[0], g.shape[1]
    t = (c @ g.reshape(r_out, -1)).reshape(c.shape[0], r_in, -1)  # (Cout, R_in, s)
    w = (t.transpose(1, 2) @ a).transpose(1, 2)  # (Cout, Cin, s)
    return w.reshape((c.shape[0], a.shape[1]) + tuple(g.shape[2:]))


class Tucker2:
    """Tucker-2 (HOSVD/HOOI) of a convolution, or MUSCO re-compression of a Tucker-2 block;
    see the module docstring. Rank ``(R_in, R_out)``."""

    name = "tucker2"

    def supports(self, layer: nn.Module) -> str | None:
        if is_tucker2_block(layer):
            if any(m.groups != 1 for m in layer):
                return ("MUSCO re-compression of a grouped Tucker-2 block is not supported; "
                        "compress the original layer instead")
            if layer[0].bias is not None or layer[1].bias is not None:
                return "this Tucker-2 block has biases before its last layer (not one latbench made)"
            return None
        if isinstance(layer, nn.Linear):
            return "tucker2 applies to convolutions, not Linear (use svd)"
        reason = conv_reason(layer)
        if reason is not None:
            return f"tucker2 applies to Conv1d/Conv2d/Conv3d layers; {reason}"
        if is_depthwise(layer):
            return ("a depthwise conv has one input channel per group, so there is no input "
                    "channel mode to factor")
        return None

    def max_rank(self, layer: nn.Module) -> tuple[int, ...]:
        if is_tucker2_block(layer):
            return (layer[1].in_channels, layer[1].out_channels)
        g = layer.groups
        return (layer.in_channels // g, layer.out_channels // g)

    def fraction_base(self, layer: nn.Module) -> tuple[int, ...]:
        return self.max_rank(layer)

    def n_params(self, layer: nn.Module, rank: tuple[int, ...]) -> int:
        """Parameters of the replacement: the new block, also when ``layer`` is a block."""
        r_in, r_out = rank
        if is_tucker2_block(layer):
            first, core, last = layer[0], layer[1], layer[2]
            bias = 0 if last.bias is None else last.bias.numel()
            return (first.in_channels * r_in + r_in * r_out * math.prod(core.kernel_size)
                    + r_out * last.out_channels + bias)
        bias = 0 if layer.bias is None else layer.bias.numel()
        return (layer.in_channels * r_in + layer.groups * r_in * r_out * math.prod(layer.kernel_size)
                + r_out * layer.out_channels + bias)

    def rank_unfoldings(self, layer: nn.Module) -> list[torch.Tensor]:
        """``[mode-1 (input channels), mode-0 (output channels)]`` unfoldings, per group
        (of the core, for a Tucker-2 block: MUSCO's rank selection)."""
        if is_tucker2_block(layer):
            layer = layer[1]
        w = layer.weight.detach()
        g = layer.groups
        o, i = w.shape[0] // g, w.shape[1]
        w = w.reshape(g, o, i, -1)
        mode0 = w.reshape(g, o, -1)
        mode1 = w.permute(0, 2, 1, 3).reshape(g, i, -1)
        return [mode1, mode0]

    def decompose(self, layer: nn.Module, rank: tuple[int, ...], **options: Any) -> Decomposition:
        """Decompose ``layer`` at ``rank = (R_in, R_out)`` (re-compress it, for a block).

        Options
        -------
        hooi_iters : int, default 0
            HOOI sweeps after HOSVD.

        Raises
        ------
        UserInputError
            For an unsupported layer, a bad rank, an unknown option or a negative
            ``hooi_iters``.
        """
        check_options(self.name, options, ("hooi_iters",))
        hooi = options.get("hooi_iters", 0)
        if isinstance(hooi, bool) or not isinstance(hooi, int) or hooi < 0:
            raise UserInputError(f"tucker2 option hooi_iters must be an int >= 0, got {hooi!r}")
        r_in, r_out = check_rank(self, layer, rank)
        if is_tucker2_block(layer):
            return self._recompress(layer, (r_in, r_out), hooi)
        g = layer.groups
        w = _grouped(layer.weight, g)
        u_in, u_out = _subspaces(w, (r_in, r_out), hooi)
        # Round the factors to the layer's dtype first and project onto the rounded ones, so
        # the core is optimal for what the module stores and the error is that of the module.
        dtype = layer.weight.dtype
        u_in, u_out = u_in.to(dtype).double(), u_out.to(dtype).double()
        core64 = _core(w, u_in, u_out)
        core = core64.to(dtype).double()
        bias = None if layer.bias is None else layer.bias.detach()
        first = new_conv(layer, layer.in_channels, g * r_in, u_in.transpose(1, 2), spatial=False,
                         groups=g)
        middle = new_conv(layer, g * r_in, g * r_out, core, spatial=True, groups=g)
        last = new_conv(layer, g * r_out, layer.out_channels, u_out, spatial=False, groups=g,
                        bias=bias)
        module = LowRankSequential(first, middle, last, method=self.name, rank=(r_in, r_out))
        module.train(layer.training)
        err = _stored_error(w, u_in, u_out, core64, core)
        notes = (f"HOOI: {hooi} sweep(s) after HOSVD",) if hooi else ()
        return Decomposition(
            module=module, method=self.name, rank=(r_in, r_out),
            params_before=count_params(layer), params_after=count_params(module),
            rel_error=err, notes=notes,
        )

    def _recompress(self, block: LowRankSequential, rank: tuple[int, int], hooi: int) -> Decomposition:
        """MUSCO step: decompose the block's core at ``rank`` and fold the new factors."""
        first, core, last = block[0], block[1], block[2]
        inner = self.decompose(core, rank, hooi_iters=hooi)
        a2, core2, b2 = inner.module[0], inner.module[1], inner.module[2]
        with torch.no_grad():  # fold in float64, store in the block's dtype
            w_first = (a2.weight.double().reshape(a2.out_channels, -1)
                       @ first.weight.double().reshape(first.out_channels, -1))
            last_w = last.weight.double().reshape(last.out_channels, -1)
            w_last = last_w @ b2.weight.double().reshape(b2.out_channels, -1)
            bias = None
            if last.bias is not None:
                bias = last.bias.double()
                if b2.bias is not None:
                    bias = bias + last_w @ b2.bias.double()
        new_first = new_conv(first, first.in_channels, a2.out_channels, w_first, spatial=False,
                             groups=1)
        new_last = new_conv(last, b2.in_channels, last.out_channels, w_last, spatial=False,
                            groups=1, bias=bias)
        new_block = LowRankSequential(new_first, core2, new_last, method=self.name,
                                      rank=(core2.in_channels, core2.out_channels))
        new_block.train(block.training)
        err = rel_error(tucker2_block_weight(block), tucker2_block_weight(new_block))
        return Decomposition(
            new_block, self.name, new_block.rank, count_params(block), count_params(new_block),
            err, inner.notes + ("MUSCO: re-compressed the core of an existing Tucker-2 block",))


#: The registered ``tucker2`` method.
METHOD = Tucker2()
METHODS.register("tucker2", METHOD)


def decompose_conv(layer: nn.modules.conv._ConvNd, rank: Any, *, hooi_iters: int = 0
                   ) -> LowRankSequential:
    """Tucker-2 of ``layer`` into ``1×1 → kh×kw → 1×1`` convs.

    Parameters
    ----------
    layer : nn.Conv1d, nn.Conv2d or nn.Conv3d
    rank : int, tuple, float, or str
        ``(R_in, R_out)`` per group, or any spelling
        :func:`latbench.compress.ranks.resolve_rank` accepts.
    hooi_iters : int
        HOOI sweeps after HOSVD.

    Raises
    ------
    UserInputError
        If ``layer`` is not a supported convolution or the rank is invalid.
    """
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise UserInputError(f"tucker2 needs an nn.Conv2d (or Conv1d/Conv3d), got "
                             f"{type(layer).__name__}")
    return METHOD.decompose(layer, resolve_rank(rank, layer, METHOD), hooi_iters=hooi_iters).module
