"""``ratio=X`` ranks: the largest rank whose whole replacement has at most params / X parameters,
for every method, every layer kind a method takes, and every MUSCO re-compression step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latbench.compress._base import METHODS, count_params
from latbench.compress.model import compress_model, iterative_compress
from latbench.compress.plan import Plan
from latbench.compress.ranks import resolve_rank
from latbench.exceptions import UserInputError

ALS = dict(n_iter_max=5)  # CP-ALS sweeps: the parameter counts do not depend on convergence


def _seeded(layer: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return layer


def _oracle(method, layer, x: float) -> tuple[int, ...]:
    """The answer by enumeration: scan every scale ``t`` at which some rank grows."""
    base = method.fraction_base(layer)
    limits = method.max_rank(layer)
    budget = count_params(layer) / x
    best = None
    ts = sorted({j / b for b, top in zip(base, limits) for j in range(1, top + 1)})
    for t in ts:
        rank = tuple(min(top, max(1, math.ceil(t * b - 1e-9))) for b, top in zip(base, limits))
        if method.n_params(layer, rank) <= budget:
            best = rank
        else:
            break  # n_params never decreases in t
    return best


# ------------------------------------------------------------------ the cases
@pytest.mark.parametrize("x, rank, ratio", [(2, 213, 2.00), (4, 106, 4.01), (8, 52, 8.13)])
def test_cp_ratio_is_not_capped_at_the_channel_count(x, rank, ratio):
    conv = nn.Conv2d(32, 48, 5, stride=2)  # 38,448 parameters; cp: 90 r + 48 at rank r
    assert resolve_rank(f"ratio={x}", conv, "cp") == (rank,)
    cp = METHODS.get("cp")
    assert cp.n_params(conv, (rank,)) <= 38_448 / x < cp.n_params(conv, (rank + 1,))
    assert round(38_448 / cp.n_params(conv, (rank,)), 2) == ratio


def test_cp_ratio_builds_a_layer_of_exactly_that_size():
    conv = _seeded(nn.Conv2d(32, 48, 5, stride=2))
    res = compress_model(nn.Sequential(conv), Plan.uniform("cp", "ratio=4", "0", **ALS),
                         input_shape=(1, 32, 13, 13))
    (layer,) = res.layers
    assert layer.rank == (106,) and layer.params_after == 90 * 106 + 48
    assert round(layer.params_before / layer.params_after, 2) == 4.01


# ------------------------------------------------------------------ every method, many layers
LAYERS = {
    "conv": lambda: nn.Conv2d(12, 20, 3, padding=1),
    "conv-5x3-nobias": lambda: nn.Conv2d(8, 6, (5, 3), bias=False),
    "grouped": lambda: nn.Conv2d(12, 18, 3, groups=3),
    "pointwise": lambda: nn.Conv2d(24, 16, 1),
    "conv1d": lambda: nn.Conv1d(10, 14, 5),
    "conv3d": lambda: nn.Conv3d(6, 9, 3),
    "linear": lambda: nn.Linear(40, 30),
}
CASES = [(m, k) for m in ("svd", "cur", "tucker2", "cp", "cp3", "tt") for k in LAYERS
         if METHODS.get(m).supports(LAYERS[k]()) is None]


def test_every_method_has_cases():
    assert {m for m, _ in CASES} == {"svd", "cur", "tucker2", "cp", "cp3", "tt"}


@pytest.mark.parametrize("method_name, kind", CASES)
@pytest.mark.parametrize("x", [1.3, 2.0, 3.5, 6.0])
def test_ratio_is_the_largest_rank_within_budget(method_name, kind, x):
    method, layer = METHODS.get(method_name), LAYERS[kind]()
    expected = _oracle(method, layer, x)
    if expected is None:
        with pytest.raises(UserInputError, match="out of reach"):
            resolve_rank(f"ratio={x}", layer, method)
        return
    rank = resolve_rank(f"ratio={x}", layer, method)
    assert rank == expected
    assert method.n_params(layer, rank) <= count_params(layer) / x


@pytest.mark.parametrize("method_name, kind", [c for c in CASES if c[0] != "cp" or c[1] == "conv"])
def test_the_decomposed_layer_has_the_counted_parameters(method_name, kind):
    method, layer = METHODS.get(method_name), _seeded(LAYERS[kind]())
    rank = resolve_rank("ratio=2", layer, method)
    opts = ALS if method_name in ("cp", "cp3") else {}
    dec = method.decompose(layer, rank, **opts)
    assert dec.params_after == method.n_params(layer, dec.rank) == count_params(dec.module)
    assert dec.params_after <= dec.params_before / 2


# ------------------------------------------------------------------ MUSCO steps
def _musco_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(64, 48, 3, padding=1)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("x", [2.0, 3.0])
def test_musco_ratio_applies_to_the_whole_block_on_every_step(x):
    steps = iterative_compress(_musco_net(), Plan.uniform("tucker2", f"ratio={x}"), steps=3,
                               input_shape=(1, 16, 8, 8))
    tucker2 = METHODS.get("tucker2")
    prev = {n: count_params(m) for n, m in _musco_net().named_children()}
    for res in steps:
        assert [r.name for r in res.layers] == ["0", "2", "4"]
        for r in res.layers:
            block = res.model.get_submodule(r.name)
            # the whole block shrinks by at least x, and by less than x one rank up
            assert r.params_before == prev[r.name]
            assert r.params_after == count_params(block) <= r.params_before / x
            assert block.rank == r.rank
            prev[r.name] = r.params_after
    # steps 2 and 3 are resolved against the block of the step before (the case:
    # the core alone gave the whole block 2.48× and 2.23× at ratio=2)
    for res_before, res in zip(steps, steps[1:]):
        for r in res.layers:
            old = res_before.model.get_submodule(r.name)
            assert tuple(r.rank) == _oracle(tucker2, old, x)


def test_musco_ratio_step_values_by_hand():
    # Conv2d(64, 64, 3, bias=False): 36,864 parameters. Step 1 at ratio=2 → (R, R) with
    # 128 R + 9 R² <= 18,432 → R = 38 (17,860; R = 39 gives 18,681).
    net = nn.Sequential(nn.Conv2d(64, 64, 3, bias=False))
    steps = iterative_compress(net, Plan.uniform("tucker2", "ratio=2"), steps=3,
                               input_shape=(1, 64, 6, 6))
    assert steps[0].layers[0].rank == (38, 38) and steps[0].layers[0].params_after == 17_860
    # Step 2: budget 8,930 of the whole block → 128 R + 9 R² <= 8,930 → R = 25 (8,825).
    assert steps[1].layers[0].rank == (25, 25) and steps[1].layers[0].params_after == 8_825
    # Step 3: budget 4,412.5 → R = 16 (4,352; R = 17 gives 4,777).
    assert steps[2].layers[0].rank == (16, 16) and steps[2].layers[0].params_after == 4_352


def test_fraction_and_evbmf_on_a_block_use_the_core_ranks():
    first = compress_model(_musco_net(), Plan.from_layers({"2": ("tucker2", (20, 30))}),
                           input_shape=(1, 16, 8, 8)).model
    block = first[2]
    tucker2 = METHODS.get("tucker2")
    assert tucker2.max_rank(block) == (20, 30)
    assert resolve_rank(0.5, block, tucker2) == (10, 15)
    assert resolve_rank("evbmf:0", block, tucker2) == (20, 30)


def test_ratio_out_of_reach_under_a_glob_is_a_skip_and_under_a_name_an_error():
    net = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 3), nn.Linear(3, 3))
    res = compress_model(net, Plan.uniform("svd", "ratio=2"), input_shape=(1, 64))
    assert [(r.name, r.rank) for r in res.layers] == [("0", (15,)), ("1", (1,))]
    assert [n for n, _ in res.skipped] == ["2"] and "best ratio 1.33" in res.skipped[0][1]
    with pytest.raises(UserInputError, match="out of reach"):
        compress_model(net, Plan.from_layers({"2": ("svd", "ratio=2")}), input_shape=(1, 64))
    with pytest.raises(UserInputError, match="ratio=3"):  # a malformed ratio is never a skip
        compress_model(net, Plan.uniform("svd", "ratio=x"), input_shape=(1, 64))
