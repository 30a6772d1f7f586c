"""Shared fakes of the tests, importable from any test module (``pytest`` puts ``tests/`` on
the path, see ``pythonpath`` in ``pyproject.toml``): ``from fakes import MacDevice``.

The device itself is the library's :class:`~latbench.devices.simulated.SimulatedDevice`;
this module only gives it the tests' defaults and adds a predictor that knows the device's law.
"""

from __future__ import annotations

import numpy as np

from latbench.devices.simulated import SimulatedDevice, onnx_macs
from latbench.predictor.base import LatencyPredictor

__all__ = ["MacDevice", "MacPredictor", "onnx_macs"]


class MacDevice(SimulatedDevice):
    """The simulated device under the name ``macdev``: latency ``overhead_ms + ms_per_mmac ·
    MACs / 1e6`` (times ``factor(MACs)``); ``fail_after`` makes the n+1-th measurement raise."""

    def __init__(self, *, name: str = "macdev", **kw) -> None:
        super().__init__(name, **kw)


class MacPredictor(LatencyPredictor):
    """A 'fitted' predictor: ``bias · (overhead + Σ MACs)`` of each layer table (a
    LatencyPredictor, so a test can write it to a file as a user's own predictor)."""

    def __init__(self, *, overhead_ms: float = 0.05, ms_per_mmac: float = 1.0, bias: float = 1.0,
                 device: str = "macdev", schema: int | None = None) -> None:
        self.overhead_ms, self.ms_per_mmac, self.bias = overhead_ms, ms_per_mmac, bias
        from latbench.data.features import FEATURE_SCHEMA_VERSION

        self.device_ = device
        self.feature_schema_ = FEATURE_SCHEMA_VERSION if schema is None else schema

    def predict(self, tables) -> np.ndarray:
        return np.array([self.bias * (self.overhead_ms + self.ms_per_mmac * float(t["macs"].sum()) / 1e6)
                         for t in tables])
