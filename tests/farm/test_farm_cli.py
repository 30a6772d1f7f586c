"""``bench sweep`` with several devices, ``--workers`` or ``--ray``: the farm path, its
summary and exit code; the missing extra in one line; one device stays the Ray-free path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from latbench.cli import main
from latbench.devices.profiles import ENV_VAR

FAST = ("--input", "1x3x12x12", "--methods", "svd", "--ranks", "0.5", "--random-plans", "0",
        "--threads", "1", "--warmup", "1", "--repeats", "3", "--trust-file")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.toml").write_text('[cpu2]\nkind = "cpu"\nthreads = 1\n')
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("cli") / "tiny.pt"
    torch.save(net, path)
    return str(path)


def bench(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags", [("--device", "cpu", "--device", "cpu2"),
                                   ("--workers", "2"), ("--ray", "auto")])
def test_without_the_farm_extra_a_farm_sweep_is_one_line_naming_the_extra(
        capsys, monkeypatch, model, flags):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    code, out, err = bench(capsys, "sweep", *flags, "--model", model, *FAST)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert 'pip install "latbench[farm]"' in err and "Traceback" not in err


def test_a_device_named_twice_or_a_farm_per_layer_sweep_is_refused_before_any_work(
        capsys, model, tmp_path):
    pytest.importorskip("ray", reason='the device farm needs pip install "latbench[farm]"')
    code, _, err = bench(capsys, "sweep", "--device", "cpu", "--device", "cpu", "--model",
                         model, *FAST)
    assert code == 2 and "named twice" in err
    code, _, err = bench(capsys, "sweep", "--device", "cpu", "--device", "cpu2", "--per-layer",
                         "--model", model, *FAST)
    assert code == 2 and "--per-layer" in err
    assert not (tmp_path / "latency.db").exists()


def test_one_device_without_workers_or_ray_never_imports_ray(model, tmp_path):
    code = ("import sys; from latbench.cli import main\n"
            "try:\n"
            f"    main(['sweep', '--model', {model!r}, *{list(FAST)!r}, '--db', 'one.db'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "one.db").exists()


@pytest.mark.slow
def test_a_farm_sweep_prints_each_device_and_a_lost_device_exits_3_after_the_summary(
        capsys, ray_cluster, make_fake, profile, model, tmp_path):
    code, out, err = bench(capsys, "sweep", "--device", "cpu", "--device", "cpu2", "--model",
                           model, *FAST, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["devices"]) == {"cpu", "cpu2"} and doc["complete"] is True
    assert all(d["measured"] == 2 and d["lost"] is None for d in doc["devices"].values())

    gone = make_fake()
    table = profile(gone)
    gone.stop()  # a phone unplugged before the sweep
    with open(tmp_path / "devices.toml", "a") as f:
        f.write("[phone]\n" + "".join(f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n"
                                      for k, v in table.items()))
    code, out, err = bench(capsys, "sweep", "--device", "cpu", "--device", "phone", "--model",
                           model, *FAST)
    assert code == 3
    assert "cpu: 0 variants measured, 2 already stored, 0 failed" in out
    assert "phone: 0 variants measured, 0 already stored, 0 failed, 2 not measured" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 devices lost — phone: cannot open device 'phone'")
    assert "rerun the same command" in last


def _measurements(db: Path) -> list[tuple]:
    import sqlite3

    try:
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT variant_id, device_id FROM measurements").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError:  # the schema is not there yet
        return []


@pytest.mark.slow
def test_a_kill_9_of_the_farm_driver_loses_only_what_was_in_flight_and_a_rerun_resumes(
        model, tmp_path):
    import os
    import signal
    import time

    pytest.importorskip("ray", reason='the device farm needs pip install "latbench[farm]"')
    db = tmp_path / "lat.db"
    args = ["sweep", "--device", "cpu", "--device", "cpu2", "--workers", "1", "--model", model,
            "--input", "1x3x12x12", "--methods", "svd,tucker2", "--ranks", "0.25,0.5,0.75",
            "--random-plans", "0", "--threads", "1", "--warmup", "1", "--repeats", "3",
            "--trust-file", "--db", str(db), "--json"]
    cmd = [sys.executable, "-c", "from latbench.cli import main; main()", *args]
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and len(_measurements(db)) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _measurements(db)
    n = 7  # the original, svd and tucker2 at three ranks
    assert 1 <= len(before) < 2 * n  # killed mid-sweep
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads(rerun.stdout)
    assert sum(d["skipped"] for d in doc["devices"].values()) == len(before)
    assert sum(d["measured"] for d in doc["devices"].values()) == 2 * n - len(before)
    after = _measurements(db)
    assert len(after) == len(set(after)) == 2 * n  # each variant × device once
