"""Costs of candidates from layers timed alone, and the whole-model sum the search anchors to."""

from __future__ import annotations

import pytest

from latbench.data.features import layer_table
from latbench.search.candidates import generate_candidates
from latbench.search.cost import MeasuredLayerCost

from fakes import MacDevice


def test_layer_costs_are_mac_deltas_and_the_sum_is_the_model_on_a_linear_device(digits):
    shape = digits.data.input_shape
    dev = MacDevice(overhead_ms=0.05, ms_per_mmac=1.0)
    slots = generate_candidates(digits.net, shape, ("svd",), fractions=(0.2, 0.6))
    table = layer_table(digits.net, shape)
    cost = MeasuredLayerCost(dev, repeats=3, warmup=0)
    base = cost.assign(slots, table)
    # Alone, each layer costs the per-call overhead plus its MACs; the overhead is taken off
    # every layer and counted once, so the sum is the model's latency on this device.
    assert base == pytest.approx(dev.latency_ms(int(table["macs"].sum())), rel=1e-3)
    for slot in slots:
        keep = slot.candidates[0]
        assert keep.cost_ms == 0.0
        for c in slot.candidates[1:]:
            # (to a few MACs: the per-call overhead is timed on a 1-MAC layer)
            assert c.cost_ms == pytest.approx((c.macs - keep.macs) / 1e6, rel=1e-3, abs=5e-6)
    n = dev.calls
    assert cost.assign(slots, table) == pytest.approx(base)  # one table: nothing timed twice
    assert dev.calls == n
