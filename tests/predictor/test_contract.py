"""The scikit-learn estimator contract, for every predictor kind."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from latbench.data.features import layer_key
from latbench.exceptions import PredictorError
from latbench.predictor.flops import FlopsClusteredPredictor, FlopsPredictor
from latbench.predictor.gbm import GBMLayerPredictor, GBMPredictor
from latbench.predictor.gcn import GCNPredictor
from latbench.predictor.lut import LUTPredictor

from ._synth import dataset

import pandas as pd


def _lut_table(X):
    rows = pd.concat(X).drop_duplicates(subset=None)
    rows = rows.assign(layer_key=[layer_key(r) for r in rows.to_dict("records")])
    rows = rows.drop_duplicates("layer_key")
    return rows.assign(latency_ms=np.maximum(rows["macs"] / 2e6, 0.01))


X, Y = dataset(40, seed=1)


def makers():
    return [
        lambda: FlopsPredictor(),
        lambda: FlopsClusteredPredictor(),
        lambda: GBMPredictor(n_estimators=30),
        lambda: GBMLayerPredictor(n_estimators=30, n_rounds=1),
        lambda: LUTPredictor(table=_lut_table(X)),
        lambda: GCNPredictor(max_steps=20, hidden=16),
    ]


@pytest.mark.parametrize("make", makers())
def test_contract(make):
    est = make()
    with pytest.raises(TypeError):
        type(est)(1)  # keyword-only constructor
    params = est.get_params()
    assert clone(est).get_params().keys() == params.keys()
    est.set_params(random_state=3)
    assert est.get_params()["random_state"] == 3
    with pytest.raises(NotFittedError):
        est.predict(X[:2])
    with pytest.raises(PredictorError):
        est.predict(X[:2])
    assert est.fit(X, Y) is est
    p = est.predict(X[:5])
    assert p.shape == (5,) and np.all(np.isfinite(p))
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X[:5]), p)


def test_fit_rejects_bad_y():
    with pytest.raises(PredictorError, match="y has"):
        FlopsPredictor().fit(X, Y[:-1])
    with pytest.raises(PredictorError, match="positive"):
        FlopsPredictor().fit(X, -Y)


def test_bad_x_type():
    with pytest.raises(PredictorError, match="layer table"):
        FlopsPredictor().fit([np.zeros(3)] * 3, Y[:3])
