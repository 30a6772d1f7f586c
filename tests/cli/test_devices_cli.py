"""``bench devices list/check`` and ``bench run``: output shape and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clirun import bench
from latbench.devices.cuda import CudaDevice
from latbench.devices.profiles import ENV_VAR

SHAPE = (1, 3, 8, 8)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    onnx.save(m, path)
    return path


def assert_one_line_error(code: int, err: str, expected_code: int, *needles: str) -> None:
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


# ------------------------------------------------------------------ bench run
def test_run_json_has_the_promised_keys(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, out, _ = bench(capsys, "run", str(model), "--device", "cpu", "--threads", "1",
                         "--warmup", "1", "--repeats", "6", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {"median_ms", "p90_ms", "iqr_ms", "samples_ms", "device"} <= set(doc)
    assert len(doc["samples_ms"]) == 6
    assert doc["median_ms"] == pytest.approx(float(np.median(doc["samples_ms"])))
    assert doc["p90_ms"] >= doc["median_ms"] and doc["iqr_ms"] >= 0
    assert doc["device"]["kind"] == "cpu" and doc["device"]["fingerprint"]
    assert doc["threads"] == 1 and doc["spec"]["repeats"] == 6


def test_run_adaptive_takes_at_least_the_minimum(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, out, _ = bench(capsys, "run", str(model), "-d", "cpu", "-t", "1", "--warmup", "0",
                         "--repeats", "4", "--adaptive", "--max-repeats", "10", "--json")
    doc = json.loads(out)
    assert code == 0 and 4 <= doc["n_samples"] <= 10
    assert doc["stop_reason"] in {"confident", "max_repeats", "time_cap"}


def test_run_prints_a_table_without_json(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, out, _ = bench(capsys, "run", str(model), "--device", "cpu", "--threads", "1",
                         "--warmup", "0", "--repeats", "3")
    assert code == 0 and "median ms" in out and "IQR" in out


def test_run_missing_file_is_one_line(capsys: pytest.CaptureFixture, isolated: Path) -> None:
    code, _, err = bench(capsys, "run", str(isolated / "nope.onnx"), "--device", "cpu")
    assert_one_line_error(code, err, 2, "nope.onnx", "does not exist")


def test_run_non_onnx_file_is_one_line(capsys: pytest.CaptureFixture, isolated: Path) -> None:
    junk = isolated / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    code, _, err = bench(capsys, "run", str(junk), "--device", "cpu")
    assert_one_line_error(code, err, 2, "junk.onnx")


def test_run_unknown_device_suggests(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, _, err = bench(capsys, "run", str(model), "--device", "cpuu")
    assert_one_line_error(code, err, 2, "unknown device 'cpuu'", "did you mean 'cpu'")


def test_run_bad_repeats_is_one_line(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, _, err = bench(capsys, "run", str(model), "--device", "cpu", "--repeats", "0")
    assert_one_line_error(code, err, 2, "repeats")


@pytest.mark.skipif(CudaDevice().available()[0], reason="a CUDA device is available here")
def test_run_on_missing_cuda_is_a_device_error(capsys: pytest.CaptureFixture, model: Path) -> None:
    code, _, err = bench(capsys, "run", str(model), "--device", "cuda")
    assert_one_line_error(code, err, 3, "cuda not available")


def test_run_uses_a_profile_from_the_devices_file(capsys: pytest.CaptureFixture, model: Path,
                                                  isolated: Path) -> None:
    f = isolated / "my.toml"
    f.write_text("[one]\nkind = 'cpu'\nthreads = 1\n")
    code, out, _ = bench(capsys, "run", str(model), "--device", "one", "--devices", str(f),
                         "--warmup", "0", "--repeats", "2", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["device"]["name"] == "one" and doc["threads"] == 1


# ------------------------------------------------------------------ bench devices
def test_devices_list_json(capsys: pytest.CaptureFixture, isolated: Path) -> None:
    f = isolated / "d.toml"
    f.write_text("[pixel]\nkind = 'adb'\nhost = '10.0.0.2:5555'\n")
    code, out, _ = bench(capsys, "devices", "list", "--json", "--devices", str(f))
    assert code == 0
    rows = {d["name"]: d for d in json.loads(out)["devices"]}
    assert list(rows) == ["cpu", "cuda", "litert", "pixel"]
    assert rows["cpu"]["available"] is True and rows["pixel"]["kind"] == "adb"
    assert rows["pixel"]["options"] == {"host": "10.0.0.2:5555"}


def test_devices_list_table(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = bench(capsys, "devices", "list")
    assert code == 0 and "cpu" in out and "cuda" in out and "built-in" in out


def test_devices_list_bad_file_is_one_line(capsys: pytest.CaptureFixture, isolated: Path) -> None:
    f = isolated / "d.toml"
    f.write_text("[x]\nkind = 'gpu'\n")
    code, _, err = bench(capsys, "devices", "list", "--devices", str(f))
    assert_one_line_error(code, err, 2, "d.toml", "[x]", "kind 'gpu'")


def test_devices_check_cpu_runs_a_tiny_model(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = bench(capsys, "devices", "check", "cpu", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["device"]["kind"] == "cpu" and doc["median_ms"] > 0 and len(doc["samples_ms"]) == 10


def test_devices_check_prints_info_and_median(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = bench(capsys, "devices", "check", "cpu")
    assert code == 0 and "fingerprint" in out and "median" in out and out.count("\n") >= 3


def test_devices_check_unknown_name_is_one_line(capsys: pytest.CaptureFixture) -> None:
    code, _, err = bench(capsys, "devices", "check", "pixel")
    assert_one_line_error(code, err, 2, "unknown device 'pixel'", "known devices: cpu, cuda")
