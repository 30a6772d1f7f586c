"""``bench layers MODEL``: the names plans and --layers match, with MACs and the methods."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from clirun import bench
from latbench.compress.catalog import list_layers
from latbench.compress.model import compress_model
from latbench.compress.plan import Plan
from latbench.data.features import layer_table


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16),   # depthwise: no method
                         nn.Conv2d(16, 32, 1, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("layers") / "net.pt"
    torch.save(net(), path)
    return str(path)


def test_every_layer_a_plan_can_name_with_its_macs_and_methods():
    rows = list_layers(net(), (1, 3, 8, 8))
    assert [r.name for r in rows] == ["0", "2", "3", "6"]
    by = {r.name: r for r in rows}
    assert by["0"].methods == ("cp", "cp3", "svd", "tt", "tucker2") and by["0"].shape == "3→16 3x3"
    assert by["2"].methods == () and "depthwise" in by["2"].reason and by["2"].shape.endswith("g16")
    assert "cur" in by["3"].methods and by["3"].shape == "16→32 1x1 s2"
    assert by["6"].methods == ("cur", "svd") and by["6"].shape == "32→10"
    table = layer_table(net(), (1, 3, 8, 8))
    for r in rows:
        assert r.macs == int(table.loc[table["name"] == r.name, "macs"].sum()) > 0
    assert by["0"].macs == 8 * 8 * 16 * 3 * 9 and by["6"].params == 32 * 10 + 10


def test_a_decomposed_model_lists_its_blocks_and_what_can_recompress_them():
    res = compress_model(net(), Plan.uniform("tucker2", 0.5, "0"), input_shape=(1, 3, 8, 8))
    res2 = compress_model(res.model, Plan.uniform("svd", 0.5, "6"), input_shape=(1, 3, 8, 8))
    by = {r.name: r for r in list_layers(res2.model, (1, 3, 8, 8))}
    assert by["0"].kind == "LowRankSequential" and by["0"].methods == ("tucker2",)
    assert by["6"].methods == () and "only Tucker-2 blocks" in by["6"].reason
    assert not any(n.startswith("0.") for n in by)  # a block's inner layers are not listed


def test_the_command_prints_a_table_and_the_next_command(capsys, model):
    code, out, err = bench(capsys, "layers", model, "--input", "1x3x8x8")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{model} at 1x3x8x8: 4 layer(s) a plan or --layers can name")
    assert lines[1].split() == ["layer", "kind", "shape", "MACs", "%MACs", "params", "methods"]
    assert "none (a depthwise conv" in lines[3]
    assert lines[-1].startswith(f"next: bench compress {model} --layers '0' --method tucker2 "
                                "--rank 0.5 --input 1x3x8x8")


def test_json_and_a_glob(capsys, model):
    code, out, _ = bench(capsys, "layers", model, "--input", "1x3x8x8", "--layers", "[36]", "--json")
    doc = json.loads(out)
    assert [r["name"] for r in doc["layers"]] == ["3", "6"]
    assert doc["macs"] > sum(r["macs"] for r in doc["layers"])
    assert doc["layers"][1]["methods"] == ["cur", "svd"]


def test_a_glob_that_matches_nothing_lists_the_names(capsys, model):
    code, _, err = bench(capsys, "layers", model, "--input", "1x3x8x8", "--layers", "fc*")
    assert code == 2 and err.count("\n") == 1
    assert "no layer of" in err and "'0', '2', '3', '6'" in err


def test_a_torchvision_model_at_its_default_shape_needs_no_input(capsys):
    code, out, _ = bench(capsys, "layers", "resnet18", "--layers", "layer4.0.*")
    assert code == 0
    assert "resnet18 at 1x3x224x224: 3 layer(s)" in out
    assert "layer4.0.downsample.0" in out and "512→512 3x3" in out
    assert "--input" not in out.splitlines()[-1]
