"""Predictions are positive, and models outside the training data are flagged (issue 14.5)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from latbench.data.features import LAYER_COLUMNS, layer_table
from latbench.exceptions import OutOfRangeWarning
from latbench.models import resolve_model
from latbench.predictor.base import FLOOR_SHARE, out_of_range
from latbench.predictor.flops import FlopsClusteredPredictor, FlopsPredictor
from latbench.predictor.gbm import GBMLayerPredictor, GBMPredictor

from ._synth import conv_row, dataset

LINE_MS_PER_MAC, LINE_OFFSET = 1e-8, -0.05  # 10 ms per GMAC, a negative intercept


def _conv_table(macs_target: float) -> pd.DataFrame:
    """One 3×3 convolution with about ``macs_target`` MACs at 32×32 (channels chosen to fit)."""
    c = max(1, int(round(np.sqrt(macs_target / (32 * 32 * 9)))))
    return pd.DataFrame([conv_row(c, c, 3, 32)], columns=LAYER_COLUMNS)


def _line_data():
    X = [_conv_table(m) for m in np.linspace(1e7, 1e8, 12)]
    macs = np.array([float(t["macs"].sum()) for t in X])
    return X, macs, LINE_MS_PER_MAC * macs + LINE_OFFSET


def _linear33() -> pd.DataFrame:
    return layer_table(nn.Linear(3, 3), (1, 3))


def test_a_flop_line_never_goes_negative_below_its_data():
    X, macs, y = _line_data()
    p = FlopsPredictor().fit(X, y)
    assert p.intercept_ == pytest.approx(LINE_OFFSET, abs=1e-9)  # the line itself crosses zero
    tiny = _linear33()
    assert float(tiny["macs"].sum()) == 9
    with pytest.warns(OutOfRangeWarning, match="below the smallest trained"):
        got = p.predict([tiny])[0]
    lo = macs.min()
    y_lo = LINE_MS_PER_MAC * lo + LINE_OFFSET
    # Proportional below the data: y_lo · 9 / m_lo, which is under the floor → the floor.
    assert y_lo * 9 / lo < FLOOR_SHARE * y.min()
    assert got == pytest.approx(FLOOR_SHARE * y.min()) and got > 0
    # A model a tenth of the smallest: proportional, y_lo / 10.
    small = _conv_table(lo / 10)
    m = float(small["macs"].sum())
    with pytest.warns(OutOfRangeWarning):
        assert p.predict([small])[0] == pytest.approx(y_lo * m / lo)
    assert p.last_out_of_range_[0][0].startswith(f"{m:.4g} MACs, below")


def test_shufflenet_at_32x32_against_a_line_of_larger_models_is_positive_and_flagged():
    X, macs, y = _line_data()
    net = resolve_model("shufflenet_v2_x0_5")
    t = layer_table(net, (1, 3, 32, 32))
    m = float(t["macs"].sum())
    assert m < macs.min()
    for p in (FlopsPredictor().fit(X, y), FlopsClusteredPredictor().fit(X, y)):
        with pytest.warns(OutOfRangeWarning):
            got = p.predict([t])[0]
        assert got > 0
        flags = p.last_out_of_range_[0]
        assert any("below the smallest trained" in f for f in flags)
        # ShuffleNet's channel shuffles and concats are kinds a line of plain convs never saw.
        assert any("layer kinds never trained on" in f and "concat" in f for f in flags)


@pytest.mark.parametrize("make", [lambda: GBMPredictor(n_estimators=20),
                                  lambda: GBMLayerPredictor(n_estimators=20, n_rounds=1),
                                  lambda: FlopsPredictor(), lambda: FlopsClusteredPredictor()])
def test_no_kind_returns_a_non_positive_latency(make):
    X, y = dataset(30, seed=4)
    p = make().fit(X, y)
    if isinstance(p, GBMLayerPredictor):
        p.beta_ = -1e6  # an overhead fit gone wrong must still give a positive time
    elif isinstance(p, (FlopsPredictor,)):
        p.intercept_ = -1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)
        got = p.predict([_linear33(), *X[:3]])
    assert np.all(got > 0) and np.all(np.isfinite(got))
    assert got.min() >= FLOOR_SHARE * y.min()


def test_models_inside_the_training_data_raise_no_warning():
    X, y = dataset(30, seed=5)
    p = GBMPredictor(n_estimators=20).fit(X, y)
    inside = [t for t in X if float(t["macs"].sum()) > min(float(x["macs"].sum()) for x in X)][:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        p.predict(inside)
    assert p.last_out_of_range_ == [[], [], []]


def test_unseen_layer_kinds_graphs_and_batches_are_flagged():
    X, y = dataset(30, seed=6)
    p = GBMPredictor(n_estimators=20).fit(X, y)
    base = X[0]
    with_linear = pd.concat([base, pd.DataFrame([dict(conv_row(64, 64, 1, 1), op="linear")])],
                            ignore_index=True)
    executed = base.assign(graph="onnxruntime:all:CPUExecutionProvider")
    batched = base.assign(batch=8, macs=base["macs"] * 8, act_in_bytes=base["act_in_bytes"] * 8,
                          act_out_bytes=base["act_out_bytes"] * 8)
    reasons = out_of_range(p, [with_linear, executed, batched, base])
    assert reasons[0] == ["layer kinds never trained on: linear"]
    assert reasons[1] == ["graph onnxruntime:all:CPUExecutionProvider, trained on torch"]
    assert reasons[2] == ["batch 8, trained on batch 1"]  # per-sample MACs are unchanged
    assert reasons[3] == []
    with pytest.warns(OutOfRangeWarning, match="3 of 4 model"):
        p.predict([with_linear, executed, batched, base])


def test_training_range_is_json_able():
    X, y = dataset(20, seed=7)
    p = FlopsPredictor().fit(X, y)
    rng = json.loads(json.dumps(p.train_range_))
    assert rng["macs"][0] <= rng["macs"][1] and rng["batch"] == [1, 1]
    assert set(rng["kinds"]) == {"conv", "bn", "act", "avgpool"} and rng["graphs"] == ["torch"]


def test_predict_cli_flags_a_model_outside_the_training_data(tmp_path):
    from typer.testing import CliRunner

    from latbench.cli.app import build_app
    from latbench.predictor.base import save_predictor

    X, macs, y = _line_data()
    path = save_predictor(FlopsPredictor().fit(X, y), tmp_path / "p.pkl", device="d", kind="flops")
    model = tmp_path / "lin.pt"
    torch.save(nn.Linear(3, 3), model)
    r = CliRunner().invoke(build_app(), ["predictor", "predict", "--predictor", str(path),
                                         str(model), "--input", "1x3", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["latency_ms"] == pytest.approx(FLOOR_SHARE * y.min()) and obj["latency_ms"] > 0
    assert obj["out_of_range"] is True
    assert any("below the smallest trained" in s for s in obj["out_of_range_reasons"])
    assert any("linear" in s for s in obj["out_of_range_reasons"])
    r = CliRunner().invoke(build_app(), ["predictor", "predict", "--predictor", str(path),
                                         str(model), "--input", "1x3"])
    assert r.exit_code == 0 and "outside what the predictor was trained on" in r.output
