"""Resolve a device name to a :class:`Device` through its profile.

Device classes are imported only when a device of their kind is made, so listing
devices or using ``cpu`` never imports the ADB transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latbench.devices.base import Device
from latbench.devices.profiles import Profile, load_profiles
from latbench.exceptions import DeviceError, UserInputError
from latbench.registry import suggest

__all__ = ["get_device", "find_profile", "list_devices", "make_device", "DeviceListing"]

Factory = Callable[[str, Mapping[str, Any]], Device]


def _cpu(name: str, options: Mapping[str, Any]) -> Device:
    from latbench.devices.cpu import CpuDevice

    return CpuDevice.from_profile(name, options)


def _cuda(name: str, options: Mapping[str, Any]) -> Device:
    from latbench.devices.cuda import CudaDevice

    return CudaDevice.from_profile(name, options)


def _litert(name: str, options: Mapping[str, Any]) -> Device:
    from latbench.devices.litert import LiteRtDevice

    return LiteRtDevice.from_profile(name, options)


def _adb(name: str, options: Mapping[str, Any]) -> Device:
    try:
        from latbench.devices.adb import AdbDevice
    except ImportError as exc:
        raise DeviceError(f"adb devices are not available in this installation: {exc}") from None
    return AdbDevice.from_profile(name, dict(options))


_FACTORIES: dict[str, Factory] = {"cpu": _cpu, "cuda": _cuda, "litert": _litert, "adb": _adb}


def make_device(profile: Profile) -> Device:
    """Create the device a profile describes.

    Raises
    ------
    UserInputError
        If the profile's options are invalid; the message names the file and table.
    """
    try:
        factory = _FACTORIES[profile.kind]
    except KeyError:
        raise UserInputError(f"{profile.where}: [{profile.name}] kind {profile.kind!r} is unknown"
                             f"; choose one of: {', '.join(_FACTORIES)}") from None
    try:
        return factory(profile.name, profile.device_options)
    except UserInputError as exc:
        msg = str(exc)
        if profile.source is not None and str(profile.source) not in msg:
            table = f"[{profile.name}]"
            msg = f"{profile.source}: {msg if msg.startswith(table) else f'{table} {msg}'}"
        raise UserInputError(msg) from None


def get_device(name: str, devices_file: str | Path | None = None) -> Device:
    """The device named ``name``: a built-in (``cpu``, ``cuda``, ``litert``) or a profile in the
    devices file.

    Parameters
    ----------
    name : str
        Device name.
    devices_file : str or Path, optional
        Explicit devices file; otherwise found as :func:`~latbench.devices.profiles.find_devices_file` says.

    Raises
    ------
    UserInputError
        If the name is unknown (the message suggests close names and lists all) or the
        devices file is invalid.
    DeviceError
        If the device's kind cannot be used in this installation.
    """
    return make_device(find_profile(name, devices_file))


def find_profile(name: str, devices_file: str | Path | None = None) -> Profile:
    """The profile of the device named ``name`` (see :func:`get_device`).

    Raises
    ------
    UserInputError
        If the name is unknown (the message suggests close names and lists all) or the
        devices file is invalid.
    """
    profiles = load_profiles(devices_file)
    if name not in profiles:
        names = sorted(profiles)
        raise UserInputError(f"unknown device {name!r}{suggest(name, names)}; known devices: "
                             f"{', '.join(names)} (add more in devices.toml, see 'bench devices list')")
    return profiles[name]


@dataclass(frozen=True)
class DeviceListing:
    """One row of ``bench devices list``.

    ``available`` is ``None`` where finding out would need a connection (adb devices).
    """

    profile: Profile
    available: bool | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.profile.to_dict(), "available": self.available, "note": self.note}


def _availability(profile: Profile) -> tuple[bool | None, str]:
    if profile.kind == "cpu":
        return True, "in-process onnxruntime"
    if profile.kind == "cuda":
        from latbench.devices.cuda import CudaDevice

        return CudaDevice.from_profile(profile.name, profile.options).available()
    if profile.kind == "litert":
        from latbench.devices.litert import litert_status

        return litert_status()
    return None, "not checked (run 'bench devices check " + profile.name + "')"


def list_devices(devices_file: str | Path | None = None) -> list[DeviceListing]:
    """Every known device, built-ins first then the file's, with whether it can be used here.

    Raises
    ------
    UserInputError
        If the devices file is invalid.
    """
    profiles = load_profiles(devices_file)
    return [DeviceListing(p, *_availability(p)) for p in profiles.values()]
