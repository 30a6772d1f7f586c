"""Layer tables of the graph ONNX Runtime executes: kinds, fusions, MACs, provenance."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from latbench.artifact import Artifact
from latbench.compress.export import export_onnx
from latbench.data.executed import (
    executed_layer_table, onnx_graph_table, ort_graph_label, parse_graph_label, write_ort_graph,
)
from latbench.data.features import LAYER_COLUMNS, layer_table, parse_inputs
from latbench.devices.cpu import CpuDevice
from latbench.devices.simulated import SimulatedDevice
from latbench.exceptions import UserInputError
from latbench.models import resolve_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4)).eval()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return torch.relu(self.b(torch.relu(self.a(s))) + s)


def _graph(net: nn.Module, shape, tmp: Path, level: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    art = export_onnx(net, shape, tmp / "m.onnx")
    label = write_ort_graph(art.path, tmp / f"m_{level}.onnx", level=level)
    return onnx_graph_table(tmp / f"m_{level}.onnx", shape, graph=label), layer_table(net, shape)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_level_gives_the_same_conv_and_linear_work_and_records_its_graph(tmp_path, level):
    got, module = _graph(_net(), (2, 3, 8, 8), tmp_path, level)
    assert list(got.columns) == LAYER_COLUMNS
    assert set(got["graph"]) == {f"onnxruntime:{level}:CPUExecutionProvider"}
    assert set(got["batch"]) == {2}
    # BatchNorm after a conv is folded by every path (the exporter already does it).
    assert "bn" not in set(got["op"])
    assert got.loc[got["op"] == "linear", "macs"].tolist() == [2 * 16 * 4]
    conv = got[got["op"] == "conv"]
    assert len(conv) == 2 and conv["bias"].tolist() == [1, 1]
    if level == "disable":
        # Nothing fused: each ReLU is its own kernel, the convolutions are the module's.
        assert (got["op"] == "act").sum() == 2 and set(conv["fused"]) == {""}
        assert conv["macs"].tolist() == module.loc[module["op"] == "conv", "macs"].tolist()
    if level in ("extended", "all"):
        # Both ReLUs run inside the convolutions' epilogue.
        assert (got["op"] == "act").sum() == 0 and conv["fused"].tolist() == ["relu", "relu"]
    if level != "all":
        # 3·16·9·(2·8·8) and 16·16·(2·8·8): padding-free layouts compute exactly the module's work.
        assert conv["macs"].tolist() == [55296, 32768]


def test_residual_add_and_relu_fuse_into_the_nchwc_conv_and_inputs_follow_the_dataflow(tmp_path):
    got, _ = _graph(Residual().eval(), (1, 3, 8, 8), tmp_path, "all")
    conv = got[got["op"] == "conv"]
    if "reorder" not in set(got["op"]):
        pytest.skip("this onnxruntime build has no NCHWc layout on this CPU")
    assert conv["fused"].tolist() == ["relu", "relu", "add+relu"]
    # The last conv reads the middle conv's output and the stem's (the residual it sums).
    stem, middle, last = conv.index
    assert parse_inputs(got.loc[last, "inputs"]) == [stem, middle]
    assert not got["op"].isin(["add", "act"]).any()


def test_zeroing_ops_are_rows_of_their_own(tmp_path):
    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
    net = resolve_model("nb201-all:" + arch)
    got, module = _graph(net, (1, 3, 32, 32), tmp_path, "disable")
    # 3 none edges in each of 15 cells; onnxruntime at 'disable' still runs each x·0 the
    # exporter left (it merges none edges that read the same node: 2 per cell here).
    assert (module["op"] == "zero").sum() == 45
    assert (got["op"] == "zero").sum() == 30
    assert got.loc[got["op"] == "zero", "macs"].eq(0).all()


def test_executed_layer_table_asks_the_device_and_keeps_the_module_table_when_it_cannot(tmp_path):
    net = _net()
    shape = (1, 3, 8, 8)
    art = export_onnx(net, shape, tmp_path / "m.onnx")
    module = layer_table(net, shape)
    same = executed_layer_table(SimulatedDevice(), art, module, threads=1)
    assert same is module and set(same["graph"]) == {"torch"}
    got = executed_layer_table(CpuDevice(threads=1, graph_optimization="extended"), art, module,
                               threads=1)
    assert set(got["graph"]) == {"onnxruntime:extended:CPUExecutionProvider"}
    assert (got["op"] == "act").sum() == 0


def test_a_graph_that_cannot_be_read_keeps_the_module_table_with_a_warning(tmp_path):
    class Liar:
        def executed_graph(self, artifact, out, *, threads=None):
            Path(out).write_bytes(b"not onnx")
            return "onnxruntime:all:CPUExecutionProvider"

    module = layer_table(_net(), (1, 3, 8, 8))
    art = Artifact(tmp_path / "m.onnx", "h", (1, 3, 8, 8), 17)
    with pytest.warns(UserWarning, match="could not be read"):
        got = executed_layer_table(Liar(), art, module)
    assert got is module


def test_bad_inputs_are_user_errors(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"nope")
    with pytest.raises(UserInputError, match="not an ONNX model"):
        onnx_graph_table(tmp_path / "x.onnx", (1, 3, 8, 8))
    art = export_onnx(_net(), (1, 3, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match="unknown onnxruntime optimisation level"):
        write_ort_graph(art.path, tmp_path / "o.onnx", level="max")
    with pytest.raises(UserInputError, match="has no"):
        write_ort_graph(art.path, tmp_path / "o.onnx", provider="NoSuchExecutionProvider")


def test_graph_labels_round_trip():
    label = ort_graph_label("all", "CPUExecutionProvider")
    assert parse_graph_label(label) == {"runtime": "onnxruntime", "level": "all",
                                        "provider": "CPUExecutionProvider"}
    assert parse_graph_label("torch") == {"runtime": "torch"}


def test_module_tables_say_they_are_module_tables():
    t = layer_table(_net(), (3, 3, 8, 8))
    assert set(t["graph"]) == {"torch"} and set(t["fused"]) == {""} and set(t["batch"]) == {3}


def test_no_warning_for_a_plain_graph(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _graph(_net(), (1, 3, 8, 8), tmp_path, "basic")


def test_compute_no_formula_counts_is_named_in_uncounted_never_a_silent_zero(tmp_path):
    # A transposed conv (and any compute kernel without a MAC formula here) keeps macs = 0
    # but says so; counted kernels and data movement have uncounted = "".
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 4, 2, stride=2)).eval()
    for level in ("disable", "all"):
        got, module = _graph(net, (1, 3, 8, 8), tmp_path, level)
        assert got.loc[got["op"] == "convtranspose", "uncounted"].tolist() == ["ConvTranspose"]
        assert got.loc[got["op"] == "convtranspose", "macs"].tolist() == [0]
        conv = got[got["op"] == "conv"]
        assert conv["uncounted"].tolist() == [""] and conv["macs"].iloc[0] > 0
        if level == "disable":  # (at "all" x86 NCHWc kernels may pad channels to their block)
            assert conv["macs"].tolist() == [3 * 8 * 9 * 64]
        assert set(got.loc[~got["op"].isin(["convtranspose"]), "uncounted"]) == {""}
    # the module's own table counts the transposed conv (FlopCounterMode): 8·4·2·2·8·8
    assert module.loc[module["op"] == "convtranspose", "macs"].tolist() == [8 * 4 * 4 * 64]
