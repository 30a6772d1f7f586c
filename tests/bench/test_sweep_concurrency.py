"""Sweeps under concurrency and faults (issue 15): two sweeps on one database split the work
and measure each variant once; a killed sweep's claims and temporary folder are taken over
and removed; resume is keyed by the model's content, not its path; a full ``$TMPDIR`` and a
full database stop the sweep with one line saying what was kept."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from latbench.bench.sweep import SweepConfig, Target, plan_sweep, run_sweep
from latbench.data.store import Store
from latbench.devices.profiles import ENV_VAR
from latbench.exceptions import ExportError, StoreError, WorkdirError
from latbench.models import resolve_model

SHAPE = (1, 3, 16, 16)
SRC = Path(__file__).resolve().parents[2] / "src"


def tiny(seed: int, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, 24, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)).eval()


@pytest.fixture
def model(tmp_path: Path) -> str:
    path = tmp_path / "model.pt"
    torch.save(tiny(0), path)
    return str(path)


def rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute("SELECT v.content_hash, m.runtime FROM measurements m JOIN variants v "
                         "ON v.id = m.variant_id").fetchall()


def keys_of(cfg: SweepConfig) -> set[str]:
    return {v.key for v in plan_sweep(cfg, lambda s: resolve_model(s, seed=cfg.seed))}


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(PYTHONPATH=str(SRC), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path))
    return env


def sweep_cmd(model: str, db: Path, ranks: str = "0.25,0.5,0.75", repeats: str = "5") -> list[str]:
    return [sys.executable, "-c", "from latbench.cli import main; main()", "sweep", "--model",
            model, "--input", "1x3x16x16", "--methods", "tucker2,svd", "--ranks", ranks,
            "--random-plans", "2", "--threads", "1", "--warmup", "1", "--repeats", repeats,
            "--fixed-repeats", "--db", str(db), "--json"]


@pytest.mark.slow
def test_two_sweeps_on_one_database_measure_each_variant_once(model, tmp_path):
    db = tmp_path / "lat.db"
    cmd = sweep_cmd(model, db)
    env = env_for(tmp_path)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    docs = [json.loads(out) for out, _ in outs]
    cfg = SweepConfig((Target(model, SHAPE, ("tucker2", "svd"), (0.25, 0.5, 0.75)),),
                      random_plans=2)
    keys = keys_of(cfg)
    got = rows(db)
    assert len(got) == len(keys) == len({k for k, _ in got})  # each variant exactly once
    assert {k for k, _ in got} == keys
    # between them they measured everything once; each saw the rest as stored or as
    # measured by the other
    assert sum(d["measured"] for d in docs) == len(keys)
    for d in docs:
        assert d["measured"] + d["skipped"] + d["measured_elsewhere"] == len(keys)
        assert d["failed"] == 0
    with Store(db) as s:
        assert s.claims().empty  # nothing left claimed


@pytest.mark.slow
def test_a_killed_sweeps_claims_and_temp_folder_are_taken_over(model, tmp_path):
    db = tmp_path / "lat.db"
    cmd = sweep_cmd(model, db, repeats="60")
    env = env_for(tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=tmp_path)
    end = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < end:
            try:
                if len(rows(db)) >= 1:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    left = list(tmp_path.glob("latbench-sweep-*"))
    assert len(left) == 1  # kill -9 leaves its folder ...
    with Store(db) as s:
        held = s.claims()
    assert len(held) <= 1 and not held["live"].any()  # ... and maybe a dead claim
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert not left[0].exists()  # removed by the next sweep
    assert not list(tmp_path.glob("latbench-sweep-*"))
    got = rows(db)
    assert len(got) == len({k for k, _ in got})  # no variant twice
    doc = json.loads(rerun.stdout)
    assert doc["measured"] + doc["skipped"] == len(got)


def fast_config(model: str, **kw) -> SweepConfig:
    base = dict(random_plans=0, threads=1, warmup=1, repeats=3, seed=0, adaptive=False)
    base.update(kw)
    return SweepConfig((Target(model, SHAPE, ("svd",), (0.5,)),), **base)


@pytest.mark.slow
def test_resume_is_keyed_by_the_models_content_not_its_path(model, tmp_path):
    db = tmp_path / "lat.db"
    cfg = fast_config(model)
    first = run_sweep(cfg, "cpu", db)
    assert (first.measured, first.skipped) == (2, 0)
    torch.save(tiny(0), model)  # the same network saved again: nothing new
    again = run_sweep(cfg, "cpu", db)
    assert (again.measured, again.skipped) == (0, 2)
    torch.save(tiny(1, width=12), model)  # another network under the same path
    other = run_sweep(cfg, "cpu", db)
    assert (other.measured, other.skipped) == (2, 0)
    assert len(rows(db)) == 4


def test_a_full_tmpdir_stops_the_sweep_instead_of_failing_every_variant(model, tmp_path,
                                                                        monkeypatch):
    import latbench.compress.export as export_mod

    def full(*_a, **_k):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise ExportError("could not write the ONNX file") from exc

    db = tmp_path / "lat.db"
    monkeypatch.setattr(export_mod, "export_model", full)  # what the sweep exports with
    with pytest.raises(WorkdirError, match=r"cannot write models into .*No space left on "
                                           r"device — sweep stopped after 0 new measurements"):
        run_sweep(fast_config(model), "cpu", db)
    with Store(db) as s:
        assert s.failures().empty  # not one variant recorded as failed


def test_a_tmpdir_that_cannot_take_a_folder_is_one_line(model, tmp_path, monkeypatch, capsys):
    import tempfile

    from latbench.cli import main

    def refuse(*_a, **_k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--model", model, "--input", "1x3x16x16", "--methods", "svd", "--ranks",
              "0.5", "--random-plans", "0", "--repeats", "3", "--db", str(tmp_path / "l.db")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot make a folder for model files")
    assert "Read-only file system" in err[0] and "TMPDIR" in err[0]


def test_a_full_database_stops_the_sweep_saying_what_was_kept(model, tmp_path, monkeypatch,
                                                              capsys):
    from latbench.cli import main

    real = Store.add_measurement
    calls = {"n": 0}

    def add_then_fill(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the disk fills up at the second measurement: SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "add_measurement", add_then_fill)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    db = tmp_path / "l.db"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--model", model, "--input", "1x3x16x16", "--methods", "svd,tucker2",
              "--ranks", "0.5", "--random-plans", "0", "--repeats", "3", "--db", str(db)])
    assert e.value.code == 4
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: cannot write ")
    assert "the disk is full" in err[0] and "sweep stopped after 1 new measurements" in err[0]
    assert "rerun the same command to resume" in err[0]
    assert len(rows(db)) == 1
