"""The gcn predictor: learns a planted latency, uses the graph's wiring, is seeded, plain state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latbench.data.features import LAYER_COLUMNS
from latbench.exceptions import PredictorError
from latbench.predictor.gcn import NODE_FEATURES, GCNPredictor, node_features
from latbench.predictor.metrics import regression_metrics
from latbench.predictor.registry import make_predictor

from ._synth import conv_row, dataset, elem_row


@pytest.mark.slow
def test_learns_a_planted_additive_latency():
    X, y = dataset(260, seed=0)
    p = GCNPredictor(max_steps=250, random_state=0).fit(X[:200], y[:200])
    m = regression_metrics(y[200:], p.predict(X[200:]))
    assert m["acc10"] >= 0.8 and m["spearman"] >= 0.9


def wired(branch_k: list[int], hw: int, parallel: bool) -> pd.DataFrame:
    """A stem, then convs either in series or in parallel off the stem, summed at the end."""
    rows = [conv_row(3, 16, 3, hw)]
    inputs = [""]
    for i, k in enumerate(branch_k):
        rows.append(conv_row(16, 16, k, hw))
        inputs.append("0" if parallel else str(i))
    rows.append(elem_row("add", 16, hw))
    inputs.append(",".join(str(i + 1) for i in range(len(branch_k))) if parallel else str(len(branch_k)))
    t = pd.DataFrame(rows, columns=LAYER_COLUMNS)
    t["inputs"] = inputs
    return t


def critical_path_ms(t: pd.DataFrame, parallel: bool) -> float:
    cost = t["macs"].to_numpy() / 2e6 + 0.05
    branches = cost[1:-1]
    return float(cost[0] + (branches.max() if parallel else branches.sum()) + cost[-1])


def test_tells_series_from_parallel_wiring_of_the_same_layers():
    # A runtime that runs branches at once: latency follows the longest path, so the same
    # layers cost less side by side than in a chain. Sums over layers cannot see that.
    rng = np.random.default_rng(0)
    X, y, pairs = [], [], []
    for i in range(200):
        ks = [int(k) for k in rng.choice([1, 3, 5], size=int(rng.integers(2, 5)))]
        hw = int(rng.choice([8, 16, 32]))
        for parallel in (False, True):
            t = wired(ks, hw, parallel)
            X.append(t)
            y.append(critical_path_ms(t, parallel))
        pairs.append((2 * i, 2 * i + 1))
    y = np.array(y)
    p = GCNPredictor(max_steps=300, random_state=0).fit(X[:300], y[:300])
    pred = p.predict(X[300:])
    test_pairs = [(a - 300, b - 300) for a, b in pairs if a >= 300]
    right = [pred[b] < pred[a] for a, b in test_pairs if y[300 + b] < y[300 + a] * 0.95]
    assert len(right) >= 20 and np.mean(right) >= 0.9
    assert regression_metrics(y[300:], pred)["acc10"] >= 0.7


def test_same_seed_same_predictor_other_seed_other_one():
    X, y = dataset(60, seed=2)
    a = GCNPredictor(max_steps=40, random_state=1).fit(X, y).predict(X[:10])
    b = GCNPredictor(max_steps=40, random_state=1).fit(X, y).predict(X[:10])
    c = GCNPredictor(max_steps=40, random_state=2).fit(X, y).predict(X[:10])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fitted_state_is_plain_data_and_round_trips(tmp_path):
    from latbench.predictor.base import load_predictor, save_predictor

    X, y = dataset(40, seed=3)
    p = GCNPredictor(max_steps=30, hidden=16, n_layers=2).fit(X, y, device="pixel")
    state = p._get_state()
    assert all(isinstance(v, np.ndarray) for v in state["state_"].values())
    json.dumps({k: v for k, v in state.items() if k not in ("state_", "x_mean_", "x_scale_")})
    path = save_predictor(p, tmp_path / "gcn.predictor", device="pixel", kind="gcn")
    q, _ = load_predictor(path, device="pixel")  # the pickle-free format
    assert q.device_ == "pixel"
    np.testing.assert_allclose(q.predict(X[:5]), p.predict(X[:5]), rtol=1e-6)


def test_node_features_name_every_column_and_mark_unknown_ops():
    X, _ = dataset(1, seed=4)
    t = X[0].copy()
    t.loc[0, "op"] = "somethingnew"
    f = node_features(t)
    assert f.shape == (len(t), len(NODE_FEATURES)) and np.isfinite(f).all()
    assert f[0, NODE_FEATURES.index("op_other")] == 1 and f[0, NODE_FEATURES.index("op_conv")] == 0


def test_registry_and_bad_parameters():
    assert isinstance(make_predictor("gcn", max_steps=5), GCNPredictor)
    X, y = dataset(10, seed=5)
    for bad in ({"hidden": 0}, {"max_steps": 1.5}, {"learning_rate": 0.0}, {"n_jobs": 0}):
        with pytest.raises(PredictorError):
            GCNPredictor(**bad).fit(X, y)


def test_restores_torch_thread_count():
    import torch

    before = torch.get_num_threads()
    X, y = dataset(10, seed=6)
    GCNPredictor(max_steps=3, n_jobs=1).fit(X, y).predict(X)
    assert torch.get_num_threads() == before
