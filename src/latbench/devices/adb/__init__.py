"""Android devices over ADB (adb-shell): transport, runners and their parsers, device state.

``AdbDevice.from_profile(name, profile)`` is what a ``kind = "adb"`` profile builds.
"""

from latbench.devices.adb.device import AdbDevice

__all__ = ["AdbDevice"]
