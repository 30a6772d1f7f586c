"""Long commands show progress on a terminal (rich, on stderr) and stay silent otherwise."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from clirun import bench
import latbench.cli._common as common
from latbench.compress.model import compress_model
from latbench.compress.plan import Plan


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    term = io.StringIO()
    monkeypatch.setattr(common, "err_console",
                        Console(file=term, force_terminal=True, width=160, color_system=None))
    return term


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("progress") / "net.pt"
    torch.save(net, path)
    return str(path)


def test_compress_model_reports_each_layer_it_decomposes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    seen: list[tuple[str, int, int]] = []
    compress_model(net, Plan.uniform("svd", 0.5, "*"), input_shape=(1, 3, 8, 8),
                   progress=lambda *a: seen.append(a))
    assert seen == [("0", 0, 3), ("1", 1, 3), ("3", 2, 3), ("", 3, 3)]
    seen.clear()
    compress_model(net, Plan.uniform("svd", 0.5, "3"), input_shape=(1, 3, 8, 8),
                   progress=lambda *a: seen.append(a))
    assert seen == [("3", 0, 1), ("", 1, 1)]  # only the layers the plan compresses count


def test_compress_shows_a_bar_with_the_layer_on_a_terminal(capsys, terminal, model, tmp_path):
    code, out, _ = bench(capsys, "compress", model, "--method", "svd", "--rank", "0.5",
                         "--input", "1x3x8x8", "--out", str(tmp_path / "v.onnx"))
    assert code == 0
    shown = terminal.getvalue()
    assert "compressing" in shown and "/3" in shown
    assert "exporting" in shown
    assert "compressing" not in out  # stdout keeps only the report


def test_compress_is_silent_when_stderr_is_not_a_terminal(capsys, model):
    code, _, err = bench(capsys, "compress", model, "--method", "svd", "--rank", "0.5",
                         "--input", "1x3x8x8")
    assert code == 0 and err == ""


def test_compress_json_never_draws_progress(capsys, terminal, model):
    code, out, _ = bench(capsys, "compress", model, "--method", "svd", "--rank", "0.5",
                         "--input", "1x3x8x8", "--json")
    assert code == 0 and terminal.getvalue() == ""
    assert out.lstrip().startswith("{")


@pytest.mark.slow
def test_report_shows_each_kind_it_evaluates(capsys, terminal, tmp_path):
    csv = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"
    from latbench.data.nb201_import import import_nb201

    db = tmp_path / "nb.db"
    import_nb201(str(csv), latency_column="sd855_cpu_kryo485_int8_ms", device="sd855",
                 db_path=db, limit=60)
    code, out, _ = bench(capsys, "report", "--db", str(db), "--device", "sd855", "--out",
                         str(tmp_path / "rep"), "--train-size", "40")
    assert code == 0
    shown = terminal.getvalue()
    assert "sd855: flops" in shown and "learning curve of" in shown and "reading" in shown
    assert "wrote" in out
