"""What a sweep measures: rank ranges, uniform variants, seeded random plans, variant keys."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from latbench.bench.sweep import SweepConfig, Target, plan_sweep
from latbench.bench.variants import parse_rank_range, random_plan, uniform_variants, variant_key
from latbench.compress.model import decomposable_layers
from latbench.compress.plan import KEEP, Plan
from latbench.exceptions import UserInputError

SHAPE = (1, 3, 16, 16)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


@pytest.mark.parametrize("text, expected", [
    ("0.1:0.9:0.1", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
    ("0.25:0.75:0.25", (0.25, 0.5, 0.75)),
    ("0.1:0.96:0.1", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),  # never past stop
    ("0.5:0.5:0.1", (0.5,)),
    ("0.25,0.5", (0.25, 0.5)),
    ("1", (1.0,)),
])
def test_rank_range_is_inclusive_and_exact(text: str, expected: tuple[float, ...]) -> None:
    assert parse_rank_range(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("  ", "empty"),
    (",", "empty"),
    ("0.9:0.1:0.1", "start ≤ stop"),
    ("0.1:0.9", "start:stop:step"),
    ("0.1:0.9:0", "start:stop:step"),
    ("0.1:0.9:-0.1", "start:stop:step"),
    ("a:b:c", "start:stop:step"),
    ("0.1:nan:0.1", "start:stop:step"),
    ("half", "start:stop:step"),
    ("0:1:0.5", "outside (0, 1]"),
    ("0.5,1.5", "outside (0, 1]"),
])
def test_bad_rank_range_is_one_clear_user_error(text: str, fragment: str) -> None:
    with pytest.raises(UserInputError) as err:
        parse_rank_range(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_uniform_variants_are_original_then_each_method_at_each_rank() -> None:
    vs = uniform_variants("m.pt", SHAPE, ["tucker2", "svd"], [0.25, 0.5])
    assert [v.label for v in vs] == ["original", "tucker2@0.25", "tucker2@0.5", "svd@0.25", "svd@0.5"]
    assert vs[0].plan is None and vs[0].method == "none"
    assert vs[3].plan == Plan.uniform("svd", 0.25)
    assert len({v.key for v in vs}) == len(vs)


def test_unknown_method_is_a_user_error_naming_close_matches() -> None:
    with pytest.raises(UserInputError, match="tucker2"):
        uniform_variants("m.pt", SHAPE, ["tuker2"], [0.5])


def test_random_plan_is_seeded_and_every_layer_draws_a_supported_choice() -> None:
    net = tiny()
    names = [n for n, _ in decomposable_layers(net)]
    a = random_plan(net, ["tucker2", "cp", "svd"], [0.25, 0.5], random.Random(3))
    b = random_plan(net, ["tucker2", "cp", "svd"], [0.25, 0.5], random.Random(3))
    c = random_plan(net, ["tucker2", "cp", "svd"], [0.25, 0.5], random.Random(4))
    assert a == b and a.hash == b.hash
    assert [r.pattern for r in a.rules] == names  # one rule per layer, each exact
    plans = [random_plan(net, ["tucker2", "cp", "svd"], [0.25, 0.5], random.Random(s)) for s in range(20)]
    assert len({p.hash for p in plans + [c]}) > 5  # the seed matters
    drawn = {(r.method, r.rank) for p in plans for r in p.rules}
    assert {m for m, _ in drawn} >= {"tucker2", "svd", KEEP}
    assert {r for m, r in drawn if m != KEEP} == {0.25, 0.5}
    # the Linear layer can only take methods that support it (tucker2/cp are conv-only)
    linear_rules = [p.rule_for("7") for p in plans]
    assert all(r.method in ("svd", KEEP) for r in linear_rules)


def test_variant_key_is_stable_and_sensitive_to_every_part() -> None:
    plan = Plan.uniform("svd", 0.5)
    k = variant_key("m.pt", SHAPE, plan, 0)
    assert k == variant_key("m.pt", list(SHAPE), Plan.uniform("svd", 0.5), 0)
    others = {variant_key("n.pt", SHAPE, plan, 0), variant_key("m.pt", (1, 3, 32, 32), plan, 0),
              variant_key("m.pt", SHAPE, Plan.uniform("svd", 0.25), 0),
              variant_key("m.pt", SHAPE, plan, 1), variant_key("m.pt", SHAPE, None, 0)}
    assert k not in others and len(others) == 5


def test_plan_sweep_lists_each_variant_once_and_draws_random_plans_per_target() -> None:
    net = tiny()
    cfg = SweepConfig((Target("a.pt", SHAPE, ("svd",), (0.5, 0.5)),
                       Target("a.pt", (1, 3, 32, 32), ("svd",), (0.5,))), random_plans=3, seed=1)
    vs = plan_sweep(cfg, lambda spec: net)
    keys = [v.key for v in vs]
    assert len(keys) == len(set(keys))
    # per target: original + svd@0.5 (listed once) + up to 3 random plans
    per_shape = {s: [v for v in vs if v.input_shape == s] for s in (SHAPE, (1, 3, 32, 32))}
    for group in per_shape.values():
        assert [v.label for v in group[:2]] == ["original", "svd@0.5"]
        assert all(v.method == "mixed" for v in group[2:]) and 1 <= len(group[2:]) <= 3
    assert vs == plan_sweep(cfg, lambda spec: net)  # same seed → same sweep
