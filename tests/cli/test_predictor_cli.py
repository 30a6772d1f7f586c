"""``bench predictor train|evaluate|predict`` and ``bench report`` end to end on a small DB."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latbench.cli.app import build_app

CSV = str(Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv")
ARCH = "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from pathlib import Path

    if not Path(CSV).is_file():
        pytest.skip("shared NB201 CSV not available")
    from latbench.data.nb201_import import import_nb201

    path = tmp_path_factory.mktemp("db") / "nb.db"
    import_nb201(CSV, latency_column="sd855_cpu_kryo485_int8_ms", device="sd855", db_path=path,
                 limit=200)
    return path


def _run(*args):
    return CliRunner().invoke(build_app(), list(args))


@pytest.mark.slow
def test_evaluate_json_keys(db):
    r = _run("predictor", "evaluate", "--db", str(db), "--device", "sd855", "--kind", "gbm",
             "--train-size", "100", "--seed", "1", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert {"acc5", "acc10", "mape", "rmse_ms", "r2", "spearman", "kendall", "n_train",
            "n_test"} <= obj.keys()
    assert obj["n_train"] == 100 and obj["n_test"] == 100 and 0 <= obj["acc10"] <= 1


def test_train_then_predict(db, tmp_path):
    out = tmp_path / "p.pkl"
    r = _run("predictor", "train", "--db", str(db), "--device", "sd855", "--kind", "flops",
             "--out", str(out))
    assert r.exit_code == 0, r.output and out.is_file()
    r = _run("predictor", "predict", "--predictor", str(out), ARCH, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["latency_ms"] > 0


def test_unknown_kind_and_device_are_user_errors(db):
    from latbench.exceptions import UserInputError

    r = _run("predictor", "evaluate", "--db", str(db), "--device", "sd855", "--kind", "gbn",
             "--train-size", "50")
    assert isinstance(r.exception, UserInputError) and "gbm" in str(r.exception)
    r = _run("predictor", "evaluate", "--db", str(db), "--device", "nope", "--kind", "gbm",
             "--train-size", "50")
    assert isinstance(r.exception, UserInputError)


@pytest.mark.slow
def test_report_writes_html_and_table(db, tmp_path):
    r = _run("report", "--db", str(db), "--device", "sd855", "--out", str(tmp_path / "rep"),
             "--train-size", "100")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "data:image/png;base64," in page and "skipped lut" in page
    md = (tmp_path / "rep" / "metrics.md").read_text()
    assert "| gbm | sd855 | 100 |" in md
