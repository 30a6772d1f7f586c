"""The multiple-choice knapsack: feasible, optimal against brute force, and its front."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from latbench.search.knapsack import pareto_front, solve_mckp


def brute_force(costs, damages, capacity):
    best = None
    for choice in itertools.product(*[range(len(g)) for g in costs]):
        c = sum(g[j] for g, j in zip(costs, choice))
        d = sum(g[j] for g, j in zip(damages, choice))
        if c <= capacity + 1e-12 and (best is None or d < best[1] - 1e-12):
            best = (c, d)
    return best


def instance(rng, integer):
    groups = int(rng.integers(2, 5))
    costs, damages = [], []
    for _ in range(groups):
        k = int(rng.integers(1, 5))
        c = rng.integers(-6, 10, size=k) if integer else rng.uniform(-3, 8, size=k)
        costs.append([float(v) for v in c])
        damages.append([float(v) for v in rng.uniform(0, 5, size=k)])
    lo = sum(min(g) for g in costs)
    hi = sum(max(g) for g in costs)
    cap = float(rng.integers(int(np.floor(lo)), int(np.ceil(hi)) + 1)) if integer else \
        float(rng.uniform(lo - 1, hi + 1))
    return costs, damages, cap


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_when_the_grid_holds_the_costs(seed):
    rng = np.random.default_rng(seed)
    costs, damages, cap = instance(rng, integer=True)
    floor = sum(min(g) for g in costs)
    bf = brute_force(costs, damages, cap)
    room = int(round(cap - floor))
    sol = solve_mckp(costs, damages, cap, bins=max(room, 1))
    if bf is None:
        assert sol is None
        return
    assert sol is not None
    assert sol.damage == pytest.approx(bf[1], abs=1e-9)
    assert sol.cost <= cap + 1e-9


@pytest.mark.parametrize("seed", range(40))
def test_real_costs_feasible_and_between_the_bounds(seed):
    rng = np.random.default_rng(100 + seed)
    costs, damages, cap = instance(rng, integer=False)
    bins = 200
    sol = solve_mckp(costs, damages, cap, bins=bins)
    bf = brute_force(costs, damages, cap)
    if bf is None:
        assert sol is None
        return
    assert sol is not None
    # Never over the capacity, and the reported totals are the choices' own.
    assert sol.cost <= cap
    assert sol.cost == pytest.approx(sum(g[j] for g, j in zip(costs, sol.choices)))
    assert sol.damage == pytest.approx(sum(g[j] for g, j in zip(damages, sol.choices)))
    assert len(sol.choices) == len(costs)
    # At least as good as the exact optimum with one grid step per group less room.
    assert sol.damage >= bf[1] - 1e-9
    unit = (cap - sum(min(g) for g in costs)) / bins
    tighter = brute_force(costs, damages, cap - len(costs) * unit)
    if tighter is not None:
        assert sol.damage <= tighter[1] + 1e-9


def test_infeasible_capacity_gives_none():
    assert solve_mckp([[1.0, 2.0], [0.5]], [[0.0, 0.0], [0.0]], 1.4) is None


def test_prefers_less_damage_within_capacity():
    # Layer A: keep (0 ms, 0 damage) or cut (-5 ms, 1.0); layer B: keep or cut (-5 ms, 0.1).
    costs = [[0.0, -5.0], [0.0, -5.0]]
    damages = [[0.0, 1.0], [0.0, 0.1]]
    assert solve_mckp(costs, damages, -4.0).choices == (0, 1)
    assert solve_mckp(costs, damages, -6.0).choices == (1, 1)
    assert solve_mckp(costs, damages, 0.0).choices == (0, 0)


def test_pareto_front_is_monotone():
    rng = np.random.default_rng(7)
    costs = [list(rng.uniform(-5, 0, 6)) + [0.0] for _ in range(6)]
    damages = [list(rng.uniform(0, 1, 6)) + [0.0] for _ in range(6)]
    front = pareto_front(costs, damages, points=15, bins=500)
    assert len(front) >= 3
    cs = [s.cost for s in front]
    ds = [s.damage for s in front]
    assert cs == sorted(cs)
    assert all(a >= b - 1e-12 for a, b in zip(ds, ds[1:]))  # more latency, no more damage
