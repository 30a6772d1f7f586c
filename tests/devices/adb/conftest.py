"""Fixtures for the ADB tests: a tiny ONNX model, an ADB key, the loopback device, runners."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # fake_adbd / standin_runner sit beside the tests

from adb_testdata import PROPS, sysfs  # noqa: E402
from fake_adbd import FakeAdbd  # noqa: E402

from latbench.artifact import Artifact  # noqa: E402

FIXTURES = HERE / "fixtures"


@pytest.fixture(autouse=True)
def _private_device_locks(tmp_path_factory: pytest.TempPathFactory,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks (``$XDG_CACHE_HOME/latbench/locks``) of the tests stay in their tmp."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))

@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """A 1×3×16×16 → Conv(8, 3×3) → Relu model, and a ``.tflite`` twin beside it.

    The twin holds the same ONNX bytes: the stand-in benchmark_model times it with
    onnxruntime, which is all these tests need from a ".tflite" file.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 16, 16])],
        initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    d = tmp_path_factory.mktemp("model")
    onnx.save(model, str(d / "tiny.onnx"))
    shutil.copyfile(d / "tiny.onnx", d / "tiny.tflite")
    return Artifact.from_file(d / "tiny.onnx")


@pytest.fixture(scope="session")
def tflite_net(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """:func:`tflite_nets.named_net` exported to a real ``.tflite`` (the ``tflite`` extra)."""
    pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')
    pytest.importorskip("ai_edge_litert", reason='TFLite needs pip install "latbench[tflite]"')
    from tflite_nets import SHAPE, named_net

    from latbench.compress.export import export_tflite

    return export_tflite(named_net(), SHAPE, tmp_path_factory.mktemp("tflite") / "net.tflite")


@pytest.fixture(scope="session")
def adbkey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ADB key pair (``adbkey`` + ``adbkey.pub``) made once for the session."""
    from adb_shell.auth.keygen import keygen

    path = tmp_path_factory.mktemp("keys") / "adbkey"
    keygen(str(path))
    path.chmod(0o600)  # as adb keeps it (a key others can read is used with a warning)
    return path


@pytest.fixture(scope="session")
def runners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stand-in runner under both real tools' names."""
    d = tmp_path_factory.mktemp("runners")
    out = {}
    for kind, name in (("ort", "onnxruntime_perf_test"), ("tflite", "benchmark_model")):
        shutil.copyfile(HERE / "standin_runner.py", d / name)
        out[kind] = d / name
    return out


def default_fake_kwargs() -> dict:
    return dict(props=dict(PROPS), settings={"low_power": "0"},
                battery=(FIXTURES / "dumpsys_battery.txt").read_text(), sysfs=sysfs(),
                max_command_s=20.0)


@pytest.fixture
def make_fake(tmp_path: Path) -> Iterator[Callable[..., FakeAdbd]]:
    """``make_fake(**overrides)`` → a started loopback device; all stop after the test."""
    started: list[FakeAdbd] = []

    def make(**overrides: object) -> FakeAdbd:
        kwargs = {**default_fake_kwargs(), **overrides}
        fake = FakeAdbd(tmp_path / f"device{len(started)}", **kwargs).__enter__()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def profile(adbkey: Path, runners: dict[str, Path]) -> Callable[..., dict]:
    """``profile(fake, **overrides)`` → an ``adb`` profile table for the loopback device."""

    def make(fake: FakeAdbd, **overrides: object) -> dict:
        base = {"kind": "adb", "host": fake.host, "runner": str(runners["ort"]),
                "adbkey": str(adbkey), "cpus": "f0", "threads": 2, "io_timeout_s": 5.0,
                "auth_timeout_s": 2.0, "timeout_s": 30.0}
        return {**base, **overrides}

    return make
