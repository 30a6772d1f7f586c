"""A wrong ``--input`` is one clear ``error:`` line (exit 2, no traceback) on every command that
takes a model and an input shape, and names a shape the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clirun import bench
from latbench.devices.profiles import ENV_VAR
from latbench.exceptions import UserInputError
from latbench.models import check_input_shape, input_checked


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("shape") / "tiny.pt"
    torch.save(tiny_net().eval(), path)
    return str(path)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> str:
    from latbench.data.features import layer_table
    from latbench.predictor.base import save_predictor
    from latbench.predictor.registry import make_predictor

    tables = [layer_table(tiny_net(), (1, 3, s, s)) for s in (8, 12, 16, 20)]
    y = np.array([float(t["macs"].sum()) / 1e6 + 0.1 for t in tables])
    pred = make_predictor("flops").fit(tables, y, device="cpu")
    path = tmp_path_factory.mktemp("shape") / "flops.predictor"
    save_predictor(pred, path, device="cpu", kind="flops")
    return str(path)


def one_error_line(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


COMMANDS = [
    ("compress", "{m}", "--method", "svd", "--rank", "0.5"),
    ("compress", "{m}", "--plan", "{plan}"),
    ("predictor", "predict", "--predictor", "{p}", "{m}"),
    ("predictor", "predict", "--predictor", "{p}", "{m}", "--plan", "{plan}"),
    ("sweep", "--model", "{m}", "--methods", "svd", "--ranks", "0.5", "--db", "lat.db"),
    ("search", "{m}", "--speedup", "1.5"),
    ("layers", "{m}"),
]


@pytest.mark.parametrize("shape, says", [
    ("12x12", "e.g. 1x3x12x12"),           # the batch and channels left out
    ("1x1x12x12", "e.g. 1x3x12x12"),       # the wrong number of channels
    ("1x3x12", "e.g. 1x3x12x12"),           # a dimension short (torch reads it unbatched)
    ("2x3x12x12x5", "e.g. 1x3x12x12"),     # one too many
])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_wrong_input_shape_is_one_line_naming_a_shape_the_model_takes(
        capsys, tmp_path, model, predictor, command, shape, says):
    plan = tmp_path / "plan.json"
    plan.write_text('{"layers": {"0": {"method": "svd", "rank": 2}}}')
    args = [a.format(m=model, p=predictor, plan=plan) for a in command]
    code, _, err = bench(capsys, *args, "--input", shape)
    line = one_error_line(code, err, "does not run on input", shape, "--input")
    assert says in line
    assert not (tmp_path / "lat.db").exists()


def test_the_right_input_shape_still_runs(capsys, model, predictor):
    code, out, err = bench(capsys, "predictor", "predict", "--predictor", predictor, model,
                           "--input", "1x3x12x12")
    assert code == 0, err
    assert "ms on cpu" in out


def test_torchvision_model_with_a_2d_input_names_its_first_convolution(capsys):
    code, _, err = bench(capsys, "compress", "resnet18", "--method", "svd", "--rank", "0.5",
                         "--layers", "fc", "--input", "64x64")
    one_error_line(code, err, "'resnet18' does not run on input 64x64",
                   "e.g. 1x3x64x64", "layer 'conv1' is a Conv2d of 3 input channels")


def test_check_input_shape_leaves_the_model_as_it_was():
    net = tiny_net().train()
    net[1].eval()  # a mixed state, which must survive the check
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    check_input_shape(net, (2, 3, 8, 8))
    with pytest.raises(UserInputError):
        check_input_shape(net, (2, 5, 8, 8))
    assert [m.training for m in net.modules()] == modes
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # no batch-norm statistics updated
    assert not net[0]._forward_pre_hooks  # the hooks that found the first layer are gone


def test_check_input_shape_of_a_linear_model_suggests_its_features():
    with pytest.raises(UserInputError, match=r"e\.g\. 1x16 \(the model is a Linear of 16"):
        check_input_shape(nn.Linear(16, 4), (1, 3, 8, 8))


def test_input_checked_keeps_a_bug_of_latbench_as_it_is():
    net = tiny_net()
    with pytest.raises(KeyError, match="a bug"):
        with input_checked(net, (1, 3, 8, 8)):
            raise KeyError("a bug")  # the model runs on the shape: the error is not the user's
    with pytest.raises(UserInputError, match="does not run on input 1x3x8"):
        with input_checked(net, (1, 3, 8)):
            raise RuntimeError("something deep in the featuriser")
