"""Candidates (keep first, distinct ranks, never bigger) and damage scoring (monotone in rank)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latbench.exceptions import UserInputError
from latbench.search.candidates import generate_candidates
from latbench.search.fidelity import calibration_batch, score_candidates


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.ReLU(),  # a 1×1 conv: tucker2 cannot shrink it much
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


SHAPE = (1, 3, 12, 12)


@pytest.mark.slow
def test_candidates_keep_first_distinct_and_smaller():
    net = small_net()
    slots = generate_candidates(net, SHAPE, ("tucker2", "svd"))
    assert [s.name for s in slots]  # at least one layer
    for slot in slots:
        assert slot.candidates[0].method == "keep"
        assert slot.candidates[0].module is slot.layer
        keep_params = slot.candidates[0].params
        seen = set()
        for c in slot.candidates[1:]:
            assert c.method in ("tucker2", "svd")
            assert (c.method, c.rank) not in seen, f"duplicate rank {c.label} in {slot.name}"
            seen.add((c.method, c.rank))
            assert c.params < keep_params, f"{c.label} grows {slot.name}"
            assert c.macs == int(c.rows["macs"].sum())
        assert len(slot.candidates) > 1
    # The model is not changed by generating candidates.
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for n, m in net.named_modules()
               if n in {s.name for s in slots})


def test_candidates_leave_out_layers_no_method_supports():
    net = small_net()
    slots = generate_candidates(net, SHAPE, ("tucker2",))
    assert "9" not in {s.name for s in slots}  # tucker2 has no Linear support
    assert {"0", "3"} <= {s.name for s in slots}


def test_unknown_method_and_empty_grid_are_user_errors():
    with pytest.raises(UserInputError):
        generate_candidates(small_net(), SHAPE, ("tuker2",))
    with pytest.raises(UserInputError, match="empty"):
        generate_candidates(small_net(), SHAPE, ("svd",), fractions=())


@pytest.mark.parametrize("mode", ["network", "layer"])
@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_damage_is_monotone_in_rank_for_one_layer(mode, method):
    net = small_net()
    x = calibration_batch(SHAPE, 16, seed=1)
    slots = generate_candidates(net, SHAPE, (method,), fractions=(0.1, 0.3, 0.6, 0.9),
                                layers="3")
    assert len(slots) == 1
    ref = score_candidates(net, slots, x, mode=mode)
    with torch.no_grad():
        assert torch.allclose(ref, net(x))  # the model was restored
    assert isinstance(net[3], nn.Conv2d)
    cands = sorted(slots[0].candidates[1:], key=lambda c: sum(c.rank))
    assert len(cands) >= 3
    assert slots[0].candidates[0].damage == 0.0
    dmg = [c.damage for c in cands]
    assert all(d > 0 for d in dmg)
    assert all(a >= b * (1 - 1e-6) for a, b in zip(dmg, dmg[1:])), dmg  # more rank, less damage
    assert dmg[0] > 1.5 * dmg[-1]


def test_unknown_damage_mode():
    net = small_net()
    slots = generate_candidates(net, SHAPE, ("svd",), fractions=(0.5,), layers="3")
    with pytest.raises(UserInputError, match="damage mode"):
        score_candidates(net, slots, calibration_batch(SHAPE, 2), mode="exact")


def test_layer_damage_is_not_fooled_by_an_inplace_relu_after_the_layer():
    # VGG puts ReLU(inplace=True) after every conv: a recorded output that is a view would be
    # rectified after the hook ran, and every rank would then look equally (≈ 50 %) damaging.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    x = calibration_batch(SHAPE, 16, seed=1)
    slots = generate_candidates(net, SHAPE, ("svd",), fractions=(0.1, 0.3, 0.6, 0.9), layers="2")
    score_candidates(net, slots, x, mode="layer")
    cands = sorted(slots[0].candidates[1:], key=lambda c: sum(c.rank))
    dmg = [c.damage for c in cands]
    assert all(a >= b * (1 - 1e-6) for a, b in zip(dmg, dmg[1:])), dmg
    assert dmg[0] > 3 * dmg[-1], dmg
