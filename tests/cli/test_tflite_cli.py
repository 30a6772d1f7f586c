"""The CLI with TFLite: ``bench compress --out x.tflite``, ``bench run x.tflite --device litert``,
and one-line errors for a format the device does not run or a missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from latbench.cli import main
from latbench.devices.profiles import ENV_VAR


def bench(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_compress_to_tflite_without_the_extra_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    code, out, err = bench(capsys, "compress", "resnet18", "--method", "svd", "--rank", "0.5",
                           "--layers", "fc", "--input", "1x3x32x32", "--out",
                           str(tmp_path / "r.tflite"))
    assert code == 2 and out == ""
    assert err.strip() == ('error: TFLite export needs litert-torch, which is not installed: '
                           'pip install "latbench[tflite]"')


@pytest.mark.slow
def test_compress_to_tflite_then_run_on_litert(capsys, tmp_path):
    pytest.importorskip("litert_torch", reason='needs pip install "latbench[tflite]"')
    out_path = tmp_path / "r18.tflite"
    code, out, err = bench(capsys, "compress", "resnet18", "--method", "tucker2", "--rank", "0.5",
                           "--layers", "layer4.*", "--input", "1x3x32x32", "--out", str(out_path),
                           "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["tflite"]["path"] == str(out_path) and out_path.is_file()
    code, out, err = bench(capsys, "run", str(out_path), "--device", "litert", "--threads", "1",
                           "--warmup", "1", "--repeats", "3", "--json")
    assert code == 0, err
    run = json.loads(out)
    assert run["spec"]["format"] == "tflite" and run["spec"]["runtime"] == "litert"
    assert run["n_samples"] == 3
    # the cpu device runs ONNX: one line saying what to do
    code, out, err = bench(capsys, "run", str(out_path), "--device", "cpu")
    assert code == 2 and "runs onnx models, not tflite" in err and len(err.strip().splitlines()) == 1
