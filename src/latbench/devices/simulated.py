"""A simulated device: latency is a known function of the model's MACs (nn-Meter's debug
backend). It lets the whole pipeline — sweeps, searches, farms — run with no hardware, and it
is the device of tests and of the benchmarks that need a device whose behaviour is known:
bias, noise, bursts of load, speed drifting with time, a device that goes away.

A run of a model of ``M`` MACs takes ``(overhead_ms + ms_per_mmac · M / 1e6) · factor(M) ·
speed(k)`` ms, times seeded lognormal noise, where ``k`` counts measurements on the device.
MACs are read from the ONNX graph (Conv, Gemm, MatMul nodes), so what is timed is the
artifact, not the model it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latbench.artifact import Artifact
from latbench.devices.base import Capabilities, Device, RuntimeIdentity
from latbench.exceptions import DeviceError, UserInputError
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, sample

__all__ = ["SimulatedDevice", "onnx_macs", "SIMULATED_OPTIONS"]

#: ``devices.toml`` options of ``kind = "simulated"`` and their types.
SIMULATED_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "overhead_ms": (int, float), "ms_per_mmac": (int, float), "noise": (int, float),
    "seed": int, "threads": int,
}


def onnx_macs(path: str | Path) -> int:
    """Multiply–accumulates of the Conv / Gemm / MatMul nodes of an ONNX file.

    Shapes come from ONNX shape inference, so the batch of the exported input counts.

    Raises
    ------
    UserInputError
        If the file is not a readable ONNX model.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    try:
        model = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise UserInputError(f"{str(path)!r} is not a readable ONNX model: {exc}") from None
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i).shape for i in g.initializer}
    total = 0
    for node in g.node:
        if node.op_type == "Conv":
            w = inits.get(node.input[1]) or shapes[node.input[1]]
            total += int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = inits.get(node.input[1]) or shapes[node.input[1]]
            trans_b = node.op_type == "Gemm" and any(
                a.name == "transB" and a.i == 1 for a in node.attribute)
            k = w[-1] if trans_b else w[-2] if len(w) > 1 else w[0]
            total += int(np.prod(shapes[node.output[0]])) * int(k)
    return total


class SimulatedDevice(Device):
    """A device whose latency is a known function of MACs, with optional drift and noise.

    Parameters
    ----------
    name : str
    overhead_ms, ms_per_mmac : float
        Latency of a model of ``M`` MACs: ``overhead_ms + ms_per_mmac · M / 1e6`` (ms).
    factor : callable, optional
        ``factor(macs) -> float`` multiplies that (a non-linear device, a biased predictor).
    speed : callable, optional
        ``speed(k) -> float`` multiplies the latency of the ``k``-th measurement (from 0):
        a device whose speed drifts (heat, load) in steps or ramps.
    noise : float
        Lognormal sigma of each sample (0: every sample is the same).
    seed : int
        Seed of the noise.
    fail_after : int, optional
        Measurements before the device "goes away" (then :class:`DeviceError`).
    threads : int
        Recorded in specs (the simulation does not depend on it).

    Attributes
    ----------
    calls : int
        Measurements taken so far.
    log : list of (int, float)
        ``(MACs, noiseless latency in ms)`` of each measurement.
    """

    kind = "simulated"
    capabilities = Capabilities(formats=("onnx",), adaptive_sampling=True, layer_timing=True,
                                in_process=False)

    def __init__(self, name: str = "sim", *, overhead_ms: float = 0.05, ms_per_mmac: float = 1.0,
                 factor: Callable[[int], float] | None = None,
                 speed: Callable[[int], float] | None = None, noise: float = 0.0,
                 seed: int = 0, fail_after: int | None = None, threads: int = 1) -> None:
        if overhead_ms < 0 or ms_per_mmac < 0 or noise < 0:
            raise UserInputError(f"device {name!r}: overhead_ms, ms_per_mmac and noise must be "
                                 f"0 or more")
        if threads < 1:
            raise UserInputError(f"device {name!r}: threads must be at least 1, got {threads}")
        self.name = name
        self.overhead_ms = float(overhead_ms)
        self.ms_per_mmac = float(ms_per_mmac)
        self.factor = factor
        self.speed = speed
        self.noise = float(noise)
        self.fail_after = fail_after
        self.threads = threads
        self.calls = 0
        self.log: list[tuple[int, float]] = []
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> "SimulatedDevice":
        """Build from a validated ``kind = "simulated"`` table."""
        opts = {k: v for k, v in profile.items() if k in SIMULATED_OPTIONS}
        return cls(name, **opts)

    def latency_ms(self, macs: int, k: int | None = None) -> float:
        """Noiseless latency (ms) of a model of ``macs`` MACs at measurement ``k`` (default:
        the next one)."""
        ms = self.overhead_ms + self.ms_per_mmac * macs / 1e6
        ms *= self.factor(macs) if self.factor else 1.0
        return ms * (self.speed(self.calls if k is None else k) if self.speed else 1.0)

    def info(self) -> DeviceInfo:
        return DeviceInfo(name=self.name, kind=self.kind, model="simulated",
                          fingerprint=f"simulated-{self.overhead_ms}-{self.ms_per_mmac}",
                          runtime_versions={"simulated": "1"}, state={"measurements": self.calls})

    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        n = int(threads if threads is not None else self.threads)
        if n < 1:
            raise UserInputError(f"threads must be at least 1, got {n}")
        return RuntimeIdentity("simulated", "1", "macs", n)

    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Samples of the simulated latency of ``artifact`` (seconds), noise included.

        Raises
        ------
        UserInputError
            If the spec does not fit.
        DeviceError
            After ``fail_after`` measurements.
        """
        self.check_spec(artifact, spec)
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise DeviceError(f"device {self.name!r}: the device went away")
        macs = onnx_macs(artifact.path)
        self.calls += 1
        ms = self.latency_ms(macs, self.calls - 1)
        self.log.append((macs, ms))
        before = self.info()

        def run() -> float:
            jitter = float(np.exp(self._rng.normal(0.0, self.noise))) if self.noise else 1.0
            return ms * jitter / 1e3

        result = sample(run, warmup=spec.warmup, repeats=spec.repeats, sampling=sampling,
                        progress=progress, pause_gc=False)
        kw = {"confidence_threshold": sampling.threshold} if sampling is not None else {}
        return Measurement(spec=spec, samples_s=result.samples_s, info_before=before,
                           info_after=self.info(), extra={**result.extra(), "macs": macs}, **kw)
