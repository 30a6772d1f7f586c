"""The measurement protocol: :class:`BenchSpec`, :class:`Measurement`, and the sweep.

Only the types are imported here; ``latbench.bench.sweep`` is imported on use, so that
``devices`` can use these types without importing the sweep (which imports ``devices``).
"""

from latbench.bench.measurement import Measurement
from latbench.bench.spec import BenchSpec, DeviceInfo

__all__ = ["BenchSpec", "DeviceInfo", "Measurement"]
