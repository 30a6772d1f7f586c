"""Model files: read with ``weights_only`` and an allowlist; anything else needs trust_file.

A crafted ``.pt`` whose unpickling would write a file must not write it unless the user
opts in; modules built from torch, torchvision and latbench classes (what ``bench compress
--save`` and ``bench search`` write) and state dicts (``NAME@PATH``) load without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from latbench.exceptions import UserInputError
from latbench.models import resolve_model

NB201 = "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"


class _Bomb:
    """Unpickling this writes ``path`` — what a malicious model file would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class OwnNet(nn.Module):
    """A user's own network class: loading it whole needs the full unpickler."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("spec", ["resnet18", "mobilenet_v2", "vit_b_16", NB201])
def test_whole_modules_of_known_classes_load_safely(tmp_path, spec):
    net = resolve_model(spec, seed=3)
    path = tmp_path / "m.pt"
    torch.save(net, path)
    again = resolve_model(str(path))
    assert type(again) is type(net) and _same_weights(net, again) and not again.training


def test_a_compressed_module_loads_safely(tmp_path):
    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.models.digits import DigitsCNN

    torch.manual_seed(0)
    res = compress_model(DigitsCNN(width=4).eval(), Plan.uniform("tucker2", 0.5),
                         input_shape=(1, 1, 8, 8))
    path = tmp_path / "c.pt"
    torch.save(res.model, path)  # what bench compress --save and bench search write
    again = resolve_model(str(path))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again(x), res.model(x))


def test_a_pickle_bomb_is_refused_and_not_run(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _Bomb(target)}, path)
    with pytest.raises(UserInputError, match=r"builtins\.exec.*--trust-file") as e:
        resolve_model(str(path))
    assert "\n" not in str(e.value)
    assert not target.exists()
    # a bomb hidden inside an otherwise ordinary module
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    net.extra = _Bomb(target)
    torch.save(net, path)
    with pytest.raises(UserInputError, match="--trust-file"):
        resolve_model(str(path))
    with pytest.raises(UserInputError, match="--trust-file"):
        resolve_model(f"resnet18@{path}")
    assert not target.exists()


def test_a_raw_pickle_bomb_is_refused_and_not_run(tmp_path):
    import pickle

    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Bomb(target)))
    with pytest.raises(UserInputError, match="--trust-file"):
        resolve_model(str(path))
    assert not target.exists()


def test_trust_file_unpickles_fully(tmp_path):
    # the opt-in does what it says: the file's own code runs (here: harmlessly)
    target = tmp_path / "ran.txt"
    path = tmp_path / "own.pt"
    net = OwnNet()
    net.marker = _Bomb(target)
    torch.save(net, path)
    with pytest.raises(UserInputError, match=r"OwnNet.*--trust-file"):
        resolve_model(str(path))
    assert not target.exists()
    again = resolve_model(str(path), trust_file=True)
    assert isinstance(again, OwnNet) and target.read_text() == "pwned"


def test_a_state_dict_needs_its_architecture(tmp_path):
    net = resolve_model("resnet18", seed=1)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(UserInputError, match=r"state dict.*resnet18@"):
        resolve_model(str(path))
    again = resolve_model(f"resnet18@{path}", seed=2)  # the file's weights, not seed 2's
    assert _same_weights(net, again) and not again.training
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, "state_dict": net.state_dict(), "lr": 0.1}, ckpt)
    assert _same_weights(net, resolve_model(f"resnet18@{ckpt}"))
    nb = resolve_model(NB201, seed=1)
    torch.save({"model_state_dict": nb.state_dict()}, ckpt)
    assert _same_weights(nb, resolve_model(f"{NB201}@{ckpt}"))


@pytest.mark.parametrize("setup,match", [
    (lambda p: torch.save(resolve_model("resnet18").state_dict(), p), r"does not fit 'vgg11'"),
    (lambda p: torch.save(resolve_model("vgg11"), p), "whole module: give its path alone"),
    (lambda p: torch.save([1, 2, 3], p), "not a state dict"),
    (lambda p: None, "does not exist"),
])
@pytest.mark.slow
def test_name_at_path_mistakes_are_one_line(tmp_path, setup, match):
    path = tmp_path / "w.pt"
    setup(path)
    with pytest.raises(UserInputError, match=match) as e:
        resolve_model(f"vgg11@{path}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04 truncated zip", bytes(range(256))])
def test_broken_files_are_one_line(tmp_path, content):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="cannot load model file") as e:
        resolve_model(str(path))
    assert "\n" not in str(e.value)


def test_a_truncated_module_file_is_one_line(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Conv2d(3, 4, 3), path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(UserInputError, match="cannot load model file"):
            resolve_model(str(path))


def test_a_file_holding_no_module_says_what_it_holds(tmp_path):
    path = tmp_path / "m.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(UserInputError, match="holds a list, not an nn.Module"):
        resolve_model(str(path))


def test_the_sweep_and_the_search_refuse_an_untrusted_file_before_any_work(tmp_path):
    from latbench.bench.sweep import SweepConfig, Target, run_sweep
    from latbench.search.search import Searcher

    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save(_Bomb(target), path)
    cfg = SweepConfig((Target(str(path), (1, 3, 8, 8), ("svd",), (0.5,)),))
    db = tmp_path / "lat.db"
    with pytest.raises(UserInputError, match="--trust-file"):
        run_sweep(cfg, "cpu", db)
    with pytest.raises(UserInputError, match="--trust-file"):
        Searcher(str(path), "cpu", input_shape=(1, 3, 8, 8))
    assert not target.exists() and not db.exists()


def test_trust_file_is_not_a_sweep_toml_option(tmp_path):
    from latbench.bench.sweep import load_sweep_config

    toml = tmp_path / "sweep.toml"
    toml.write_text('trust_file = true\n[[models]]\nname = "resnet18"\n')
    with pytest.raises(UserInputError, match="unknown option 'trust_file'"):
        load_sweep_config(toml)
    toml.write_text('[[models]]\nname = "resnet18"\n')
    assert load_sweep_config(toml, trust_file=True).trust_file is True
    assert load_sweep_config(toml).trust_file is False
