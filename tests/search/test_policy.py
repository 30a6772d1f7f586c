"""The measurement policy alone, on the simulated device: pairs, surprises, drift, verification."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latbench.devices.simulated import SimulatedDevice
from latbench.search.policy import DRIFT, SURPRISE, VERIFY_PAIRS, MeasurementPolicy

SHAPE = (1, 3, 8, 8)


def net(out_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, out_channels, 3, padding=1, bias=False)).eval()


ORIGINAL, PLAN = net(16), net(4)  # the plan has a quarter of the MACs: true ratio 0.25


def policy(tmp_path, speed=None) -> tuple[MeasurementPolicy, SimulatedDevice]:
    dev = SimulatedDevice("sim", overhead_ms=0.0, ms_per_mmac=100.0, speed=speed)
    pol = MeasurementPolicy(dev, SHAPE, tmp_path, None, 0, 3)
    pol.start(ORIGINAL)
    return pol, dev


def kinds(dev: SimulatedDevice) -> str:
    """The device's measurements as a string: O the original, C the plan."""
    big = dev.log[0][0]
    return "".join("O" if m == big else "C" for m, _ in dev.log)


@pytest.mark.parametrize("at", range(1, 2 * VERIFY_PAIRS + 2))
@pytest.mark.parametrize("to", [1.5, 0.5])
def test_verification_is_unmoved_by_one_step_of_the_devices_speed(tmp_path, at, to):
    pol, dev = policy(tmp_path, speed=lambda k: to if k >= at else 1.0)
    ver = pol.verify(PLAN, "plan")
    assert kinds(dev) == "O" + "O" + "CO" * VERIFY_PAIRS  # start(), then the verification
    assert ver.speedup == pytest.approx(4.0, rel=1e-9)
    assert ver.original_ms / ver.plan_ms == pytest.approx(ver.speedup)


@pytest.mark.parametrize("slope", [0.05, -0.05, 0.2])
def test_verification_cancels_a_linear_ramp(tmp_path, slope):
    pol, _ = policy(tmp_path, speed=lambda k: 1.0 + slope * k)
    assert pol.verify(PLAN, "plan").speedup == pytest.approx(4.0, rel=1e-9)


def test_a_round_is_measured_right_after_the_original(tmp_path):
    pol, dev = policy(tmp_path)
    true = pol.reference_ms / 4
    w = pol.measure_round(PLAN, "r1", predicted_ms=true, budget_ms=2 * true, slack=0.1)
    assert kinds(dev) == "OC" and w.remeasured == []
    w = pol.measure_round(PLAN, "r2", predicted_ms=true, budget_ms=2 * true, slack=0.1)
    assert kinds(dev) == "OCOC"  # the last measurement was the plan: the original again first
    assert pol.judged(w) == pytest.approx(true)
    pol.stale = True  # the device was used outside the policy (layer timings)
    pol.original()
    pol.stale = True
    pol.measure_round(PLAN, "r3", predicted_ms=true, budget_ms=2 * true, slack=0.1)
    assert kinds(dev).endswith("OOC")


def test_a_surprise_measures_the_original_again_and_keeps_both_pairs_when_it_did_not_move(tmp_path):
    # A burst of load on the plan's first measurement only (+60 %): far from its prediction.
    pol, dev = policy(tmp_path, speed=lambda k: 1.6 if k == 1 else 1.0)
    true = pol.reference_ms / 4
    seen = []
    w = pol.measure_round(PLAN, "r1", predicted_ms=true, budget_ms=2 * true, slack=0.1,
                          on_first=lambda w: seen.append(pol.judged(w)))
    assert seen == [pytest.approx(1.6 * true)]  # what a device failure afterwards would keep
    assert 1.6 - 1 > SURPRISE
    assert kinds(dev) == "OCOC" and w.remeasured == ["original", "plan"]
    assert len(w.original_ms) == 2 and pol.judged(w) == pytest.approx(true)  # the lower median


@pytest.mark.parametrize("to", [1.5, 0.5])
def test_a_surprise_from_a_drifted_device_is_judged_on_the_new_pair_alone(tmp_path, to):
    # The device's speed steps right after the original was measured (the round that
    # measured 44.6 ms against 8.2 predicted because the machine had slowed).
    pol, dev = policy(tmp_path, speed=lambda k: to if k >= 1 else 1.0)
    true = pol.reference_ms / 4
    w = pol.measure_round(PLAN, "r1", predicted_ms=true, budget_ms=2 * true, slack=0.1)
    assert abs(to - 1) > DRIFT
    assert kinds(dev) == "OCOC" and w.remeasured == ["original", "plan", "drift"]
    assert w.original_ms == [pytest.approx(to * pol.reference_ms)]
    assert pol.judged(w) == pytest.approx(true)  # the plan as it is, not as the drift made it look


def test_a_near_miss_is_measured_again_and_the_lower_median_kept(tmp_path):
    pol, dev = policy(tmp_path, speed=lambda k: 1.05 if k == 1 else 1.0)
    true = pol.reference_ms / 4
    w = pol.measure_round(PLAN, "r1", predicted_ms=true, budget_ms=true * 1.02, slack=0.1)
    assert kinds(dev) == "OCC" and w.remeasured == ["plan"]
    assert pol.judged(w) == pytest.approx(true)


def test_a_plan_clearly_over_or_under_is_measured_once(tmp_path):
    pol, dev = policy(tmp_path)
    true = pol.reference_ms / 4
    pol.measure_round(PLAN, "r1", predicted_ms=true, budget_ms=true * 0.8, slack=0.1)  # over
    pol.measure_round(PLAN, "r2", predicted_ms=true, budget_ms=true * 1.5, slack=0.1)  # under
    assert kinds(dev) == "OCOC"


def test_the_drift_summary_covers_every_measurement_of_the_original(tmp_path):
    pol, _ = policy(tmp_path, speed=lambda k: 1.0 + 0.1 * k)
    pol.verify(PLAN, "plan")
    d = pol.drift()
    assert len(d["measurements_ms"]) == 1 + VERIFY_PAIRS + 1
    last = 2 * VERIFY_PAIRS + 1  # the index of the last measurement, an original
    assert d["first_ms"] == pol.reference_ms
    assert d["max_ms"] == pytest.approx(pol.reference_ms * (1 + 0.1 * last))
    assert d["moved"] == pytest.approx(0.1 * last)


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_verification_is_unmoved_by_bursts_of_load_every_third_measurement(tmp_path, phase):
    # Load that comes and goes: every third measurement is 50 % slower, whichever model it is.
    pol, _ = policy(tmp_path, speed=lambda k: 1.5 if k % 3 == phase else 1.0)
    ver = pol.verify(PLAN, "plan")
    assert ver.speedup == pytest.approx(4.0, rel=1e-9)
    assert ver.spikes  # and it says which measurements it took for bursts


def test_despike_replaces_a_median_above_both_neighbours_only():
    from latbench.search.policy import despike

    assert despike([1.0, 1.5, 1.0, 1.0]) == ([1.0, 1.0, 1.0, 1.0], [1])
    assert despike([1.0, 1.0, 1.5]) == ([1.0, 1.0, 1.0], [2])  # an end: its one neighbour
    assert despike([1.0, 1.2, 1.4, 1.6]) == ([1.0, 1.2, 1.4, 1.6], [])  # a ramp is left alone
    assert despike([1.0, 1.0, 1.5, 1.5]) == ([1.0, 1.0, 1.5, 1.5], [])  # so is a step
    assert despike([1.0, 2.0, 1.5]) == ([1.0, 2.0, 1.5], [])  # neighbours disagree: no burst
    assert despike([1.0, 1.05, 1.0]) == ([1.0, 1.05, 1.0], [])  # within the noise


def test_a_second_verification_pools_its_pairs_with_the_first(tmp_path):
    pol, dev = policy(tmp_path, speed=lambda k: 1.5 if k in (2, 3) else 1.0)
    first = pol.verify(PLAN, "plan")
    both = pol.verify(PLAN, "plan", pool=first)
    assert both.sequences == 2 and len(both.ratios) == 2 * VERIFY_PAIRS
    assert len(both.originals) == 2 * (VERIFY_PAIRS + 1) and len(both.plans) == 2 * VERIFY_PAIRS
    assert kinds(dev) == "O" + ("O" + "CO" * VERIFY_PAIRS) * 2
    assert both.speedup == pytest.approx(4.0, rel=1e-9)
    assert both.to_dict()["order"] == " ".join(["O" + "CO" * VERIFY_PAIRS] * 2)
