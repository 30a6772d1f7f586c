"""``run_farm_sweep`` on a local Ray cluster (2 CPUs) with two loopback phones (the test adbd
and the onnxruntime_perf_test stand-in) and the ``cpu`` device: the stored rows are those of
three serial sweeps; a phone unplugged, or a device actor killed, mid-sweep leaves the other
devices' rows complete and says what was not measured; a rerun resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("ray", reason='the device farm needs pip install "latbench[farm]"')

import latbench.farm.sweep as farm_sweep  # noqa: E402
from latbench.bench.sweep import SweepConfig, Target, prepare_sweep, run_sweep  # noqa: E402
from latbench.concurrency import ProcessId  # noqa: E402
from latbench.data.store import Store  # noqa: E402
from latbench.devices.profiles import ENV_VAR  # noqa: E402
from latbench.farm import run_farm_sweep  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster, three devices: more than 20 s here

SHAPE = (1, 3, 16, 16)
DEVICES = ["phone1", "phone2", "cpu"]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path_factory.mktemp("farm") / "tiny.pt"
    torch.save(net, path)
    return str(path)


def config(model: str, ranks=(0.5,)) -> SweepConfig:
    return SweepConfig((Target(model, SHAPE, ("svd", "tucker2"), tuple(ranks)),),
                       random_plans=1, threads=1, warmup=1, repeats=3, seed=0)


def write_devices(path: Path, fakes: dict, profile) -> Path:
    lines = []
    for name, fake in fakes.items():
        lines.append(f"[{name}]")
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}"
                  for k, v in profile(fake, threads=1).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def phones(make_fake, profile, tmp_path):
    """Two loopback phones and a devices.toml naming them ``phone1`` and ``phone2``."""
    fakes = {name: make_fake() for name in ("phone1", "phone2")}
    return fakes, write_devices(tmp_path / "devices.toml", fakes, profile)


def rows(db: Path) -> set[tuple]:
    """Every stored measurement by what identifies it (variant, device, runtime, format)."""
    con = sqlite3.connect(db)
    try:
        return set(con.execute(
            "SELECT v.content_hash, v.input_shape, d.name, m.runtime, m.runtime_version, "
            "m.threads, m.format, m.provider FROM measurements m JOIN variants v ON "
            "v.id=m.variant_id JOIN devices d ON d.id=m.device_id").fetchall())
    finally:
        con.close()


def per_device(found: set[tuple]) -> dict[str, set[tuple]]:
    out: dict[str, set[tuple]] = {n: set() for n in DEVICES}
    for r in found:
        out[r[2]].add(r)
    return out


def test_a_farm_sweep_stores_the_rows_of_three_serial_sweeps_and_a_rerun_skips_them(
        ray_cluster, phones, model, tmp_path):
    _, devices = phones
    cfg = config(model)
    serial = tmp_path / "serial.db"
    for name in DEVICES:
        run_sweep(cfg, name, serial, devices_file=devices)
    events = []
    farm = tmp_path / "farm.db"
    summary = run_farm_sweep(cfg, DEVICES, farm, devices_file=devices, progress=events.append)

    n = len(prepare_sweep(cfg)[0])
    assert summary.complete and summary.lost == {}
    assert {d: s.measured for d, s in summary.devices.items()} == {d: n for d in DEVICES}
    assert rows(farm) == rows(serial) and len(rows(farm)) == 3 * n
    with Store(farm) as store:
        assert len(store.claims()) == 0  # every claim released
        variants = store.connection.execute("SELECT COUNT(*) FROM variants").fetchone()[0]
        assert variants == n  # one variant row however many devices measured it
    # progress: per device, done counts 1..n
    for name in DEVICES:
        mine = [e for e in events if e.device == name]
        assert [e.done for e in mine] == list(range(1, n + 1)) and all(e.total == n for e in mine)
        assert {e.status for e in mine} == {"measured"}

    again = run_farm_sweep(cfg, DEVICES, farm, devices_file=devices)
    assert {d: (s.measured, s.skipped) for d, s in again.devices.items()} == \
        {d: (0, n) for d in DEVICES}
    assert rows(farm) == rows(serial)


def _spy_on_devices(monkeypatch) -> dict[str, ProcessId]:
    """The process of each device actor, once the farm has opened them."""
    procs: dict[str, ProcessId] = {}
    real = farm_sweep._start_devices

    def spy(ray, farm, *args):
        gates = real(ray, farm, *args)
        procs.update({d.name: ProcessId.parse(d.hello.process) for d in farm})
        return gates

    monkeypatch.setattr(farm_sweep, "_start_devices", spy)
    return procs


@pytest.mark.parametrize("how", ["unplug the phone", "kill its actor"])
def test_losing_one_phone_mid_sweep_leaves_the_other_devices_complete_and_a_rerun_resumes(
        ray_cluster, phones, make_fake, profile, model, tmp_path, monkeypatch, how):
    fakes, devices = phones
    cfg = config(model, ranks=(0.25, 0.5, 0.75))
    n = len(prepare_sweep(cfg)[0])
    procs = _spy_on_devices(monkeypatch)
    lost_at: list[int] = []

    def on_event(ev):
        if ev.device == "phone2" and ev.status == "measured" and not lost_at:
            lost_at.append(ev.done)
            if how == "unplug the phone":
                fakes["phone2"].stop()
            else:  # the host (or the actor's process) is gone
                os.kill(procs["phone2"].pid, signal.SIGKILL)

    db = tmp_path / "farm.db"
    summary = run_farm_sweep(cfg, DEVICES, db, devices_file=devices, progress=on_event)

    found = per_device(rows(db))
    assert len(found["phone1"]) == n and len(found["cpu"]) == n  # the others are complete
    assert summary.devices["phone1"].measured == n and summary.devices["cpu"].measured == n
    assert not summary.complete and set(summary.lost) == {"phone2"}
    # phone2: measured what came back before it was lost, never the rest; the driver only
    # builds QUEUE_PER_DEVICE models ahead of a device, so the rest is never measured
    assert 1 <= len(found["phone2"]) <= 1 + farm_sweep.QUEUE_PER_DEVICE < n
    p2 = summary.devices["phone2"]
    assert p2.measured == len(found["phone2"])
    assert p2.measured + p2.failed + summary.not_measured["phone2"] == n
    assert summary.not_measured["phone2"] >= 1
    if how == "unplug the phone":
        assert "device 'phone2' failed" in summary.lost["phone2"]
        assert p2.failed == 1  # the measurement in flight, recorded as a single sweep does
        with Store(db) as store:
            f = store.failures()
            assert list(f["stage"]) == ["measure"]
    else:
        assert "Ray actor driving device 'phone2' died" in summary.lost["phone2"]
    with Store(db) as store:
        assert len(store.claims()) == 0

    # phone2 plugged in again (a new loopback phone at a new address, same phone): the rerun
    # measures exactly what phone2 did not, and nothing twice.
    fakes["phone2"] = make_fake()
    write_devices(devices, fakes, profile)
    again = run_farm_sweep(cfg, DEVICES, db, devices_file=devices)
    assert again.complete
    assert {d: s.measured for d, s in again.devices.items()} == \
        {"phone1": 0, "cpu": 0, "phone2": n - len(found["phone2"])}
    assert all(len(r) == n for r in per_device(rows(db)).values())
