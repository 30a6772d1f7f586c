"""The one device interface: ``info()`` and ``measure(artifact, spec)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.artifact import Artifact

__all__ = ["Device"]


class Device(ABC):
    """A place where a model can be timed.

    Subclasses implement :meth:`info` (identity + current state) and :meth:`measure`.
    ``make_spec`` fills a :class:`BenchSpec` with this device's runtime facts.
    """

    name: str
    kind: str

    @abstractmethod
    def info(self) -> DeviceInfo:
        """Identity, runtime versions and current state of the device."""

    @abstractmethod
    def make_spec(self, artifact: Artifact, *, threads: int | None = None, warmup: int = 10,
                  repeats: int = 50) -> BenchSpec:
        """The :class:`BenchSpec` this device would use to time ``artifact``."""

    @abstractmethod
    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None) -> Measurement:
        """Time ``artifact`` as ``spec`` says and return the raw samples.

        Raises
        ------
        DeviceError
            If the device cannot be reached or the run fails.
        """

    def close(self) -> None:
        """Release connections; the default has none."""

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
