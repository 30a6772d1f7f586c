"""The layers of a model a plan can name, with what each costs and which methods take it.

What ``bench layers MODEL`` prints: the names ``--layers`` globs and plan files match
(:func:`latbench.compress.model.decomposable_layers`), so a user can write a plan without
reading the model's source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from latbench.compress._base import METHODS, LowRankSequential, count_params

__all__ = ["LayerInfo", "list_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One layer a plan can name.

    Attributes
    ----------
    name : str
        Its name in ``model.named_modules()`` (``""``: the model is this one layer).
    kind : str
        The module's class (``Conv2d``, ``Linear``, ``LowRankSequential`` for a block a
        method made).
    shape : str
        Channels or features in → out, and for convolutions kernel, stride and groups
        (``64→128 3x3 s2``, ``512→1000``).
    macs : int
        Multiply–accumulates on the input shape (every row the layer ran, counted by
        :func:`latbench.data.features.layer_table`); 0 if the input never reached it.
    params : int
        Parameters, biases included.
    methods : tuple of str
        Decomposition methods that take the layer (empty: none, see ``reason``).
    reason : str
        Why no method takes it (one line), or ``""``.
    """

    name: str
    kind: str
    shape: str
    macs: int
    params: int
    methods: tuple[str, ...]
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "methods": list(self.methods)}


def _shape(layer: nn.Module) -> str:
    if isinstance(layer, nn.modules.conv._ConvNd):
        k = "x".join(str(k) for k in layer.kernel_size)
        text = f"{layer.in_channels}→{layer.out_channels} {k}"
        if any(v != 1 for v in layer.stride):
            same = len(set(layer.stride)) == 1
            text += f" s{layer.stride[0]}" if same else f" s{'x'.join(map(str, layer.stride))}"
        if layer.groups != 1:
            text += f" g{layer.groups}"
        return text
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features}→{layer.out_features}"
    if isinstance(layer, LowRankSequential):
        return f"{layer.method} rank {','.join(str(r) for r in layer.rank)}"
    return ""


def list_layers(model: nn.Module, input_shape: Sequence[int], *,
                name: str | None = None) -> list[LayerInfo]:
    """Every layer of ``model`` a plan or ``--layers`` can name, in module order.

    Parameters
    ----------
    model : nn.Module
        Not changed (it runs once in eval mode, each module's mode put back).
    input_shape : sequence of int
        Batch first, e.g. ``(1, 3, 224, 224)``; MACs are counted at it.
    name : str, optional
        The MODEL spelling, for the error message.

    Returns
    -------
    list of LayerInfo
        Convolutions (1-, 2-, 3-D, transposed too), ``Linear`` layers, and blocks made by a
        decomposition (their inner layers are not listed: only ``tucker2`` re-compresses a
        Tucker-2 block, MUSCO).

    Raises
    ------
    UserInputError
        If the model does not run on ``input_shape`` (one line, naming a shape it takes).
    """
    import latbench.compress  # noqa: F401  (registers the built-in methods)
    from latbench.compress.model import decomposable_layers
    from latbench.compress.tucker import is_tucker2_block
    from latbench.data.features import layer_table, rows_of
    from latbench.models import check_input_shape

    shape = tuple(int(s) for s in input_shape)
    check_input_shape(model, shape, name=name)
    table = layer_table(model, shape)
    out = []
    for lname, layer in decomposable_layers(model):
        if isinstance(layer, LowRankSequential):
            methods = ("tucker2",) if is_tucker2_block(layer) else ()
            reason = "" if methods else (f"already decomposed by {layer.method}; only Tucker-2 "
                                         "blocks can be re-compressed")
        else:
            reasons = {m: METHODS.get(m).supports(layer) for m in METHODS.names()}
            methods = tuple(m for m, why in reasons.items() if why is None)
            reason = "" if methods else str(reasons.get("svd") or next(iter(reasons.values())))
        macs = int(table.loc[rows_of(table, lname), "macs"].sum()) if lname else \
            int(table["macs"].sum())
        out.append(LayerInfo(lname, type(layer).__name__, _shape(layer), macs,
                             count_params(layer), methods, reason))
    return out
