"""Per-layer latencies from a whole model's per-operator profile (AI Hub / nn-Meter style):
the rows of ``benchmark_model``'s op profile mapped back to latbench's layer names.

How a row finds its layer:

* **Operators to nodes.** A builtin kernel's row names its TFLite node (``[outputs]:3`` for
  the classic tool, ``[Builtin]:3`` for the LiteRT one); the node must have the row's
  operator type, or the profile is not of this file. A row a delegate profiles (XNNPACK:
  ``Delegate/Convolution (NHWC, F32) IGEMM:2``) carries only the kernel and the delegate's
  own index, so kernels are matched to nodes by kind and order: the k-th XNNPACK convolution
  is the k-th convolution node the builtin rows do not account for. That holds only when each
  kind's counts agree and no row merges several nodes: the profiler merges rows of equal name,
  and XNNPACK numbers operators per partition, so two partitions make equal names (``times
  called`` 2). A kind that fails either test is left unmapped, with a note; those layers are
  then measured alone.
* **Nodes to layers.** ``litert-torch`` names every tensor after the modules that produced it
  (``…ResNet/…Sequential_layer1/…BasicBlock_0/…Conv2d_conv1;1``; fused BatchNorm and ReLU
  join with ``;;``): each node's output and weight tensors give candidate module paths, kept
  when they are layers of the model's table of a kind the operator can be (a ``CONV_2D`` is a
  ``conv`` or ``dwconv``, ``MEAN`` an ``avgpool``...). A node with one candidate maps; the
  ``PAD`` a convolution needs adds to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from latbench.artifact import TfliteGraph
from latbench.data.features import MEASURED_ALONE_OPS
from latbench.devices.base import OpProfile, OpProfileRow

__all__ = ["LayerTiming", "ProfileMapping", "map_profile", "module_paths", "kernel_family",
           "OP_FAMILY"]

#: TFLite operator → the family of latbench layer kinds it can be.
OP_FAMILY = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "FULLY_CONNECTED": "linear",
             "MAX_POOL_2D": "maxpool", "AVERAGE_POOL_2D": "avgpool", "MEAN": "avgpool"}
#: latbench layer kind → family.
_KIND_FAMILY = {"conv": "conv", "dwconv": "conv", "linear": "linear", "maxpool": "maxpool",
                "avgpool": "avgpool"}
#: Operators that only pad for the layer they are named after; their time joins it.
_AUX_OPS = ("PAD", "PADV2", "MIRROR_PAD")


def kernel_family(node_type: str) -> str | None:
    """The layer family of a delegate kernel's name (XNNPACK's operator names:
    ``Convolution (NHWC, F32) IGEMM``, ``Fully Connected (NC, F32) GEMM``, ``Max Pooling``,
    ``Average Pooling``/``Global Average Pooling``/``Mean``), ``None`` for the rest."""
    t = node_type.lower()
    if t.startswith(("convolution", "deconvolution")) and "deconvolution" not in t:
        return "conv"
    if t.startswith("fully connected"):
        return "linear"
    if t.startswith("max pooling") or t.startswith("argmax pooling"):
        return "maxpool"
    if t.startswith(("average pooling", "global average pooling", "mean")):
        return "avgpool"
    return None


def module_paths(tensor_name: str, known: Iterable[str] | None = None) -> list[str]:
    """The dotted module names a ``litert-torch`` tensor name points at.

    Each ``;``-separated location ``Root/pkg.Class_attr/pkg.Class_attr...`` gives the path of
    attributes; an attribute is what follows the class name and ``_`` (class names may hold
    ``_`` too, so every split is tried and, with ``known``, only names in it are kept).
    """
    names: list[str] = []
    allowed = set(known) if known is not None else None
    for loc in tensor_name.split(";"):
        parts = loc.split("/")
        if len(parts) < 2 or not all(parts):
            continue
        options = []
        for comp in parts[1:]:
            tail = comp.rsplit(".", 1)[-1]
            attrs = [tail[i + 1:] for i, c in enumerate(tail) if c == "_" and tail[i + 1:]]
            if not attrs:
                break
            options.append(attrs)
        else:
            for combo in itertools.product(*options):
                name = ".".join(combo)
                if (allowed is None or name in allowed) and name not in names:
                    names.append(name)
    return names


@dataclass
class LayerTiming:
    """One layer's time in the profile: its layer-table row, seconds (mean over the profiled
    runs, and the first run), and the TFLite nodes summed into it."""

    name: str
    row: dict
    avg_s: float = 0.0
    first_s: float = 0.0
    nodes: list[int] = field(default_factory=list)


@dataclass
class ProfileMapping:
    """What :func:`map_profile` found: timings by layer name, layers of the table it could not
    time, and notes saying why."""

    layers: dict[str, LayerTiming]
    unmapped: list[str]
    notes: list[str]


def _node_layers(graph: TfliteGraph, table: pd.DataFrame) -> dict[int, str]:
    """Node index → layer name, for nodes whose tensors name exactly one layer they can be."""
    kinds = {r["name"]: r["op"] for r in table[["name", "op"]].to_dict("records")
             if r["op"] in MEASURED_ALONE_OPS}
    out: dict[int, str] = {}
    for node in graph.nodes:
        family = OP_FAMILY.get(node.op)
        if family is None and node.op not in _AUX_OPS:
            continue
        found: list[str] = []
        for tensor in (*node.outputs, *node.constant_inputs):
            for name in module_paths(tensor, kinds):
                if (family is None or _KIND_FAMILY[kinds[name]] == family) and name not in found:
                    found.append(name)
        if len(found) == 1:
            out[node.index] = found[0]
    return out


def _row_op(row: OpProfileRow) -> str:
    return row.node_type.split("/", 1)[0].strip()


def map_profile(profile: OpProfile, graph: TfliteGraph, table: pd.DataFrame) -> ProfileMapping:
    """Map a per-operator profile of the ``.tflite`` file ``graph`` was read from onto the
    layers of ``table`` (the model's :func:`~latbench.data.features.layer_table`).

    Returns
    -------
    ProfileMapping
        Layers of kinds measured alone (:data:`~latbench.data.features.MEASURED_ALONE_OPS`)
        with their seconds; the others of those kinds in ``unmapped``; ``notes`` for every
        family or row left out and why.
    """
    notes: list[str] = []
    node_layer = _node_layers(graph, table)
    rows = table.to_dict("records")
    by_name = {r["name"]: r for r in rows}
    nodes = graph.nodes
    # node index → (avg_s, first_s) from the profile
    timed: dict[int, tuple[float, float]] = {}
    builtin_ok = True
    by_outputs = {tuple(n.outputs): n.index for n in nodes}
    for r in profile.rows:
        if r.delegated or _row_op(r) not in {n.op for n in nodes}:
            continue
        idx = r.node_index
        if idx is None:  # releases that printed "[outputs]" without the node index
            outs = tuple(s.strip() for s in r.name.strip().lstrip("[").rstrip("]").split(","))
            idx = by_outputs.get(outs)
        if idx is None or idx >= len(nodes) or nodes[idx].op != _row_op(r):
            builtin_ok = False
            notes.append(f"profile row {r.name!r} ({r.node_type}) is not a node of this model")
            break
        timed[idx] = (r.avg_s * r.times_called, r.first_s * r.times_called)
    if not builtin_ok:
        timed.clear()
    # Delegate kernels: by family and order, over the family's nodes no builtin row took.
    delegated = [r for r in profile.rows if r.delegated]
    for family in ("conv", "linear", "maxpool", "avgpool"):
        krows = [r for r in delegated if kernel_family(r.node_type) == family]
        if not krows:
            continue
        fnodes = [n.index for n in nodes if OP_FAMILY.get(n.op) == family and n.index not in timed]
        merged = [r for r in krows if r.times_called != 1]
        if merged:
            notes.append(f"{family}: {len(merged)} delegate row(s) merge several operators "
                         f"(e.g. {merged[0].name!r} called {merged[0].times_called}× per run: the "
                         "delegate numbers its operators per partition); not mapped")
            continue
        if len(krows) != len(fnodes):
            notes.append(f"{family}: the delegate ran {len(krows)} kernels, the model has "
                         f"{len(fnodes)} such nodes; not mapped")
            continue
        for r, idx in zip(krows, fnodes):
            timed[idx] = (r.avg_s, r.first_s)
    other = [r for r in delegated if kernel_family(r.node_type) is None
             and not r.node_type.lower().startswith(("transpose", "constant pad", "copy",
                                                      "binary", "unary", "add", "clamp"))]
    if other:
        notes.append(f"{len(other)} delegate kernel(s) of no layer kind latbench maps "
                     f"(e.g. {other[0].node_type!r}) were left out")
    layers: dict[str, LayerTiming] = {}
    for idx, (avg, first) in sorted(timed.items()):
        name = node_layer.get(idx)
        if name is None:
            continue
        t = layers.setdefault(name, LayerTiming(name, by_name[name]))
        t.avg_s += avg
        t.first_s += first
        t.nodes.append(idx)
    # A layer needs its own operator, not only the PAD in front of it.
    layers = {k: v for k, v in layers.items()
              if any(OP_FAMILY.get(nodes[i].op) for i in v.nodes)}
    unmapped = [r["name"] for r in rows if r["op"] in MEASURED_ALONE_OPS and r["name"] not in layers]
    return ProfileMapping(layers, unmapped, notes)
