"""What was measured and where: the frozen keys of a measurement."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BenchSpec", "DeviceInfo"]


@dataclass(frozen=True)
class DeviceInfo:
    """Identity and state of a device at one moment.

    ``fingerprint`` identifies the hardware + OS build (stable across runs);
    ``runtime_versions`` maps runtime name → version; ``state`` holds what changes
    (governors, frequencies in kHz, temperatures in °C, battery, low-power mode).
    """

    name: str
    kind: str
    model: str = ""
    soc: str = ""
    os: str = ""
    abi: str = ""
    fingerprint: str = ""
    runtime_versions: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    state: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceInfo":
        return cls(**d)


@dataclass(frozen=True)
class BenchSpec:
    """The key of a measurement: what ran, on which device, with which runtime and threads.

    Parameters
    ----------
    artifact_sha256 : str
        Content hash of the exported model.
    device : str
        Device profile name (``cpu``, ``cuda``, ``pixel``...).
    runtime, runtime_version, provider : str
        E.g. ``onnxruntime``, ``1.20.1``, ``CPUExecutionProvider``.
    threads : int
        Intra-op threads, always explicit.
    input_shape : tuple of int
        Full input shape including the batch.
    warmup, repeats : int
        Untimed runs before timing and timed runs (the minimum in adaptive mode).
    format : str
        The artifact format that ran (``onnx``, ``tflite``): an ONNX and a TFLite measurement
        of one variant are two measurements.
    """

    artifact_sha256: str
    device: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    input_shape: tuple[int, ...]
    warmup: int = 10
    repeats: int = 50
    format: str = "onnx"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchSpec":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    @property
    def key(self) -> str:
        """A stable hex digest of the spec (the same spec always gives the same key)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
