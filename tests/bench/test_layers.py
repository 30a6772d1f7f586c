"""One layer measured alone: the one-layer model reproduces the layer-table row it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from latbench.bench.layers import LAYER_OPS_MEASURED_ALONE, measure_layer, single_layer_model
from latbench.data.features import layer_key, layer_table
from latbench.devices.cpu import CpuDevice
from latbench.exceptions import UserInputError


def rows_of(net: nn.Module, shape: tuple[int, ...]) -> list[dict]:
    table = layer_table(net, shape)
    return [r for r in table.to_dict("records") if r["op"] in LAYER_OPS_MEASURED_ALONE]


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), (1, 3, 17, 15)),
    (nn.Conv2d(8, 8, (1, 3), padding=(0, 2), dilation=(1, 2)), (1, 8, 9, 9)),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), (1, 8, 10, 10)),  # depthwise
    (nn.Conv2d(8, 16, 3, padding=1, groups=2), (1, 8, 10, 10)),  # grouped
    (nn.Conv2d(4, 6, 3, padding="same"), (1, 4, 9, 9)),
    (nn.Conv2d(4, 6, 3, padding="valid"), (1, 4, 9, 9)),
    (nn.MaxPool2d(3, stride=2, padding=1), (1, 4, 12, 12)),
    (nn.AvgPool2d(2), (1, 4, 12, 12)),
    (nn.Linear(12, 5), (1, 12)),
])
def test_one_layer_model_has_the_rows_layer_key_and_output_shape(layer: nn.Module, shape) -> None:
    (row,) = rows_of(nn.Sequential(layer).eval(), shape)
    rebuilt, in_shape = single_layer_model(row)
    assert in_shape == shape
    (again,) = rows_of(nn.Sequential(rebuilt).eval(), in_shape)
    assert layer_key(again) == layer_key(row)
    assert (again["out_h"], again["out_w"], again["macs"]) == (row["out_h"], row["out_w"], row["macs"])


def test_depthwise_rows_rebuild_as_depthwise() -> None:
    (row,) = rows_of(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8)).eval(), (1, 8, 6, 6))
    assert row["op"] == "dwconv"
    layer, _ = single_layer_model(row)
    assert isinstance(layer, nn.Conv2d) and layer.groups == 8


def test_fused_layer_kinds_are_refused() -> None:
    (row,) = [r for r in layer_table(nn.Sequential(nn.BatchNorm2d(4)).eval(), (1, 4, 5, 5))
              .to_dict("records")]
    with pytest.raises(UserInputError, match="not measured alone"):
        single_layer_model(row)


def test_measure_layer_times_the_one_layer_model_on_the_cpu(tmp_path: Path) -> None:
    (row,) = rows_of(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)).eval(), (1, 3, 16, 16))
    m = measure_layer(CpuDevice(threads=1), row, tmp_path, warmup=1, repeats=3)
    assert len(m.samples_s) == 3 and m.median_ms > 0
    assert m.spec.input_shape == (1, 3, 16, 16) and m.spec.threads == 1
    assert list(tmp_path.iterdir()) == []  # the temporary ONNX file is removed


def test_measure_layer_is_seeded(tmp_path: Path) -> None:
    (row,) = rows_of(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)).eval(), (1, 3, 8, 8))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        a = single_layer_model(row)[0].weight.detach().clone()
        torch.manual_seed(5)
        b = single_layer_model(row)[0].weight.detach().clone()
    assert torch.equal(a, b)
