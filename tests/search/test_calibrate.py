"""Per-kind cost scales fitted from measured plans."""

from __future__ import annotations

import pytest
from torch import nn

from latbench.search.calibrate import kind_scales, layer_kind

KINDS = ["conv", "conv", "linear"]
# Predicted change (ms) of each candidate; index 0 is "keep".
COSTS = [[0.0, -1.0, -2.0], [0.0, -0.5, -1.5], [0.0, -4.0, -8.0]]
TRUE = {"conv": 0.5, "linear": 2.0}


def _measure(choices):
    return 20.0 + sum(COSTS[i][j] * TRUE[KINDS[i]] for i, j in enumerate(choices))


def test_planted_scales_are_recovered_from_two_plans():
    plans = [(c, _measure(c)) for c in [(2, 2, 1), (1, 0, 2)]]
    s = kind_scales(KINDS, COSTS, plans, 20.0)
    assert s == pytest.approx(TRUE)


def test_no_scales_when_the_plans_cannot_separate_the_kinds():
    # One plan, two unknowns.
    assert kind_scales(KINDS, COSTS, [((1, 1, 1), 10.0)], 20.0) is None
    # Two plans that move conv and linear in the same proportion.
    same = [((1, 0, 1), _measure((1, 0, 1))), ((2, 0, 2), _measure((2, 0, 2)))]
    assert kind_scales(KINDS, COSTS, same, 20.0) is None
    # A single kind: nothing to separate (the secant correction handles it).
    assert kind_scales(["conv"] * 3, COSTS, [((1, 1, 1), 10.0), ((2, 2, 2), 5.0)], 20.0) is None
    # Scales a fit would need to be absurd are refused.
    absurd = [((2, 2, 1), 19.99), ((1, 0, 2), 5000.0)]
    assert kind_scales(KINDS, COSTS, absurd, 20.0) is None


def test_layer_kind():
    assert layer_kind(nn.Linear(2, 2)) == "linear" and layer_kind(nn.Conv2d(1, 1, 1)) == "conv"
