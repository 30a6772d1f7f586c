"""Fixtures of the search tests: a fake device whose latency is a known function of MACs,
a fake predictor, and a small digits CNN trained once per session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from latbench.artifact import Artifact
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.devices.base import Device
from latbench.exceptions import DeviceError


def onnx_macs(path) -> int:
    """Multiply–accumulates of the Conv / Gemm / MatMul nodes of an ONNX file (batch 1)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i).shape for i in g.initializer}
    total = 0
    for node in g.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            out = shapes[node.output[0]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = inits.get(node.input[1]) or shapes[node.input[1]]
            out = shapes[node.output[0]]
            k = w[1] if node.op_type == "Gemm" and any(
                a.name == "transB" and a.i == 1 for a in node.attribute) else w[0]
            total += int(np.prod(out)) * int(k)
    return total


class MacDevice(Device):
    """A device whose latency is ``overhead_ms + ms_per_mmac · MACs / 1e6`` (times ``factor(MACs)``).

    ``fail_after`` makes the n+1-th measurement raise :class:`DeviceError`.
    """

    kind = "fake"

    def __init__(self, *, overhead_ms: float = 0.05, ms_per_mmac: float = 1.0,
                 factor: Callable[[int], float] | None = None, fail_after: int | None = None,
                 name: str = "macdev") -> None:
        self.name = name
        self.overhead_ms = overhead_ms
        self.ms_per_mmac = ms_per_mmac
        self.factor = factor
        self.fail_after = fail_after
        self.calls = 0
        self.log: list[tuple[int, float]] = []

    def latency_ms(self, macs: int) -> float:
        ms = self.overhead_ms + self.ms_per_mmac * macs / 1e6
        return ms * (self.factor(macs) if self.factor else 1.0)

    def info(self) -> DeviceInfo:
        return DeviceInfo(name=self.name, kind=self.kind, fingerprint="fake")

    def make_spec(self, artifact: Artifact, *, threads=None, warmup=10, repeats=50) -> BenchSpec:
        return BenchSpec(artifact.sha256, self.name, "fake", "1", "fake", int(threads or 1),
                         tuple(artifact.input_shape), warmup, repeats)

    def measure(self, artifact: Artifact, spec: BenchSpec, *, progress=None) -> Measurement:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise DeviceError(f"{self.name}: the device went away")
        self.calls += 1
        macs = onnx_macs(artifact.path)
        ms = self.latency_ms(macs)
        self.log.append((macs, ms))
        return Measurement(spec, (ms / 1e3,) * 3, self.info(), self.info())


class MacPredictor:
    """A 'fitted' predictor: ``bias · (overhead + Σ MACs)`` of each layer table."""

    def __init__(self, *, overhead_ms: float = 0.05, ms_per_mmac: float = 1.0, bias: float = 1.0,
                 device: str = "macdev", schema: int | None = None) -> None:
        self.overhead_ms, self.ms_per_mmac, self.bias = overhead_ms, ms_per_mmac, bias
        self.device_ = device
        if schema is not None:
            self.feature_schema_version_ = schema

    def predict(self, tables) -> np.ndarray:
        return np.array([self.bias * (self.overhead_ms + self.ms_per_mmac * float(t["macs"].sum()) / 1e6)
                         for t in tables])


@pytest.fixture
def mac_device() -> MacDevice:
    return MacDevice()


@dataclass
class TrainedDigits:
    data: object
    net: object
    accuracy: Callable


@pytest.fixture(scope="session")
def digits() -> TrainedDigits:
    """A width-8 digits CNN on 16×16 inputs, trained once (a few seconds)."""
    import torch

    from latbench.models.digits import accuracy, load_digits_data, train_digits_cnn

    torch.set_num_threads(1)
    data = load_digits_data(16, seed=0)
    net = train_digits_cnn(data, width=8, epochs=3, seed=0)
    return TrainedDigits(data, net, lambda m: accuracy(m, data.x_val, data.y_val))
