"""Encoders, metrics, save/load with the schema version and device."""

import numpy as np
import pytest

from latbench.data.features import layer_table
from latbench.exceptions import PredictorError, UserInputError
from latbench.models.nb201 import build_nb201
from latbench.predictor import base
from latbench.predictor.base import load_predictor, save_predictor
from latbench.predictor.encode import as_layer_batch, layer_matrix, model_matrix
from latbench.predictor.flops import FlopsPredictor
from latbench.predictor.metrics import regression_metrics

from ._synth import dataset

X, Y = dataset(20, seed=9)


def test_model_matrix_fixed_columns_and_sums():
    a = model_matrix(X[:3])
    b = model_matrix(X[3:4])
    assert list(a.columns) == list(b.columns) and len(a) == 3
    np.testing.assert_allclose(np.expm1(a["log_macs"]), [t["macs"].sum() for t in X[:3]], rtol=1e-9)
    assert a["n_layers"].tolist() == [len(t) for t in X[:3]]


def test_list_and_frame_inputs_agree():
    import pandas as pd
    frame = pd.concat([t.assign(variant_id=i) for i, t in enumerate(X[:4])], ignore_index=True)
    np.testing.assert_allclose(model_matrix(frame).to_numpy(), model_matrix(X[:4]).to_numpy())


def test_take_reorders():
    b = as_layer_batch(X[:5])
    np.testing.assert_allclose(model_matrix(b.take([4, 0, 4])).to_numpy(),
                               model_matrix([X[4], X[0], X[4]]).to_numpy())


def test_nb201_live_edges_change_features():
    t1 = layer_table(build_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"), (1, 3, 32, 32))
    t2 = layer_table(build_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"), (1, 3, 32, 32))
    m = model_matrix([t1, t2])
    assert m.loc[0, "n_conv_k3_s1_dense"] > m.loc[1, "n_conv_k3_s1_dense"]
    assert len(layer_matrix(t1)) == len(t1)


def test_metrics_known_values():
    m = regression_metrics([100, 100, 100, 100], [100, 104, 109, 120])
    assert m["acc5"] == 0.5 and m["acc10"] == 0.75
    assert m["mape"] == pytest.approx((0 + 4 + 9 + 20) / 4)
    m = regression_metrics([1, 2, 3], [1, 2, 3])
    assert m["r2"] == 1 and m["spearman"] == pytest.approx(1) and m["kendall"] == pytest.approx(1)
    assert m["rmse_ms"] == 0


def test_save_load_checks_schema_and_device(tmp_path, monkeypatch):
    p = FlopsPredictor().fit(X, Y)
    path = save_predictor(p, tmp_path / "p.pkl", device="dev1", kind="flops")
    q, info = load_predictor(path, device="dev1")
    assert info["device"] == "dev1" and info["kind"] == "flops"
    np.testing.assert_allclose(q.predict(X), p.predict(X))
    with pytest.raises(PredictorError, match="dev1"):
        load_predictor(path, device="other")
    monkeypatch.setattr(base, "FEATURE_SCHEMA_VERSION", 999)
    with pytest.raises(PredictorError, match="schema"):
        load_predictor(path)
    with pytest.raises(PredictorError, match="schema"):
        q.predict(X)


def test_load_rejects_foreign_file(tmp_path):
    (tmp_path / "x").write_bytes(b"not a pickle")
    with pytest.raises(UserInputError):
        load_predictor(tmp_path / "x")
    with pytest.raises(UserInputError, match="does not exist"):
        load_predictor(tmp_path / "missing")
