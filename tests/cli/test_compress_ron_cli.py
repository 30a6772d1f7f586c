"""bench compress --method ron: calibration from a tensor file or the digits, one-line errors."""

import json

import pytest
import torch

from latbench.cli import main
from latbench.models.digits import DigitsCNN


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model_path, calib_path = tmp_path / "net.pt", tmp_path / "calib.pt"
    torch.save(DigitsCNN(width=2).eval(), model_path)
    torch.save(torch.randn(80, 1, 16, 16), calib_path)
    return str(model_path), str(calib_path)


def test_ron_json_reports_each_stage_and_writes_onnx(capsys, tmp_path, saved):
    model, calib = saved
    code, out, _ = run(capsys, "compress", model, "--method", "ron", "--rank", "8", "--layers", "features.3*",
                       "--calibration", calib, "--input", "1x1x16x16", "--out", str(tmp_path / "r.onnx"), "--json")
    assert code in (0, None)
    doc = json.loads(out)
    assert [r["name"] for r in doc["layers"]] == ["features.4", "features.5.2", "readout"]
    for r in doc["layers"][:2]:
        d = r["details"]
        assert r["method"] == "ron" and r["rank"][0] <= 8
        assert d["interpolation_error"] <= d["error_bound"] + 1e-12 and d["n"] == 8 * 4 * 4
    assert doc["macs_after"] < doc["macs_before"] and (tmp_path / "r.onnx").stat().st_size > 0


def test_ron_table_shows_the_deim_figures(capsys, saved):
    model, calib = saved
    code, out, _ = run(capsys, "compress", model, "--method", "ron", "--rank", "4", "--calibration", calib,
                       "--input", "1x1x16x16")
    assert code in (0, None)
    assert "≤" in out and "readout" in out  # the interpolation error ≤ its DEIM bound, per stage


@pytest.mark.parametrize("extra,message", [
    ((), "ron needs calibration data"),
    (("--calibration", "missing.pt"), "does not exist"),
    (("--calibration", "digits", "--input", "1x3x16x16"), "1×S×S"),
    (("--rank", "0.5"), "int rank"),
])
def test_ron_errors_are_one_line(capsys, saved, extra, message):
    model, calib = saved
    args = ["compress", model, "--method", "ron", "--input", "1x1x16x16"]
    if "--rank" not in extra:
        args += ["--rank", "4"]
    if extra[:1] != ("--calibration",) and "--rank" in extra:
        args += ["--calibration", calib]
    code, _, err = run(capsys, *args, *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


@pytest.mark.slow
def test_digits_model_with_its_own_calibration(capsys):
    code, out, _ = run(capsys, "compress", "digits:2", "--method", "ron", "--rank", "8",
                       "--layers", "features.5*", "--calibration", "digits:200", "--json")
    assert code in (0, None)
    doc = json.loads(out)
    assert doc["input_shape"] == [1, 1, 32, 32]
    assert [r["name"] for r in doc["layers"]] == ["features.5.2", "readout"]
