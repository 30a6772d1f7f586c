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


@pytest.mark.slow
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


@pytest.mark.slow
def test_budget_too_low_is_one_line_error(capsys, model_file, fake_device):
    code, _, err = bench(capsys, "search", str(model_file), "--budget-ms", "0.000001",
                         "--input", "1x1x12x12", "--calib", "2", "--repeats", "1")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fastest reachable latency" in lines[0]


def test_needs_exactly_one_budget(capsys, model_file, fake_device):
    code, _, err = bench(capsys, "search", str(model_file), "--input", "1x1x12x12")
    assert code == 2 and "--budget-ms" in err


@pytest.mark.slow
def test_device_failure_writes_what_is_known(capsys, tmp_path, model_file, monkeypatch):
    dev = MacDevice(name="cpu", fail_after=1)
    monkeypatch.setattr("latbench.devices.registry.get_device", lambda name, devices_file=None: dev)
    out = tmp_path / "out"
    code, _, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input", "1x1x12x12",
                         "--calib", "2", "--repeats", "1", "--out", str(out))
    assert code == 3 and "went away" in err and "search-partial.json" in err
    partial = json.loads((out / "search-partial.json").read_text())
    assert partial["original_ms"] > 0 and partial["rounds"] == []


def model_macs(model_file: Path) -> int:
    from latbench.data.features import layer_table

    return int(layer_table(torch.load(model_file, weights_only=False), (1, 1, 12, 12))["macs"].sum())


def saved_predictor(tmp_path: Path, **kw) -> Path:
    """The test's own predictor class in latbench's older pickled format (a user's own file):
    only predictors of latbench.predictor save in the pickle-free format, so the CLI is given
    ``--trust-file`` for it."""
    import pickle

    from fakes import MacPredictor

    from latbench.data.features import FEATURE_SCHEMA_VERSION

    path = tmp_path / "pred.pkl"
    env = {"format": "latbench-predictor/1", "feature_schema_version": FEATURE_SCHEMA_VERSION,
           "device": "cpu", "kind": None, "predictor": MacPredictor(device="cpu", **kw)}
    path.write_bytes(pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL))
    return path


@pytest.mark.slow
def test_budget_not_met_exits_6_and_still_writes_the_fastest_plan(capsys, tmp_path, model_file,
                                                                  monkeypatch):
    big = model_macs(model_file)
    # Latency falls slower than MACs and one round is allowed: the round misses the budget.
    dev = MacDevice(name="cpu", overhead_ms=0.0, factor=lambda m: (big / max(m, 1)) ** 0.4)
    monkeypatch.setattr("latbench.devices.registry.get_device", lambda name, devices_file=None: dev)
    out = tmp_path / "out"
    code, stdout, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input",
                              "1x1x12x12", "--calib", "4", "--repeats", "3", "--rounds", "1",
                              "--predictor", str(saved_predictor(tmp_path, overhead_ms=0.0)), "--trust-file",
                              "--out", str(out), "--json")
    assert code == 6, err
    doc = json.loads(stdout)
    assert doc["met"] is False and doc["measured_ms"] > doc["budget_ms"]
    assert json.loads((out / "plan.json").read_text()) == doc["plan"] == doc["rounds"][0]["plan"]
    assert (out / "model.onnx").is_file() and (out / "report.html").is_file()
    assert "budget not met" in err and "exit status 6" in err
    assert "note: no plan met the budget in 1 round(s)" in err


@pytest.mark.slow
def test_a_predictor_with_negative_latencies_is_set_aside_with_a_note(capsys, tmp_path, model_file,
                                                                     fake_device):
    pred = saved_predictor(tmp_path, overhead_ms=-30.0, ms_per_mmac=-100.0)  # the GBM
    code, stdout, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input",
                              "1x1x12x12", "--calib", "4", "--repeats", "3", "--predictor",
                              str(pred), "--trust-file", "--json")
    doc = json.loads(stdout)
    assert doc["cost_check"]["action"] == "set aside"
    assert "note: predictor MacPredictor predicted non-positive latencies" in err
    assert code == (0 if doc["met"] else 6)


@pytest.mark.slow
def test_a_predictor_that_cannot_be_set_aside_is_one_line_error(capsys, tmp_path, model_file,
                                                                monkeypatch):
    from latbench.devices.base import Capabilities

    class NoLayers(MacDevice):
        capabilities = Capabilities(formats=("onnx",), adaptive_sampling=True, layer_timing=False,
                                    in_process=False)

    dev = NoLayers(name="cpu")
    monkeypatch.setattr("latbench.devices.registry.get_device", lambda name, devices_file=None: dev)
    pred = saved_predictor(tmp_path, overhead_ms=-30.0, ms_per_mmac=-100.0)
    code, _, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input",
                         "1x1x12x12", "--calib", "4", "--repeats", "3", "--predictor", str(pred),
                         "--trust-file")
    lines = err.strip().splitlines()
    assert code == 5 and len(lines) == 1 and "non-positive" in lines[0]


@pytest.mark.slow
def test_text_output_gives_the_verified_speedup_and_help_the_exit_status(capsys, model_file,
                                                                        fake_device):
    code, stdout, err = bench(capsys, "search", str(model_file), "--speedup", "1.3", "--input",
                              "1x1x12x12", "--calib", "4", "--repeats", "3")
    assert code == 0, err
    assert "(verified back to back)" in stdout and "against the original's" in stdout
    code, stdout, _ = bench(capsys, "search", "--help")
    assert code == 0 and "6 budget not met" in " ".join(stdout.split())
