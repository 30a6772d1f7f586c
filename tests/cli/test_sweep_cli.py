"""``bench sweep``: output, progress, resume, and one-line errors with the right exit codes."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from clirun import bench
import latbench.cli.sweep as cli_sweep
import latbench.devices.registry as registry
from latbench.devices.cpu import CpuDevice
from latbench.devices.profiles import ENV_VAR
from latbench.exceptions import DeviceError

FAST = ("--input", "1x3x12x12", "--threads", "1", "--warmup", "1", "--repeats", "3")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path_factory.mktemp("cli") / "tiny.pt"
    torch.save(net, path)
    return str(path)


def assert_one_line_error(code: int, err: str, expected_code: int, *needles: str) -> None:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def n_measurements(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    finally:
        con.close()


@pytest.mark.slow
def test_sweep_json_then_rerun_skips_everything(capsys: pytest.CaptureFixture, model: str) -> None:
    args = ("sweep", "--model", model, "--methods", "tucker2,svd", "--ranks", "0.5",
            "--random-plans", "1", *FAST, "--db", "lat.db", "--json")
    code, out, _ = bench(capsys, *args)
    assert code == 0
    doc = json.loads(out)
    assert (doc["measured"], doc["skipped"], doc["failed"]) == (4, 0, 0)
    assert doc["device"] == "cpu" and doc["db"] == "lat.db"
    assert set(doc["seconds"]) == {"compress", "export", "measure"}
    code, out, _ = bench(capsys, *args)
    assert code == 0 and (json.loads(out)["measured"], json.loads(out)["skipped"]) == (0, 4)
    assert n_measurements(Path("lat.db")) == 4


def test_sweep_prints_a_one_line_summary_and_per_layer_counts(capsys: pytest.CaptureFixture, model: str) -> None:
    code, out, _ = bench(capsys, "sweep", "--model", model, "--methods", "svd", "--ranks", "0.5",
                         "--random-plans", "0", "--per-layer", *FAST, "--db", "lat.db")
    assert code == 0
    assert "cpu: 2 variants measured, 0 already stored, 0 failed" in out
    assert "layers measured alone (0 stored)" in out and "lat.db" in out


def test_progress_bar_shows_variants_done_eta_and_last_median_on_a_terminal(
        capsys: pytest.CaptureFixture, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    term = io.StringIO()
    monkeypatch.setattr(cli_sweep, "err_console",
                        Console(file=term, force_terminal=True, width=160, color_system=None))
    code, _, _ = bench(capsys, "sweep", "--model", model, "--methods", "svd", "--ranks", "0.25,0.5",
                       "--random-plans", "0", *FAST, "--db", "lat.db")
    assert code == 0
    shown = term.getvalue()
    assert "variants" in shown and "3/3" in shown and "ETA" in shown
    assert "svd@0.5:" in shown and " ms" in shown  # the last variant's median


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture, model: str) -> None:
    code, _, err = bench(capsys, "sweep", "--model", model, "--methods", "svd", "--ranks", "0.5",
                         "--random-plans", "0", *FAST, "--db", "lat.db")
    assert code == 0 and "ETA" not in err and err == ""


@pytest.mark.slow
def test_sweep_from_a_config_file(capsys: pytest.CaptureFixture, model: str, isolated: Path) -> None:
    (isolated / "sweep.toml").write_text(
        f'random_plans = 0\nthreads = 1\nwarmup = 1\nrepeats = 3\n[[models]]\nname = "{model}"\n'
        'inputs = ["1x3x12x12", "1x3x8x8"]\nmethods = ["svd"]\nranks = "0.5"\n')
    code, out, _ = bench(capsys, "sweep", "--config", "sweep.toml", "--db", "lat.db", "--json")
    assert code == 0 and json.loads(out)["measured"] == 4  # 2 inputs × (original, svd@0.5)


@pytest.mark.parametrize("args, needles", [
    (("--model", "resnet1888"), ("unknown model 'resnet1888'", "resnet18")),
    (("--methods", "tucker2,cpp"), ("unknown", "'cpp'", "cp")),
    (("--methods", ""), ("--methods is empty",)),
    (("--methods", " , "), ("--methods is empty",)),
    (("--ranks", ""), ("rank range is empty",)),
    (("--ranks", "0.9:0.1:0.1"), ("is empty", "start ≤ stop")),
    (("--ranks", "0.1:0.9"), ("bad rank range", "start:stop:step")),
    (("--ranks", "0.5,2"), ("outside (0, 1]",)),
    (("--input", "1x0x4"), ("bad input shape",)),
    (("--input", "1x3"), ("does not run on input 1x3", "--input")),
    (("--device", "pixl"), ("unknown device 'pixl'",)),
    (("--threads", "0"), ("--threads must be at least 1",)),
    (("--repeats", "0"), ("--repeats must be at least 1",)),
    (("--config", "missing.toml"), ("does not exist",)),
    (("--config", "missing.toml", "--model", "x"), ("don't combine",)),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture, model: str,
                                                 args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    base = ("--model", model) if "--model" not in args and "--config" not in args else ()
    code, _, err = bench(capsys, "sweep", *base, *args, "--db", "lat.db")
    assert_one_line_error(code, err, 2, *needles)
    assert not Path("lat.db").exists()


@pytest.mark.slow
def test_a_lost_device_exits_3_and_a_rerun_resumes(capsys: pytest.CaptureFixture, model: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Flaky(CpuDevice):
        calls = 0

        def measure(self, artifact, spec, **kw):
            type(self).calls += 1
            if type(self).calls == 2:
                raise DeviceError("device 'cpu' went away")
            return super().measure(artifact, spec, **kw)

    monkeypatch.setattr(registry, "get_device", lambda name, devices_file=None: Flaky("cpu"))
    args = ("sweep", "--model", model, "--methods", "svd", "--ranks", "0.25,0.5",
            "--random-plans", "0", *FAST, "--db", "lat.db", "--json")
    code, _, err = bench(capsys, *args)
    assert_one_line_error(code, err, 3, "went away", "1 new measurements", "rerun")
    assert n_measurements(Path("lat.db")) == 1
    code, out, _ = bench(capsys, *args)
    assert code == 0 and (json.loads(out)["skipped"], json.loads(out)["measured"]) == (1, 2)
    assert n_measurements(Path("lat.db")) == 3
