"""Critical paths of the dataflow graph in layer tables (feature schema 3's ``inputs``).

A runtime that executes independent branches at the same time — TensorFlow's inter-op thread
pool on a desktop CPU, several GPU streams, an NPU with parallel engines — is bound by the
longest chain of dependent layers, not by the sum of all layers. Sums alone cannot tell
apart two cells with the same operations wired in series or in parallel. This module gives,
for many models at once, the longest path under several per-layer weights (layer count,
heavy layers, MACs, bytes moved, roofline costs) and what lies on it, so a learner can find
how much of the parallelism the device exploits. On a sequential runtime the path features
are just redundant with the sums.

Every model's rows are processed together by their position inside the model (a row's
producers always come earlier), so the cost is one vectorised step per position — about a
second for 15k NAS-Bench-201 networks.

A table without edges (all ``inputs`` empty, as in tables stored before schema 3 or
hand-made ones) is taken as a chain in row order: its longest path is its sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from latbench.data.features import parse_inputs

__all__ = ["Graph", "build_graph", "longest_paths", "path_rows", "folded_rows"]


@dataclass(frozen=True)
class Graph:
    """The producers of every row of a :class:`~latbench.predictor.encode.LayerBatch`.

    Attributes
    ----------
    preds : numpy.ndarray, shape (n_rows, arity)
        Row indices (into the batch's frame) of each row's producers; ``n_rows`` (a sentinel
        whose path length is 0) pads rows with fewer producers.
    levels : list of numpy.ndarray
        Rows grouped by their position inside their model: every producer of a row in
        ``levels[k]`` is in an earlier level.
    group : numpy.ndarray
        Model index of each row.
    n_models : int
    """

    preds: np.ndarray
    levels: list[np.ndarray]
    group: np.ndarray
    n_models: int


def _parse_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Padded local producer indices (−1 = none) and each row's number of producers."""
    codes, uniq = pd.factorize(values.astype(object).where(values.notna(), "").astype(str), sort=False)
    parsed = [parse_inputs(u) for u in uniq]
    arity = max((len(p) for p in parsed), default=0)
    table = np.full((len(parsed), max(arity, 1)), -1, dtype=np.int64)
    for i, p in enumerate(parsed):
        table[i, : len(p)] = p
    counts = np.array([len(p) for p in parsed], dtype=np.int64)
    if len(codes) == 0:
        return np.full((0, 1), -1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return table[codes], counts[codes]


def build_graph(frame: pd.DataFrame, group: np.ndarray, n_models: int) -> Graph:
    """The producer graph of a batch's rows (``inputs`` column; chains where it is missing)."""
    n = len(frame)
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    first = np.searchsorted(sorted_group, np.arange(n_models), side="left")
    local = np.empty(n, dtype=np.int64)
    local[order] = np.arange(n) - first[sorted_group]
    if "inputs" in frame.columns and n:
        loc, count = _parse_column(frame["inputs"])
    else:
        loc, count = np.full((n, 1), -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    # Models without a single edge are chains (tables from before schema 3).
    edges = np.bincount(group, weights=(count > 0).astype(np.float64), minlength=n_models)[:n_models]
    chain = edges[group] == 0
    loc = loc.copy()
    loc[chain, 0] = local[chain] - 1
    if loc.shape[1] > 1:
        loc[chain, 1:] = -1
    # Local → frame index; anything not strictly earlier in its own model → sentinel.
    sizes = np.bincount(group, minlength=n_models)[:n_models]
    valid = (loc >= 0) & (loc < local[:, None]) & (loc < sizes[group][:, None])
    gpos = np.where(valid, first[group][:, None] + np.where(valid, loc, 0), 0)
    preds = np.where(valid, order[np.minimum(gpos, max(n - 1, 0))] if n else gpos, n)
    by_pos = np.argsort(local, kind="stable")
    bounds = np.searchsorted(local[by_pos], np.arange(int(local.max(initial=-1)) + 2))
    levels = [by_pos[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return Graph(preds.astype(np.int64), levels, group, n_models)


def longest_paths(graph: Graph, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest weighted path ending at each row, for several weightings at once.

    Parameters
    ----------
    weights : numpy.ndarray, shape (n_rows, k)
        Non-negative weight of each row under each of ``k`` weightings.

    Returns
    -------
    length : numpy.ndarray, shape (n_rows, k)
        Path weight up to and including the row.
    via : numpy.ndarray, shape (n_rows, k)
        The producer on that path (``n_rows`` where the path starts at the row).
    """
    n, k = weights.shape
    length = np.zeros((n + 1, k))  # the last row is the sentinel: length 0
    via = np.full((n, k), n, dtype=np.int64)
    for rows in graph.levels:
        p = graph.preds[rows]  # (r, arity)
        cand = length[p]  # (r, arity, k)
        best = cand.argmax(axis=1)  # (r, k)
        length[rows] = weights[rows] + cand.max(axis=1)
        via[rows] = p[np.arange(len(rows))[:, None], best]
    return length[:n], via


def path_rows(graph: Graph, length: np.ndarray, via: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each model's longest path under one weighting: its total and a 0/1 mask of its rows.

    Parameters
    ----------
    length, via : numpy.ndarray, shape (n_rows,)
        One column of :func:`longest_paths`' output.
    """
    n = len(length)
    total = np.zeros(graph.n_models)
    on = np.zeros(n + 1)
    if n == 0:
        return total, on[:n]
    np.maximum.at(total, graph.group, length)
    # The end row of each model: its last row reaching the model's maximum (rows after the
    # heaviest one that add nothing, like a final add, are still on the path).
    is_end = length >= total[graph.group] - 1e-9 * np.maximum(total[graph.group], 1.0)
    end = np.full(graph.n_models, -1, dtype=np.int64)
    rows = np.nonzero(is_end)[0]
    np.maximum.at(end, graph.group[rows], rows)
    end[(total <= 0) | (end < 0)] = n
    cur = end
    nxt = np.append(via, n)
    while True:
        live = cur < n
        if not live.any():
            break
        on[cur[live]] = 1.0
        cur = np.where(live, nxt[cur], n)
    return total, on[:n]


def folded_rows(graph: Graph, zero: np.ndarray, add: np.ndarray, *,
                propagate: bool = True) -> np.ndarray:
    """Rows a constant-folding runtime would still run (True) — a general view of dead code.

    A runtime that folds constants (TFLite's converter, graph compilers) computes at build
    time every value that does not depend on the input, and drops what no output needs:

    * a row is *constant* when it is a zeroing op (``zero``: ``x * 0`` folds to zeros) or
      when every one of its producers is constant;
    * a sum (``add``) with only one non-constant operand is the identity or a bias add: it
      passes its operand through and needs no kernel of its own;
    * a row is *needed* when it is the model's last row, or a non-constant producer of a
      needed row (identity sums pass the need on to their operand).

    With ``propagate=False`` only the zeroing ops themselves count as constant (a build that
    drops ``x·0`` and what only it consumes, but still runs an operation whose input happens to
    be all zeros). Runtimes that run the graph as written ignore all this; the predictors'
    encoders offer the three views (every row, pruned, folded), so a learner can tell which
    one a device follows — on NAS-Bench-201 networks measured with every edge built, Pixel 3's
    TFLite runs cells whose output is a skip as if they were not there, yet still runs a
    convolution on a node that only ``none`` edges feed.

    Parameters
    ----------
    zero, add : numpy.ndarray of bool, shape (n_rows,)
        Which rows are zeroing ops and which are sums of tensors.
    propagate : bool
        Whether rows fed only by constants are constant too.

    Returns
    -------
    numpy.ndarray of bool, shape (n_rows,)
    """
    n = len(zero)
    if n == 0:
        return np.zeros(0, dtype=bool)
    const = np.zeros(n + 1, dtype=bool)
    const[n] = True  # the sentinel counts as constant in "all producers constant"
    has_pred = (graph.preds < n).any(axis=1)
    for rows in graph.levels:
        p = graph.preds[rows]
        const[rows] = zero[rows] | (propagate & has_pred[rows] & const[p].all(axis=1))
    const = const[:n]
    live_in = ((graph.preds < n) & ~np.append(const, True)[graph.preds]).sum(axis=1)
    passthrough = add & ~const & (live_in <= 1)
    need = np.zeros(n + 1, dtype=bool)
    last = np.full(graph.n_models, -1, dtype=np.int64)
    np.maximum.at(last, graph.group, np.arange(n))
    need[last[last >= 0]] = True
    cnst = np.append(const, True)
    for rows in reversed(graph.levels):
        r = rows[need[rows] & ~const[rows]]
        if len(r):
            p = graph.preds[r].ravel()
            need[p[~cnst[p]]] = True
    need[n] = False
    return need[:n] & ~const & ~passthrough
