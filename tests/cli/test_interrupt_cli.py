"""Ctrl-C (SIGINT) on every ``bench`` command: exit 130 and one ``interrupted:`` line saying
what was kept (issue 15)."""

from __future__ import annotations

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

from latbench.cli import KEPT_ON_INTERRUPT, main
from latbench.devices.profiles import ENV_VAR

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bench(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, capsys.readouterr().err


def every_command() -> list[str]:
    import typer

    from latbench.cli.app import build_app

    out = []

    def walk(cmd, prefix: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out.append(prefix)

    walk(typer.main.get_command(build_app()), "")
    return out


def test_every_command_says_what_it_keeps_on_ctrl_c():
    cmds = every_command()
    assert "sweep" in cmds and "data summary" in cmds and len(cmds) >= 10
    assert sorted(c for c in cmds if c not in KEPT_ON_INTERRUPT) == []


def _ki(*_a, **_k):
    raise KeyboardInterrupt


@pytest.mark.parametrize("target,args,kept", [
    ("latbench.bench.run.run_model", ["run", "m.onnx", "--device", "cpu"], "nothing was stored"),
    ("latbench.data.store.Store.summary", ["data", "summary", "--db", "{db}"], "nothing was changed"),
    ("latbench.data.export.flat_table", ["data", "export", "--db", "{db}", "--out", "x.csv"],
     "the database is unchanged"),
    ("latbench.compress.model.compress_model", ["compress", "resnet18", "--method", "svd",
                                                "--rank", "0.5"], "nothing is kept"),
])
def test_ctrl_c_in_a_command_exits_130_saying_what_was_kept(capsys, monkeypatch, tmp_path,
                                                            target, args, kept):
    import importlib

    from latbench.data.store import Store

    db = tmp_path / "lat.db"
    Store(db).close()
    mod, _, attr = target.rpartition(".")
    try:
        owner = importlib.import_module(mod)
    except ModuleNotFoundError:  # a class attribute
        m2, _, cls = mod.rpartition(".")
        owner = getattr(importlib.import_module(m2), cls)
    monkeypatch.setattr(owner, attr, _ki)
    code, err = bench(capsys, *[a.replace("{db}", str(db)) for a in args])
    assert code == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("interrupted: stopped by Ctrl-C; ") and kept in lines[-1], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path_factory.mktemp("int") / "net.pt"
    torch.save(net, path)
    return str(path)


def measured(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigint_during_a_sweep_keeps_what_was_measured_and_a_rerun_resumes(model, tmp_path):
    db = tmp_path / "lat.db"
    args = ["sweep", "--model", model, "--input", "1x3x16x16", "--methods", "svd,tucker2",
            "--ranks", "0.1:0.9:0.1", "--random-plans", "0", "--threads", "1", "--warmup", "1",
            "--repeats", "30", "--fixed-repeats", "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp_path)}
    err_path = tmp_path / "err.txt"
    proc = subprocess.Popen([sys.executable, "-c", "from latbench.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=err_path.open("w"), env=env)
    end = time.monotonic() + 240
    while measured(db) < 2 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = err_path.read_text()
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted: sweep interrupted: sweep stopped after "), err
    assert "everything measured is kept, rerun the same command to resume" in last
    assert "Traceback" not in err
    kept = measured(db)
    assert kept >= 2
    n_new = int(last.split("sweep stopped after ")[1].split()[0])
    assert n_new == kept
    # the temporary folder of the sweep is gone
    assert not list(tmp_path.glob("latbench-sweep-*"))
    # and a rerun takes up where it stopped: what was kept is skipped
    rerun = subprocess.run([sys.executable, "-c", "from latbench.cli import main; main()", *args,
                            "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    import json

    doc = json.loads(rerun.stdout)
    assert doc["skipped"] == kept and doc["measured"] + kept == 19
