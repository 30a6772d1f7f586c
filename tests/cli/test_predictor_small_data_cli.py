"""The predictor commands on a small, mixed store: the lookup table's fallback from the CLI,
predictor parameters, and a word whenever there is too little data to trust the numbers."""

from __future__ import annotations

import json

import pytest
import torch
from fakes import MacDevice
from torch import nn

from clirun import bench
from latbench.cli import main
from latbench.devices.profiles import ENV_VAR

SIM = ("--device", "sim", "--threads", "1", "--warmup", "1", "--repeats", "3", "--fixed-repeats")


def one_error_line(code: int, err: str, want_code: int, *fragments: str) -> str:
    assert code == want_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _net(k: int) -> nn.Module:
    torch.manual_seed(k)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, k, padding=k // 2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4)).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``a.pt`` swept with its layers measured alone, ``b.pt`` (a 5x5 conv the table lacks)
    swept without: a store the lookup table cannot price alone."""
    root = tmp_path_factory.mktemp("mixed")
    paths = {}
    for name, k in (("a", 3), ("b", 5)):
        paths[name] = str(root / f"{name}.pt")
        torch.save(_net(k), paths[name])
    db = str(root / "lat.db")
    mp = pytest.MonkeyPatch()
    mp.delenv(ENV_VAR, raising=False)
    mp.setattr("latbench.devices.registry.get_device",
               lambda name, devices_file=None: MacDevice(name="sim"))
    try:
        for name, extra in (("a", ("--per-layer",)), ("b", ())):
            try:
                main(["sweep", "--model", paths[name], "--methods", "svd,tucker2", "--ranks",
                      "0.25,0.5", "--random-plans", "3", "--input", "1x3x12x12", *SIM, *extra,
                      "--db", db, "--json"])
            except SystemExit as exc:
                assert not exc.code
    finally:
        mp.undo()
    from latbench.data.dataset import load_dataset

    # 2 models × (original + 4 rank variants + 3 random plans), less any random plan that
    # coincides with another variant (the same plan is stored once): read, not assumed.
    n = len(load_dataset(db, "sim").models)
    assert 12 <= n <= 16
    return {"db": db, "n": n, **paths}


def test_lut_on_a_mixed_store_says_how_to_go_on_from_the_cli(capsys, store, tmp_path):
    code, _, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                         "--kind", "lut", "--out", str(tmp_path / "lut.predictor"))
    one_error_line(code, err, 5, "not in the lookup table", "--fallback regressor",
                   "--per-layer")
    assert not (tmp_path / "lut.predictor").exists()


def test_lut_with_the_regressor_fallback_trains_and_says_what_it_estimated(capsys, store, tmp_path):
    out = tmp_path / "lut.predictor"
    code, stdout, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                              "--kind", "lut", "--fallback", "regressor", "--out", str(out))
    assert code == 0, err
    assert out.is_file() and "trained lut" in stdout
    code, stdout, err = bench(capsys, "predictor", "predict", "--predictor", str(out), store["b"],
                              "--input", "1x3x12x12")
    assert code == 0, err
    assert "ms on sim" in stdout and "layers estimated by the fallback" in stdout
    code, stdout, _ = bench(capsys, "predictor", "predict", "--predictor", str(out), store["b"],
                            "--input", "1x3x12x12", "--json")
    assert json.loads(stdout)["missing_layers"] >= 1
    code, stdout, _ = bench(capsys, "predictor", "predict", "--predictor", str(out), store["a"],
                            "--input", "1x3x12x12", "--json")
    assert json.loads(stdout)["missing_layers"] == 0  # a's layers are all in the table
    code, stdout, err = bench(capsys, "predictor", "evaluate", "--db", store["db"], "--device",
                              "sim", "--kind", "lut", "--fallback", "regressor", "--train-size",
                              "6", "--json")
    assert code == 0, err and json.loads(stdout)["n_train"] == 6


@pytest.mark.parametrize("args, fragments", [
    (("--kind", "gbm", "--fallback", "regressor"), ("--fallback is an option of --kind lut",)),
    (("--kind", "lut", "--fallback", "guess"), ("--fallback must be error or regressor",)),
    (("--kind", "gbm", "--param", "max_dept=3"), ("no parameter 'max_dept'", "max_depth",
                                                  "n_estimators=")),
    (("--kind", "gbm", "--param", "max_depth=deep"), ("max_depth='deep'", "a number")),
    (("--kind", "gbm", "--param", "max_depth"), ("write KEY=VALUE",)),
])
def test_bad_predictor_options_are_one_line(capsys, store, tmp_path, args, fragments):
    code, _, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                         *args, "--out", str(tmp_path / "p.predictor"))
    one_error_line(code, err, 2, *fragments)


def test_a_param_reaches_the_predictor(capsys, store, tmp_path):
    from latbench.predictor.base import load_predictor

    out = tmp_path / "gbm.predictor"
    code, _, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                         "--kind", "gbm", "--param", "max_depth=2", "--param", "n_estimators=7",
                         "--out", str(out))
    assert code == 0, err
    pred, _ = load_predictor(out)
    assert pred.get_params()["max_depth"] == 2 and pred.get_params()["n_estimators"] == 7


def test_a_learned_predictor_on_few_rows_is_warned_about(capsys, store, tmp_path):
    code, stdout, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                              "--kind", "gbm", "--out", str(tmp_path / "gbm.predictor"))
    assert code == 0
    assert err.startswith(f"warning: gbm was trained on only {store['n']} measurement(s) of sim")
    assert "--kind flops or lut" in err and "bench sweep --device sim --random-plans" in err
    code, _, err = bench(capsys, "predictor", "train", "--db", store["db"], "--device", "sim",
                         "--kind", "flops", "--out", str(tmp_path / "flops.predictor"))
    assert code == 0 and err == ""  # two parameters: a few rows are enough


def test_evaluate_says_when_the_test_set_is_too_small(capsys, store):
    n_train = str(store["n"] - 1)
    code, stdout, err = bench(capsys, "predictor", "evaluate", "--db", store["db"], "--device",
                              "sim", "--kind", "flops", "--train-size", n_train, "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["n_test"] == 1
    assert any("tested on only 1 measurement(s)" in n for n in doc["notes"])
    assert "warning: sim: tested on only 1 measurement(s)" in err
    code, stdout, err = bench(capsys, "predictor", "evaluate", "--db", store["db"], "--device",
                              "sim", "--kind", "flops", "--train-size", n_train)
    assert "tested on only 1" in err and f"trained on {n_train}, tested on 1" in stdout


def test_report_on_a_small_store_splits_it_and_says_so(capsys, store, tmp_path):
    out = tmp_path / "rep"
    code, stdout, err = bench(capsys, "report", "--db", store["db"], "--device", "sim", "--out",
                              str(out))
    assert code == 0, err
    import math
    import re

    m = re.search(r"has (\d+) measurements, not more than --train-size 900: trained on (\d+) "
                  r"and tested on the other (\d+)", err)
    assert m, err
    n, n_train, n_test = map(int, m.groups())
    assert n == store["n"] and n_train + n_test == n and n_test == math.ceil(0.3 * n)
    assert f"tested on only {n_test} measurement(s)" in err
    page = (out / "index.html").read_text()
    assert "note:" in page and f"tested on only {n_test}" in page
    assert "> note: " in (out / "metrics.md").read_text()


def test_report_with_almost_no_data_is_one_line(capsys, tmp_path):
    from latbench.data.store import Store
    from latbench.measure.measurement import Measurement
    from latbench.measure.spec import BenchSpec, DeviceInfo
    from latbench.data.features import layer_table

    db = tmp_path / "tiny.db"
    info = DeviceInfo(name="few", kind="cpu")
    with Store(db) as st:
        dev = st.add_device(info)
        for i, s in enumerate((8, 12, 16)):
            net = _net(3)
            vid = st.add_variant(f"m{i}", (1, 3, s, s), layer_table(net, (1, 3, s, s)))
            spec = BenchSpec(artifact_sha256=f"{i:064x}", device="few", runtime="ort",
                             runtime_version="1", provider="cpu", threads=1,
                             input_shape=(1, 3, s, s), warmup=1, repeats=3)
            st.add_measurement(vid, dev, Measurement(spec, (0.001, 0.0011, 0.0012), info, info))
    code, _, err = bench(capsys, "report", "--db", str(db), "--device", "few", "--out",
                         str(tmp_path / "rep"))
    one_error_line(code, err, 2, "has 3 measurement(s)", "bench sweep --device few")


def test_report_into_a_file_is_one_line_before_any_work(capsys, store, tmp_path):
    (tmp_path / "afile").write_text("")
    code, _, err = bench(capsys, "report", "--db", store["db"], "--device", "sim", "--out",
                         str(tmp_path / "afile"))
    one_error_line(code, err, 2, "is a file: give a folder")
