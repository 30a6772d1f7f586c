"""The one featuriser: a per-layer table of a model at an input shape, and model-level sums.

Layers are the leaf modules that run in a forward pass (found with forward hooks, so the
order is execution order and a module called twice appears twice), plus — since schema 2 —
the functional branch merges executed outside leaf modules, found with a
:class:`torch.overrides.TorchFunctionMode` active during the forward:

* ``op = "add"``: an elementwise addition of two tensors (``a + b``, ``torch.add``,
  ``Tensor.add``, in-place ``a += b`` / ``add_``), i.e. residual and node sums;
* ``op = "concat"``: ``torch.cat`` / ``torch.concat`` / ``torch.concatenate``.

They are named ``"<module whose forward ran them>.add#k"`` / ``".concat#k"`` (``k`` counts
from 0 per module and op; ``"add#k"`` for the top module), have ``macs = params = 0``,
channels and ``out_h``/``out_w`` of the output, ``in_h``/``in_w`` of the first tensor input,
``act_in_bytes`` = bytes of all tensor inputs and ``act_out_bytes`` = bytes of the output.
Ops inside a listed leaf module's own forward are part of that layer and are not listed
again. Deliberately not listed: additions with a python scalar (``x + 1``), and other
functional ops (``mul``, ``flatten``, ``x * 0.0`` …) — they are not branch merges, and a
minimal set keeps tables stable. ``nn.Identity``/``Dropout``/``Flatten`` still give no row
(a skip edge shows up through the ``add`` that merges it).

MACs count multiply–accumulates of convolutions and linear layers; other layers have
``macs = 0`` but their activation traffic is recorded. Bytes use each tensor's own dtype.

Since schema 3 the table is also a dataflow graph: ``inputs`` names, as comma-separated row
indices (ascending, ``""`` for the model input or a constant), the rows that produced the
tensors a row consumed. Tensors are followed through everything that is not a row (views,
``flatten``, ``Identity``, dropout, ``x * 0.0`` …: their output inherits the producers of
their tensor inputs), so a skip connection links the ``add`` to the row before the branch.
Runtimes that run independent branches at once (TensorFlow's inter-op pool, GPU streams) are
bound by the longest path of this graph rather than the sum of its rows; the predictors'
encoders compute such critical paths from it (:mod:`latbench.predictor.encode`).

Since schema 4 a table also says which graph it describes: ``graph`` names it on every row
(``"torch"`` for this module's leaf layers; ``"onnxruntime:<level>:<provider>"`` for the graph
an ONNX Runtime session executes, :mod:`latbench.data.executed`), and ``fused`` lists what a
runtime folded into a row's kernel (``"relu"``, ``"add+relu"``; ``""`` here, where nothing is
fused), and ``batch`` is the leading (batch) dimension of the row's input, so per-sample
costs can be told from batched ones. Tables stored under schema ≤ 3 load with
``graph = "torch"``, ``fused = ""`` and ``batch = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "LAYER_COLUMNS",
    "layer_table",
    "model_features",
    "layer_key",
    "count_params",
    "rows_of",
    "STRING_COLUMNS",
    "MEASURED_ALONE_OPS",
    "parse_inputs",
    "TORCH_GRAPH",
    "LEGACY_DEFAULTS",
]

#: Bumped whenever a column is added, removed or changes meaning; predictors record it.
FEATURE_SCHEMA_VERSION = 4  # 2: add/concat rows; 3: ``inputs`` (dataflow); 4: ``fused``, ``graph``

LAYER_COLUMNS = [
    "name", "op", "in_channels", "out_channels", "kernel_h", "kernel_w",
    "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "groups",
    "bias", "in_h", "in_w", "out_h", "out_w", "macs", "params", "weight_bytes",
    "act_in_bytes", "act_out_bytes", "inputs", "fused", "graph", "batch",
]

#: ``graph`` of a table made by :func:`layer_table` (the PyTorch module's leaf layers).
TORCH_GRAPH = "torch"

#: Values a table stored before schema 4 takes for the columns it lacks.
LEGACY_DEFAULTS = {"inputs": "", "fused": "", "graph": TORCH_GRAPH, "batch": 1}

#: Layer kinds that can be rebuilt and timed on their own (one tensor in, one out): what a
#: per-layer sweep measures and a lookup table looks up. BatchNorm and activations are left
#: out because runtimes fuse them into the preceding conv; merges (add, concat) take several
#: inputs.
MEASURED_ALONE_OPS = ("conv", "dwconv", "linear", "maxpool", "avgpool")

#: The string columns of a layer table (the rest are integers).
STRING_COLUMNS = ("name", "op", "inputs", "fused", "graph")

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Sigmoid,
    nn.Tanh, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.Mish,
)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_SKIPPED = (nn.Identity, nn.Dropout, nn.Flatten)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(v)
    return (int(t[0]), int(t[-1])) if t else (1, 1)


def _op_name(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d):
        if m.groups > 1 and m.groups == m.in_channels:
            return "dwconv"
        return "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(m, _ACTIVATIONS):
        return "act"
    if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        return "maxpool"
    if isinstance(m, _POOLS):
        return "avgpool"
    if isinstance(m, _SKIPPED) or len(list(m.children())) > 0:
        return None
    # An unknown leaf module still does work: list it so nothing is silently dropped.
    return type(m).__name__.lower()


def _hw(t: torch.Tensor) -> tuple[int, int]:
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() >= 4 else (1, 1)


def _row(name: str, m: nn.Module, x: torch.Tensor, y: torch.Tensor, op: str) -> dict:
    params = sum(p.numel() for p in m.parameters(recurse=False))
    weight_bytes = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
    in_h, in_w = _hw(x)
    out_h, out_w = _hw(y)
    row = dict(
        name=name, op=op, in_channels=int(x.shape[1]) if x.dim() > 1 else 1,
        out_channels=int(y.shape[1]) if y.dim() > 1 else 1,
        kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
        dilation_h=1, dilation_w=1, groups=1, bias=0,
        in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w, macs=0, params=params,
        weight_bytes=weight_bytes, act_in_bytes=x.numel() * x.element_size(),
        act_out_bytes=y.numel() * y.element_size(), batch=int(x.shape[0]) if x.dim() >= 2 else 1,
    )
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        row.update(
            kernel_h=kh, kernel_w=kw, stride_h=m.stride[0], stride_w=m.stride[1],
            pad_h=_pair(m.padding)[0] if not isinstance(m.padding, str) else -1,
            pad_w=_pair(m.padding)[1] if not isinstance(m.padding, str) else -1,
            dilation_h=m.dilation[0], dilation_w=m.dilation[1], groups=m.groups,
            bias=int(m.bias is not None),
            macs=int(y.numel() * (m.in_channels // m.groups) * kh * kw),
        )
    elif isinstance(m, nn.Linear):
        row.update(
            in_channels=m.in_features, out_channels=m.out_features,
            bias=int(m.bias is not None), macs=int(y.numel() * m.in_features),
        )
    elif isinstance(m, _POOLS) and not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        row.update(kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1],
                   pad_h=p[0], pad_w=p[1])
    elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        row.update(kernel_h=in_h, kernel_w=in_w)
    return row


_ADD_FUNCS = frozenset({torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
                        torch.Tensor.__radd__, torch.Tensor.__iadd__})
_CAT_FUNCS = frozenset({torch.cat, torch.concat, torch.concatenate})


def _tensors(args: Sequence, kwargs: dict) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _functional_row(name: str, op: str, inputs: list[torch.Tensor], y: torch.Tensor) -> dict:
    in_h, in_w = _hw(inputs[0])
    out_h, out_w = _hw(y)
    c = int(y.shape[1]) if y.dim() > 1 else 1
    return dict(
        name=name, op=op, in_channels=c, out_channels=c,
        kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
        dilation_h=1, dilation_w=1, groups=1, bias=0,
        in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w, macs=0, params=0, weight_bytes=0,
        act_in_bytes=sum(t.numel() * t.element_size() for t in inputs),
        act_out_bytes=y.numel() * y.element_size(),
        batch=int(inputs[0].shape[0]) if inputs[0].dim() >= 2 else 1,
    )


class _FunctionalOps(TorchFunctionMode):
    """Records add / concat calls made outside listed leaf modules (see the module notes),
    and which row produced each tensor (the ``inputs`` column)."""

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows
        self.stack: list[str] = []  # names of the modules whose forward is running
        self.in_leaf = 0  # how many listed leaf modules are running (ops there are theirs)
        self.counts: dict[tuple[str, str], int] = {}
        # id(tensor) -> (the tensor, rows that produced it). The tensor is held so that its
        # id is not reused by a later tensor during the trace.
        self.producers: dict[int, tuple[torch.Tensor, frozenset[int]]] = {}

    def sources(self, tensors: Sequence[torch.Tensor]) -> frozenset[int]:
        out: frozenset[int] = frozenset()
        for t in tensors:
            hit = self.producers.get(id(t))
            if hit is not None and hit[0] is t:
                out |= hit[1]
        return out

    def produced(self, out: object, rows: frozenset[int]) -> None:
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.producers[id(t)] = (t, rows)

    def add_row(self, row: dict, inputs: Sequence[torch.Tensor], out: torch.Tensor) -> None:
        row["inputs"] = ",".join(str(i) for i in sorted(self.sources(inputs)))
        row["fused"], row["graph"] = "", TORCH_GRAPH
        self.produced(out, frozenset({len(self.rows)}))
        self.rows.append(row)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside: nested calls are not seen
        if self.in_leaf:
            return out
        inputs = _tensors(args, kwargs)
        if isinstance(out, torch.Tensor):
            op = "add" if func in _ADD_FUNCS else "concat" if func in _CAT_FUNCS else None
            # A branch merge has two tensor operands; ``x + 1`` is not one.
            if op is not None and (op == "concat" or len(inputs) >= 2):
                parent = self.stack[-1] if self.stack else ""
                k = self.counts.get((parent, op), 0)
                self.counts[(parent, op)] = k + 1
                name = f"{parent}.{op}#{k}" if parent else f"{op}#{k}"
                self.add_row(_functional_row(name, op, inputs or [out], out), inputs, out)
                return out
        if inputs:  # not a row: its outputs carry on the producers of its inputs
            self.produced(out, self.sources(inputs))
        return out


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per executed layer (and functional add / concat) of ``model`` on a zero input.

    Parameters
    ----------
    model : nn.Module
        Any module; it is run once in eval mode under ``torch.no_grad`` and left as it was.
    input_shape : sequence of int
        Full input shape including the batch, e.g. ``(1, 3, 224, 224)``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LAYER_COLUMNS`; channels, kernel, stride, padding, dilation and
        groups as integers, ``macs`` (multiply–accumulates), ``params`` and bytes;
        ``inputs``: the rows whose outputs this row consumed (see the module notes).
    """
    rows: list[dict] = []
    handles = []
    mode = _FunctionalOps(rows)
    for name, m in model.named_modules():
        op = _op_name(m)

        def enter(mod, inputs, _name=name, _leaf=op is not None):
            mode.stack.append(_name)
            mode.in_leaf += _leaf

        def leave(mod, inputs, output, _name=name, _op=op):
            mode.stack.pop()
            if _op is None:
                return
            mode.in_leaf -= 1
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else output
            if isinstance(output, torch.Tensor):
                mode.add_row(_row(_name, mod, x, output, _op),
                             [t for t in inputs if isinstance(t, torch.Tensor)], output)

        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    was_training = model.training
    try:
        model.eval()
        # The input must live where the model does (CUDA, or "meta" for a shape-only pass).
        param = next(model.parameters(), None)
        if param is None:
            param = next(model.buffers(), None)
        x = torch.zeros(
            tuple(input_shape),
            dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32,
            device=param.device if param is not None else None,
        )
        with torch.no_grad(), mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        mode.producers.clear()
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (every parameter, shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def model_features(table: pd.DataFrame) -> dict[str, float]:
    """Model-level features from a :func:`layer_table`: sums, counts by op, peak memory.

    Peak activation memory is approximated by the largest ``act_in + act_out`` of one layer
    (the buffers a layer needs at once; for an ``add`` row both operands and the output);
    other residual branches kept alive are not counted. ``n_add`` counts functional
    additions (schema 2); ``n_layers`` counts every row, ``add``/``concat`` included.
    """
    t = table
    feats: dict[str, float] = {
        "macs": float(t["macs"].sum()),
        "params": float(t["params"].sum()),
        "weight_bytes": float(t["weight_bytes"].sum()),
        "act_bytes": float((t["act_in_bytes"] + t["act_out_bytes"]).sum()),
        "peak_act_bytes": float((t["act_in_bytes"] + t["act_out_bytes"]).max()) if len(t) else 0.0,
        "n_layers": float(len(t)),
    }
    for op in ("conv", "dwconv", "linear", "bn", "act", "maxpool", "avgpool", "add"):
        feats[f"n_{op}"] = float((t["op"] == op).sum())
    conv = t[t["op"].isin(["conv", "dwconv"])]
    feats["n_conv1x1"] = float(((conv["kernel_h"] == 1) & (conv["kernel_w"] == 1)).sum())
    feats["n_conv3x3"] = float(((conv["kernel_h"] == 3) & (conv["kernel_w"] == 3)).sum())
    feats["conv_macs"] = float(conv["macs"].sum())
    feats["memory_traffic_bytes"] = feats["weight_bytes"] + feats["act_bytes"]
    return feats


_KEY_FIELDS = (
    "op", "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w",
    "pad_h", "pad_w", "dilation_h", "dilation_w", "groups", "bias", "in_h", "in_w",
)


def layer_key(row: pd.Series | dict) -> str:
    """A stable string naming a layer configuration (what a lookup table is keyed by)."""
    return "|".join(f"{f}={int(row[f]) if f != 'op' else row[f]}" for f in _KEY_FIELDS)


def parse_inputs(value: object) -> list[int]:
    """The row indices of an ``inputs`` cell (``"3,7"`` → ``[3, 7]``; empty or missing → ``[]``)."""
    if not isinstance(value, str) or not value:
        return []
    return [int(v) for v in value.split(",")]


def rows_of(table: pd.DataFrame, name: str) -> pd.Series:
    """Boolean mask of the rows of module ``name`` and of everything inside it."""
    return (table["name"] == name) | table["name"].str.startswith(name + ".")
