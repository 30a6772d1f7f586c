"""Reduced-Order Network (RON): a trained network's tail replaced by small dense layers.

Gusak, Daulbaev, Ponomarev, Cichocki, Oseledets, "Reduced-Order Modeling of Deep Neural
Networks", Comput. Math. Math. Phys. 61 (2021); arXiv:1910.06995. No fine-tuning.

The method, as built here
-------------------------
The network is traced by ``torch.fx``. From a chosen layer to the output (the *tail*),
every value is either an affine function of earlier values (convolutions, batch norm in
eval mode, linear layers, average pools, flatten/reshape, residual additions,
concatenation) or the output of a *nonlinear stage*: element-wise activations, optionally
with one max-pool, fused in the order the network applies them.

*Low-rank assumption.* The outputs ``x ∈ R^n`` of each nonlinear stage, collected on
calibration data ``X = [x_1 … x_N]``, lie near an ``r``-dimensional subspace: ``V`` holds
the leading ``r`` left singular vectors of ``X``.

*DEIM with MaxVol.* :func:`~latbench.compress._linalg.maxvol` picks ``r`` rows ``I`` of
``V``; then ``x ≈ V (V_I)^{-1} x_I``, so only the ``r`` entries ``x_I`` of the nonlinear
stage are computed. Because everything between two stages is affine, ``x_I`` is
``σ(W c + b)`` with ``c`` the ``r`` sampled entries of the stages it reads (or the full
values that enter the tail), ``W`` the rows ``I`` of the affine map composed with
``V (V_I)^{-1}`` — a dense ``r × r`` layer in place of a convolution. A max-pool in a stage
needs the pre-activation at every position of the windows of ``I`` (``r × k²`` rows), and
takes the maximum of the activated values. The final affine part (pooling, classifier)
becomes one dense read-out from the sampled values.

*Approximation error (reported per stage).* For any ``x``, DEIM's bound
``‖x − V (V_I)^{-1} x_I‖ ≤ ‖(V_I)^{-1}‖₂ · ‖(I − V Vᵀ) x‖`` (Chaturantabut & Sorensen
2010), and MaxVol keeps ``‖(V_I)^{-1}‖₂ ≤ sqrt(1 + r(n − r))``. Each stage reports, on the
calibration data (relative Frobenius norms): ``projection_error`` (the best the subspace
can do), ``deim_constant`` (``‖(V_I)^{-1}‖₂``), ``error_bound`` (their product),
``interpolation_error`` (DEIM with exact inputs; never above the bound), and
``propagated_error`` (the reduced network's own reconstruction, errors of earlier stages
included — what decides accuracy).

Choice of layers: the paper replaces the network from a chosen layer on by a small
fully-connected network; ``start`` (a layer-name glob; the first layer it matches in
execution order) is that layer, and ``"*"`` reduces everything after the input.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latbench.exceptions import UserInputError

__all__ = ["RonStageReport", "RonResult", "ReducedOrderNet", "RonStage", "reduce_order",
           "as_calibration", "load_calibration", "ron_ranks", "SparseRows", "SpatialRows"]

#: Batch size of the calibration forward passes (memory, not results).
_CALIB_BATCH = 128
#: Singular values below this share of the largest count as no direction (float32 data).
_SPAN_RTOL = 1e-6

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                        nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
                        nn.Softplus)
_AFFINE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d,
                   nn.BatchNorm3d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                   nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout,
                   nn.Dropout2d, nn.Dropout1d)
_AFFINE_FUNCTIONS = {torch.flatten, torch.reshape, torch.cat, torch.concat, torch.add, torch.sub,
                     torch.mean, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
                     F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.dropout, operator.add, operator.sub, operator.neg, operator.getitem,
                     operator.mul, operator.truediv, torch.mul}
_AFFINE_METHODS = {"view", "reshape", "flatten", "mean", "permute", "transpose", "contiguous",
                   "squeeze", "unsqueeze", "add", "sub", "mul", "div", "neg", "clone"}
#: Products: affine only when at most one operand carries the data.
_PRODUCTS = {operator.mul, operator.truediv, torch.mul, "mul", "div"}
_META_METHODS = {"size", "dim"}


def _elementwise_from_function(target: Any, args: tuple, kwargs: dict) -> nn.Module | None:
    """The nn.Module applying a functional activation call, or None if it is not one."""
    def arg(i: int, name: str, default: Any) -> Any:
        return args[i] if len(args) > i else kwargs.get(name, default)

    if target in (F.relu, torch.relu, "relu"):
        return nn.ReLU()
    if target in (torch.sigmoid, F.sigmoid, "sigmoid"):
        return nn.Sigmoid()
    if target in (torch.tanh, F.tanh, "tanh"):
        return nn.Tanh()
    if target is F.relu6:
        return nn.ReLU6()
    if target is F.silu:
        return nn.SiLU()
    if target is F.hardswish:
        return nn.Hardswish()
    if target is F.gelu:
        return nn.GELU(approximate=kwargs.get("approximate", "none"))
    if target is F.leaky_relu:
        return nn.LeakyReLU(arg(1, "negative_slope", 0.01))
    if target is F.elu:
        return nn.ELU(arg(1, "alpha", 1.0))
    return None


@dataclass(frozen=True)
class _Pool:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _pool_of(node: Any, modules: dict[str, nn.Module]) -> _Pool | None:
    """Max-pool parameters of ``node`` (module or ``F.max_pool2d``), None if it is not one."""
    if node.op == "call_module" and isinstance(modules[node.target], nn.MaxPool2d):
        m = modules[node.target]
        if m.ceil_mode or m.return_indices:
            raise UserInputError(f"ron cannot reduce max-pool {node.target!r} with ceil_mode or "
                                 "return_indices; start the reduction after it")
        return _Pool(_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size),
                     _pair(m.padding), _pair(m.dilation))
    if node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d):
        a, kw = node.args, node.kwargs

        def get(i: int, name: str, default: Any) -> Any:
            return a[i] if len(a) > i else kw.get(name, default)

        k = get(1, "kernel_size", None)
        s = get(2, "stride", None) or k
        if get(5, "ceil_mode", False) or get(6, "return_indices", False):
            raise UserInputError(f"ron cannot reduce max-pool {node.name!r} with ceil_mode or "
                                 "return_indices; start the reduction after it")
        return _Pool(_pair(k), _pair(s), _pair(get(3, "padding", 0)), _pair(get(4, "dilation", 1)))
    return None


def _pool_windows(pool: _Pool, in_shape: Sequence[int]) -> torch.Tensor:
    """``(C·Ho·Wo, k)``: flat input positions in each output position's window.

    Padding positions (−∞ for max-pool) are replaced by a valid position of the same
    window, which leaves the maximum unchanged.
    """
    c, h, w = (int(s) for s in in_shape)
    pos = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
    pad_h, pad_w = pool.padding
    pos = F.pad(pos, (pad_w, pad_w, pad_h, pad_h), value=-1.0)
    cols = F.unfold(pos, pool.kernel, dilation=pool.dilation, stride=pool.stride)[0]  # (k, L)
    cols = cols.long().T  # (L, k)
    valid_first = cols.max(dim=1, keepdim=True).values  # any valid one: max of the window's indices
    cols = torch.where(cols < 0, valid_first, cols)
    per_channel = cols.shape[0]
    offsets = (torch.arange(c) * (h * w)).repeat_interleave(per_channel)[:, None]
    return cols.repeat(c, 1) + offsets


class SparseRows(nn.Module):
    """``y[:, i] = Σ_k weight[i, k] · x[:, index[i, k]] (+ bias[i])``: rows of a local linear map.

    The rows of a convolution read ``C_in·k_h·k_w`` of its inputs; stored densely they
    would cost ``rows × n_in`` MACs, gathered they cost ``rows × C_in·k_h·k_w``.
    """

    def __init__(self, index: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("index", index.long().contiguous())
        self.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.float().contiguous(), requires_grad=False)

    def count_macs(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Multiply–accumulates of one call (read by :func:`latbench.data.features.layer_table`)."""
        return int(y.numel() * self.index.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x[:, self.index] * self.weight).sum(dim=2)
        return y if self.bias is None else y + self.bias


class SpatialRows(nn.Module):
    """Rows of a local linear map of a ``(C, H, W)`` value, read position by position.

    ``y[:, i] = Σ_{k, c} weight[i, k, c] · x[:, c, p_ik] (+ bias[i])`` over the ``K``
    spatial positions ``p_ik`` row ``i`` reads (a convolution's window). The value is
    turned channels-last and each position's ``C`` channels are gathered as one block —
    ``rows × K`` block copies rather than ``rows × K × C`` single-element gathers, which
    onnxruntime's ``Gather`` makes far slower. Padding reads an appended zero position.
    """

    def __init__(self, shape: Sequence[int], index: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> None:
        super().__init__()
        self.channels, self.positions = int(shape[0]), int(shape[1]) * int(shape[2])
        self.register_buffer("index", index.long().contiguous())
        self.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.float().contiguous(), requires_grad=False)

    def count_macs(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Multiply–accumulates of one call (read by :func:`latbench.data.features.layer_table`)."""
        return int(y.numel() * self.index.shape[1] * self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = x.reshape(-1, self.channels, self.positions).transpose(1, 2)
        cl = torch.cat([cl, torch.zeros_like(cl[:, :1])], dim=1)  # position P: zeros
        y = (cl[:, self.index] * self.weight).sum(dim=(2, 3))
        return y if self.bias is None else y + self.bias


def _spatial_rows(w: torch.Tensor, bias: torch.Tensor | None, shape: Sequence[int]) -> nn.Module | None:
    c, h, wd = (int(v) for v in shape)
    per_pos = w.reshape(w.shape[0], c, h * wd)
    used = (per_pos != 0).any(dim=1)  # (rows, positions)
    k = int(used.sum(dim=1).max()) if w.numel() else 0
    if h * wd <= 16 or not 0 < k <= (h * wd) // 4:
        return None
    order = torch.argsort((~used).to(torch.int8), dim=1, stable=True)[:, :k]  # used positions first
    real = torch.gather(used, 1, order)
    index = torch.where(real, order, torch.full_like(order, h * wd))
    weight = torch.gather(per_pos.transpose(1, 2), 1, order[:, :, None].expand(-1, -1, c))
    weight = torch.where(real[:, :, None], weight, torch.zeros_like(weight))
    return SpatialRows(shape, index, weight, bias)


def _rows_module(w: torch.Tensor, bias: torch.Tensor | None,
                 in_shape: Sequence[int] | None = None) -> nn.Module:
    """A Linear, or :class:`SpatialRows` / :class:`SparseRows` where every row reads few inputs."""
    if in_shape is not None and len(in_shape) == 3:
        spatial = _spatial_rows(w, bias, in_shape)
        if spatial is not None:
            return spatial
    nz = w != 0
    k = int(nz.sum(dim=1).max()) if w.numel() else 0
    if w.shape[1] > 64 and 0 < k <= w.shape[1] // 4:
        # each row's nonzero columns first, padded with zero weights on column 0
        order = torch.argsort((~nz).to(torch.int8), dim=1, stable=True)[:, :k]
        weight = torch.gather(w, 1, order)
        index = torch.where(weight != 0, order, torch.zeros_like(order))
        return SparseRows(index, weight, bias)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w.float())
        if bias is not None:
            lin.bias.copy_(bias.float())
    return lin


class RonStage(nn.Module):
    """One reduced nonlinear stage: ``y = pool(σ(Σ_s W_s v_s + b))`` with ``r`` outputs.

    Parameters
    ----------
    sources : sequence of int
        Indices into the running list of values (entries, then earlier stages' outputs).
    linears : nn.ModuleList
        One ``nn.Linear`` (or :class:`SparseRows`) per source, ``rank × window`` outputs (the
        first has the bias).
    pre, post : nn.ModuleList
        Element-wise activations before and after the max over the window.
    rank, window : int
        Outputs, and positions per output (1 without a max-pool).
    """

    def __init__(self, sources: Sequence[int], linears: nn.ModuleList, pre: nn.ModuleList,
                 post: nn.ModuleList, rank: int, window: int) -> None:
        super().__init__()
        self.sources = [int(s) for s in sources]
        self.linears = linears
        self.pre = pre
        self.post = post
        self.rank = int(rank)
        self.window = int(window)

    def forward(self, values: list[torch.Tensor]) -> torch.Tensor:
        z = self.linears[0](values[self.sources[0]])
        for s, lin in zip(self.sources[1:], self.linears[1:]):
            z = z + lin(values[s])
        for op in self.pre:
            z = op(z)
        if self.window > 1:
            z = z.reshape(-1, self.rank, self.window).amax(dim=2)
        for op in self.post:
            z = op(z)
        return z


class ReducedOrderNet(nn.Module):
    """A network whose tail is replaced by a Reduced-Order Network (see module doc).

    ``head`` computes the values entering the tail (a tuple); each :class:`RonStage`
    appends its ``r`` sampled values; ``readout`` linears map them to the output.
    """

    def __init__(self, head: nn.Module, stages: nn.ModuleList, readout: nn.ModuleList,
                 readout_sources: Sequence[int], output_shape: Sequence[int]) -> None:
        super().__init__()
        self.head = head
        self.stages = stages
        self.readout = readout
        self.readout_sources = [int(s) for s in readout_sources]
        self.output_shape = tuple(int(s) for s in output_shape)

    def values(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Entries (flattened) followed by every stage's sampled values, ``(B, ·)`` each."""
        vals = [e.flatten(1) for e in self.head(x)]
        for stage in self.stages:
            vals.append(stage(vals))
        return vals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = self.values(x)
        out = self.readout[0](vals[self.readout_sources[0]])
        for s, lin in zip(self.readout_sources[1:], self.readout[1:]):
            out = out + lin(vals[s])
        return out.reshape((-1,) + self.output_shape)


@dataclass(frozen=True)
class RonStageReport:
    """One reduced stage (or the read-out, ``rank == ()``), errors relative on calibration data.

    ``modules`` are the original layers the stage replaces (for params/MACs before).
    """

    name: str
    n: int
    rank: tuple[int, ...]
    window: int
    modules: tuple[str, ...]
    params_after: int
    projection_error: float
    deim_constant: float
    error_bound: float
    interpolation_error: float
    propagated_error: float
    notes: tuple[str, ...] = ()

    def details(self) -> dict[str, float]:
        return {"n": self.n, "window": self.window, "projection_error": self.projection_error,
                "deim_constant": self.deim_constant, "error_bound": self.error_bound,
                "interpolation_error": self.interpolation_error,
                "propagated_error": self.propagated_error}


@dataclass(frozen=True)
class RonResult:
    """The reduced model, where its tail starts, and one report per stage plus the read-out."""

    model: ReducedOrderNet
    start: str
    stages: tuple[RonStageReport, ...]
    calibration_size: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def as_calibration(calibration: Any) -> torch.Tensor:
    """One ``(N, ...)`` float tensor from a tensor or an iterable of batches.

    Raises
    ------
    UserInputError
        If it is empty, not tensors, of mismatched shapes, or not finite.
    """
    if isinstance(calibration, torch.Tensor):
        batches = [calibration]
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        batches = []
        for b in calibration:
            if isinstance(b, (tuple, list)) and b and isinstance(b[0], torch.Tensor):
                b = b[0]  # (inputs, targets) batches of a DataLoader
            if not isinstance(b, torch.Tensor):
                raise UserInputError(f"calibration batches must be tensors, got a {type(b).__name__}")
            batches.append(b)
    else:
        raise UserInputError(f"calibration must be a tensor or an iterable of tensor batches, "
                             f"got a {type(calibration).__name__}")
    if not batches:
        raise UserInputError("calibration data is empty")
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) > 1 or any(b.dim() < 2 for b in batches):
        raise UserInputError(f"calibration batches must be (N, ...) tensors of one sample shape, got "
                             f"{sorted(shapes)}")
    x = torch.cat([b.detach().float().cpu() for b in batches])
    if x.shape[0] == 0:
        raise UserInputError("calibration data is empty")
    if not torch.isfinite(x).all():
        raise UserInputError("calibration data has NaN or infinite values")
    return x


def load_calibration(spec: str, input_shape: Sequence[int]) -> torch.Tensor:
    """Calibration inputs named on the command line.

    Parameters
    ----------
    spec : str
        ``digits`` or ``digits:N`` — the first ``N`` (all 1,347 by default) training images
        of :func:`latbench.models.digits.load_digits_data` at the input's size; or a path to
        a ``torch.save``-d tensor ``(N, ...)`` or list/tuple of such batches, read with
        ``torch.load(weights_only=True)`` (no code in the file runs).
    input_shape : sequence of int
        The model's input shape; the samples must match it (batch aside).

    Raises
    ------
    UserInputError
        If the file is missing or unreadable, holds something else, or its samples do not
        match ``input_shape``.
    """
    from pathlib import Path

    shape = tuple(int(s) for s in input_shape)
    if spec == "digits" or spec.startswith("digits:"):
        count = spec.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise UserInputError(f"bad calibration {spec!r}: write 'digits' or 'digits:N' (N >= 1)")
        if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3]:
            raise UserInputError(f"the digits calibration images are 1×S×S; the model's input is "
                                 f"{'x'.join(map(str, shape))} (give --input 1x1xSxS or a tensor file)")
        from latbench.models.digits import load_digits_data

        x = load_digits_data(shape[2], seed=0).x_train
        return x[: int(count)] if count else x
    path = Path(spec)
    if not path.is_file():
        raise UserInputError(f"calibration file {spec!r} does not exist; give a torch.save-d tensor "
                             "(N, ...) or 'digits[:N]'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad or unsafe file
        raise UserInputError(f"cannot read calibration file {spec!r} as tensors "
                             f"(torch.load weights_only=True): {exc}") from None
    x = as_calibration(obj)
    if tuple(x.shape[1:]) != shape[1:]:
        raise UserInputError(f"calibration samples in {spec!r} have shape {tuple(x.shape[1:])}; the "
                             f"model's input is {shape[1:]} per sample")
    return x


def ron_ranks(rank: Any, n_stages: int) -> list[int]:
    """One rank per stage from an int (all stages) or a tuple (one per stage).

    Raises
    ------
    UserInputError
        For any other spelling, a rank below 1, or a tuple of the wrong length.
    """
    if isinstance(rank, bool):
        rank = None
    if isinstance(rank, int):
        vals = [rank] * n_stages
    elif isinstance(rank, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in rank):
        if len(rank) == 1:
            vals = [int(rank[0])] * n_stages
        elif len(rank) != n_stages:
            raise UserInputError(f"ron got {len(rank)} ranks for {n_stages} nonlinear stages; give "
                                 "one int for all, or exactly one per stage")
        else:
            vals = [int(v) for v in rank]
    else:
        raise UserInputError(f"ron takes an int rank (the dimension of every stage's subspace, e.g. "
                             f"16) or one int per stage (16,16,8), not {rank!r}")
    if any(v < 1 for v in vals):
        raise UserInputError(f"ron ranks must be at least 1, got {rank!r}")
    return vals


# --------------------------------------------------------------------------- tracing

class _Graph:
    """The traced network and what ron needs to know about each node."""

    def __init__(self, model: nn.Module) -> None:
        import torch.fx as fx

        self.fx = fx
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types on untraceable control flow
            raise UserInputError(f"ron needs a network torch.fx can trace; tracing "
                                 f"{type(model).__name__} failed: {exc}") from None
        self.modules = dict(self.gm.named_modules())
        for m in self.modules.values():  # in-place activations would overwrite recorded values
            if hasattr(m, "inplace"):
                m.inplace = False
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        ph = [n for n in self.nodes if n.op == "placeholder"]
        if len(ph) != 1:
            raise UserInputError(f"ron reduces networks with one input; this one has {len(ph)}")
        self.input = ph[0]
        out = self.nodes[-1]
        if not isinstance(out.args[0], fx.Node):
            raise UserInputError("ron reduces networks with one tensor output")
        self.output = out.args[0]

    def fetch_attr(self, target: str) -> Any:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def run_node(self, n: Any, env: dict) -> Any:
        args = self.fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = self.fx.node.map_arg(n.kwargs, lambda a: env[a])
        if n.op == "call_module":
            return self.modules[n.target](*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "get_attr":
            return self.fetch_attr(n.target)
        raise AssertionError(f"cannot run node {n.op}")

    def label(self, n: Any) -> str:
        return str(n.target) if n.op == "call_module" else n.name


def _nonlinear_kind(g: _Graph, n: Any) -> str | None:
    if n.op == "call_module":
        m = g.modules[n.target]
        if isinstance(m, _ELEMENTWISE_MODULES):
            return "elementwise"
    elif n.op in ("call_function", "call_method"):
        if _elementwise_from_function(n.target, tuple(n.args), dict(n.kwargs)) is not None:
            return "elementwise"
    if _pool_of(n, g.modules) is not None:
        return "maxpool"
    return None


def _is_affine(g: _Graph, n: Any, data: set) -> bool:
    """Whether ``n`` is affine in the data it reads (``data``: nodes that carry the input)."""
    if n.op == "call_module":
        return isinstance(g.modules[n.target], _AFFINE_MODULES)
    target = n.target
    if n.op == "call_function" and target in _AFFINE_FUNCTIONS:
        pass
    elif n.op == "call_method" and target in _AFFINE_METHODS:
        pass
    else:
        return False
    if target in _PRODUCTS:
        operands = [a for a in n.args if isinstance(a, g.fx.Node) and a in data]
        if len(operands) > 1:
            return False
        if target in (operator.truediv, "div") and len(n.args) > 1 and n.args[1] in data:
            return False
    return True


def _is_meta(n: Any) -> bool:
    return (n.op == "call_method" and n.target in _META_METHODS) or (
        n.op == "call_function" and n.target is getattr)


# --------------------------------------------------------------------------- the reduction

def _record(g: _Graph, x: torch.Tensor, keep: Iterable[Any]) -> dict[Any, torch.Tensor]:
    """Values of ``keep`` nodes on ``x`` (flattened per sample, float64), in batches."""
    keep = list(keep)
    store: dict[Any, list[torch.Tensor]] = {n: [] for n in keep}
    wanted = set(keep)
    with torch.no_grad():
        for i in range(0, x.shape[0], _CALIB_BATCH):
            env: dict = {}
            for n in g.nodes:
                if n.op == "placeholder":
                    env[n] = x[i:i + _CALIB_BATCH]
                elif n.op == "output":
                    break
                else:
                    try:
                        env[n] = g.run_node(n, env)
                    except Exception as exc:  # a calibration tensor that does not fit the network
                        raise UserInputError(f"calibration data of shape {tuple(x.shape)} does not "
                                             f"fit the network at {g.label(n)!r}: {exc}") from None
                if n in wanted:
                    store[n].append(env[n].detach().flatten(1).to(torch.float64).clone())
    return {n: torch.cat(v) for n, v in store.items()}


def _ancestors(target: Any, stop: set) -> list[Any]:
    """Nodes ``target`` depends on, walking back and stopping at ``stop`` (included)."""
    seen, todo, found = set(), [target], []
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        found.append(n)
        if n in stop:
            continue
        todo.extend(a for a in n.all_input_nodes)
    return found


def reduce_order(
    model: nn.Module,
    rank: Any,
    calibration: Any,
    *,
    start: str = "*",
    maxvol_tol: float = 1.05,
) -> RonResult:
    """Replace ``model`` from layer ``start`` on by a Reduced-Order Network (see module doc).

    Parameters
    ----------
    model : nn.Module
        A trained network with one input and one tensor output, traceable by ``torch.fx``.
        It is copied, never changed.
    rank : int or tuple of int
        ``r``: the subspace dimension of every nonlinear stage, or one per stage.
    calibration : Tensor (N, ...) or iterable of such batches
        Inputs from the data the network will see; ``N >= max(rank)``. Bases and errors
        come from them.
    start : str
        Glob over layer (module) names; the tail starts at the first layer it matches in
        execution order. ``"*"``: everything after the input.
    maxvol_tol : float
        Dominance tolerance of the row selection.

    Returns
    -------
    RonResult

    Raises
    ------
    UserInputError
        If the model cannot be traced, ``start`` matches no layer, the tail holds an
        operation that is neither affine nor an element-wise activation / max-pool, the
        calibration data do not fit the network or are fewer than the rank, or the rank
        is spelt in a way ron does not take.
    """
    import numpy as np

    from latbench.compress._linalg import maxvol

    t0 = time.perf_counter()
    x = as_calibration(calibration)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = _Graph(model)
    body = [n for n in g.nodes if n.op not in ("placeholder", "output")]

    # -- where the tail starts
    if start == "*":
        first = next((n for n in body if n.op != "get_attr"), None)
        if first is None:
            raise UserInputError("the network has no layer to reduce")
    else:
        layer_nodes = [n for n in body if n.op == "call_module"]
        first = next((n for n in layer_nodes
                      if n.target == start or fnmatch.fnmatchcase(n.target, start)), None)
        if first is None:
            from latbench.registry import suggest

            names = [n.target for n in layer_nodes]
            raise UserInputError(f"ron start {start!r} matches no layer of the network"
                                 f"{suggest(start, names)}")
    k0 = g.index[first]
    tail = [n for n in body if g.index[n] >= k0 and n.op != "get_attr"]
    tail_set = set(tail)
    if g.output not in tail_set:
        raise UserInputError(f"the network's output is computed before {g.label(first)!r}; "
                             "start the reduction earlier")
    entries = []
    for n in tail:
        for a in n.all_input_nodes:
            if a not in tail_set and a.op != "get_attr" and a not in entries:
                entries.append(a)

    # -- shapes and which nodes carry data
    probe = _record_values(g, x[:2])
    data: set = set(entries)
    for n in tail:
        if any(a in data for a in n.all_input_nodes):
            data.add(n)
    for e in entries:
        if not isinstance(probe[e], torch.Tensor):
            raise UserInputError(f"ron cannot start at {g.label(first)!r}: the value "
                                 f"{e.name!r} entering the tail is not a tensor; start later")

    # -- classify the tail
    kind: dict[Any, str] = {}
    for n in tail:
        if not isinstance(probe[n], torch.Tensor) or _is_meta(n):
            kind[n] = "meta"
        elif n not in data:
            kind[n] = "const"
        elif (k := _nonlinear_kind(g, n)) is not None:
            kind[n] = k
        elif _is_affine(g, n, data):
            kind[n] = "affine"
        else:
            what = (type(g.modules[n.target]).__name__ if n.op == "call_module"
                    else getattr(n.target, "__name__", str(n.target)))
            raise UserInputError(
                f"ron cannot reduce through {what} at {g.label(n)!r}: the tail may hold only affine "
                "layers (conv, batch norm, linear, average pools, reshapes, additions), element-wise "
                "activations and max-pools; start the reduction after it (--layers)")

    # -- stages: maximal chains of activations (+ one max-pool) ending in a materialised value
    fused: set = set()
    chains: dict[Any, list[Any]] = {}
    for n in reversed(tail):
        if kind[n] not in ("elementwise", "maxpool") or n in fused:
            continue
        chain, pooled = [n], kind[n] == "maxpool"
        p = n.all_input_nodes[0]
        while (p in tail_set and kind.get(p) in ("elementwise", "maxpool") and len(p.users) == 1
               and (kind[p] == "elementwise" or not pooled)):
            chain.insert(0, p)
            fused.add(p)
            pooled = pooled or kind[p] == "maxpool"
            p = p.all_input_nodes[0]
        chains[n] = chain
    stage_nodes = [n for n in tail if n in chains]
    ranks = ron_ranks(rank, len(stage_nodes))
    if stage_nodes and max(ranks) > x.shape[0]:
        raise UserInputError(f"ron at rank {max(ranks)} needs at least that many calibration "
                             f"samples; got {x.shape[0]}")

    rec = _record(g, x, stage_nodes + [g.output])
    shapes = {n: tuple(probe[n].shape[1:]) for n in list(entries) + stage_nodes + [g.output]}
    for n in tail:
        if kind[n] in ("elementwise", "maxpool") or n in entries:
            shapes.setdefault(n, tuple(probe[n].shape[1:]))
    for n in chains.values():
        for c in n:
            for a in c.all_input_nodes:
                shapes.setdefault(a, tuple(probe[a].shape[1:]))

    # Each source (entry or stage) is a column of the running value list of ReducedOrderNet.
    source_index = {e: i for i, e in enumerate(entries)}
    recon: dict[Any, torch.Tensor] = {}  # stage node -> V (V_I)^{-1}, (n, r), float64
    sources_set = set(entries)
    stages: list[RonStage] = []
    reports: list[RonStageReport] = []
    assigned: set = set()

    def affine_maps(target: Any, rows: torch.Tensor) -> tuple[list[int], list[torch.Tensor], torch.Tensor]:
        """``value(target)[rows] = Σ_s W_s v_s + b`` over the sources ``target`` reads."""
        anc = _ancestors(target, sources_set)
        needed = sorted((n for n in anc if n not in sources_set), key=g.index.__getitem__)
        srcs = sorted((n for n in anc if n in sources_set), key=lambda n: source_index[n])
        consts = [n for n in g.nodes if n.op == "get_attr"]

        def evaluate(over: dict) -> torch.Tensor:
            env = dict(over)
            for c in consts:
                env[c] = g.fetch_attr(c.target)
            for n in needed:
                if n not in env:
                    if kind.get(n) in ("elementwise", "maxpool"):
                        raise AssertionError(f"affine path reached nonlinear {n}")
                    env[n] = g.run_node(n, env)
            return env[target].reshape(env[target].shape[0], -1).to(torch.float64)

        def zeros(batch: int) -> dict:
            return {s: torch.zeros((batch,) + shapes[s], dtype=torch.float64) for s in srcs}

        g.gm.double()
        try:
            with torch.no_grad():
                bias = evaluate(zeros(1))[0, rows]
            weights = []
            for s in srcs:
                if s in recon:  # a stage: push its reconstruction matrix through (batch of r)
                    r_s = recon[s].shape[1]
                    over = zeros(r_s)
                    over[s] = recon[s].T.reshape((r_s,) + shapes[s]).contiguous()
                    with torch.no_grad():
                        z = evaluate(over) - evaluate(zeros(1))
                    weights.append(z[:, rows].T.contiguous())
                else:  # an entry: rows of the Jacobian of the (linear) map
                    def f(e: torch.Tensor, s: Any = s) -> torch.Tensor:
                        over = zeros(1)
                        over[s] = e
                        return evaluate(over)[0]

                    e0 = torch.zeros((1,) + shapes[s], dtype=torch.float64)
                    _, vjp = torch.func.vjp(f, e0)
                    eye = torch.zeros((rows.numel(), int(np.prod(shapes[target]))), dtype=torch.float64)
                    eye[torch.arange(rows.numel()), rows] = 1.0
                    (jac,) = torch.func.vmap(vjp)(eye)
                    weights.append(jac.reshape(rows.numel(), -1))
        finally:
            g.gm.float()
        return [source_index[s] for s in srcs], weights, bias

    def linears(weights: list[torch.Tensor], bias: torch.Tensor, src: list[int]) -> nn.ModuleList:
        # Jacobian rows carry float64 round-off where a convolution reads nothing
        return nn.ModuleList(_rows_module(torch.where(w.abs() > 1e-12 * w.abs().max(), w, 0.0),
                                          bias if i == 0 else None,
                                          shapes[entries[k]] if k < len(entries) else None)
                             for i, (w, k) in enumerate(zip(weights, src)))

    def replaced_modules(target: Any, extra: Sequence[Any] = ()) -> tuple[str, ...]:
        anc = _ancestors(target, sources_set) + list(extra)
        names = []
        for n in sorted(set(anc), key=g.index.__getitem__):
            if n in tail_set and n not in sources_set and n not in assigned:
                assigned.add(n)
                if n.op == "call_module":
                    names.append(str(n.target))
        return tuple(names)

    notes: list[str] = []
    for j, m_node in enumerate(stage_nodes):
        chain = chains[m_node]
        pre_node = chain[0].all_input_nodes[0]
        y = rec[m_node]  # (N, n)
        n_dim = y.shape[1]
        r = min(ranks[j], n_dim)
        stage_notes = []
        if r < ranks[j]:
            stage_notes.append(f"rank {ranks[j]} capped at the stage's {n_dim} values (exact)")
        u, s, _ = torch.linalg.svd(y.T, full_matrices=False)
        span = int((s > _SPAN_RTOL * float(s[0])).sum()) if s.numel() and float(s[0]) > 0 else 0
        if span == 0:
            raise UserInputError(f"the calibration outputs of {g.label(m_node)!r} are all zero; "
                                 "start the reduction after it or give other calibration data")
        if r > span:  # dead units (ReLU) or too few samples: more rows would be noise
            stage_notes.append(f"rank {r} capped at the {span} dimensions its calibration outputs span")
            r = span
        energy = float((s * s).sum())
        proj = math.sqrt(max(float((s[r:] ** 2).sum()), 0.0) / energy)
        v = u[:, :r]
        rows = torch.as_tensor(maxvol(v, tol=maxvol_tol))
        inv = torch.linalg.inv(v[rows])
        rec_mat = v @ inv  # (n, r): x ≈ rec_mat @ x[rows]
        deim = float(torch.linalg.matrix_norm(inv, ord=2))
        y_norm = float(torch.linalg.norm(y))
        interp = float(torch.linalg.norm(y - y[:, rows] @ rec_mat.T)) / max(y_norm, 1e-300)
        pool = next((_pool_of(c, g.modules) for c in chain if kind[c] == "maxpool"), None)
        if pool is not None:
            pool_i = next(i for i, c in enumerate(chain) if kind[c] == "maxpool")
            pool_in = chain[pool_i].all_input_nodes[0]
            if len(shapes[pool_in]) != 3:
                raise UserInputError(f"ron handles 2-D max-pools on (C, H, W) values; "
                                     f"{g.label(chain[pool_i])!r} has input {shapes[pool_in]}")
            gather = _pool_windows(pool, shapes[pool_in])[rows]  # (r, k)
        else:
            pool_i = len(chain)
            gather = rows[:, None]
        src_idx, weights, bias = affine_maps(pre_node, gather.reshape(-1))
        if not src_idx:
            raise UserInputError(f"{g.label(m_node)!r} does not depend on the network's input")
        acts = [_activation_module(g, c) for c in chain if kind[c] == "elementwise"]
        n_pre = sum(1 for c in chain[:pool_i] if kind[c] == "elementwise")
        stage = RonStage(src_idx, linears(weights, bias, src_idx), nn.ModuleList(acts[:n_pre]),
                         nn.ModuleList(acts[n_pre:]), r, gather.shape[1])
        stages.append(stage)
        replaced = replaced_modules(pre_node, chain)
        recon[m_node] = rec_mat
        source_index[m_node] = len(entries) + j
        sources_set.add(m_node)
        reports.append(RonStageReport(
            name=g.label(m_node), n=n_dim, rank=(r,), window=int(gather.shape[1]),
            modules=replaced,
            params_after=sum(p.numel() for p in stage.parameters()),
            projection_error=proj, deim_constant=deim, error_bound=deim * proj,
            interpolation_error=interp, propagated_error=float("nan"), notes=tuple(stage_notes)))

    # -- the read-out
    out_node = g.output
    n_out = int(np.prod(shapes[out_node]))
    src_idx, weights, bias = affine_maps(out_node, torch.arange(n_out))
    readout = linears(weights, bias, src_idx)
    head = _head_module(g, entries)
    reduced = ReducedOrderNet(head, nn.ModuleList(stages), readout, src_idx, shapes[out_node]).eval()
    for p in reduced.parameters():
        p.requires_grad_(False)
    readout_modules = replaced_modules(out_node)

    # -- propagated errors on the calibration data
    errs = [0.0] * len(stage_nodes)
    norms = [0.0] * len(stage_nodes)
    out_err = out_norm = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], _CALIB_BATCH):
            vals = reduced.values(x[i:i + _CALIB_BATCH])
            for j, m_node in enumerate(stage_nodes):
                true = rec[m_node][i:i + _CALIB_BATCH]
                approx = vals[len(entries) + j].to(torch.float64) @ recon[m_node].T
                errs[j] += float(((true - approx) ** 2).sum())
                norms[j] += float((true ** 2).sum())
            out = reduced(x[i:i + _CALIB_BATCH]).flatten(1).to(torch.float64)
            true = rec[out_node][i:i + _CALIB_BATCH]
            out_err += float(((true - out) ** 2).sum())
            out_norm += float((true ** 2).sum())
    reports = [
        RonStageReport(**{**rep.__dict__, "propagated_error": math.sqrt(errs[j] / max(norms[j], 1e-300))})
        for j, rep in enumerate(reports)
    ]
    reports.append(RonStageReport(
        name="readout", n=n_out, rank=(), window=1, modules=readout_modules,
        params_after=sum(p.numel() for p in readout.parameters()), projection_error=0.0,
        deim_constant=1.0, error_bound=0.0, interpolation_error=0.0,
        propagated_error=math.sqrt(out_err / max(out_norm, 1e-300)),
        notes=("the output of the reduced network against the original's",)))
    if not stage_nodes:
        notes.append("the tail holds no nonlinearity: it became one exact linear map")
    return RonResult(reduced, g.label(first), tuple(reports), int(x.shape[0]),
                     time.perf_counter() - t0, tuple(notes))


def _record_values(g: _Graph, x: torch.Tensor) -> dict[Any, Any]:
    """Every node's value on a small probe batch (shapes and types)."""
    env: dict = {}
    with torch.no_grad():
        for n in g.nodes:
            if n.op == "placeholder":
                env[n] = x
            elif n.op == "output":
                break
            else:
                try:
                    env[n] = g.run_node(n, env)
                except Exception as exc:
                    raise UserInputError(f"calibration data of shape {tuple(x.shape)} does not fit "
                                         f"the network at {g.label(n)!r}: {exc}") from None
    return env


def _activation_module(g: _Graph, n: Any) -> nn.Module:
    if n.op == "call_module":
        m = copy.deepcopy(g.modules[n.target])
        if hasattr(m, "inplace"):
            m.inplace = False
        return m
    mod = _elementwise_from_function(n.target, tuple(n.args), dict(n.kwargs))
    assert mod is not None
    return mod


def _head_module(g: _Graph, entries: list[Any]) -> nn.Module:
    """A GraphModule computing the entries (as a tuple) from the network's input."""
    fx = g.fx
    graph = fx.Graph()
    env: dict = {}
    needed: set = set()
    for e in entries:
        needed.update(_ancestors(e, set()))
    for n in g.nodes:
        if n in needed or n.op == "placeholder":
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(tuple(env[e] for e in entries))
    head = fx.GraphModule(g.gm, graph, class_name="RonHead")
    head.graph.eliminate_dead_code()
    head.delete_all_unused_submodules()
    head.recompile()
    return head
