"""The built-in cuda device: a clean "not available" here, real timings on a GPU box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from latbench.artifact import Artifact
from latbench.measure.spec import DeviceInfo
from latbench.devices import cuda as cuda_mod
from latbench.devices.cuda import TORCH_PROVIDER, CudaDevice, module_digest, parse_smi_csv
from latbench.exceptions import DeviceError, UserInputError

SHAPE = (1, 3, 8, 8)
AVAILABLE, REASON = CudaDevice().available()
ORT_OK, ORT_REASON = cuda_mod.ort_cuda_status()
TORCH_OK, TORCH_REASON = cuda_mod.torch_cuda_status()
without_cuda = pytest.mark.skipif(AVAILABLE, reason="a CUDA device is available here")


def tiny_conv(path: Path) -> Artifact:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return Artifact.from_file(path)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return tiny_conv(tmp_path_factory.mktemp("cuda") / "tiny.onnx")


def tiny_torch():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def test_available_returns_a_verdict_and_a_reason() -> None:
    ok, why = CudaDevice().available()
    assert isinstance(ok, bool) and isinstance(why, str) and why
    assert ok == (ORT_OK or TORCH_OK)


@without_cuda
def test_info_without_cuda_says_not_available() -> None:
    with pytest.raises(DeviceError, match="^cuda not available: "):
        CudaDevice().info()


@without_cuda
def test_measure_without_cuda_says_not_available(artifact: Artifact) -> None:
    dev = CudaDevice()
    with pytest.raises(DeviceError, match="^cuda not available: "):
        dev.measure(artifact, dev.make_spec(artifact, warmup=0, repeats=1))


@pytest.mark.skipif(TORCH_OK, reason="torch CUDA is available here")
def test_measure_torch_without_cuda_says_not_available() -> None:
    with pytest.raises(DeviceError, match="^cuda not available: "):
        CudaDevice().measure_torch(tiny_torch(), SHAPE)


@pytest.mark.skipif(ORT_OK, reason="onnxruntime-gpu is installed")
def test_silent_cpu_fallback_is_caught(artifact: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend onnxruntime-gpu is here: the CPU-only build then runs on CPU, which must not
    # pass for a GPU measurement.
    monkeypatch.setattr(cuda_mod, "ort_cuda_status", lambda: (True, "pretend"))
    monkeypatch.setattr(CudaDevice, "info", lambda self: DeviceInfo("cuda", "cuda"))
    dev = CudaDevice()
    with pytest.raises(DeviceError, match="fell back"):
        dev.measure(artifact, dev.make_spec(artifact, warmup=0, repeats=1))


def test_spec_names_the_cuda_provider_and_threads(artifact: Artifact) -> None:
    spec = CudaDevice(threads=2).make_spec(artifact, warmup=1, repeats=3)
    assert spec.provider == "CUDAExecutionProvider" and spec.threads == 2
    assert spec.input_shape == SHAPE and (spec.warmup, spec.repeats) == (1, 3)


def test_torch_spec_is_keyed_by_module_content() -> None:
    import torch

    dev = CudaDevice()
    a, b = tiny_torch(), tiny_torch()
    assert dev.make_torch_spec(a, SHAPE) == dev.make_torch_spec(b, SHAPE)
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1
    assert module_digest(a) != module_digest(b)
    spec = dev.make_torch_spec(a, SHAPE)
    assert spec.runtime == "torch" and spec.provider == TORCH_PROVIDER


@pytest.mark.parametrize("kw", [dict(device_id=-1), dict(threads=0), dict(graph_optimization="fast")])
def test_bad_options_are_user_errors(kw: dict) -> None:
    with pytest.raises(UserInputError):
        CudaDevice(**kw)


def test_parse_smi_csv_drops_unavailable_values() -> None:
    fields = ("driver_version", "temperature.gpu", "power.draw")
    assert parse_smi_csv("550.54.15, 41, [N/A]\n", fields) == {
        "driver_version": "550.54.15", "temperature.gpu": "41"}
    with pytest.raises(ValueError):
        parse_smi_csv("1, 2\n", fields)


# ------------------------------------------------------------------ on a GPU
@pytest.mark.cuda
@pytest.mark.skipif(not ORT_OK, reason=f"cuda not available: {ORT_REASON}")
def test_ort_cuda_measure_runs_on_the_gpu(artifact: Artifact) -> None:
    dev = CudaDevice()
    m = dev.measure(artifact, dev.make_spec(artifact, warmup=2, repeats=5))
    assert len(m.samples_s) == 5 and all(s > 0 for s in m.samples_s)
    assert m.extra["io_binding"] == "cuda"
    assert m.info_before.kind == "cuda" and m.info_before.model


@pytest.mark.cuda
@pytest.mark.skipif(not TORCH_OK, reason=f"cuda not available: {TORCH_REASON}")
def test_torch_measure_uses_cuda_events() -> None:
    m = CudaDevice().measure_torch(tiny_torch(), SHAPE)
    assert len(m.samples_s) == 50 and all(s > 0 for s in m.samples_s)
    assert m.extra["timer"] == "cuda-events"
    assert m.info_before.state["compute_capability"]


@pytest.mark.cuda
@pytest.mark.skipif(not TORCH_OK, reason=f"cuda not available: {TORCH_REASON}")
def test_info_on_a_gpu_has_a_stable_fingerprint() -> None:
    a, b = CudaDevice().info(), CudaDevice().info()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert "torch" in a.runtime_versions
