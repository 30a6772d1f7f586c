"""Sweeps over many devices and hosts on Ray (the ``farm`` extra: ``pip install "latbench[farm]"``).

:func:`run_farm_sweep` measures every variant of a sweep on every named device: one Ray
actor per device on the host it is plugged into, compress/export tasks spread over the
cluster's CPUs, the driver the only writer of the store. Ray is imported only when a farm
runs. See :mod:`latbench.farm.sweep`.
"""

from latbench.farm.sweep import FarmSummary, run_farm_sweep

__all__ = ["run_farm_sweep", "FarmSummary"]
