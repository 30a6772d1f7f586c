"""Conv2d geometry shared by the CP and Tensor-Train methods.

Both replace a ``kh × kw`` convolution with 1×1 convolutions around spatial ones. The
helpers here check which layers can be split, cut the weight into groups, and give the
stride/padding/dilation of the vertical (``kh × 1``) and horizontal (``1 × kw``) layers.

Splitting the padding is exact for every ``padding_mode``: padding in H and then in W is
the 2-D padding, a 1×1 convolution commutes with any padding (it has no bias here), and
a ``kh × 1`` convolution commutes with padding along W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latbench.compress._base import conv_reason, is_depthwise

__all__ = ["ConvGeometry", "conv_geometry", "conv_support_reason", "group_weights", "make_conv"]


@dataclass(frozen=True)
class ConvGeometry:
    """Shape and placement of a Conv2d, per group.

    Attributes
    ----------
    cout, cin : int
        Output and input channels of one group.
    groups, kh, kw : int
    stride, dilation : tuple of int
        ``(h, w)``.
    padding : tuple of int or str
        ``(h, w)``, or ``"same"``/``"valid"`` as the layer stores it.
    padding_mode : str
    bias : bool
    """

    cout: int
    cin: int
    groups: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    padding_mode: str
    bias: bool

    def vertical(self) -> dict[str, object]:
        """Keyword arguments of the ``kh × 1`` layer: the H part of stride/padding/dilation."""
        pad = self.padding if isinstance(self.padding, str) else (self.padding[0], 0)
        return dict(stride=(self.stride[0], 1), padding=pad, dilation=(self.dilation[0], 1),
                    padding_mode=self.padding_mode)

    def horizontal(self) -> dict[str, object]:
        """Keyword arguments of the ``1 × kw`` layer: the W part of stride/padding/dilation."""
        pad = self.padding if isinstance(self.padding, str) else (0, self.padding[1])
        return dict(stride=(1, self.stride[1]), padding=pad, dilation=(1, self.dilation[1]),
                    padding_mode=self.padding_mode)

    def full(self) -> dict[str, object]:
        """Keyword arguments of a ``kh × kw`` layer placed like the original."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    padding_mode=self.padding_mode)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return (t[0], t[-1])


def conv_support_reason(layer: nn.Module) -> str | None:
    """``None`` if ``layer`` is a Conv2d these methods can split, else the reason (one line)."""
    reason = conv_reason(layer, dims=(2,))
    if reason is not None:
        return reason + " (Conv1d/Conv3d: use svd or tucker2)"
    if is_depthwise(layer):
        return ("it is a depthwise convolution (one input channel per group): there is no "
                "channel rank to reduce")
    return None


def conv_geometry(layer: nn.Conv2d) -> ConvGeometry:
    """The :class:`ConvGeometry` of ``layer`` (channels per group)."""
    g = layer.groups
    kh, kw = layer.kernel_size
    pad = layer.padding if isinstance(layer.padding, str) else _pair(layer.padding)
    return ConvGeometry(
        cout=layer.out_channels // g, cin=layer.in_channels // g, groups=g, kh=kh, kw=kw,
        stride=_pair(layer.stride), padding=pad, dilation=_pair(layer.dilation),
        padding_mode=layer.padding_mode, bias=layer.bias is not None,
    )


def group_weights(layer: nn.Conv2d) -> list[Tensor]:
    """The ``(Cout/g, Cin/g, kh, kw)`` weight of each group, as float64 copies."""
    w = layer.weight.detach().to(torch.float64)
    return list(w.reshape(layer.groups, -1, *w.shape[1:]).unbind(0))


def make_conv(
    weight: Tensor, *, groups: int, like: nn.Conv2d, bias: Tensor | None = None, **kwargs: object
) -> nn.Conv2d:
    """A Conv2d holding ``weight`` (``(out, in/groups, kh, kw)``) in ``like``'s dtype and device."""
    out_c, in_per_group, kh, kw = weight.shape
    p = like.weight
    conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw), groups=groups, bias=bias is not None,
                     device=p.device, dtype=p.dtype, **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv
