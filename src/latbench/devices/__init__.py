"""Places a model can be timed: the :class:`Device` interface, built-in ``cpu``, ``cuda`` and
``litert`` devices, ``devices.toml`` profiles, and :func:`get_device` to resolve a name.

The ``adb`` device lives in :mod:`latbench.devices.adb` and is imported only when a
profile of that kind is used.
"""

from latbench.devices.base import Device
from latbench.devices.cpu import CpuDevice
from latbench.devices.cuda import CudaDevice
from latbench.devices.litert import LiteRtDevice
from latbench.devices.profiles import Profile, find_devices_file, load_profiles
from latbench.devices.registry import DeviceListing, get_device, list_devices

__all__ = [
    "Device",
    "CpuDevice",
    "CudaDevice",
    "LiteRtDevice",
    "Profile",
    "DeviceListing",
    "find_devices_file",
    "load_profiles",
    "get_device",
    "list_devices",
]
