"""The budget controller alone: no device, no model — costs, damages and a law of 'measured'."""

from __future__ import annotations

import math

import pytest

from latbench.search.controller import (BRACKET_CLOSED, PREDICTOR_MAX_FACTOR, BudgetController,
                                        judge_costs, savings_factor)

ORIGINAL = 100.0
# Four layers, each: keep, then three ranks saving 5, 10, 15 ms (predicted), more damage each.
COSTS = [[0.0, -5.0, -10.0, -15.0] for _ in range(4)]
DAMAGES = [[0.0, 0.01 * (i + 1), 0.05 * (i + 1), 0.2 * (i + 1)] for i in range(4)]
KINDS = ["conv"] * 4


def controller(budget: float, slack: float = 0.08, costs=COSTS, kinds=KINDS, **kw) -> BudgetController:
    return BudgetController(costs, kinds, DAMAGES, ORIGINAL, budget, slack, **kw)


def drive(ctl: BudgetController, law, rounds: int = 8) -> list[tuple[float, float]]:
    """Run the controller against ``law(predicted) -> measured``; the (target, measured) seen."""
    seen = []
    if ctl.needs_fastest_probe:
        sol = ctl.solve(ctl.fastest)
        m = law(ctl.original_ms + sol.cost)
        seen.append((ctl.fastest, m))
        if not ctl.observe_fastest(sol.choices, m):
            return seen
    for _ in range(rounds):
        t = ctl.next_target()
        sol = ctl.solve(t)
        m = law(ctl.original_ms + sol.cost)
        seen.append((t, m))
        if ctl.observe(t, sol.choices, m).done:
            break
    return seen


def test_the_first_target_is_the_middle_of_the_window():
    ctl = controller(80.0, slack=0.1)
    assert ctl.next_target() == pytest.approx(80.0 * 0.95)
    assert not ctl.needs_fastest_probe and ctl.fastest == pytest.approx(40.0)


def test_solve_gives_the_least_damage_plan_that_fits_or_the_fastest():
    ctl = controller(80.0)
    sol = ctl.solve(90.0)  # 10 ms to save
    assert ORIGINAL + sol.cost <= 90.0 + 1e-9
    assert sol.damage == pytest.approx(min(  # the cheapest way to save 10 ms: two small cuts
        sum(DAMAGES[i][j] for i, j in enumerate(c)) for c in [(1, 1, 0, 0), (2, 0, 0, 0)]))
    assert ctl.solve(-1e6).choices == (3, 3, 3, 3)  # nothing fits: the fastest plan


def test_a_plan_in_the_window_stops_the_loop():
    ctl = controller(80.0, slack=0.1)
    sol = ctl.solve(ctl.next_target())
    step = ctl.observe(ctl.next_target(), sol.choices, 76.0)
    assert step.done and step.reason == "in window"


@pytest.mark.parametrize("k", [1.3, 1.8])
def test_over_budget_tightens_and_converges_when_savings_are_overpredicted(k):
    # The device saves only 1/k of what is predicted: the first plan misses.
    ctl = controller(80.0, slack=0.1)
    seen = drive(ctl, lambda p: ORIGINAL - (ORIGINAL - p) / k, rounds=10)
    assert seen[0][1] > 80.0
    assert seen[1][0] < seen[0][0]  # the predicted budget was tightened
    assert 72.0 <= seen[-1][1] <= 80.0  # ends in the window


@pytest.mark.parametrize("k", [1.3, 1.8])
def test_too_conservative_plans_are_loosened(k):
    ctl = controller(80.0, slack=0.1)
    seen = drive(ctl, lambda p: ORIGINAL - (ORIGINAL - p) * k, rounds=10)
    assert seen[0][1] < 72.0 and seen[1][0] > seen[0][0]
    assert 72.0 <= seen[-1][1] <= 80.0


def test_the_secant_step_uses_the_measured_slope():
    # Savings measured at half the prediction: after the first plan the secant through the
    # original and it has slope 0.5, so the next step asks for twice the correction.
    ctl = controller(80.0, slack=0.02)
    t0 = ctl.next_target()
    sol = ctl.solve(t0)
    m = ORIGINAL - (ORIGINAL - (ORIGINAL + sol.cost)) / 2
    ctl.observe(t0, sol.choices, m)
    slope = (m - ORIGINAL) / (t0 - ORIGINAL)
    assert ctl.next_target() == pytest.approx(t0 + (ctl.aim - m) / slope)


def test_an_implausible_slope_falls_back_to_the_plain_step():
    ctl = controller(80.0, slack=0.02)
    t0 = ctl.next_target()
    sol = ctl.solve(t0)
    m = ORIGINAL - 0.1 * (ORIGINAL - t0)  # slope 0.1: outside the secant range
    ctl.observe(t0, sol.choices, m)
    assert ctl.next_target() == pytest.approx(t0 + (ctl.aim - m))


def test_a_correction_outside_the_bracket_bisects():
    ctl = controller(80.0, slack=0.02)
    ctl.lo, ctl.hi = 70.0, 75.0
    sol = ctl.solve(74.0)
    ctl.observe(74.0, sol.choices, 60.0)  # met, far under: the plain step would leave [74, 75]
    assert ctl.lo == 74.0
    assert ctl.next_target() == pytest.approx((74.0 + 75.0) / 2)


def test_a_closed_bracket_stops():
    ctl = controller(80.0, slack=0.02)
    ctl.lo, ctl.hi = 74.0, 74.0 + BRACKET_CLOSED * 80.0 / 2
    sol = ctl.solve(74.0)
    step = ctl.observe(74.0, sol.choices, 60.0)
    assert step.done and step.reason == "bracket closed"


def test_the_fastest_plan_over_the_budget_stops():
    ctl = controller(80.0)
    sol = ctl.solve(ctl.fastest)
    step = ctl.observe(ctl.fastest, sol.choices, 85.0)
    assert step.done and step.reason == "fastest over budget"


def test_a_budget_below_the_predicted_fastest_asks_for_the_fastest_first():
    ctl = controller(30.0)  # predicted fastest: 40 ms
    assert ctl.needs_fastest_probe
    sol = ctl.solve(ctl.fastest)
    assert not ctl.observe_fastest(sol.choices, 35.0)  # measured, and still over: refuse
    ctl = controller(30.0)
    assert ctl.observe_fastest(sol.choices, 25.0)  # the device is faster than predicted
    assert ctl.lo == pytest.approx(40.0)
    assert ctl.next_target() == pytest.approx(40.0 + (ctl.aim - 25.0))


def test_costs_are_rescaled_per_kind_when_the_plans_tell_the_kinds_apart():
    kinds = ["conv", "conv", "linear", "linear"]
    true = {"conv": 0.5, "linear": 2.0}

    def law(choices):
        return ORIGINAL + sum(COSTS[i][j] * true[kinds[i]] for i, j in enumerate(choices))

    ctl = controller(80.0, slack=0.02, kinds=kinds)
    for choices in [(3, 3, 1, 0), (1, 0, 3, 3)]:  # two plans that separate the kinds
        t = ctl.predict(choices)
        ctl.observe(t, choices, law(choices))
    assert ctl.scales == pytest.approx(true)
    assert ctl.scales_after == 2
    assert ctl.predict((2, 2, 2, 2)) == pytest.approx(law((2, 2, 2, 2)))
    # The secant history moved to the new scale: each measured plan at its re-predicted latency.
    assert ctl.history[1:] == [(pytest.approx(law(c)), pytest.approx(law(c))) for c in
                               [(3, 3, 1, 0), (1, 0, 3, 3)]]


def test_a_seeded_controller_starts_from_the_plans_measured_before():
    measured = [((3, 3, 3, 3), 75.0)]  # predicted 40 ms, measured 75: savings overpredicted
    ctl = controller(80.0, slack=0.1, measured=measured)
    assert ctl.lo == pytest.approx(40.0) and ctl.hi == math.inf
    assert ctl.next_target() > 40.0  # loosened from the known plan


def test_judge_costs_sets_aside_non_positive_predictions():
    v = judge_costs(-32.0, 17.0, COSTS, measured_on_device=False, source="predictor GBM")
    assert v.action == "set aside" and "non-positive" in v.note and "-32" in v.note
    # The original positive, a plan negative (the issue's −137 ms): set aside too.
    v = judge_costs(17.0, 17.0, [[0.0, -150.0]], measured_on_device=False)
    assert v.action == "set aside" and "-133" in v.note


@pytest.mark.parametrize("base, action", [(17.0, "anchored"), (10.0, "anchored"),
                                          (17.0 / (PREDICTOR_MAX_FACTOR * 1.1), "rescaled"),
                                          (17.0 * PREDICTOR_MAX_FACTOR * 1.1, "rescaled")])
def test_judge_costs_rescales_a_predictor_off_beyond_the_factor_with_a_note(base, action):
    v = judge_costs(base, 17.0, [[0.0, -1.0]], measured_on_device=False)
    assert v.action == action and v.scale == pytest.approx(17.0 / base)
    assert (v.note is not None) == (action == "rescaled")


def test_judge_costs_only_shrinks_layers_measured_alone():
    assert judge_costs(34.0, 17.0, COSTS, measured_on_device=True).scale == pytest.approx(0.5)
    assert judge_costs(8.5, 17.0, COSTS, measured_on_device=True).scale == 1.0
    assert judge_costs(None, 17.0, COSTS, measured_on_device=False).action == "anchored"


def test_savings_factor():
    assert savings_factor(100.0, 80.0, 90.0) == pytest.approx(0.5)
    assert savings_factor(100.0, 80.0, 110.0) == pytest.approx(-0.5)  # predicted faster, measured slower
    assert savings_factor(100.0, 99.0, 50.0) is None  # a 1 % predicted saving says nothing


def test_one_implausible_miss_halves_the_way_to_the_fastest_plan_instead_of_jumping_there():
    # The README example under load: a plan predicted at half the original measured slower
    # than the original. The plain step would ask for a plan below the fastest one.
    ctl = controller(50.0, slack=0.08)
    t = ctl.next_target()
    sol = ctl.solve(t)
    ctl.observe(t, sol.choices, 110.0)
    assert ctl.next_target() == pytest.approx((ctl.fastest + t) / 2)
    assert ctl.next_target() > ctl.fastest
