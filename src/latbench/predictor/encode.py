"""Layer tables → feature matrices: one row per model, or one row per layer.

Every feature is computed from the columns of :data:`latbench.data.features.LAYER_COLUMNS`
alone, so it works for any CNN the featuriser can trace (ResNet, VGG, MobileNet, networks
with decomposed layers) — nothing here knows about a particular architecture family.

Model-level features are sums and counts over layers grouped by

* operation kind (``conv``, ``dwconv``, ``linear``, ``bn``, ``act``, pools, ``add``, ``concat``,
  ``zero``, other);
* convolution bucket: kernel size (1, 3, 5, 7, other) × strided or not × grouped or not;
* resolution level: ``round(log2(out_h · out_w) / 2)``, i.e. log2 of the output side, so a
  224 input gives levels 7…0 and a 32 input 5…0 — a general stand-in for "stage";

Work and traffic are counted per sample (MACs and bytes divided by the row's ``batch``,
weights read once per batch) and ``log_batch`` carries the batch itself, so the same
architecture looks the same at any batch size — what lets a predictor of one device serve as a
description of the architecture for another (:mod:`latbench.predictor.transfer`) — while a
single-device predictor, which sees one batch, loses nothing. Then there are
log-scaled totals and roofline-style sums ``Σ max(macs / r, bytes)`` at a few
machine balances ``r`` (MACs per byte) — the device's own balance is unknown, so several
are offered and the learner picks — and, from the dataflow graph (schema 3's ``inputs``),
the longest path under the same weights and what lies on it
(:mod:`latbench.predictor.graph`): what bounds a device that runs branches in parallel.

Two more views of the same graph describe what a smarter runtime would still run
(:func:`latbench.predictor.graph.folded_rows`): ``prune_*`` — zeroing ops (``x·0``) and what
only they consume removed, sums with a zero operand passed through; ``fold_*`` — full
constant folding on top (anything fed only by zeros is a constant). Each gives counts, MACs,
bytes, per-level heavy work, per-token counts and its own longest path. A device that runs
the graph as written ignores them; one that prunes or folds is described by them — on the
NAS-Bench-201 reference build the folded view is exactly the live-edge network, and Pixel 3's
TFLite follows the pruned one (Spearman 0.931 → 0.956 at 100 training rows, 0.963 → 0.970 at
900, BENCHMARKS.md).

The tables are processed together (one concatenation, then ``np.bincount``), so encoding
15k models takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latbench.data.features import LAYER_COLUMNS, STRING_COLUMNS
from latbench.exceptions import PredictorError
from latbench.predictor.graph import build_graph, folded_rows, longest_paths, path_rows

__all__ = [
    "LayerBatch",
    "as_layer_batch",
    "OP_KINDS",
    "model_matrix",
    "layer_matrix",
    "layer_cost_proxy",
    "bytes_moved",
    "LAYER_MATRIX_COLUMNS",
    "model_matrix_columns",
    "layer_batch_sizes",
]

#: Operation kinds the encoders know; any other ``op`` of the featuriser counts as "other".
OP_KINDS = ("conv", "dwconv", "linear", "bn", "act", "maxpool", "avgpool", "add", "concat", "zero",
            "other")
_KERNELS = (1, 3, 5, 7)
_N_LEVELS = 9  # resolution levels 0 (1×1) … 8 (256×256 and above)
_BALANCES = (1.0, 4.0, 16.0, 64.0)
_NUMERIC = [c for c in LAYER_COLUMNS if c not in STRING_COLUMNS]
#: Columns a table may lack: ``inputs`` (before schema 3, or hand-made: read as a chain).
_OPTIONAL = ("name", "inputs", "fused", "graph", "batch")


@dataclass(frozen=True)
class LayerBatch:
    """Layer tables of several models, concatenated.

    Attributes
    ----------
    frame : pandas.DataFrame
        All layer rows (columns :data:`~latbench.data.features.LAYER_COLUMNS`).
    group : numpy.ndarray
        For each row of ``frame``, the 0-based index of its model.
    n_models : int
        Number of models (a model may have no layers).
    features : pandas.DataFrame, optional
        :func:`model_matrix` of these models, computed once and carried along (see
        :meth:`with_features`); ``None`` until then.
    """

    frame: pd.DataFrame
    group: np.ndarray
    n_models: int
    features: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.n_models

    def with_features(self) -> "LayerBatch":
        """This batch with its :func:`model_matrix` computed once and attached, so every
        predictor fitted or evaluated on it (or on a :meth:`take` of it) reuses it."""
        if self.features is not None:
            return self
        return LayerBatch(self.frame, self.group, self.n_models, model_matrix(self))

    @classmethod
    def from_features(cls, features: pd.DataFrame) -> "LayerBatch":
        """A batch holding only models' :func:`model_matrix` rows (e.g. read from a cache).

        Predictors that encode whole models (``gbm``, the transfer predictor) work on it;
        those that read layers (``lut``, ``gbm-layer``, ``flops``) refuse it.

        Raises
        ------
        PredictorError
            If the columns are not those :func:`model_matrix` makes.
        """
        if list(features.columns) != model_matrix_columns():
            raise PredictorError("the features are not model_matrix's columns of this latbench; "
                                 "recompute them")
        empty = pd.DataFrame({c: pd.Series(dtype=object if c in STRING_COLUMNS else "int64")
                              for c in LAYER_COLUMNS})
        return cls(empty, np.zeros(0, dtype=np.int64), len(features),
                   features.reset_index(drop=True))

    @property
    def features_only(self) -> bool:
        """True for a batch made by :meth:`from_features` (no layer rows to read)."""
        return self.features is not None and len(self.frame) == 0 and self.n_models > 0 and \
            bool((self.features["n_layers"] > 0).any())

    def require_layers(self, what: str) -> None:
        """Raise :class:`PredictorError` if this batch has no layer rows to give ``what``."""
        if self.features_only:
            raise PredictorError(f"{what} reads layer tables; this batch carries only model "
                                 "features (LayerBatch.from_features)")

    def take(self, index: Sequence[int] | np.ndarray) -> "LayerBatch":
        """The batch of the models at ``index`` (in that order; repeats allowed)."""
        index = np.asarray(index, dtype=np.int64)
        feats = None if self.features is None else \
            self.features.iloc[index].reset_index(drop=True)
        order = np.argsort(self.group, kind="stable")
        g = self.group[order]
        starts = np.searchsorted(g, index, side="left")
        stops = np.searchsorted(g, index, side="right")
        lens = stops - starts
        rows = np.concatenate([order[a:b] for a, b in zip(starts, stops)]) if len(index) else \
            np.zeros(0, dtype=np.int64)
        frame = self.frame.iloc[rows].reset_index(drop=True)
        return LayerBatch(frame, np.repeat(np.arange(len(index)), lens), len(index), feats)


def as_layer_batch(X: object) -> LayerBatch:
    """Normalise a predictor's ``X`` into a :class:`LayerBatch`.

    Parameters
    ----------
    X : LayerBatch, list of pandas.DataFrame, or pandas.DataFrame
        One layer table per model; or one frame of many models' layers with a
        ``variant_id`` (or ``model_id``) column, each distinct id (in order of first
        appearance) being one model.

    Raises
    ------
    PredictorError
        If ``X`` is empty, of another type, or a table lacks layer columns.
    """
    if isinstance(X, LayerBatch):
        return X
    if isinstance(X, pd.DataFrame):
        idcol = next((c for c in ("variant_id", "model_id") if c in X.columns), None)
        if idcol is None:
            raise PredictorError(
                "a single DataFrame X needs a 'variant_id' or 'model_id' column; "
                "pass a list of layer tables for one table per model")
        codes, uniq = pd.factorize(X[idcol], sort=False)
        frame = X.reset_index(drop=True)
        _check_columns(frame)
        return LayerBatch(frame, codes.astype(np.int64), len(uniq))
    if isinstance(X, (list, tuple)):
        if not X:
            raise PredictorError("X is empty: give at least one model's layer table")
        for i, t in enumerate(X):
            if not isinstance(t, pd.DataFrame):
                raise PredictorError(
                    f"X[{i}] is a {type(t).__name__}; each model must be a layer table "
                    "(pandas.DataFrame from latbench.data.features.layer_table)")
        lens = np.array([len(t) for t in X], dtype=np.int64)
        frame = pd.concat([t[[c for c in LAYER_COLUMNS if c in t.columns]] for t in X],
                          ignore_index=True)
        _check_columns(frame)
        return LayerBatch(frame, np.repeat(np.arange(len(X)), lens), len(X))
    raise PredictorError(
        f"X is a {type(X).__name__}; give a list of layer tables (one per model)")


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in LAYER_COLUMNS if c not in _OPTIONAL and c not in frame.columns]
    if missing:
        raise PredictorError(f"layer tables lack the columns {', '.join(missing)}; "
                             "make them with latbench.data.features.layer_table")


def _op_codes(op: pd.Series) -> np.ndarray:
    lookup = {k: i for i, k in enumerate(OP_KINDS)}
    other = lookup["other"]
    return op.astype(str).map(lambda o: lookup.get(o, other)).to_numpy(dtype=np.int64)


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    return frame[col].to_numpy(dtype=np.float64)


def layer_batch_sizes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's batch size (``batch``; 1 where a table lacks it or holds no value)."""
    if "batch" not in frame.columns:
        return np.ones(len(frame))
    b = pd.to_numeric(frame["batch"], errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isfinite(b) & (b >= 1), b, 1.0)


def bytes_moved(frame: pd.DataFrame) -> np.ndarray:
    """Bytes each layer reads and writes: activations in and out plus its weights."""
    return _num(frame, "act_in_bytes") + _num(frame, "act_out_bytes") + _num(frame, "weight_bytes")


def layer_cost_proxy(frame: pd.DataFrame, balance: float = 16.0) -> np.ndarray:
    """Roofline-style cost of each layer: ``max(macs / balance, bytes moved)`` (bytes units)."""
    return np.maximum(_num(frame, "macs") / balance, bytes_moved(frame))


def _conv_buckets(frame: pd.DataFrame, op: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bucket id of each conv-like layer (−1 for others) and the bucket names."""
    k = np.maximum(_num(frame, "kernel_h"), _num(frame, "kernel_w")).astype(np.int64)
    kidx = np.full(len(frame), len(_KERNELS), dtype=np.int64)
    for i, kk in enumerate(_KERNELS):
        kidx[k == kk] = i
    strided = (np.maximum(_num(frame, "stride_h"), _num(frame, "stride_w")) > 1).astype(np.int64)
    grouped = ((op == OP_KINDS.index("dwconv")) | (_num(frame, "groups") > 1)).astype(np.int64)
    is_conv = np.isin(op, [OP_KINDS.index("conv"), OP_KINDS.index("dwconv")])
    bucket = np.where(is_conv, (kidx * 2 + strided) * 2 + grouped, -1)
    names = []
    for kname in [str(x) for x in _KERNELS] + ["other"]:
        for s in ("s1", "s2"):
            for g in ("dense", "grouped"):
                names.append(f"k{kname}_{s}_{g}")
    return bucket, names


def _levels(frame: pd.DataFrame) -> np.ndarray:
    area = np.maximum(_num(frame, "out_h") * _num(frame, "out_w"), 1.0)
    return np.clip(np.rint(np.log2(area) / 2.0), 0, _N_LEVELS - 1).astype(np.int64)


def model_matrix(X: object) -> pd.DataFrame:
    """One row of model-level features per model (see the module docstring).

    Parameters
    ----------
    X : see :func:`as_layer_batch`

    Returns
    -------
    pandas.DataFrame
        ``n_models`` rows; the same columns, in the same order, for any input.
    """
    b = as_layer_batch(X)
    if b.features is not None:
        return b.features
    f, g, n = b.frame, b.group, b.n_models
    op = _op_codes(f["op"]) if len(f) else np.zeros(0, dtype=np.int64)
    # Per sample: work and traffic divided by the batch (weights are read once per batch).
    bsz = layer_batch_sizes(f)
    macs = _num(f, "macs") / bsz
    wbytes = _num(f, "weight_bytes") / bsz
    abytes = (_num(f, "act_in_bytes") + _num(f, "act_out_bytes")) / bsz
    moved = abytes + wbytes
    ones = np.ones(len(f))

    def gsum(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        w = values if mask is None else values * mask
        return np.bincount(g, weights=w, minlength=n)[:n] if len(g) else np.zeros(n)

    cols: dict[str, np.ndarray] = {}
    cols["n_layers"] = gsum(ones)
    top = np.zeros(n)
    if len(g):
        np.maximum.at(top, g, bsz)
    cols["log_batch"] = np.log(np.maximum(top, 1.0))
    for name, v in (("macs", macs), ("params", _num(f, "params")), ("weight_bytes", wbytes),
                    ("act_bytes", abytes)):
        cols[f"log_{name}"] = np.log1p(gsum(v))
    for bal in _BALANCES:
        cols[f"log_roofline_b{int(bal)}"] = np.log1p(gsum(np.maximum(macs / bal, moved)))
    for i, kind in enumerate(OP_KINDS):
        m = (op == i).astype(np.float64)
        cols[f"n_{kind}"] = gsum(ones, m)
        cols[f"bytes_{kind}"] = gsum(moved, m)
        if kind in ("conv", "dwconv", "linear"):
            cols[f"macs_{kind}"] = gsum(macs, m)
    bucket, bnames = _conv_buckets(f, op)
    for i, bname in enumerate(bnames):
        m = (bucket == i).astype(np.float64)
        cols[f"n_conv_{bname}"] = gsum(ones, m)
        cols[f"macs_conv_{bname}"] = gsum(macs, m)
    level = _levels(f)
    heavy = np.isin(op, [OP_KINDS.index(k) for k in ("conv", "dwconv", "linear")])
    pool = np.isin(op, [OP_KINDS.index(k) for k in ("maxpool", "avgpool")])
    light = ~(heavy | pool)
    for lv in range(_N_LEVELS):
        at = level == lv
        for gname, gm in (("heavy", heavy), ("pool", pool), ("light", light)):
            m = (at & gm).astype(np.float64)
            cols[f"L{lv}_n_{gname}"] = gsum(ones, m)
            cols[f"L{lv}_bytes_{gname}"] = gsum(moved, m)
            if gname == "heavy":
                cols[f"L{lv}_macs_{gname}"] = gsum(macs, m)
    tok = _tokens(f, op)
    if len(f) > 1:
        same = g[1:] == g[:-1]
        pair = np.where(same, tok[:-1] * len(_TOKENS) + tok[1:], -1)
        pg = g[1:]
    else:
        pair, pg = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    for a, ta in enumerate(_TOKENS):
        for c, tc in enumerate(_TOKENS):
            m = pair == a * len(_TOKENS) + c
            cols[f"seq_{ta}>{tc}"] = (np.bincount(pg[m], minlength=n)[:n].astype(np.float64)
                                       if m.any() else np.zeros(n))
    graph = build_graph(f, g, n)
    zero, add = op == OP_KINDS.index("zero"), op == OP_KINDS.index("add")
    views = {}
    # What survives pruning x·0 (and what only it consumes) and full constant folding (see
    # graph.folded_rows): devices follow one view or the other, the learner finds which.
    for view, propagate in (("prune", False), ("fold", True)):
        run = folded_rows(graph, zero, add, propagate=propagate) if len(f) else np.zeros(0, dtype=bool)
        views[view] = run
        runf = run.astype(np.float64)
        cols[f"{view}_n_layers"] = gsum(ones, runf)
        cols[f"{view}_log_macs"] = np.log1p(gsum(macs, runf))
        cols[f"{view}_log_bytes"] = np.log1p(gsum(moved, runf))
        cols[f"{view}_log_roofline_b16"] = np.log1p(gsum(np.maximum(macs / 16.0, moved), runf))
        for gname, gm in (("heavy", heavy), ("pool", pool), ("light", light)):
            cols[f"{view}_n_{gname}"] = gsum(ones, runf * gm)
        for lv in range(_N_LEVELS):
            m = runf * (level == lv) * heavy
            cols[f"{view}_L{lv}_n_heavy"] = gsum(ones, m)
            cols[f"{view}_L{lv}_macs_heavy"] = gsum(macs, m)
        for t, tname in enumerate(_TOKENS):
            cols[f"{view}_n_{tname}"] = gsum(ones, runf * (tok == t))
    cols.update(_path_features(graph, op, tok, macs, moved, heavy | pool, views, gsum))
    return pd.DataFrame(cols)


def _path_features(graph, op: np.ndarray, tok: np.ndarray, macs: np.ndarray,
                   moved: np.ndarray, work: np.ndarray, views: dict[str, np.ndarray],
                   gsum) -> dict[str, np.ndarray]:
    """Longest-path features (see :mod:`latbench.predictor.graph`)."""
    weights = {"hops": np.ones(len(op)), "work": work.astype(np.float64), "macs": macs,
               "bytes": moved}
    for bal in _BALANCES:
        weights[f"roofline_b{int(bal)}"] = np.maximum(macs / bal, moved)
    for view, run in views.items():
        weights[f"{view}_work"] = work * run
        weights[f"{view}_roofline_b16"] = np.maximum(macs / 16.0, moved) * run
    names = list(weights)
    W = np.stack([weights[k] for k in names], axis=1) if len(op) else np.zeros((0, len(names)))
    length, via = longest_paths(graph, W)
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        total, on = path_rows(graph, length[:, j], via[:, j])
        whole = gsum(W[:, j])
        cols[f"cp_{name}"] = np.log1p(total)
        cols[f"cp_share_{name}"] = np.divide(total, whole, out=np.zeros_like(total), where=whole > 0)
        if name in _PATH_MIX:
            for t, tname in enumerate(_TOKENS):
                cols[f"cp_{name}_n_{tname}"] = gsum(on * (tok == t))
            cols[f"cp_{name}_macs"] = np.log1p(gsum(macs, on))
            cols[f"cp_{name}_bytes"] = np.log1p(gsum(moved, on))
    return cols


_COLUMNS_CACHE: list[str] = []


def model_matrix_columns() -> list[str]:
    """The columns :func:`model_matrix` makes, in order."""
    if not _COLUMNS_CACHE:
        _COLUMNS_CACHE.extend(_empty_matrix_columns())
    return list(_COLUMNS_CACHE)


def _empty_matrix_columns() -> list[str]:
    # The columns do not depend on the values: encode one made-up layer.
    row = {c: ("" if c in STRING_COLUMNS else 1) for c in LAYER_COLUMNS}
    row.update(name="x", op="conv")
    return list(model_matrix([pd.DataFrame([row], columns=LAYER_COLUMNS)]).columns)


#: Weightings whose longest path is also described by what lies on it.
_PATH_MIX = ("work", "roofline_b16")


#: Coarse layer tokens for execution-order pairs (a conv's token names its kernel size).
_TOKENS = ("conv1", "conv3", "convk", "dwconv", "linear", "bn", "act", "maxpool", "avgpool",
           "add", "concat", "zero", "other")


def _tokens(frame: pd.DataFrame, op: np.ndarray) -> np.ndarray:
    k = np.maximum(_num(frame, "kernel_h"), _num(frame, "kernel_w")) if len(frame) else np.zeros(0)
    names = np.array(OP_KINDS)[op] if len(op) else np.zeros(0, dtype=str)
    tok = np.array([_TOKENS.index(n) if n in _TOKENS else _TOKENS.index("other") for n in names],
                   dtype=np.int64)
    conv = names == "conv"
    tok[conv & (k == 1)] = _TOKENS.index("conv1")
    tok[conv & (k == 3)] = _TOKENS.index("conv3")
    tok[conv & (k != 1) & (k != 3)] = _TOKENS.index("convk")
    return tok


#: Columns of :func:`layer_matrix`, in order.
LAYER_MATRIX_COLUMNS = [
    "op_code", "kernel_h", "kernel_w", "stride_h", "stride_w", "groups", "grouped",
    "in_channels", "out_channels", "in_h", "in_w", "out_h", "out_w", "log_macs", "log_params",
    "log_act_in", "log_act_out", "log_roofline_b16",
]


def layer_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """One row of features per layer of ``frame`` (the layer alone, no context).

    ``op_code`` is the index of the layer's kind in :data:`OP_KINDS`; sizes are logged
    where they span orders of magnitude.
    """
    op = _op_codes(frame["op"]) if len(frame) else np.zeros(0, dtype=np.int64)
    out = pd.DataFrame({
        "op_code": op.astype(np.float64),
        "kernel_h": _num(frame, "kernel_h"), "kernel_w": _num(frame, "kernel_w"),
        "stride_h": _num(frame, "stride_h"), "stride_w": _num(frame, "stride_w"),
        "groups": _num(frame, "groups"),
        "grouped": (_num(frame, "groups") > 1).astype(np.float64),
        "in_channels": _num(frame, "in_channels"), "out_channels": _num(frame, "out_channels"),
        "in_h": _num(frame, "in_h"), "in_w": _num(frame, "in_w"),
        "out_h": _num(frame, "out_h"), "out_w": _num(frame, "out_w"),
        "log_macs": np.log1p(_num(frame, "macs")), "log_params": np.log1p(_num(frame, "params")),
        "log_act_in": np.log1p(_num(frame, "act_in_bytes")),
        "log_act_out": np.log1p(_num(frame, "act_out_bytes")),
        "log_roofline_b16": np.log1p(layer_cost_proxy(frame, 16.0)),
    })
    return out[LAYER_MATRIX_COLUMNS]
