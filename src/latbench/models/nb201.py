"""The NAS-Bench-201 network (TinyNetwork C=16, N=5) built from an architecture string.

The cell is a DAG on 4 nodes; ``|op~i|`` in the j-th ``+``-separated group is the
operation on edge i→j. Two builds of the same architecture exist, because publishers of
latency tables measured both:

* ``edges="live"`` (the default): edges that cannot influence the cell output (their
  source is unreachable from the input or their target cannot reach the output) and
  ``none`` edges are not built. The function is unchanged, and the network — like a
  compiled TFLite or ONNX graph after dead-code elimination — holds only the layers that
  actually run. LatBench (BRP-NAS) measured this build.
* ``edges="all"``: the graph of the NAS-Bench-201 reference code (``xautodl``'s
  ``InferCell``): every one of the six edges is built, ``none`` is a :class:`Zero` module
  (``x * 0``) that runs, and an operation whose input can only be zero still runs. HELP and
  HW-NAS-Bench measured this build.
"""

from __future__ import annotations

import torch
from torch import nn

from latbench.exceptions import UserInputError

__all__ = ["OPS", "EDGE_CONVENTIONS", "parse_arch", "live_edges", "cell_edges", "build_nb201",
           "TinyNetwork", "Zero"]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: The two builds of an architecture (see the module notes).
EDGE_CONVENTIONS = ("live", "all")


def parse_arch(arch: str) -> list[tuple[str, int, int]]:
    """Parse an architecture string into ``(op, src, dst)`` edges in the standard order.

    Raises
    ------
    UserInputError
        If the string is not a NAS-Bench-201 cell (3 groups of 1, 2, 3 edges).
    """
    groups = [g for g in arch.strip().split("+")]
    edges: list[tuple[str, int, int]] = []
    try:
        if len(groups) != 3:
            raise ValueError("expected 3 '+'-separated node groups")
        for dst, group in enumerate(groups, start=1):
            items = [t for t in group.strip().strip("|").split("|") if t]
            if len(items) != dst:
                raise ValueError(f"node {dst} needs {dst} incoming edges, got {len(items)}")
            for item in items:
                op, src = item.split("~")
                if op not in OPS:
                    raise ValueError(f"unknown operation {op!r} (choose from {', '.join(OPS)})")
                if int(src) >= dst:
                    raise ValueError(f"edge {item!r} does not point forward")
                edges.append((op, int(src), dst))
    except ValueError as exc:
        raise UserInputError(f"bad NAS-Bench-201 architecture {arch!r}: {exc}") from None
    return edges


def live_edges(edges: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The edges on some path from node 0 to node 3 (``none`` edges never count)."""
    real = [e for e in edges if e[0] != "none"]
    forward = {0}
    for op, s, d in sorted(real, key=lambda e: e[2]):
        if s in forward:
            forward.add(d)
    backward = {3}
    for op, s, d in sorted(real, key=lambda e: -e[1]):
        if d in backward:
            backward.add(s)
    return [e for e in real if e[1] in forward and e[2] in backward]


def cell_edges(edges: list[tuple[str, int, int]], convention: str = "live") -> list[tuple[str, int, int]]:
    """The edges a cell builds under ``convention`` (``"live"`` or ``"all"``).

    Raises
    ------
    UserInputError
        If ``convention`` is neither.
    """
    if convention == "live":
        return live_edges(edges)
    if convention == "all":
        return list(edges)
    raise UserInputError(f"unknown edge convention {convention!r}: choose one of "
                         f"{', '.join(EDGE_CONVENTIONS)} (live: dead edges removed, as LatBench "
                         "built; all: the NAS-Bench-201 reference code's graph)")


class Zero(nn.Module):
    """The reference code's ``none`` operation: ``x * 0``, a kernel that runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


def _make_op(op: str, c: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise UserInputError(f"operation {op!r} has no module")


class InferCell(nn.Module):
    """One NAS-Bench-201 cell holding the edges it is given (its live edges, or all six).

    A node is the sum of its incoming edges' outputs, added in edge order, as the reference
    code does (its ``sum`` also adds a python ``0`` first, which is no tensor operation).
    """

    def __init__(self, edges: list[tuple[str, int, int]], c: int) -> None:
        super().__init__()
        self.edges = [(s, d) for _, s, d in edges]
        self.ops = nn.ModuleList(_make_op(op, c) for op, _, _ in edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x, None, None, None]
        for (s, d), op in zip(self.edges, self.ops):
            y = op(nodes[s])
            nodes[d] = y if nodes[d] is None else nodes[d] + y
        out = nodes[3]
        return out if out is not None else x * 0.0


class ResNetBasicBlock(nn.Module):
    """The stride-2 reduction block between stages."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """NAS-Bench-201's CIFAR network: 3 stages of N cells at C, 2C, 4C channels."""

    def __init__(self, arch: str, c: int = 16, n: int = 5, num_classes: int = 10,
                 edges: str = "live") -> None:
        super().__init__()
        self.arch = arch
        self.edge_convention = edges
        edges = cell_edges(parse_arch(arch), edges)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells: list[nn.Module] = []
        channels = c
        for stage in range(3):
            if stage > 0:
                cells.append(ResNetBasicBlock(channels, channels * 2))
                channels *= 2
            cells.extend(InferCell(edges, channels) for _ in range(n))
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


def build_nb201(arch: str, *, c: int = 16, n: int = 5, num_classes: int = 10,
                edges: str = "live") -> TinyNetwork:
    """Build the standard NAS-Bench-201 network for ``arch`` (input B×3×32×32), in eval mode.

    Parameters
    ----------
    edges : {"live", "all"}
        Which edges the cells hold (see the module notes): ``"live"`` prunes dead and
        ``none`` edges; ``"all"`` is the reference code's graph.

    Raises
    ------
    UserInputError
        For a bad architecture string or convention.
    """
    return TinyNetwork(arch, c=c, n=n, num_classes=num_classes, edges=edges).eval()
