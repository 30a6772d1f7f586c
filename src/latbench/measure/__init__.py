"""The measurement protocol, at the bottom of the package: what a measurement is keyed by
(:class:`BenchSpec`, :class:`DeviceInfo`), what it holds (:class:`Measurement`, raw samples),
and the sampling loop in-process devices share (:mod:`latbench.measure.timing`).

``devices``, ``data``, ``bench`` and ``search`` import it; it imports nothing of latbench
but ``exceptions``. Orchestration (sweeps, one-off runs) lives in :mod:`latbench.bench`.
"""

from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling

__all__ = ["BenchSpec", "DeviceInfo", "Measurement", "Sampling"]
