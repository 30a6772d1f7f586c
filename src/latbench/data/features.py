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

MACs (since schema 5) are counted by :class:`torch.utils.flop_counter.FlopCounterMode`
(MACs = FLOPs / 2) on the operators each row actually ran, so every convolution (1-, 2-,
3-D, transposed, grouped), matrix product and attention kernel counts, however it was
called: a module, a functional ``F.conv2d`` with a module's own ``Parameter``, ``x @ w``,
``torch.einsum``. latbench adds the formulas torch lacks for kernels that eager CPU runs use
(``dot``, ``mv``, ``addmv``, the CPU flash-attention kernel, oneDNN's LSTM layer). Elementwise
work (BatchNorm, activations, pooling, adds) has ``macs = 0``; its activation traffic is
recorded. A compute operator no formula covers (FFT, a quantized or custom kernel, a cuDNN
RNN…) is never a silent 0: its name goes into the row's ``uncounted`` column (``""`` when
everything was counted). Bytes use each tensor's own dtype.

Compute written functionally outside any listed leaf module (``torch.matmul`` attention in a
block's ``forward``, ``F.conv2d`` of a ``Parameter`` the block owns, ``F.linear``, SDPA)
gives a row of its own, named ``"<module>.<op>#k"`` like ``add``/``concat``: ``op`` is
``conv``/``dwconv``/``conv3d``/``convtranspose`` (with the kernel geometry read from the
call), ``linear``, ``matmul`` or ``attention`` (any other counted function keeps its own
name), ``params`` and ``weight_bytes`` are those of the ``nn.Parameter`` arguments.

Convolution rows: ``nn.Conv1d``/``Conv2d`` are ``conv`` (``dwconv`` when depthwise); a 1-D
conv is recorded as the 2-D conv of height 1 it equals (``kernel_h = in_h = out_h = 1``), so
it can be rebuilt and timed alone. ``nn.Conv3d`` is ``conv3d`` and transposed convs are
``convtranspose``; their geometry columns hold the last two spatial dimensions.

Since schema 3 the table is also a dataflow graph: ``inputs`` names, as comma-separated row
indices (ascending, ``""`` for the model input or a constant), the rows that produced the
tensors a row consumed. Tensors are followed through everything that is not a row (views,
``flatten``, ``Identity``, dropout, ``x * 0.0`` …: their output inherits the producers of
their tensor inputs), so a skip connection links the ``add`` to the row before the branch.
Runtimes that run independent branches at once (TensorFlow's inter-op pool, GPU streams) are
bound by the longest path of this graph rather than the sum of its rows; the predictors'
encoders compute such critical paths from it (:mod:`latbench.predictor.encode`).

Since schema 5 a table also says which graph it describes: ``graph`` names it on every row
(``"torch"`` for this module's leaf layers; ``"onnxruntime:<level>:<provider>"`` for the graph
an ONNX Runtime session executes, :mod:`latbench.data.executed`), and ``fused`` lists what a
runtime folded into a row's kernel (``"relu"``, ``"add+relu"``; ``""`` here, where nothing is
fused), and ``batch`` is the leading (batch) dimension of the row's input, so per-sample
costs can be told from batched ones. Tables stored before schema 5 load with the columns
they lack set to :data:`LEGACY_DEFAULTS` (``graph = "torch"``, ``fused = ""``, ``batch = 1``,
``uncounted = ""``, ``inputs = ""``) and a warning from :func:`latbench.data.load_dataset`
(schema 4 was written by two lines of development: one added ``uncounted`` and counted MACs
with ``FlopCounterMode``, the other added ``graph``/``fused``/``batch``; schema 5 has both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

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
    "eval_mode",
    "model_dtype_device",
    "TORCH_GRAPH",
    "LEGACY_DEFAULTS",
]

#: Bumped whenever a column is added, removed or changes meaning; predictors record it.
FEATURE_SCHEMA_VERSION = 5
# 2: functional add / concat rows; 3: ``inputs`` (dataflow); 4: (one line of development) MACs
# of every compute operator (1-D/3-D/transposed convs, functional matmul/conv/attention rows)
# and ``uncounted``, (another) ``fused``, ``graph``, ``batch``; 5: both

LAYER_COLUMNS = [
    "name", "op", "in_channels", "out_channels", "kernel_h", "kernel_w",
    "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "groups",
    "bias", "in_h", "in_w", "out_h", "out_w", "macs", "params", "weight_bytes",
    "act_in_bytes", "act_out_bytes", "inputs", "uncounted", "fused", "graph", "batch",
]

#: ``graph`` of a table made by :func:`layer_table` (the PyTorch module's leaf layers).
TORCH_GRAPH = "torch"

#: Values a table stored before schema 5 takes for the columns it lacks.
LEGACY_DEFAULTS = {"inputs": "", "uncounted": "", "fused": "", "graph": TORCH_GRAPH, "batch": 1}

#: Layer kinds that can be rebuilt and timed on their own (one tensor in, one out): what a
#: per-layer sweep measures and a lookup table looks up. BatchNorm and activations are left
#: out because runtimes fuse them into the preceding conv; merges (add, concat) take several
#: inputs.
MEASURED_ALONE_OPS = ("conv", "dwconv", "linear", "maxpool", "avgpool")

#: The string columns of a layer table (the rest are integers).
STRING_COLUMNS = ("name", "op", "inputs", "uncounted", "fused", "graph")

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


def _last2(v: int | Sequence[int], dims: int, fill: int) -> tuple[int, int]:
    """The (h, w) of an n-d conv argument: a 1-D conv is a 2-D conv of height 1 (``fill``)."""
    t = (int(v),) * dims if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) == 1:
        t = t * dims
    return (fill, t[0]) if dims == 1 else (t[-2], t[-1])


def _conv_op(dims: int, transposed: bool, groups: int, in_channels: int) -> str:
    if transposed:
        return "convtranspose"
    if dims == 3:
        return "conv3d"
    return "dwconv" if groups > 1 and groups == in_channels else "conv"


def _op_name(m: nn.Module) -> str | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return _conv_op(len(m.kernel_size), m.transposed, m.groups, m.in_channels)
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


def _spatial(t: torch.Tensor, dims: int) -> tuple[int, int]:
    """(h, w) of a conv's input or output with ``dims`` spatial dimensions."""
    if dims == 1:
        return (1, int(t.shape[-1])) if t.dim() >= 2 else (1, 1)
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() >= 3 else (1, 1)


def _conv_fields(dims: int, kernel, stride, padding, dilation, groups: int, bias: bool,
                 x: torch.Tensor, y: torch.Tensor) -> dict:
    """The geometry columns of a convolution (module or functional call)."""
    kh, kw = _last2(kernel, dims, 1)
    sh, sw = _last2(stride, dims, 1)
    dh, dw = _last2(dilation, dims, 1)
    if isinstance(padding, str):
        ph = pw = -1  # "same" / "valid": the table's mark of a padding given by name
    else:
        ph, pw = _last2(padding, dims, 0)
    in_h, in_w = _spatial(x, dims)
    out_h, out_w = _spatial(y, dims)
    return dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                dilation_h=dh, dilation_w=dw, groups=int(groups), bias=int(bias),
                in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w)


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
    if isinstance(m, nn.modules.conv._ConvNd):
        row.update(_conv_fields(len(m.kernel_size), m.kernel_size, m.stride, m.padding,
                                m.dilation, m.groups, m.bias is not None, x, y),
                   in_channels=m.in_channels, out_channels=m.out_channels)
    elif isinstance(m, nn.Linear):
        row.update(in_channels=m.in_features, out_channels=m.out_features,
                   bias=int(m.bias is not None))
    elif isinstance(m, nn.RNNBase):
        row.update(in_channels=m.input_size, out_channels=m.hidden_size, bias=int(m.bias))
    elif isinstance(m, _POOLS) and not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        row.update(kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1],
                   pad_h=p[0], pad_w=p[1])
    elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        row.update(kernel_h=in_h, kernel_w=in_w)
    elif callable(getattr(type(m), "count_macs", None)):
        # A leaf that declares its work (compress.ron.SparseRows: a gather, then few MACs a row).
        row.update(macs=int(m.count_macs(x, y)))
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


# ------------------------------------------------------------------ functional compute rows
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONVT_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups",
               "dilation")
_CONV_DEFAULTS = dict(bias=None, stride=1, padding=0, dilation=1, groups=1, output_padding=0)
_MATMUL_FUNCS = frozenset({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum",
                           "tensordot", "addmm", "baddbmm", "addbmm", "addmv", "mv", "dot",
                           "vdot", "inner", "outer", "chain_matmul", "multi_dot", "kron"})
_ATTENTION_FUNCS = frozenset({"scaled_dot_product_attention", "multi_head_attention_forward"})


def _bind(names: Sequence[str], args: Sequence, kwargs: dict) -> dict:
    bound = dict(_CONV_DEFAULTS)
    bound.update(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


def _compute_row(name: str, func, args: Sequence, kwargs: dict, inputs: list[torch.Tensor],
                 y: torch.Tensor) -> dict:
    """A row for a functional call that did MACs (or uncounted compute) outside leaf modules."""
    fname = getattr(func, "__name__", type(func).__name__)
    x = inputs[0] if inputs else y
    row = _functional_row(name, "", inputs or [y], y)
    params = {id(t): t for t in inputs if isinstance(t, nn.Parameter)}
    row.update(params=sum(t.numel() for t in params.values()),
               weight_bytes=sum(t.numel() * t.element_size() for t in params.values()))
    if fname.startswith("conv") and fname != "conv_tbc":
        transposed = fname.startswith("conv_transpose")
        b = _bind(_CONVT_ARGS if transposed else _CONV_ARGS, args, kwargs)
        w, xin = b.get("weight"), b.get("input")
        if isinstance(w, torch.Tensor) and isinstance(xin, torch.Tensor) and w.dim() >= 3:
            dims, groups = w.dim() - 2, int(b["groups"])
            cin = int(xin.shape[-dims - 1])
            cout = int(y.shape[-dims - 1])
            row.update(_conv_fields(dims, tuple(w.shape[2:]), b["stride"], b["padding"],
                                    b["dilation"], groups, b["bias"] is not None, xin, y),
                       op=_conv_op(dims, transposed, groups, cin), in_channels=cin,
                       out_channels=cout)
            return row
    if fname == "linear":
        w = args[1] if len(args) > 1 else kwargs.get("weight")
        if isinstance(w, torch.Tensor) and w.dim() == 2:
            has_bias = (len(args) > 2 and args[2] is not None) or kwargs.get("bias") is not None
            row.update(op="linear", in_channels=int(w.shape[1]), out_channels=int(w.shape[0]),
                       bias=int(has_bias))
            return row
    if fname in _MATMUL_FUNCS:
        row.update(op="matmul", in_channels=int(x.shape[-1]) if x.dim() else 1,
                   out_channels=int(y.shape[-1]) if y.dim() else 1)
        return row
    if fname in _ATTENTION_FUNCS:
        row.update(op="attention", in_channels=int(x.shape[-1]) if x.dim() else 1,
                   out_channels=int(y.shape[-1]) if y.dim() else 1)
        return row
    row["op"] = re.sub(r"[^a-z0-9]+", "_", fname.lower()).strip("_") or "op"
    return row


# ------------------------------------------------------------------------------ MAC counting
def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(a_shape)


def _mv_flop(a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(a_shape)


def _addmv_flop(self_shape, a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(a_shape)


def _attention_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    # softmax(Q Kᵀ) V over (..., L, E) · (..., S, E) · (..., S, Ev): the two products.
    batch = math.prod(q_shape[:-2])
    length, e = q_shape[-2], q_shape[-1]
    s, ev = k_shape[-2], v_shape[-1]
    return 2 * batch * length * s * (e + ev)


def _rnn_layer_flop(x_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    # One oneDNN RNN layer: per time step and sequence, the input and hidden projections of
    # every gate (4 for LSTM, 3 for GRU: the rows of the weights); gate arithmetic is
    # elementwise and not counted, as for any activation.
    steps = math.prod(x_shape) // max(int(w_ih[1]), 1)
    return 2 * steps * (math.prod(w_ih) + math.prod(w_hh))


def _extra_formulas() -> dict:
    """FLOP formulas torch's counter lacks, for kernels eager CPU execution calls."""
    aten = torch.ops.aten
    wanted = {"dot": _dot_flop, "vdot": _dot_flop, "mv": _mv_flop, "addmv": _addmv_flop,
              "_scaled_dot_product_flash_attention_for_cpu": _attention_flop,
              "_scaled_dot_product_attention_math": _attention_flop,
              "mkldnn_rnn_layer": _rnn_layer_flop}
    return {getattr(aten, n): f for n, f in wanted.items() if hasattr(aten, n)}


# Operator names that do multiply–accumulate work (matched after torch's decompositions);
# interpolation kernels named "linear" are not.
_COMPUTE_OP = re.compile(r"conv(?!ert)|mm|matmul|linear|einsum|tensordot|rnn|lstm|gru|"
                         r"attention|fft|stft|cdist|(^|_)(dot|vdot|mv|addmv|ger|outer|kron)($|_)")
_NOT_COMPUTE_OP = re.compile(r"upsample|grid_sampler|interp|affine_grid")


class _UncountedOps(TorchDispatchMode):
    """Below the FLOP counter: records compute operators that no formula counted."""

    def __init__(self, registry: dict) -> None:
        super().__init__()
        self.registry = registry
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet not in self.registry:
            ns, _, base = str(packet).partition(".")
            if ns == "quantized" or (ns not in ("prim", "prims") and _COMPUTE_OP.search(base)
                                     and not _NOT_COMPUTE_OP.search(base)):
                self.names.append(str(packet))
        return func(*args, **(kwargs or {}))


class _MacCounter:
    """FLOPs by ``FlopCounterMode`` (with :func:`_extra_formulas`), and uncounted compute ops."""

    def __init__(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self.flops = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
        self.uncounted = _UncountedOps(self.flops.flop_registry)

    @contextmanager
    def active(self) -> Iterator[None]:
        with self.uncounted, self.flops:  # the counter on top, the observer below it
            yield

    def mark(self) -> tuple[int, int]:
        return (self.flops.get_total_flops(), len(self.uncounted.names))

    def since(self, mark: tuple[int, int]) -> tuple[int, str]:
        """MACs and uncounted operator names since ``mark``."""
        flops, n = self.mark()
        names = ",".join(sorted(set(self.uncounted.names[mark[1]:])))
        return (flops - mark[0]) // 2, names


class _FunctionalOps(TorchFunctionMode):
    """Records add / concat calls and compute made outside listed leaf modules (see the
    module notes), and which row produced each tensor (the ``inputs`` column)."""

    def __init__(self, rows: list[dict], counter: _MacCounter) -> None:
        super().__init__()
        self.rows = rows
        self.counter = counter
        self.stack: list[str] = []  # names of the modules whose forward is running
        self.in_leaf = 0  # how many listed leaf modules are running (ops there are theirs)
        self.marks: list[tuple[int, int]] = []  # counter marks of the running leaf rows
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
                self.produced_one(t, rows)

    def produced_one(self, t: torch.Tensor, rows: frozenset[int]) -> None:
        self.producers[id(t)] = (t, rows)

    def add_row(self, row: dict, inputs: Sequence[torch.Tensor], out: object) -> None:
        row["inputs"] = ",".join(str(i) for i in sorted(self.sources(inputs)))
        row.setdefault("uncounted", "")
        row["fused"], row["graph"] = "", TORCH_GRAPH
        self.produced(out, frozenset({len(self.rows)}))
        self.rows.append(row)

    def synthetic_name(self, op: str) -> str:
        parent = self.stack[-1] if self.stack else ""
        k = self.counts.get((parent, op), 0)
        self.counts[(parent, op)] = k + 1
        return f"{parent}.{op}#{k}" if parent else f"{op}#{k}"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.in_leaf:
            return func(*args, **kwargs)  # the mode is off inside: nested calls are not seen
        mark = self.counter.mark()
        out = func(*args, **kwargs)
        inputs = _tensors(args, kwargs)
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor):
            macs, uncounted = self.counter.since(mark)
            if macs or uncounted:
                row = _compute_row("", func, args, kwargs, inputs, first)
                row.update(name=self.synthetic_name(row["op"]), macs=macs, uncounted=uncounted)
                self.add_row(row, inputs, out)
                return out
            op = "add" if func in _ADD_FUNCS else "concat" if func in _CAT_FUNCS else None
            # A branch merge has two tensor operands; ``x + 1`` is not one.
            if op is not None and first is out and (op == "concat" or len(inputs) >= 2):
                self.add_row(_functional_row(self.synthetic_name(op), op, inputs or [out], out),
                             inputs, out)
                return out
        if inputs:  # not a row: its outputs carry on the producers of its inputs
            self.produced(out, self.sources(inputs))
        return out


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block; every module's own mode is put back after.

    ``model.train(was_training)`` would flatten a model whose modules are in mixed modes (a
    frozen BatchNorm in a training model); this restores each module's flag.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device a model computes in: those of its first floating-point parameter
    (or buffer); float32 on the CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    for t in (*model.parameters(), *model.buffers()):
        return torch.float32, t.device
    return torch.float32, torch.device("cpu")


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per executed layer (and functional add / concat / compute) of ``model`` on a
    zero input.

    Parameters
    ----------
    model : nn.Module
        Any module, on any device (``meta`` for a shape-only pass) and in any floating dtype;
        the input is made in its dtype and on its device (:func:`model_dtype_device`). It is
        run once in eval mode under ``torch.no_grad`` and left as it was: every module's
        mode is restored, no hook or parameter changes.
    input_shape : sequence of int
        Full input shape including the batch, e.g. ``(1, 3, 224, 224)``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LAYER_COLUMNS`; channels, kernel, stride, padding, dilation and
        groups as integers, ``macs`` (multiply–accumulates, counted by torch's
        ``FlopCounterMode``), ``params`` and bytes; ``inputs``: the rows whose outputs this
        row consumed; ``uncounted``: compute operators of the row no formula counted (see
        the module notes); ``graph`` (``"torch"``), ``fused`` (``""``) and ``batch`` (the
        leading dimension of the row's input).
    """
    rows: list[dict] = []
    handles = []
    counter = _MacCounter()
    mode = _FunctionalOps(rows, counter)
    for name, m in model.named_modules():
        op = _op_name(m)

        def enter(mod, inputs, _name=name, _leaf=op is not None):
            mode.stack.append(_name)
            if _leaf:
                mode.in_leaf += 1
                mode.marks.append(counter.mark())

        def leave(mod, inputs, output, _name=name, _op=op):
            mode.stack.pop()
            if _op is None:
                return
            mode.in_leaf -= 1
            macs, uncounted = counter.since(mode.marks.pop())
            # A module returning a tuple (an LSTM's output and state) is listed by its first
            # output; its MACs are all of its work.
            y = output[0] if isinstance(output, (tuple, list)) and output else output
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else y
            if isinstance(y, torch.Tensor):
                row = _row(_name, mod, x, y, _op)
                # A leaf that declares its own work (compress.ron's gathers: index ops the
                # counter does not see, then a few MACs a row) is taken at its word.
                declared = callable(getattr(type(mod), "count_macs", None))
                row.update(macs=row["macs"] if declared else macs,
                           uncounted="" if declared else uncounted)
                mode.add_row(row, [t for t in inputs if isinstance(t, torch.Tensor)], output)

        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        dtype, device = model_dtype_device(model)
        # The input must live where the model does (CUDA, or "meta" for a shape-only pass).
        x = torch.zeros(tuple(input_shape), dtype=dtype, device=device)
        with torch.no_grad(), eval_mode(model), counter.active(), mode:
            model(x)
        rest, uncounted = counter.since((0, 0))
        rest -= sum(int(r["macs"]) for r in rows)
        if rest > 0:  # nothing should run outside the rows; if it did, it is still counted
            row = _functional_row(mode.synthetic_name("other"), "other", [x], x)
            row.update(macs=rest, inputs="", uncounted="", fused="", graph=TORCH_GRAPH)
            rows.append(row)
    finally:
        for h in handles:
            h.remove()
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
    """Boolean mask of the rows of module ``name`` and of everything inside it (every row
    for ``""``, the root module)."""
    if name == "":
        return pd.Series(True, index=table.index)
    return (table["name"] == name) | table["name"].str.startswith(name + ".")
