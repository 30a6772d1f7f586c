"""Layer tables of the graph a runtime executes, read from the runtime (feature schema 5).

A PyTorch module's leaf layers (:func:`latbench.data.features.layer_table`) are not the
kernels an inference runtime runs: ONNX Runtime folds a batch norm into the convolution
before it, fuses the activation (and, in its NCHWc layout on x86, the residual add) into
the convolution's epilogue, inserts layout reorders, and drops what cannot influence the
output; TFLite's converter does the same at conversion time. nn-Meter detects kernels with
hand-written fusion rules; here the runtime is asked instead: ONNX Runtime writes the graph
it will execute at a session's optimisation level (``SessionOptions.optimized_model_filepath``),
and :func:`onnx_graph_table` turns that graph into a layer table with the columns of
:data:`~latbench.data.features.LAYER_COLUMNS` — one row per node, i.e. per kernel that runs:

* ``op``: ``conv`` / ``dwconv`` (``Conv``, ``FusedConv``, NCHWc ``Conv``, ``QLinearConv``,
  ``ConvInteger``), ``linear`` (``Gemm``, ``MatMul`` and their fused/quantised forms),
  ``act``, ``bn``, ``maxpool``, ``avgpool``, ``add`` (a sum of two computed tensors),
  ``concat``, ``zero`` (a multiplication by the constant 0: NAS-Bench-201's ``none`` as the
  reference code runs it), ``eltwise`` (arithmetic with a constant), ``reorder`` (NCHWc
  layout changes), ``reshape`` (``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze``),
  ``identity``; any other node keeps its ONNX type in lower case, so nothing is dropped;
* ``fused``: what the kernel does after its main operation, from the node's attributes
  (``"relu"``; ``"add+relu"`` for an NCHWc convolution that also sums a residual);
  a folded batch norm leaves no trace but the convolution's bias;
* ``graph``: where the table came from, e.g. ``"onnxruntime:all:CPUExecutionProvider"``;
* ``inputs``: the rows whose outputs the node reads (the dataflow graph), as in schema 3;
* ``uncounted``: the node's ONNX type where it computes but no formula here counts its
  MACs (``ConvTranspose``, ``Einsum``, recurrent and attention kernels, a product whose
  shapes could not be read) — never a silent 0, as in
  :func:`~latbench.data.features.layer_table`;
* ``macs``, ``params``, bytes as :func:`~latbench.data.features.layer_table` counts them,
  from the node's weights and the tensor shapes of one run on a zero input. They count the
  work the kernel does: ONNX Runtime's NCHWc kernels (x86, level ``all``) compute on channels
  padded to their block of 8 or 16, so a 24-channel convolution there counts 32 channels.

Which graph a sweep stores is chosen by the device (:meth:`latbench.devices.base.Device.
executed_graph`): :func:`executed_layer_table` asks it, and keeps the module's table —
saying so in ``graph`` and with a warning — when the device cannot tell.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latbench.data.features import LAYER_COLUMNS, STRING_COLUMNS, TORCH_GRAPH
from latbench.exceptions import UserInputError

__all__ = [
    "ort_graph_label",
    "parse_graph_label",
    "write_ort_graph",
    "onnx_graph_table",
    "executed_layer_table",
    "ORT_GRAPH_LEVELS",
]

#: onnxruntime optimisation levels by the names latbench's devices use.
ORT_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                    "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv"}
_LINEAR = {"Gemm", "MatMul", "FusedGemm", "FusedMatMul", "QLinearMatMul", "MatMulInteger",
           "QGemm", "MatMulNBits"}
_ACT = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Gelu",
        "FastGelu", "BiasGelu", "QuickGelu", "Elu", "Selu", "Softplus", "PRelu", "Mish",
        "ThresholdedRelu", "Celu", "Softsign"}
_MAXPOOL = {"MaxPool", "GlobalMaxPool"}
_AVGPOOL = {"AveragePool", "GlobalAveragePool"}
_RESHAPE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_ARITH = {"Add", "Sub", "Mul", "Div", "Sum"}
#: Compute kernels whose MACs no formula here counts: named in ``uncounted``.
_UNCOUNTED = {"ConvTranspose", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
              "GroupQueryAttention", "DFT", "STFT", "DeformConv", "QAttention"}
#: Input index of the weight of each convolution / matrix product form.
_WEIGHT_INDEX = {"QLinearConv": 3, "QLinearMatMul": 3}

_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
                16: 2}


def ort_graph_label(level: str, provider: str) -> str:
    """``graph`` of a table read from ONNX Runtime: ``"onnxruntime:<level>:<provider>"``."""
    return f"onnxruntime:{level}:{provider}"


def parse_graph_label(label: str) -> dict[str, str]:
    """The parts of a ``graph`` label: ``{"runtime": ..., "level": ..., "provider": ...}``
    for ONNX Runtime labels, ``{"runtime": label}`` otherwise."""
    parts = str(label).split(":")
    if parts[0] == "onnxruntime" and len(parts) == 3:
        return {"runtime": "onnxruntime", "level": parts[1], "provider": parts[2]}
    return {"runtime": str(label)}


def write_ort_graph(onnx_path: str | Path, out_path: str | Path, *, level: str = "all",
                    provider: str = "CPUExecutionProvider") -> str:
    """Have ONNX Runtime optimise ``onnx_path`` at ``level`` for ``provider`` and write the
    graph it would execute to ``out_path``; return its ``graph`` label.

    Devices write their own graphs (:meth:`latbench.devices.base.Device.executed_graph`);
    this reproduces one on this host, e.g. to featurise a new model for a predictor trained
    on a CPU device's executed tables.

    Raises
    ------
    UserInputError
        For an unknown level, a provider this onnxruntime lacks, or a model it cannot load.
    """
    import onnxruntime as ort

    if level not in ORT_GRAPH_LEVELS:
        raise UserInputError(f"unknown onnxruntime optimisation level {level!r}; choose one of "
                             f"{', '.join(ORT_GRAPH_LEVELS)}")
    if provider not in ort.get_available_providers():
        raise UserInputError(f"this onnxruntime has no {provider}; the graph that provider "
                             "executes can only be read where it is installed")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_GRAPH_LEVELS[level])
    so.optimized_model_filepath = str(out_path)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(onnx_path), so, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise UserInputError(f"onnxruntime could not load {onnx_path}: {exc}") from None
    return ort_graph_label(level, provider)


# --------------------------------------------------------------------------- the table
def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _run_shapes(model: Any, input_shape: Sequence[int]) -> dict[str, tuple[tuple[int, ...], int]]:
    """Shape and bytes per element of every tensor, from one run on a zero input (CPU)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for n in m.graph.node for o in n.output if o]
    del m.graph.output[:]
    for nm in names:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(nm))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserInputError(f"onnxruntime's CPU provider cannot run this graph to read its "
                             f"tensor shapes: {str(exc).strip().splitlines()[0]}") from None
    inputs = [i for i in sess.get_inputs()]
    if len(inputs) != 1:
        raise UserInputError(f"the graph has {len(inputs)} inputs; latbench reads single-input models")
    typ = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32}.get(inputs[0].type, np.float32)
    x = np.zeros(tuple(int(v) for v in input_shape), dtype=typ)
    outs = sess.run(None, {inputs[0].name: x})
    shapes = {inputs[0].name: (x.shape, x.itemsize)}
    for nm, o in zip(names, outs):
        a = np.asarray(o)
        shapes[nm] = (tuple(int(v) for v in a.shape), int(a.itemsize))
    return shapes


def _nbytes(shape: tuple[int, ...], item: int) -> int:
    return int(np.prod(shape, dtype=np.int64)) * item if shape is not None else 0


def _hw(shape: tuple[int, ...] | None) -> tuple[int, int]:
    return (int(shape[-2]), int(shape[-1])) if shape is not None and len(shape) >= 4 else (1, 1)


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None:
        return (default, default)
    v = list(v)
    return (int(v[0]), int(v[-1])) if v else (default, default)


def _is_zero_constant(t: Any) -> bool:
    from onnx import numpy_helper

    a = numpy_helper.to_array(t)
    return a.size >= 1 and bool(np.all(a == 0))


def onnx_graph_table(model: str | Path | Any, input_shape: Sequence[int], *,
                     graph: str = "onnx") -> pd.DataFrame:
    """The layer table of an ONNX graph: one row per node (see the module notes).

    Parameters
    ----------
    model : path or onnx.ModelProto
        An ONNX graph — typically the one ONNX Runtime wrote as the graph it executes (it may
        hold ``com.microsoft`` and ``com.microsoft.nchwc`` nodes).
    input_shape : sequence of int
        The full input shape, batch included.
    graph : str
        What the graph is, stored in the ``graph`` column (e.g. :func:`ort_graph_label`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`~latbench.data.features.LAYER_COLUMNS`, rows in the graph's node order
        (ONNX Runtime writes nodes in execution order).

    Raises
    ------
    UserInputError
        If the file is not an ONNX model, has several inputs, or ONNX Runtime's CPU provider
        cannot run it to read its shapes.
    """
    import onnx

    if isinstance(model, (str, Path)):
        try:
            model = onnx.load(str(model))
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise UserInputError(f"{str(model)!r} is not an ONNX model: {exc}") from None
    shapes = _run_shapes(model, input_shape)
    inits = {t.name: t for t in model.graph.initializer}
    consts: dict[str, Any] = dict(inits)
    for n in model.graph.node:  # Constant nodes are data, not kernels worth a row
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    producers: dict[str, frozenset[int]] = {}
    rows: list[dict] = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        acts = [i for i in node.input if i and i not in consts]
        weights = [i for i in node.input if i and i in consts]
        srcs: frozenset[int] = frozenset()
        for i in acts:
            srcs |= producers.get(i, frozenset())
        out = next((o for o in node.output if o), None)
        oshape, oitem = shapes.get(out, (None, 4)) if out else (None, 4)
        ishape, iitem = shapes.get(acts[0], (None, 4)) if acts else (oshape, oitem)
        a = _attrs(node)
        op, fused = _kind(node, a, acts, weights, consts)
        row = dict(name=node.name or (out or ""), op=op, in_channels=1, out_channels=1,
                   kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                   dilation_h=1, dilation_w=1, groups=1, bias=0, macs=0, params=0,
                   weight_bytes=0, inputs=",".join(str(r) for r in sorted(srcs)),
                   uncounted="", fused=fused, graph=graph)
        row["batch"] = int(ishape[0]) if ishape is not None and len(ishape) >= 2 else 1
        row["in_h"], row["in_w"] = _hw(ishape)
        row["out_h"], row["out_w"] = _hw(oshape)
        if ishape is not None and len(ishape) > 1:
            row["in_channels"] = int(ishape[1])
        if oshape is not None and len(oshape) > 1:
            row["out_channels"] = int(oshape[1])
        for w in weights:
            t = consts[w]
            numel = int(np.prod(list(t.dims), dtype=np.int64)) if len(t.dims) else 1
            row["params"] += numel
            row["weight_bytes"] += numel * _DTYPE_BYTES.get(t.data_type, 4)
        row["act_in_bytes"] = sum(_nbytes(*shapes[i]) for i in acts if i in shapes)
        row["act_out_bytes"] = sum(_nbytes(*shapes[o]) for o in node.output if o in shapes)
        if op in ("conv", "dwconv"):
            _conv_geometry(row, node, a, consts, shapes, oshape)
        elif op == "linear":
            _linear_macs(row, node, a, consts, shapes, oshape)
        elif op in ("maxpool", "avgpool"):
            if node.op_type.startswith("Global"):
                row["kernel_h"], row["kernel_w"] = row["in_h"], row["in_w"]
            else:
                row["kernel_h"], row["kernel_w"] = _pair(a.get("kernel_shape"), 1)
                row["stride_h"], row["stride_w"] = _pair(a.get("strides"), 1)
                pads = list(a.get("pads") or [0, 0, 0, 0])
                row["pad_h"], row["pad_w"] = (int(pads[0]), int(pads[1])) if len(pads) >= 2 else (0, 0)
        if node.op_type in _UNCOUNTED or (op in ("conv", "dwconv", "linear") and not row["macs"]):
            row["uncounted"] = node.op_type
        producers_of = frozenset({len(rows)})
        for o in node.output:
            if o:
                producers[o] = producers_of
        rows.append(row)
    return pd.DataFrame(rows, columns=LAYER_COLUMNS).astype(
        {c: "int64" for c in LAYER_COLUMNS if c not in STRING_COLUMNS})


def _kind(node: Any, a: dict, acts: list[str], weights: list[str], consts: dict) -> tuple[str, str]:
    t = node.op_type
    fused: list[str] = []
    if t in _CONV or (t == "Conv" and node.domain):
        if node.domain == "com.microsoft.nchwc" and len([i for i in node.input[3:4] if i]) == 1:
            fused.append("add")  # NCHWc Conv's 4th input is a tensor it sums into its output
        if a.get("activation"):
            fused.append(str(a["activation"]).lower())
        return "conv", "+".join(fused)
    if t in _LINEAR:
        if a.get("activation"):
            fused.append(str(a["activation"]).lower())
        return "linear", "+".join(fused)
    if t in _ACT:
        return "act", ""
    if t == "BatchNormalization":
        return "bn", ""
    if t in _MAXPOOL:
        return "maxpool", ""
    if t in _AVGPOOL:
        return "avgpool", ""
    if t == "Concat":
        return "concat", ""
    if t in ("ReorderInput", "ReorderOutput"):
        return "reorder", ""
    if t in _RESHAPE:
        return "reshape", ""
    if t == "Identity":
        return "identity", ""
    if t in _ARITH:
        if len(acts) >= 2:
            return ("add" if t in ("Add", "Sum") else t.lower()), ""
        if t == "Mul" and weights and any(_is_zero_constant(consts[w]) for w in weights):
            return "zero", ""
        return "eltwise", ""
    return t.lower(), ""


def _conv_geometry(row: dict, node: Any, a: dict, consts: dict, shapes: dict, oshape) -> None:
    wname = node.input[_WEIGHT_INDEX.get(node.op_type, 1)] if len(node.input) > 1 else ""
    wdims = list(consts[wname].dims) if wname in consts else list(shapes.get(wname, ((),))[0])
    group = int(a.get("group", 1))
    kh, kw = (int(wdims[2]), int(wdims[3])) if len(wdims) >= 4 else _pair(a.get("kernel_shape"), 1)
    cin_g = int(wdims[1]) if len(wdims) >= 2 else max(row["in_channels"] // max(group, 1), 1)
    pads = list(a.get("pads") or [0, 0, 0, 0])
    auto = str(a.get("auto_pad", "NOTSET"))
    row.update(kernel_h=kh, kernel_w=kw, groups=group,
               in_channels=cin_g * group,
               stride_h=_pair(a.get("strides"), 1)[0], stride_w=_pair(a.get("strides"), 1)[1],
               dilation_h=_pair(a.get("dilations"), 1)[0], dilation_w=_pair(a.get("dilations"), 1)[1],
               pad_h=-1 if auto not in ("NOTSET", "VALID") else (int(pads[0]) if pads else 0),
               pad_w=-1 if auto not in ("NOTSET", "VALID") else (int(pads[1]) if len(pads) > 1 else 0),
               bias=int(len(node.input) > 2 and bool(node.input[2]) and node.op_type != "QLinearConv"
                        or (node.op_type == "QLinearConv" and len(node.input) > 8 and bool(node.input[8]))))
    if group > 1 and group == row["in_channels"]:
        row["op"] = "dwconv"
    if oshape is not None and len(oshape) >= 2:
        row["out_channels"] = int(wdims[0]) if wdims else int(oshape[1])
        spatial = int(np.prod(oshape[2:], dtype=np.int64)) if len(oshape) > 2 else 1
        row["macs"] = int(oshape[0]) * row["out_channels"] * spatial * cin_g * kh * kw


def _linear_macs(row: dict, node: Any, a: dict, consts: dict, shapes: dict, oshape) -> None:
    A = node.input[0]
    ashape = shapes.get(A, (None,))[0]
    if ashape is None and A in consts:
        ashape = tuple(consts[A].dims)
    if ashape is None or oshape is None or not len(ashape):
        return
    k = int(ashape[-2] if (node.op_type in ("Gemm", "FusedGemm") and a.get("transA")) else ashape[-1])
    row["macs"] = int(np.prod(oshape, dtype=np.int64)) * k
    row["in_channels"] = k
    row["out_channels"] = int(oshape[-1]) if len(oshape) else 1
    row["bias"] = int(node.op_type in ("Gemm", "FusedGemm") and len(node.input) > 2 and bool(node.input[2]))


# --------------------------------------------------------------------------- for a device
def executed_layer_table(device: Any, artifact: Any, table: pd.DataFrame, *,
                         threads: int | None = None) -> pd.DataFrame:
    """The layer table of what ``device`` executes for ``artifact``; ``table`` where it cannot tell.

    Parameters
    ----------
    device : latbench.devices.base.Device
        Asked through :meth:`~latbench.devices.base.Device.executed_graph`.
    artifact : latbench.artifact.Artifact
        The exported model the device will time.
    table : pandas.DataFrame
        The module's :func:`~latbench.data.features.layer_table` (``graph = "torch"``).
    threads : int, optional
        The intra-op threads the measurement will use.

    Returns
    -------
    pandas.DataFrame
        The executed graph's table (its ``graph`` names the runtime, level and provider),
        or ``table`` itself when the device cannot write its graph. A graph that cannot be
        read also keeps ``table``, with a ``UserWarning`` naming why.
    """
    with tempfile.TemporaryDirectory(prefix="latbench-graph-") as tmp:
        out = Path(tmp) / "executed.onnx"
        label = device.executed_graph(artifact, out, threads=threads)
        if label is None or not out.is_file():
            return table
        try:
            return onnx_graph_table(out, artifact.input_shape, graph=label)
        except UserInputError as exc:
            warnings.warn(f"the graph {label} executes for {artifact.path} could not be read "
                          f"({exc}); the table stays the module's ({TORCH_GRAPH})", stacklevel=2)
            return table
