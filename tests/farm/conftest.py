"""Fixtures of the farm tests: the loopback phones of ``tests/devices/adb`` (the fake adbd,
its stand-in runners and an ADB key) and one local Ray cluster for the module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_ADB = Path(__file__).parents[1] / "devices" / "adb" / "conftest.py"
_spec = importlib.util.spec_from_file_location("adb_phone_fixtures", _ADB)
_adb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_adb)

# The loopback-phone fixtures, shared with the adb tests (pytest finds fixtures by name here).
adbkey = _adb.adbkey
runners = _adb.runners
make_fake = _adb.make_fake
profile = _adb.profile


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs for the module (the sweeps join it)."""
    ray = pytest.importorskip("ray", reason='the device farm needs pip install "latbench[farm]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
