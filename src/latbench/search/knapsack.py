"""Multiple-choice knapsack: one choice per layer, least total damage within a latency budget.

Dynamic programming over a discretised latency axis. Costs may be negative (a choice that
speeds a layer up); each layer's costs are shifted by its cheapest choice so the table
runs over non-negative weights. Weights are rounded *up* to the grid, so a solution's true
cost never exceeds the capacity: the discretisation can only make the answer conservative,
by at most one grid step per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Solution", "solve_mckp", "pareto_front"]


@dataclass(frozen=True)
class Solution:
    """One option per group (``choices``), with their total cost and damage."""

    choices: tuple[int, ...]  # index of the chosen option per group
    cost: float
    damage: float


def solve_mckp(costs: Sequence[Sequence[float]], damages: Sequence[Sequence[float]],
               capacity: float, *, bins: int = 2000) -> Solution | None:
    """Pick one option per group minimising total damage subject to total cost ≤ capacity.

    Returns ``None`` when even the cheapest options exceed the capacity.
    """
    c = [np.asarray(g, dtype=float) for g in costs]
    d = [np.asarray(g, dtype=float) for g in damages]
    floor = sum(float(g.min()) for g in c)
    room = capacity - floor
    if room < -1e-12:
        return None
    shifted = [g - g.min() for g in c]
    span = max(room, 1e-12)
    unit = span / bins
    weights = [np.ceil(g / unit).astype(np.int64) for g in shifted]
    n = bins + 1
    inf = np.inf
    dp = np.zeros(n)  # best damage with weight ≤ b, before any group
    picks = np.zeros((len(c), n), dtype=np.int32)
    for gi, (w, dmg) in enumerate(zip(weights, d)):
        new = np.full(n, inf)
        arg = np.zeros(n, dtype=np.int32)
        for j, (wj, dj) in enumerate(zip(w, dmg)):
            if wj >= n:
                continue
            cand = np.full(n, inf)
            cand[wj:] = dp[: n - wj] + dj
            better = cand < new
            new[better] = cand[better]
            arg[better] = j
        dp, picks[gi] = new, arg
    if not np.isfinite(dp[-1]):
        return None
    choices = []
    b = n - 1
    for gi in range(len(c) - 1, -1, -1):
        j = int(picks[gi, b])
        choices.append(j)
        b -= int(weights[gi][j])
    choices.reverse()
    total_cost = float(sum(g[j] for g, j in zip(c, choices)))
    total_damage = float(sum(g[j] for g, j in zip(d, choices)))
    return Solution(tuple(choices), total_cost, total_damage)


def pareto_front(costs: Sequence[Sequence[float]], damages: Sequence[Sequence[float]], *,
                 points: int = 25, bins: int = 1000) -> list[Solution]:
    """Optimal (cost, damage) trade-offs from the cheapest to the free choice of every layer."""
    lo = sum(float(min(g)) for g in costs)
    hi = sum(float(max(g)) for g in costs)
    out: list[Solution] = []
    for cap in np.linspace(lo, hi, points):
        s = solve_mckp(costs, damages, float(cap), bins=bins)
        if s is not None and (not out or s.choices != out[-1].choices):
            out.append(s)
    return out
