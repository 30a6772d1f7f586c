"""Transfer to a new device from a few of its measurements (issue 13, part 3)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from latbench.exceptions import PredictorError, UserInputError
from latbench.predictor.metrics import regression_metrics
from latbench.predictor.transfer import SourceModels, TransferPredictor

from ._synth import dataset, planted_latency

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"


def _other_device(t) -> float:
    """A device whose costs differ from the planted one: convs by MACs, a cost per layer."""
    conv = t[t["op"] == "conv"]
    return float(conv["macs"].sum() / 3e6 + 0.2 * len(t) + 1.0)


@pytest.fixture(scope="module")
def planted():
    X, _ = dataset(300, seed=11)
    ya = np.array([planted_latency(t) for t in X])
    yb = np.array([_other_device(t) for t in X])
    Xn, _ = dataset(200, seed=12)
    # The new device: a geometric mix of the two, times a constant.
    yn = np.exp(0.3 + 0.6 * np.log([planted_latency(t) for t in Xn])
                + 0.4 * np.log([_other_device(t) for t in Xn]))
    sources = SourceModels.fit({"a": (X, ya), "b": (X, yb)})
    return sources, Xn, yn


def test_ten_measurements_of_a_mix_of_known_devices_are_enough(planted):
    sources, Xn, yn = planted
    p = TransferPredictor(sources=sources, own_model=False).fit(Xn[:10], yn[:10], device="new")
    m = regression_metrics(yn[10:], p.predict(Xn[10:]))
    assert m["acc10"] >= 0.95 and m["spearman"] >= 0.98
    # With the own model in the mix the result is as good (it finds little to add).
    both = TransferPredictor(sources=sources).fit(Xn[:10], yn[:10])
    assert regression_metrics(yn[10:], both.predict(Xn[10:]))["acc10"] >= 0.95
    w = p.source_weights()
    assert list(w.index) == ["a", "b"]
    assert w["a"] == pytest.approx(0.6, abs=0.15) and w["b"] == pytest.approx(0.4, abs=0.15)
    assert p.device_ == "new" and p.n_train_ == 10


def test_more_rows_do_not_hurt_and_source_data_is_fitted_when_given_raw(planted):
    sources, Xn, yn = planted
    X, _ = dataset(300, seed=11)
    raw = {"a": (X, np.array([planted_latency(t) for t in X])),
           "b": (X, np.array([_other_device(t) for t in X]))}
    p = TransferPredictor(sources=raw).fit(Xn[:50], yn[:50])
    assert regression_metrics(yn[50:], p.predict(Xn[50:]))["acc10"] >= 0.95


def test_the_own_model_joins_from_eight_rows_and_predicts_as_its_gbm(planted):
    from latbench.predictor.gbm import GBMPredictor
    from latbench.predictor.transfer import OWN, OWN_MIN_ROWS

    sources, Xn, yn = planted
    few = TransferPredictor(sources=sources, min_coverage=0.0).fit(Xn[:OWN_MIN_ROWS - 1],
                                                                    yn[:OWN_MIN_ROWS - 1])
    assert few.own_model_ is None and OWN not in few.source_weights().index
    p = TransferPredictor(sources=sources, random_state=3).fit(Xn[:30], yn[:30])
    assert list(p.source_weights().index) == ["a", "b", OWN]
    own = GBMPredictor(random_state=3).fit(Xn[:30], yn[:30])
    np.testing.assert_allclose(np.exp(p.own_log_predict(Xn[30:40])), own.predict(Xn[30:40]), rtol=1e-5)
    off = TransferPredictor(sources=sources, own_model=False).fit(Xn[:30], yn[:30])
    assert off.own_model_ is None
    assert isinstance(p.own_model_, GBMPredictor) and p.own_model_.n_train_ == 30


def test_two_rows_fall_back_to_the_sources_mean_shifted_onto_the_new_device(planted):
    sources, Xn, yn = planted
    p = TransferPredictor(sources=sources, min_coverage=0.0).fit(Xn[:2], yn[:2])
    np.testing.assert_allclose(p.weights_, [0.5, 0.5])
    assert np.all(p.predict(Xn[2:]) > 0)


def test_a_source_trained_on_other_models_is_not_used(planted):
    sources, Xn, yn = planted
    big = [t.assign(macs=t["macs"] * 1000) for t in Xn]
    with pytest.raises(PredictorError, match="no source device was trained on models like these"):
        TransferPredictor(sources=sources).fit(big[:10], yn[:10])
    # Only the sources that cover the new device's models are used.
    X, _ = dataset(60, seed=13)
    bigsrc = SourceModels.fit({"big": ([t.assign(macs=t["macs"] * 1000) for t in X],
                                       np.array([planted_latency(t) for t in X]))})
    merged = SourceModels(sources.names + bigsrc.names, sources.boosters + bigsrc.boosters,
                          sources.ranges + bigsrc.ranges, sources.feature_names)
    p = TransferPredictor(sources=merged).fit(Xn[:10], yn[:10])
    assert p.source_models_.names == ["a", "b"] and p.coverage_["big"] == 0.0


def test_estimator_contract_and_json_able_state(planted):
    sources, Xn, yn = planted
    est = TransferPredictor(sources=sources)
    with pytest.raises(TypeError):
        TransferPredictor(sources)  # keyword-only
    assert clone(est).get_params().keys() == est.get_params().keys()
    with pytest.raises(NotFittedError):
        est.predict(Xn[:2])
    with pytest.raises(PredictorError, match="needs source devices"):
        TransferPredictor().fit(Xn[:5], yn[:5])
    est.fit(Xn[:10], yn[:10])
    p = est.predict(Xn[10:15])
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(Xn[10:15]), p)
    rebuilt = SourceModels(**json.loads(json.dumps(est.source_models_.to_dict())))
    np.testing.assert_allclose(rebuilt.log_predict(Xn[:3]), est.source_models_.log_predict(Xn[:3]))


@pytest.mark.parametrize("n", [2, 10])  # without and with the own model in the mix
def test_saved_without_pickle_and_loaded_back_bit_for_bit(planted, tmp_path, n):
    from latbench.predictor.base import load_predictor, save_predictor

    sources, Xn, yn = planted
    est = TransferPredictor(sources=sources, min_coverage=0.0).fit(Xn[:n], yn[:n], device="new")
    assert (est.own_model_ is not None) == (n >= 8)
    path = save_predictor(est, tmp_path / "t.predictor", device="new", kind="gbm")
    with zipfile.ZipFile(path) as zf:  # data only: JSON, npy and XGBoost JSON members
        assert all(m.endswith((".json", ".npy")) for m in zf.namelist())
    back, info = load_predictor(path, device="new")
    assert isinstance(back, TransferPredictor) and back.sources is None and info["kind"] == "gbm"
    np.testing.assert_array_equal(back.predict(Xn[10:40]), est.predict(Xn[10:40]))
    assert back.source_weights().to_dict() == est.source_weights().to_dict()
    with pytest.raises(PredictorError, match="needs source devices"):
        back.fit(Xn[:5], yn[:5])  # the sources are not saved: refitting needs new ones


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from latbench.data.nb201_import import import_nb201

    path = tmp_path_factory.mktemp("tr") / "nb.db"
    import_nb201(FIXTURE, latency_column=["desktop_cpu_i7_7820x_fp32_ms=i7",
                                          "sd855_cpu_kryo485_int8_ms=cpu", "sd855_gpu_adreno640_int8_ms=gpu"],
                 db_path=path, limit=300)
    return path


def test_evaluate_transfer_trains_on_the_sources_and_n_rows_and_tests_on_the_rest(db):
    from latbench.predictor.evaluate import evaluate_transfer

    stages = []
    ev = evaluate_transfer(db, device="gpu", source_devices=["i7", "cpu"], train_size=20, seed=1,
                           progress=lambda s, i, n: stages.append((s, i, n)))
    d = ev.as_dict()
    assert (d["n_train"], d["n_test"], d["device"], d["kind"]) == (20, 280, "gpu", "gbm")
    assert d["source_devices"] == ["i7", "cpu"]
    assert {"acc5", "acc10", "mape", "rmse_ms", "r2", "spearman", "kendall", "seed"} <= d.keys()
    assert d["spearman"] > 0.8
    assert ("source models", 2, 2) in stages and ("features", 3, 3) in stages


@pytest.mark.parametrize("kw, fragment", [
    (dict(source_devices=["gpu", "cpu"]), "cannot also be a source"),
    (dict(source_devices=["i7"], kind="lut"), "works with --kind gbm"),
    (dict(source_devices=["nope"]), "device 'nope' is not in"),
    (dict(source_devices=[]), "names no device"),
])
def test_transfer_input_errors(db, kw, fragment):
    from latbench.predictor.evaluate import evaluate_transfer

    with pytest.raises(UserInputError, match=fragment):
        evaluate_transfer(db, device="gpu", train_size=10, **kw)


def test_cli_evaluate_and_train_with_source_devices(db, tmp_path):
    from typer.testing import CliRunner

    from latbench.cli.app import build_app

    run = lambda *a: CliRunner().invoke(build_app(), list(a))  # noqa: E731
    r = run("predictor", "evaluate", "--db", str(db), "--device", "gpu", "--kind", "gbm",
            "--train-size", "10", "--seed", "0", "--source-devices", "i7,cpu", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["n_train"] == 10 and obj["n_test"] == 290 and obj["source_devices"] == ["i7", "cpu"]
    out = tmp_path / "p.predictor"
    r = run("predictor", "train", "--db", str(db), "--device", "gpu", "--kind", "gbm",
            "--train-size", "10", "--source-devices", "i7,cpu", "--out", str(out))
    assert r.exit_code == 0, r.output
    r = run("predictor", "predict", "--predictor", str(out),
            "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
            "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["latency_ms"] > 0
    r = run("predictor", "evaluate", "--db", str(db), "--device", "gpu", "--kind", "lut",
            "--train-size", "10", "--source-devices", "i7")
    assert r.exit_code != 0 and "works with --kind gbm" in str(r.exception)
