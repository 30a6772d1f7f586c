"""``bench search``: the --json keys, the files --out writes, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fakes import MacDevice

from latbench.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from latbench.models.digits import DigitsCNN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("search-cli") / "cnn.pt"
    torch.save(DigitsCNN(width=4).eval(), path)
    return path


@pytest.fixture
def fake_device(monkeypatch):
    dev = MacDevice(name="cpu")
    monkeypatch.setattr("latbench.devices.registry.get_device", lambda name, devices_file=None: dev)
    return dev


def bench(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_keys_and_out_files(capsys, tmp_path, model_file, fake_device):
    out = tmp_path / "out"
    code, stdout, err = bench(capsys, "search", str(model_file), "--device", "cpu", "--speedup", "1.3",
                              "--input", "1x1x12x12", "--calib", "4", "--repeats", "3",
                              "--out", str(out), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    for key in ("budget_ms", "predicted_ms", "measured_ms", "met", "rounds", "fidelity", "plan"):
        assert key in doc
    assert isinstance(doc["met"], bool) and doc["met"]
    assert doc["measured_ms"] <= doc["budget_ms"]
    assert doc["rounds"] and doc["rounds"][0]["index"] == 1
    assert doc["plan"]["layers"]
    for name in ("model.onnx", "model.pt", "plan.json", "search.json", "report.md", "report.html",
                 "pareto.png"):
        assert (out / name).is_file(), name
    plan = json.loads((out / "plan.json").read_text())
    assert plan == doc["plan"]
    for entry in plan["layers"].values():
        assert entry["method"] in ("tucker2", "svd") and "rank" in entry
    report = (out / "report.md").read_text()
    assert "## Rounds" in report and "Pareto front" in report and "uniform" in report
    saved = torch.load(out / "model.pt", weights_only=False)
    with torch.no_grad():
        assert saved(torch.zeros(1, 1, 12, 12)).shape == (1, 10)


def test_budget_too_low_is_one_line_error(capsys, model_file, fake_device):
    code, _, err = bench(capsys, "search", str(model_file), "--budget-ms", "0.000001",
                         "--input", "1x1x12x12", "--calib", "2", "--repeats", "1")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fastest reachable latency" in lines[0]


def test_needs_exactly_one_budget(capsys, model_file, fake_device):
    code, _, err = bench(capsys, "search", str(model_file), "--input", "1x1x12x12")
    assert code == 2 and "--budget-ms" in err


def test_device_failure_writes_what_is_known(capsys, tmp_path, model_file, monkeypatch):
    dev = MacDevice(name="cpu", fail_after=1)
    monkeypatch.setattr("latbench.devices.registry.get_device", lambda name, devices_file=None: dev)
    out = tmp_path / "out"
    code, _, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input", "1x1x12x12",
                         "--calib", "2", "--repeats", "1", "--out", str(out))
    assert code == 3 and "went away" in err and "search-partial.json" in err
    partial = json.loads((out / "search-partial.json").read_text())
    assert partial["original_ms"] > 0 and partial["rounds"] == []
