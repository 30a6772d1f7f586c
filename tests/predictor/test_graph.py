"""Critical paths of the dataflow graph: hand-checked lengths, chains, batches, features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latbench.data.features import LAYER_COLUMNS
from latbench.models.nb201 import build_nb201
from latbench.data.features import layer_table
from latbench.predictor.encode import as_layer_batch, model_matrix
from latbench.predictor.graph import build_graph, longest_paths, path_rows
from tests.predictor._synth import conv_row, elem_row


def _diamond(heavy: int) -> pd.DataFrame:
    """stem → (branch a, branch b) → add: branch a has ``heavy`` times branch b's MACs."""
    rows = [conv_row(3, 8, 3, 8), conv_row(8, 8, 1, 8), conv_row(8, 8, 1, 8), elem_row("add", 8, 8)]
    rows[1]["macs"] *= heavy
    for r, inputs in zip(rows, ["", "0", "0", "1,2"]):
        r["inputs"] = inputs
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def _paths(tables, weights_of):
    b = as_layer_batch(tables)
    g = build_graph(b.frame, b.group, b.n_models)
    w = weights_of(b.frame).reshape(-1, 1)
    length, via = longest_paths(g, w)
    return path_rows(g, length[:, 0], via[:, 0])


def test_longest_path_takes_the_heavier_branch_and_marks_its_rows():
    t = _diamond(heavy=5)
    total, on = _paths([t], lambda f: f["macs"].to_numpy(dtype=float))
    m = t["macs"].to_numpy()
    assert total[0] == m[0] + m[1]  # the add has no MACs
    assert on.tolist() == [1.0, 1.0, 0.0, 1.0]
    hops, _ = _paths([t], lambda f: np.ones(len(f)))
    assert hops[0] == 3  # stem → one branch → add


def test_tables_without_edges_are_chains_and_models_stay_separate():
    a, b = _diamond(1), _diamond(7)
    a["inputs"] = ""  # e.g. a table stored before schema 3: a chain, path = sum
    total, on = _paths([a, b], lambda f: f["macs"].to_numpy(dtype=float))
    assert total[0] == a["macs"].sum()
    assert total[1] == b["macs"].iloc[0] + b["macs"].iloc[1]
    assert on.tolist() == [1, 1, 1, 1, 1, 1, 0, 1]


def test_series_and_parallel_cells_differ_only_in_path_features():
    # Three 3×3 convs per cell: 0→1→2→3 in series, or 0→1→3 beside 0→3.
    series = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"
    parallel = "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|"
    ts = [layer_table(build_nb201(a), (1, 3, 32, 32)) for a in (series, parallel)]
    M = model_matrix(ts)
    assert M.loc[0, "macs_conv"] == M.loc[1, "macs_conv"]
    assert M.loc[0, "cp_macs"] > M.loc[1, "cp_macs"]
    assert M.loc[0, "cp_share_macs"] > 0.99 > M.loc[1, "cp_share_macs"]
    assert M.loc[0, "cp_work_n_conv3"] - M.loc[1, "cp_work_n_conv3"] == 15  # one conv per cell


def test_folding_the_reference_build_leaves_exactly_the_live_network():
    # Constant folding (x·0 → 0, anything fed only by constants) plus dead-code elimination
    # turns NAS-Bench-201's reference graph into the live-edge build, row for row.
    from pathlib import Path

    from latbench.data.nb201_import import NB201Featurizer
    from latbench.predictor.encode import OP_KINDS
    from latbench.predictor.graph import folded_rows

    csv = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"
    archs = pd.read_csv(csv)["arch"].head(25).tolist() + [
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
        "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"]
    full, live = NB201Featurizer(edges="all"), NB201Featurizer()
    for arch in archs:
        t, want = full.table(arch), live.table(arch)
        b = as_layer_batch([t])
        g = build_graph(b.frame, b.group, 1)
        op = t["op"].to_numpy()
        keep = folded_rows(g, op == "zero", op == "add")
        kept = t[keep]
        assert sorted(kept["op"]) == sorted(want["op"]), arch
        assert kept["macs"].sum() == want["macs"].sum(), arch
        m = model_matrix([t, want])
        assert m.loc[0, "fold_n_layers"] == m.loc[1, "n_layers"] == len(want)
        assert np.expm1(m.loc[0, "fold_log_macs"]) == pytest.approx(np.expm1(m.loc[1, "log_macs"]))
    assert "zero" in OP_KINDS
    # A cell that never connects input to output makes the whole output a constant: folding
    # leaves nothing to run (the live build still keeps the skeleton around the empty cells).
    t = full.table("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    b = as_layer_batch([t])
    op = t["op"].to_numpy()
    assert not folded_rows(build_graph(b.frame, b.group, 1), op == "zero", op == "add").any()


def test_folding_keeps_everything_in_a_graph_without_zeroing_ops():
    t = _diamond(3)
    b = as_layer_batch([t])
    g = build_graph(b.frame, b.group, 1)
    from latbench.predictor.graph import folded_rows

    assert folded_rows(g, np.zeros(4, bool), t["op"].eq("add").to_numpy()).all()


def test_pruning_drops_zeroing_ops_and_what_only_they_read_but_runs_ops_on_zero_inputs():
    from latbench.data.nb201_import import NB201Featurizer
    from latbench.predictor.graph import folded_rows

    # none 0→1, conv3x3 1→3 (reads a node that only a none edge feeds), conv1x1 0→2,
    # conv3x3 2→3... : node 1 holds zeros.
    arch = "|none~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    t = NB201Featurizer(edges="all").table(arch)
    b = as_layer_batch([t])
    g = build_graph(b.frame, b.group, 1)
    op = t["op"].to_numpy()
    zero, add = op == "zero", op == "add"
    pruned = folded_rows(g, zero, add, propagate=False)
    folded = folded_rows(g, zero, add)
    cell = t["name"].str.startswith("cells.0.").to_numpy()
    names = lambda keep: sorted(t.loc[keep & cell, "name"])  # noqa: E731
    # Pruned: the conv3x3 on node 1 runs; the conv1x1 into node 2 feeds only a none edge: gone;
    # x·0 rows gone; the sums with a zero operand pass through; one real sum (skip + conv) left.
    assert names(pruned) == ["cells.0.add#1", "cells.0.ops.4.0", "cells.0.ops.4.1",
                             "cells.0.ops.4.2"]
    # Folded: the conv on zeros is a constant too; the cell is the skip alone.
    assert names(folded) == []
