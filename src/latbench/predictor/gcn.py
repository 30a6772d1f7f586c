"""A graph convolutional latency predictor on the layer graph (kind ``gcn``).

After BRP-NAS (Dudziak, Chau, Abdelfattah, Lee, Kim, Lane, "BRP-NAS: Prediction-based NAS
using GCNs", NeurIPS 2020), which predicts NAS-Bench-201 latency with a GCN over the cell
graph, and the LETI part of the source thesis. Here the graph is the one latbench records
for any network: one node per row of the layer table, an edge from each producer in the row's
``inputs`` (feature schema 3; tables without edges are chains), so the same predictor works
for NB201 cells, ResNets or decomposed models alike.

Node features (all from :data:`latbench.data.features.LAYER_COLUMNS`): the operation kind
(one-hot over :data:`~latbench.predictor.encode.OP_KINDS`), ``log1p`` of MACs, parameters,
weight and activation bytes, channels and spatial sizes, kernel, stride, grouping and bias
flags; standardised on the training nodes.

Network: an input projection, ``n_layers`` directed graph convolutions with residual
connections — each node mixes its own state with the mean of its producers' and the mean of
its consumers' (separate weights: a DAG's direction matters for latency), ReLU — then the
sum (divided by the mean training graph size) and the maximum over nodes, and a two-layer
head predicting standardised ``log(latency)`` (errors become relative, as ±10 % accuracy
measures them). Trained with Adam and a cosine learning rate for ``max_steps`` mini-batches
of ``batch_size`` graphs, seeded: the same data and seed give the same predictor.

The fitted state is plain data — numpy arrays (``state_``, the network's ``state_dict``;
feature and target scaling) and JSON-able hyper-parameters — so a pickle-free format can
store it; torch is imported only to fit and predict.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from latbench.exceptions import PredictorError
from latbench.predictor.base import LatencyPredictor
from latbench.predictor.encode import OP_KINDS, LayerBatch
from latbench.predictor.graph import build_graph

__all__ = ["GCNPredictor", "node_features", "NODE_FEATURES"]

_LOG_COLUMNS = ("macs", "params", "weight_bytes", "act_in_bytes", "act_out_bytes", "in_channels",
                "out_channels")
#: Names of the node feature columns, in order.
NODE_FEATURES: tuple[str, ...] = (
    tuple(f"op_{k}" for k in OP_KINDS)
    + tuple(f"log_{c}" for c in _LOG_COLUMNS)
    + ("log_in_hw", "log_out_hw", "kernel_h", "kernel_w", "stride", "grouped", "depthwise", "bias",
       "log_roofline16")
)


def node_features(frame) -> np.ndarray:
    """``(n_rows, len(NODE_FEATURES))`` float32 node features of a layer frame (unscaled)."""
    n = len(frame)
    out = np.zeros((n, len(NODE_FEATURES)), dtype=np.float64)
    op = frame["op"].astype(str).to_numpy()
    known = np.isin(op, OP_KINDS[:-1])
    for i, k in enumerate(OP_KINDS[:-1]):
        out[:, i] = op == k
    out[:, len(OP_KINDS) - 1] = ~known
    col = len(OP_KINDS)

    def num(c: str) -> np.ndarray:
        return frame[c].to_numpy(dtype=np.float64)

    for c in _LOG_COLUMNS:
        out[:, col] = np.log1p(np.maximum(num(c), 0.0))
        col += 1
    out[:, col] = np.log1p(num("in_h") * num("in_w"))
    out[:, col + 1] = np.log1p(num("out_h") * num("out_w"))
    out[:, col + 2] = num("kernel_h")
    out[:, col + 3] = num("kernel_w")
    out[:, col + 4] = np.maximum(num("stride_h"), num("stride_w"))
    groups = num("groups")
    out[:, col + 5] = groups > 1
    out[:, col + 6] = (groups > 1) & (groups == num("in_channels"))
    out[:, col + 7] = num("bias") > 0
    moved = num("weight_bytes") + num("act_in_bytes") + num("act_out_bytes")
    out[:, col + 8] = np.log1p(np.maximum(num("macs") / 16.0, moved))
    return out.astype(np.float32)


class _Graphs:
    """A batch's nodes sorted by model, its directed edges, and per-model node ranges."""

    def __init__(self, batch: LayerBatch) -> None:
        order = np.argsort(batch.group, kind="stable")
        frame = batch.frame.iloc[order].reset_index(drop=True)
        group = batch.group[order]
        self.n_models = batch.n_models
        self.x = node_features(frame)
        g = build_graph(frame, group, batch.n_models)
        n = len(frame)
        dst = np.repeat(np.arange(n), g.preds.shape[1])
        src = g.preds.reshape(-1)
        keep = src < n
        self.src, self.dst = src[keep], dst[keep]
        self.count = np.bincount(group, minlength=batch.n_models)[: batch.n_models]
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)
        edge_model = group[self.dst] if len(self.dst) else np.zeros(0, dtype=np.int64)
        self.edge_order = np.argsort(edge_model, kind="stable")
        self.edge_count = np.bincount(edge_model, minlength=batch.n_models)[: batch.n_models]
        self.edge_start = np.concatenate([[0], np.cumsum(self.edge_count)[:-1]]).astype(np.int64)

    def select(self, models: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nodes, edges (renumbered) and node→position-in-``models`` of a mini-batch."""
        counts = self.count[models]
        nodes = np.concatenate([np.arange(s, s + c) for s, c in zip(self.start[models], counts)]) \
            if len(models) else np.zeros(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(models)), counts)
        edges = np.concatenate([self.edge_order[s:s + c] for s, c in
                                zip(self.edge_start[models], self.edge_count[models])]) \
            if len(models) else np.zeros(0, dtype=np.int64)
        shift = np.repeat(np.cumsum(counts) - counts - self.start[models], self.edge_count[models])
        return nodes, self.src[edges] + shift, self.dst[edges] + shift, owner


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Torch intra-op threads set to ``n`` inside the block, the previous count restored after."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _network(d_in: int, hidden: int, n_layers: int):
    import torch
    from torch import nn

    class GraphConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self_ = nn.Linear(hidden, hidden)
            self.from_producers = nn.Linear(hidden, hidden, bias=False)
            self.from_consumers = nn.Linear(hidden, hidden, bias=False)

        def forward(self, h, src, dst, inv_in, inv_out):
            agg_in = torch.zeros_like(h).index_add_(0, dst, h[src]) * inv_in
            agg_out = torch.zeros_like(h).index_add_(0, src, h[dst]) * inv_out
            return self.self_(h) + self.from_producers(agg_in) + self.from_consumers(agg_out)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(d_in, hidden)
            self.convs = nn.ModuleList(GraphConv() for _ in range(n_layers))
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x, src, dst, owner, n_graphs: int, pool_scale: float):
            n = x.shape[0]
            ones = torch.ones(len(dst), dtype=x.dtype)
            deg_in = torch.zeros(n, dtype=x.dtype).index_add_(0, dst, ones)
            deg_out = torch.zeros(n, dtype=x.dtype).index_add_(0, src, ones)
            inv_in = (1.0 / deg_in.clamp_min(1.0))[:, None]
            inv_out = (1.0 / deg_out.clamp_min(1.0))[:, None]
            h = torch.relu(self.inp(x))
            for conv in self.convs:
                h = h + torch.relu(conv(h, src, dst, inv_in, inv_out))
            total = torch.zeros((n_graphs, h.shape[1]), dtype=h.dtype).index_add_(0, owner, h)
            peak = torch.full((n_graphs, h.shape[1]), -math.inf, dtype=h.dtype).scatter_reduce(
                0, owner[:, None].expand(-1, h.shape[1]), h, "amax", include_self=True)
            peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
            return self.head(torch.cat([total / pool_scale, peak], dim=1))[:, 0]

    return Net()


class GCNPredictor(LatencyPredictor):
    """Graph convolutional network on the layer graph (see the module docstring).

    Parameters
    ----------
    hidden : int
        Width of node states.
    n_layers : int
        Graph convolutions (each sees one more hop of producers and consumers).
    max_steps : int
        Optimisation steps (mini-batches), whatever the training size.
    batch_size : int
        Graphs per step.
    learning_rate, weight_decay : float
        Adam's (decoupled, AdamW) parameters; the rate decays on a cosine to 0.
    n_jobs : int
        Torch intra-op threads while fitting and predicting (the previous count is restored
        afterwards). 1 by default: on a small, loaded CPU two threads made a step 18× slower
        (OpenMP spin-waits; 0.90 s against 0.05 s in one measurement).
    random_state : int
        Seed of the initialisation and the mini-batch order.

    Attributes
    ----------
    state_ : dict of str → numpy.ndarray
        The fitted network's ``state_dict``.
    x_mean_, x_scale_ : numpy.ndarray
        Node feature standardisation.
    y_mean_, y_scale_ : float
        Standardisation of ``log(latency)``.
    pool_scale_ : float
        Mean training graph size (the sum pooling's divisor).
    train_loss_ : float
        Mean squared error (standardised log scale) of the last 50 steps.
    """

    def __init__(self, *, hidden: int = 64, n_layers: int = 4, max_steps: int = 1500,
                 batch_size: int = 32, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                 n_jobs: int = 1, random_state: int = 0) -> None:
        self.hidden = hidden
        self.n_layers = n_layers
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self) -> None:
        for name in ("hidden", "n_layers", "max_steps", "batch_size", "n_jobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise PredictorError(f"{name} must be an int ≥ 1, got {v!r}")
        if not 0 < self.learning_rate <= 1 or self.weight_decay < 0:
            raise PredictorError("learning_rate must be in (0, 1] and weight_decay ≥ 0")

    def _tensors(self, graphs: _Graphs, models: np.ndarray):
        import torch

        nodes, src, dst, owner = graphs.select(models)
        x = (graphs.x[nodes] - self.x_mean_) / self.x_scale_
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                torch.from_numpy(src.astype(np.int64)), torch.from_numpy(dst.astype(np.int64)),
                torch.from_numpy(owner.astype(np.int64)))

    def _fit(self, batch: LayerBatch, y: np.ndarray) -> None:
        with _threads(self.n_jobs):
            self._fit_graphs(_Graphs(batch), batch.n_models, y)

    def _fit_graphs(self, graphs: _Graphs, n_models: int, y: np.ndarray) -> None:
        import torch

        if len(graphs.x) == 0:
            raise PredictorError("the training models have no layers")
        self.x_mean_ = graphs.x.mean(axis=0).astype(np.float32)
        sd = graphs.x.std(axis=0)
        self.x_scale_ = np.where(sd > 0, sd, 1.0).astype(np.float32)
        t = np.log(y)
        self.y_mean_ = float(t.mean())
        self.y_scale_ = float(t.std()) if t.std() > 0 else 1.0
        self.pool_scale_ = float(max(graphs.count.mean(), 1.0))
        target = torch.from_numpy(((t - self.y_mean_) / self.y_scale_).astype(np.float32))
        rng = np.random.default_rng(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            net = _network(graphs.x.shape[1], self.hidden, self.n_layers)
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_steps)
        n, b = n_models, min(self.batch_size, n_models)
        perm, pos, losses = rng.permutation(n), 0, []
        net.train()
        for _ in range(self.max_steps):
            if pos + b > n:
                perm, pos = rng.permutation(n), 0
            models = perm[pos:pos + b]
            pos += b
            x, src, dst, owner = self._tensors(graphs, models)
            pred = net(x, src, dst, owner, len(models), self.pool_scale_)
            loss = torch.mean((pred - target[torch.from_numpy(models)]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.train_loss_ = float(np.mean(losses[-50:]))
        self.state_ = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

    def _predict(self, batch: LayerBatch) -> np.ndarray:
        with _threads(self.n_jobs):
            return self._predict_graphs(_Graphs(batch), batch.n_models)

    def _predict_graphs(self, graphs: _Graphs, n_models: int) -> np.ndarray:
        import torch

        net = _network(len(NODE_FEATURES), self.hidden, self.n_layers)
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.state_.items()})
        net.eval()
        out = np.empty(n_models, dtype=np.float64)
        chunk = 512
        with torch.no_grad():
            for i in range(0, n_models, chunk):
                models = np.arange(i, min(i + chunk, n_models))
                x, src, dst, owner = self._tensors(graphs, models)
                out[models] = net(x, src, dst, owner, len(models), self.pool_scale_).numpy()
        return np.exp(out * self.y_scale_ + self.y_mean_)
