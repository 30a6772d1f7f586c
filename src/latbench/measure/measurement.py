"""A measurement keeps its raw samples; every statistic is derived from them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latbench.measure.spec import BenchSpec, DeviceInfo

__all__ = ["Measurement", "DEFAULT_CONFIDENCE_THRESHOLD", "NOISY_RELATIVE_IQR"]

#: A measurement is "confident" when IQR / median is under this.
DEFAULT_CONFIDENCE_THRESHOLD = 0.05

#: A measurement is "noisy" when IQR / median is at least this: its median may be off by
#: several percent, and the user is told (torch.utils.benchmark warns at the same 10 %).
#: Between the two thresholds a measurement is neither confident nor worth a warning.
NOISY_RELATIVE_IQR = 0.10


@dataclass(frozen=True)
class Measurement:
    """Raw timings of one :class:`BenchSpec` on one device.

    Parameters
    ----------
    spec : BenchSpec
    samples_s : tuple of float
        Per-run latencies in seconds, in the order they were taken.
    info_before, info_after : DeviceInfo
        Device identity and state just before and just after timing.
    timestamp : float
        Unix time the measurement finished.
    extra : dict
        Runner-specific facts (e.g. the runner's own average, init time, throttling flags).
    """

    spec: BenchSpec
    samples_s: tuple[float, ...]
    info_before: DeviceInfo
    info_after: DeviceInfo
    timestamp: float = field(default_factory=time.time)
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.samples_s) == 0:
            raise ValueError("a measurement needs at least one sample")

    @property
    def _ms(self) -> np.ndarray:
        return np.asarray(self.samples_s, dtype=float) * 1e3

    @property
    def samples_ms(self) -> list[float]:
        return self._ms.tolist()

    @property
    def median_ms(self) -> float:
        return float(np.median(self._ms))

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self._ms))

    @property
    def std_ms(self) -> float:
        return float(np.std(self._ms))

    @property
    def min_ms(self) -> float:
        return float(np.min(self._ms))

    @property
    def p10_ms(self) -> float:
        return float(np.percentile(self._ms, 10))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self._ms, 90))

    @property
    def iqr_ms(self) -> float:
        q75, q25 = np.percentile(self._ms, [75, 25])
        return float(q75 - q25)

    @property
    def relative_iqr(self) -> float:
        med = self.median_ms
        return self.iqr_ms / med if med > 0 else float("inf")

    @property
    def confident(self) -> bool:
        """Whether IQR / median is under the confidence threshold."""
        return self.relative_iqr < self.confidence_threshold

    @property
    def noisy(self) -> bool:
        """Whether IQR / median is at least :data:`NOISY_RELATIVE_IQR` (timings too spread)."""
        return self.relative_iqr >= NOISY_RELATIVE_IQR

    @property
    def throttled(self) -> bool:
        """Whether the device reported throttling before or after the run."""
        return bool(self.info_before.state.get("throttled") or self.info_after.state.get("throttled"))

    def summary(self) -> dict[str, Any]:
        """Derived statistics, in ms, as a plain dict (for JSON and the store)."""
        return {
            "median_ms": self.median_ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "min_ms": self.min_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "iqr_ms": self.iqr_ms,
            "n_samples": len(self.samples_s),
            "confident": self.confident,
            "relative_iqr": self.relative_iqr,
            "noisy": self.noisy,
            "throttled": self.throttled,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "samples_s": list(self.samples_s),
            "info_before": self.info_before.to_dict(),
            "info_after": self.info_after.to_dict(),
            "timestamp": self.timestamp,
            "confidence_threshold": self.confidence_threshold,
            "extra": self.extra,
            **self.summary(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        return cls(
            spec=BenchSpec.from_dict(d["spec"]),
            samples_s=tuple(d["samples_s"]),
            info_before=DeviceInfo.from_dict(d["info_before"]),
            info_after=DeviceInfo.from_dict(d["info_after"]),
            timestamp=d["timestamp"],
            confidence_threshold=d.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD),
            extra=d.get("extra", {}),
        )
