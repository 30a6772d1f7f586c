"""devices.toml: where it is found, what it may say, and how names become devices."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from latbench.devices.cpu import CpuDevice
from latbench.devices.cuda import CudaDevice
from latbench.devices.profiles import (
    ENV_VAR,
    default_locations,
    find_devices_file,
    load_profiles,
    parse_profiles,
)
from latbench.devices.registry import get_device, list_devices
from latbench.exceptions import DeviceError, UserInputError

PIXEL = '''
[pixel]
kind = "adb"
host = "192.168.1.20:5555"
runner = "/data/local/tmp/onnxruntime_perf_test"
threads = 4
cpus = "f0"
'''


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No devices file leaks in from the real environment, cwd or home."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.fixture
def fake_adb(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Stand in for latbench.devices.adb, recording from_profile calls."""
    calls: list[tuple[str, dict]] = []

    class AdbDevice:
        kind = "adb"

        def __init__(self, name: str) -> None:
            self.name = name

        @classmethod
        def from_profile(cls, name: str, profile: dict) -> "AdbDevice":
            calls.append((name, profile))
            if "host" not in profile and "serial" not in profile:
                raise UserInputError("missing 'host' or 'serial'")
            return cls(name)

    module = types.ModuleType("latbench.devices.adb")
    module.AdbDevice = AdbDevice  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "latbench.devices.adb", module)
    return calls


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ lookup order
def test_no_file_anywhere_means_builtins_only() -> None:
    assert find_devices_file() is None
    assert list(load_profiles()) == ["cpu", "cuda", "litert"]


def test_lookup_order_option_env_cwd_config(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(isolated / "xdg" / "latbench" / "devices.toml", "")
    assert find_devices_file() == config
    cwd_file = write(Path.cwd() / "devices.toml", "")
    assert find_devices_file() == cwd_file
    env_file = write(isolated / "env.toml", "")
    monkeypatch.setenv(ENV_VAR, str(env_file))
    assert find_devices_file() == env_file
    explicit = write(isolated / "explicit.toml", "")
    assert find_devices_file(explicit) == explicit


def test_config_dir_falls_back_to_home_dot_config(isolated: Path) -> None:
    env = {"HOME": str(isolated / "home")}
    assert default_locations(env, cwd=isolated)[1] == isolated / "home" / ".config" / "latbench" / "devices.toml"
    env["XDG_CONFIG_HOME"] = "/x"
    assert default_locations(env, cwd=isolated)[1] == Path("/x/latbench/devices.toml")


def test_named_file_that_is_missing_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError, match="nope.toml.*does not exist"):
        find_devices_file(isolated / "nope.toml")
    monkeypatch.setenv(ENV_VAR, str(isolated / "gone.toml"))
    with pytest.raises(UserInputError, match=ENV_VAR):
        find_devices_file()


# ------------------------------------------------------------------ validation
def test_bad_toml_names_the_file(isolated: Path) -> None:
    f = write(isolated / "bad.toml", "[pixel\nkind = 'adb'\n")
    with pytest.raises(UserInputError, match=r"bad\.toml: not valid TOML") as e:
        load_profiles(f)
    assert "\n" not in str(e.value)


def test_missing_kind_names_the_file_table_and_key(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[phone]\nhost = 'x'\n")
    with pytest.raises(UserInputError, match=r"d\.toml: \[phone\] is missing the required key 'kind'"):
        load_profiles(f)


def test_unknown_kind_suggests_a_close_one(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[phone]\nkind = 'abd'\n")
    with pytest.raises(UserInputError, match=r"\[phone\] kind 'abd' is unknown \(did you mean 'adb'\?\)"):
        load_profiles(f)


def test_unknown_cpu_key_is_named_with_a_suggestion(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[cpu]\nthread = 1\n")
    with pytest.raises(UserInputError, match=r"d\.toml: \[cpu\] unknown key 'thread' \(did you mean 'threads'\?\)"):
        load_profiles(f)


@pytest.mark.parametrize("value", ["'4'", "true", "1.5"])
def test_wrongly_typed_option_is_named(isolated: Path, value: str) -> None:
    f = write(isolated / "d.toml", f"[cpu]\nthreads = {value}\n")
    with pytest.raises(UserInputError, match=r"\[cpu\] threads must be an integer"):
        load_profiles(f)


def test_top_level_value_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(UserInputError, match="'threads' must be a table"):
        parse_profiles({"threads": 4}, Path("x.toml"))


def test_builtin_override_needs_no_kind(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[cpu]\nthreads = 1\ngraph_optimization = 'basic'\n")
    profiles = load_profiles(f)
    assert profiles["cpu"].kind == "cpu" and profiles["cpu"].source == f
    assert profiles["cuda"].source is None
    dev = get_device("cpu", f)
    assert isinstance(dev, CpuDevice) and dev.threads == 1 and dev.graph_optimization == "basic"


def test_extra_named_cpu_and_cuda_profiles(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[cpu1]\nkind='cpu'\nthreads=1\n[gpu1]\nkind='cuda'\ndevice_id=1\n")
    cpu1, gpu1 = get_device("cpu1", f), get_device("gpu1", f)
    assert isinstance(cpu1, CpuDevice) and cpu1.name == "cpu1" and cpu1.threads == 1
    assert isinstance(gpu1, CudaDevice) and gpu1.device_id == 1


def test_option_values_checked_by_the_device_name_the_file(isolated: Path) -> None:
    f = write(isolated / "d.toml", "[cpu]\nthreads = 0\n")
    with pytest.raises(UserInputError, match=r"d\.toml: \[cpu\] .*threads must be at least 1"):
        get_device("cpu", f)


# ------------------------------------------------------------------ resolving names
def test_builtins_resolve_without_a_file() -> None:
    assert isinstance(get_device("cpu"), CpuDevice)
    assert isinstance(get_device("cuda"), CudaDevice)


def test_unknown_name_suggests_and_lists(isolated: Path) -> None:
    f = write(isolated / "d.toml", PIXEL)
    with pytest.raises(UserInputError) as e:
        get_device("pixle", f)
    msg = str(e.value)
    assert "did you mean 'pixel'" in msg and "known devices: cpu, cuda, litert, pixel" in msg


def test_adb_profile_goes_to_adb_from_profile(isolated: Path, fake_adb: list) -> None:
    f = write(isolated / "d.toml", PIXEL)
    dev = get_device("pixel", f)
    assert dev.name == "pixel"
    name, profile = fake_adb[0]
    assert name == "pixel" and profile["host"] == "192.168.1.20:5555" and profile["threads"] == 4


def test_adb_option_errors_gain_the_file_and_table(isolated: Path, fake_adb: list) -> None:
    f = write(isolated / "d.toml", "[pixel]\nkind = 'adb'\nthreads = 4\n")
    with pytest.raises(UserInputError, match=r"d\.toml: \[pixel\] missing 'host'"):
        get_device("pixel", f)


def test_listing_does_not_create_adb_devices(isolated: Path, fake_adb: list) -> None:
    f = write(isolated / "d.toml", PIXEL)
    rows = {r.profile.name: r for r in list_devices(f)}
    assert list(rows) == ["cpu", "cuda", "litert", "pixel"]
    assert fake_adb == []
    assert rows["cpu"].available is True and rows["pixel"].available is None
    assert rows["cuda"].available == CudaDevice().available()[0]
    d = rows["pixel"].to_dict()
    assert d["source"] == str(f) and d["options"]["cpus"] == "f0" and "kind" not in d["options"]


def test_missing_adb_package_is_a_device_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "latbench.devices.adb", None)  # makes the import fail
    f = write(isolated / "d.toml", PIXEL)
    with pytest.raises(DeviceError, match="adb devices are not available"):
        get_device("pixel", f)


def test_env_var_file_is_used_by_get_device(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(isolated / "env.toml", "[solo]\nkind = 'cpu'\nthreads = 1\n")
    monkeypatch.setenv(ENV_VAR, str(f))
    assert get_device("solo").threads == 1


# ------------------------------------------------------------------ node (device farm)
def test_node_names_the_host_of_any_kind_and_is_not_handed_to_the_device(
        isolated: Path, fake_adb: list) -> None:
    f = write(isolated / "d.toml", PIXEL + 'node = "10.0.0.2"\n[cpu]\nthreads = 1\nnode = "rack-a"\n')
    profiles = load_profiles(f)
    assert profiles["pixel"].node == "10.0.0.2" and profiles["cpu"].node == "rack-a"
    assert load_profiles()["cpu"].node is None
    get_device("pixel", f)
    assert "node" not in fake_adb[0][1]  # the adb device checks its own keys: node is not one
    assert isinstance(get_device("cpu", f), CpuDevice)


def test_a_node_that_is_not_a_string_is_named(isolated: Path) -> None:
    f = write(isolated / "d.toml", PIXEL + "node = 2\n")
    with pytest.raises(UserInputError, match=r"\[pixel\] node must be a string, got 2"):
        load_profiles(f)
