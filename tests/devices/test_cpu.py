"""The built-in cpu device: explicit session settings, seeded input, info, measuring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from latbench.artifact import Artifact
from latbench.measure.timing import Sampling
from latbench.devices.cpu import (
    CpuDevice,
    cpu_model_name,
    cpu_state,
    physical_cores,
    random_input,
)
from latbench.exceptions import DeviceError, UserInputError

SHAPE = (1, 3, 8, 8)


def tiny_conv(path: Path, n_inputs: int = 1) -> Artifact:
    """A Conv+Relu ONNX model written with onnx.helper (no torch needed)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, list(SHAPE)) for i in range(n_inputs)]
    nodes = [helper.make_node("Conv", ["x0", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    for i in range(1, n_inputs):
        nodes.append(helper.make_node("Add", ["x0", f"x{i}"], [f"s{i}"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return Artifact.from_file(path)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return tiny_conv(tmp_path_factory.mktemp("cpu") / "tiny.onnx")


def test_measure_takes_exactly_the_spec_repeats(artifact: Artifact) -> None:
    dev = CpuDevice(threads=1)
    spec = dev.make_spec(artifact, warmup=2, repeats=7)
    m = dev.measure(artifact, spec)
    assert len(m.samples_s) == 7 and all(s > 0 for s in m.samples_s)
    assert m.spec == spec and m.spec.threads == 1
    assert m.extra["stop_reason"] == "repeats" and len(m.extra["warmup_s"]) == 2
    assert m.info_before.kind == "cpu" and m.info_after.fingerprint == m.info_before.fingerprint


def test_spec_records_runtime_and_default_threads(artifact: Artifact) -> None:
    import onnxruntime as ort

    spec = CpuDevice().make_spec(artifact)
    assert spec.runtime == "onnxruntime" and spec.runtime_version == ort.__version__
    assert spec.provider == "CPUExecutionProvider"
    assert spec.threads == physical_cores() and spec.input_shape == SHAPE
    assert CpuDevice(threads=3).make_spec(artifact).threads == 3
    assert CpuDevice(threads=3).make_spec(artifact, threads=1).threads == 1


def test_session_options_are_explicit() -> None:
    import onnxruntime as ort

    so = CpuDevice(graph_optimization="basic").session_options(3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    default = CpuDevice().session_options(1)
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_progress_callback_sees_every_sample(artifact: Artifact) -> None:
    dev = CpuDevice(threads=1)
    seen: list[tuple[int, int]] = []
    dev.measure(artifact, dev.make_spec(artifact, warmup=0, repeats=3),
                progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_adaptive_sampling_is_recorded(artifact: Artifact) -> None:
    dev = CpuDevice(threads=1)
    policy = Sampling(adaptive=True, max_repeats=12, batch=2, max_time_s=5.0, threshold=0.5)
    m = dev.measure(artifact, dev.make_spec(artifact, warmup=1, repeats=4), sampling=policy)
    assert 4 <= len(m.samples_s) <= 12
    assert m.extra["sampling"]["max_repeats"] == 12
    assert m.extra["stop_reason"] in {"confident", "max_repeats", "time_cap"}
    assert m.confidence_threshold == 0.5


def test_spec_for_another_artifact_is_refused(artifact: Artifact, tmp_path: Path) -> None:
    other = Artifact(artifact.path, "f" * 64, artifact.input_shape)
    dev = CpuDevice(threads=1)
    with pytest.raises(UserInputError, match="artifact"):
        dev.measure(artifact, dev.make_spec(other))


def test_spec_for_another_device_is_refused(artifact: Artifact) -> None:
    spec = CpuDevice("other", threads=1).make_spec(artifact)
    with pytest.raises(UserInputError, match="device"):
        CpuDevice(threads=1).measure(artifact, spec)


def test_unreadable_model_is_a_device_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    art = Artifact(bad, "0" * 64, SHAPE)
    dev = CpuDevice(threads=1)
    with pytest.raises(DeviceError, match="could not load"):
        dev.measure(art, dev.make_spec(art))


def test_multi_input_models_are_refused(tmp_path: Path) -> None:
    art = tiny_conv(tmp_path / "two.onnx", n_inputs=2)
    dev = CpuDevice(threads=1)
    with pytest.raises(UserInputError, match="2 inputs"):
        dev.measure(art, dev.make_spec(art))


@pytest.mark.parametrize("kw", [dict(threads=0), dict(graph_optimization="al")])
def test_bad_options_are_user_errors(kw: dict) -> None:
    with pytest.raises(UserInputError):
        CpuDevice(**kw)


def test_unknown_optimization_level_suggests_the_close_one() -> None:
    with pytest.raises(UserInputError, match="did you mean 'all'"):
        CpuDevice(graph_optimization="al")


def test_info_has_identity_versions_and_state() -> None:
    import onnxruntime as ort

    info = CpuDevice().info()
    assert info.name == "cpu" and info.kind == "cpu" and info.model and info.abi and info.os
    assert len(info.fingerprint) == 16
    assert info.fingerprint == CpuDevice("renamed").info().fingerprint  # identity, not name
    assert info.runtime_versions["onnxruntime"] == ort.__version__
    assert {"numpy", "python"} <= set(info.runtime_versions)
    assert info.state["threads_default"] == physical_cores()


X86_SMT = "\n\n".join(
    f"processor\t: {i}\nmodel name\t: Fancy CPU 9000\nphysical id\t: 0\ncore id\t\t: {i % 2}"
    for i in range(4)) + "\n"
ARM = "processor\t: 0\nBogoMIPS\t: 38.40\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\n"


def test_cpu_model_name_reads_x86_and_arm_text() -> None:
    assert cpu_model_name(X86_SMT) == "Fancy CPU 9000"
    assert cpu_model_name(ARM) == "BCM2835"
    assert cpu_model_name("") != ""  # falls back to platform facts


def test_physical_cores_counts_smt_siblings_once_and_respects_affinity() -> None:
    assert physical_cores(X86_SMT, allowed=64) == 2
    assert physical_cores(X86_SMT, allowed=1) == 1
    assert physical_cores(ARM, allowed=8) >= 1  # no core ids: falls back to os.cpu_count


def test_cpu_state_reads_governors_and_frequencies(tmp_path: Path) -> None:
    for i, (gov, khz) in enumerate([("performance", "3000000"), ("powersave", "1200000")]):
        d = tmp_path / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
        (d / "scaling_cur_freq").write_text(khz + "\n")
    (tmp_path / "cpu2").mkdir()  # no cpufreq: left out, not guessed
    state = cpu_state(tmp_path)
    assert state["governors"] == {"cpu0": "performance", "cpu1": "powersave"}
    assert state["freq_khz"] == {"cpu0": 3000000, "cpu1": 1200000}


def test_cpu_state_without_sysfs_has_no_governors(tmp_path: Path) -> None:
    assert "governors" not in cpu_state(tmp_path / "missing")


def test_random_input_is_seeded_and_shaped() -> None:
    a, b = random_input(SHAPE, np.float32, 1), random_input(SHAPE, np.float32, 1)
    assert a.shape == SHAPE and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_input(SHAPE, np.float32, 2))
    assert random_input((4,), np.int64, 0).dtype == np.int64


def test_profile_options_reach_the_device() -> None:
    dev = CpuDevice.from_profile("mine", {"kind": "cpu", "threads": 1, "graph_optimization": "basic"})
    assert (dev.name, dev.threads, dev.graph_optimization) == ("mine", 1, "basic")
