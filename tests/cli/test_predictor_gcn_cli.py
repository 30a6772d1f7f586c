"""``bench predictor evaluate|train|predict --kind gcn`` end to end on a small NB201 store."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latbench.cli.app import build_app
from latbench.predictor.gcn import GCNPredictor

CSV = str(Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv")
ARCH = "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from latbench.data.nb201_import import import_nb201

    path = tmp_path_factory.mktemp("db") / "nb.db"
    import_nb201(CSV, latency_column="sd855_cpu_kryo485_int8_ms", device="sd855", db_path=path, limit=120)
    return path


@pytest.fixture()
def few_steps(monkeypatch):
    # the CLI builds predictors at their defaults; a test needs a short fit, not a good one
    monkeypatch.setitem(GCNPredictor.__init__.__kwdefaults__, "max_steps", 30)


def _run(*args):
    return CliRunner().invoke(build_app(), list(args))


@pytest.mark.slow
def test_gcn_evaluates_trains_and_predicts(db, tmp_path, few_steps):
    r = _run("predictor", "evaluate", "--db", str(db), "--device", "sd855", "--kind", "gcn",
             "--train-size", "80", "--seed", "0", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["kind"] == "gcn" and obj["n_train"] == 80 and obj["n_test"] == 40 and obj["spearman"] > 0
    out = tmp_path / "gcn.pkl"
    r = _run("predictor", "train", "--db", str(db), "--device", "sd855", "--kind", "gcn", "--out", str(out))
    assert r.exit_code == 0, r.output
    r = _run("predictor", "predict", "--predictor", str(out), ARCH, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["latency_ms"] > 0
