"""Lookup table: sums, fusion rule, missing layers (error or flagged fallback)."""

import numpy as np
import pandas as pd
import pytest

from latbench.data.features import layer_key
from latbench.exceptions import PredictorError
from latbench.predictor.encode import as_layer_batch
from latbench.predictor.lut import LOOKUP_KINDS, LUTPredictor, fused_mask

from ._synth import dataset


def _table(X, ms_of):
    rows = pd.concat(X, ignore_index=True)
    rows = rows.assign(layer_key=[layer_key(r) for r in rows.to_dict("records")])
    rows = rows.drop_duplicates("layer_key").reset_index(drop=True)
    return rows.assign(latency_ms=[ms_of(r) for r in rows.to_dict("records")])


X, _ = dataset(50, seed=7)


def _ms(r):
    return r["macs"] / 1e6 + 0.01


def _truth(t):
    b = as_layer_batch([t])
    keep = ~fused_mask(b.frame, b.group, ("bn", "act"))
    return sum(_ms(r) for r in t[keep].to_dict("records"))


def test_fusion_rule():
    b = as_layer_batch(X[:1])
    ops = b.frame["op"].tolist()
    fused = fused_mask(b.frame, b.group, ("bn", "act"))
    for i, (o, f) in enumerate(zip(ops, fused)):
        if o in ("bn", "act") and ops[i - 1] in ("conv", "bn"):
            assert f
        if o in ("conv", "avgpool"):
            assert not f


def test_sum_plus_overhead_recovered():
    y = np.array([1.2 * _truth(t) + 0.3 for t in X])
    p = LUTPredictor(table=_table(X, _ms)).fit(X, y)
    np.testing.assert_allclose(p.predict(X), y, rtol=1e-6)
    assert p.last_missing_["count"] == 0


def test_missing_layer_names_key():
    table = _table(X, _ms)
    table = table[~table["layer_key"].str.contains("kernel_h=5")]
    y = np.array([_truth(t) for t in X])
    p = LUTPredictor(table=table).fit(X[:1], y[:1]) if "kernel_h=5" not in "".join(
        layer_key(r) for r in X[0].to_dict("records")) else None
    has5 = [t for t in X if (t["kernel_h"] == 5).any()]
    assert has5
    p = LUTPredictor(table=table)
    with pytest.raises(PredictorError, match="kernel_h=5"):
        p.fit(has5, np.ones(len(has5)))


def test_missing_layer_fallback_is_flagged():
    table = _table(X, _ms)
    table = table[~table["layer_key"].str.contains("kernel_h=5")]
    y = np.array([_truth(t) for t in X])
    p = LUTPredictor(table=table, fallback="regressor").fit(X, y)
    has5 = [t for t in X if (t["kernel_h"] == 5).any()]
    pred = p.predict(has5)
    assert p.last_missing_["count"] > 0 and all("kernel_h=5" in k for k in p.last_missing_["keys"])
    assert np.all(pred > 0)


def test_empty_table_refused():
    with pytest.raises(PredictorError, match="empty"):
        LUTPredictor(table=pd.DataFrame(columns=["layer_key", "latency_ms"])).fit(X[:3], [1, 2, 3])


def test_elementwise_layers_count_by_bytes_not_lookup():
    # A residual add and the ReLU after it cannot be timed alone: they are not looked up
    # (no "missing layer" error) and their bytes enter the fit, which recovers a planted cost.
    from tests.predictor._synth import elem_row

    def with_add(t, k):
        rows = t.to_dict("records") + [elem_row("add", 16, 8 * k), elem_row("act", 16, 8 * k)]
        return pd.DataFrame(rows, columns=t.columns)

    Xa = [with_add(t, 1 + i % 4) for i, t in enumerate(X)]
    table = _table(X, _ms)  # only the layers of X: no add, no unfused act
    mb = np.array([(t.iloc[-2:]["act_in_bytes"] + t.iloc[-2:]["act_out_bytes"]).sum() / 1e6 for t in Xa])
    y = np.array([_truth(t) for t in X]) + 0.5 * mb + 0.2
    p = LUTPredictor(table=table).fit(Xa, y)
    np.testing.assert_allclose(p.predict(Xa), y, rtol=1e-6)
    np.testing.assert_allclose(p.coef_[len(LOOKUP_KINDS) + 1], 0.5, rtol=1e-6)
    assert p.last_missing_["count"] == 0


def test_each_kind_gets_its_own_scale_from_enough_models():
    # Isolated 1x1 convs planted at half their in-network cost: a per-kind α recovers it.
    def truth(t):
        b = as_layer_batch([t])
        rows = t[~fused_mask(b.frame, b.group, ("bn", "act"))].to_dict("records")
        return sum(_ms(r) * (2.0 if r["op"] == "conv" and r["kernel_h"] == 1 else 1.0) for r in rows)

    y = np.array([truth(t) + 0.3 for t in X])
    p = LUTPredictor(table=_table(X, _ms)).fit(X, y)
    np.testing.assert_allclose(p.predict(X), y, rtol=1e-6)
    alpha = dict(zip(LOOKUP_KINDS, p.coef_))
    np.testing.assert_allclose([alpha["conv_1x1"], alpha["conv_kxk"]], [2.0, 1.0], rtol=1e-6)
    # From few models one shared α (no per-kind fit on 6 points).
    few = LUTPredictor(table=_table(X, _ms)).fit(X[:6], y[:6])
    assert len(set(np.round(few.coef_[: len(LOOKUP_KINDS)], 12))) == 1
