"""The budget controller of the verify loop: which *predicted budget* to solve for next.

Pure: no device, no model, no clock. It holds the per-candidate predicted costs (ms), solves
the knapsack for a predicted budget, and is told what the device measured for each plan
(latencies in the search's reference ms: see :mod:`latbench.search.policy`). From that it
corrects the next predicted budget::

    next = target + (aim − measured) / slope

``aim`` the middle of the accepted window ``[(1 − slack)·budget, budget]``; ``slope`` the
secant through the two latest measured plans (measured ms per predicted ms; 1 without two
points or when the secant is implausible). The step is kept inside the bracket of predicted
budgets already known to meet / to miss (bisection when it leaves it). After every measured
plan the costs are rescaled per layer kind when the measured plans tell the kinds apart
(:func:`latbench.search.calibrate.kind_scales`), and the bracket and secant move to the new
prediction scale.

It also judges a cost model before the search trusts it (:func:`judge_costs`): predictions
that go non-positive, or that disagree with the measured original beyond a factor, are
rescaled with a note or set aside for measured costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from latbench.search.calibrate import kind_scales
from latbench.search.knapsack import Solution, solve_mckp

__all__ = ["BudgetController", "Step", "CostVerdict", "judge_costs", "savings_factor",
           "set_aside_note",
           "SECANT_SLOPE_RANGE", "BRACKET_CLOSED", "OUTWARD_STEP", "SOLVES_PER_ROUND",
           "PREDICTOR_MAX_FACTOR"]

#: Measured ms per predicted ms accepted as a secant slope. Outside this range the two latest
#: plans disagree so much that their slope is noise or a jump between regimes (the solver
#: switching from cutting convolutions to cutting the classifier), and the plain correction
#: step (slope 1) is the safer one.
SECANT_SLOPE_RANGE = (0.2, 5.0)

#: Width of the bracket, as a share of the budget, below which no other plan lies between its
#: ends: the knapsack's latency grid is coarser, so further rounds would re-measure known plans.
BRACKET_CLOSED = 1e-4

#: When a correction leaves a one-sided bracket, step this share of the known bound beyond it
#: instead: far enough to reach a new plan, near enough not to overshoot the window again.
OUTWARD_STEP = 0.05

#: Solves per measured round at most: a solve that lands on an already measured plan costs no
#: device time, but a controller oscillating between known plans must still stop.
SOLVES_PER_ROUND = 4

#: A predictor whose latency of the original is off from the measured original by more than
#: this factor (either way), or whose savings on a measured plan are, is not trusted as it is:
#: a predictor within it is only anchored to the measured original (as every cost model is);
#: beyond it the user is told, and costs are rescaled or measured instead. 3× is beyond what
#: any predictor fitted on the same device makes (BENCHMARKS.md: within ±30 % on held-out
#: models), and within what a GBM fitted on a dozen rows of another host does.
PREDICTOR_MAX_FACTOR = 3.0

#: Relative headroom of the capacity when solving for the fastest plan, so that rounding cannot
#: make the cheapest choice of every layer look infeasible.
_FASTEST_HEADROOM = 1e-9

#: Plans whose predicted saving is below this share of the original say nothing about the
#: predictor's savings (their ratio would be noise over a near-zero denominator).
_MIN_SAVING_SHARE = 0.05


@dataclass(frozen=True)
class Step:
    """The controller's answer to one measured plan: stop (and why) or go on."""

    done: bool
    reason: str = ""  # "in window", "fastest over budget", "bracket closed" when done


class BudgetController:
    """Bracketing + secant + per-kind recalibration over predicted budgets (pure).

    Parameters
    ----------
    costs : per layer slot, the predicted latency change (ms) of each candidate; ``keep``
        (index 0) costs 0. Already anchored to the measured original.
    kinds : per slot, the kind its costs are rescaled with (``"conv"``, ``"linear"``).
    damages : per slot, the estimated damage of each candidate.
    original_ms : the original's latency (ms, reference scale); a plan's predicted latency
        is ``original_ms + Σ chosen costs``.
    budget_ms : the budget (ms, reference scale).
    slack : the accepted window is ``[(1 − slack)·budget, budget]``.
    measured : optional ``(choices, measured ms)`` of plans measured before (e.g. with
        other costs); they seed the bracket and the secant.
    """

    def __init__(self, costs: Sequence[Sequence[float]], kinds: Sequence[str],
                 damages: Sequence[Sequence[float]], original_ms: float, budget_ms: float,
                 slack: float, measured: Sequence[tuple[Sequence[int], float]] = ()) -> None:
        self.raw_costs = [list(map(float, g)) for g in costs]
        self.costs = [list(g) for g in self.raw_costs]  # rescaled per kind as plans are measured
        self.kinds = list(kinds)
        self.damages = [list(map(float, g)) for g in damages]
        self.original_ms, self.budget_ms, self.slack = float(original_ms), float(budget_ms), slack
        self.aim = self.budget_ms * (1.0 - slack / 2.0)
        self.lo, self.hi = -math.inf, math.inf  # predicted budgets known to meet / to miss
        self.target = self.aim
        # (predicted budget, measured) of measured plans. The original is the first point: at a
        # predicted budget of original_ms every layer is kept, so the first secant step is the
        # ratio of measured to predicted savings.
        self.history: list[tuple[float, float]] = [(self.original_ms, self.original_ms)]
        self.measured: dict[tuple[int, ...], float] = {}  # in measurement order
        self.scales: dict[str, float] | None = None
        self.scales_after: int | None = None  # measured plans when the scales last changed
        if measured:
            for choices, ms in measured:
                self.measured[tuple(choices)] = float(ms)
            self._rebase()
            last, ms = list(self.measured.items())[-1]
            self._advance(self.predict(last), ms)

    # ------------------------------------------------------------------ predictions
    @property
    def fastest(self) -> float:
        """Predicted latency (ms) of the cheapest choice of every layer."""
        return self.original_ms + sum(min(g) for g in self.costs)

    def predict(self, choices: Sequence[int]) -> float:
        """Predicted latency (ms) of a plan under the current costs."""
        return self.original_ms + sum(self.costs[i][j] for i, j in enumerate(choices))

    def solve(self, target_ms: float) -> Solution:
        """The least-damage plan whose predicted latency fits ``target_ms`` (the fastest plan
        when none does)."""
        sol = solve_mckp(self.costs, self.damages, target_ms - self.original_ms)
        if sol is None:
            room = self.fastest - self.original_ms + _FASTEST_HEADROOM * max(1.0, abs(self.fastest))
            sol = solve_mckp(self.costs, self.damages, room)
        assert sol is not None  # the cheapest choice of every layer always fits
        return sol

    # ------------------------------------------------------------------ the loop
    @property
    def needs_fastest_probe(self) -> bool:
        """The prediction says no plan meets the budget: measure the fastest before refusing."""
        return self.budget_ms < self.fastest

    def next_target(self) -> float:
        """The predicted budget to solve for next (never below the fastest plan)."""
        return max(self.target, self.fastest)

    def observe_fastest(self, choices: Sequence[int], measured_ms: float) -> bool:
        """Record the fastest plan's measurement; ``False`` if even it misses the budget."""
        self._record(self.fastest, choices, measured_ms)
        if measured_ms > self.budget_ms:
            self.hi = self.fastest
            return False
        self.lo = self.fastest
        self.target = self.fastest + (self.aim - measured_ms)
        return True

    def observe(self, target_ms: float, choices: Sequence[int], measured_ms: float) -> Step:
        """Take the measured latency of the plan solved for ``target_ms``; decide what next.

        A plan measured before (``choices`` seen) moves the bracket but not the secant.
        """
        if tuple(choices) not in self.measured:
            self._record(target_ms, choices, measured_ms)
        budget = self.budget_ms
        if measured_ms <= budget:
            self.lo = max(self.lo, target_ms)
            if measured_ms >= (1.0 - self.slack) * budget:
                return Step(True, "in window")
        else:
            self.hi = min(self.hi, target_ms)
            if target_ms <= self.fastest:
                return Step(True, "fastest over budget")
        if self._recalibrate():
            target_ms = self.predict(choices)
        return self._advance(target_ms, measured_ms)

    def correct(self, choices: Sequence[int], measured_ms: float) -> None:
        """A measured plan's latency was measured again more reliably (back to back with the
        original): take that value, as the latest measurement, and correct the next step."""
        key = tuple(choices)
        self.measured.pop(key, None)
        self.measured[key] = float(measured_ms)
        self._rebase()
        self._advance(self.predict(key), measured_ms)

    def _record(self, target_ms: float, choices: Sequence[int], measured_ms: float) -> None:
        self.measured[tuple(choices)] = float(measured_ms)
        self.history.append((float(target_ms), float(measured_ms)))

    def _recalibrate(self) -> bool:
        """Rescale costs per kind from the measured plans; ``True`` if they were."""
        scales = kind_scales(self.kinds, self.raw_costs, list(self.measured.items()),
                             self.original_ms)
        if scales is None:
            return False
        for i, k in enumerate(self.kinds):
            self.costs[i] = [v * scales[k] for v in self.raw_costs[i]]
        if self.scales != scales:
            self.scales, self.scales_after = scales, len(self.measured)
        self._rebase()
        return True

    def _rebase(self) -> None:
        """Move the bracket and the secant history to the current prediction scale: each
        measured plan at its re-predicted latency, in measurement order (so the secant runs
        through the two latest plans)."""
        pts = [(self.predict(c), m) for c, m in self.measured.items()]
        self.history = [(self.original_ms, self.original_ms)] + pts
        self.lo = max((p for p, m in pts if m <= self.budget_ms), default=-math.inf)
        self.hi = min((p for p, m in pts if m > self.budget_ms), default=math.inf)
        if self.lo >= self.hi:
            self.lo, self.hi = -math.inf, math.inf

    def _advance(self, target_ms: float, measured_ms: float) -> Step:
        """Secant (or plain) correction from ``(target, measured)``, kept in the bracket."""
        nxt = target_ms + (self.aim - measured_ms)
        secant = False
        if len(self.history) >= 2 and self.history[-1][0] != self.history[-2][0]:
            (t0, m0), (t1, m1) = self.history[-2], self.history[-1]
            slope = (m1 - m0) / (t1 - t0)
            if SECANT_SLOPE_RANGE[0] <= slope <= SECANT_SLOPE_RANGE[1]:
                nxt, secant = target_ms + (self.aim - measured_ms) / slope, True
        lo, hi = self.lo, self.hi
        if not lo < nxt < hi:
            if math.isfinite(lo) and math.isfinite(hi):
                nxt = (lo + hi) / 2
            elif math.isfinite(hi):
                nxt = hi - abs(hi) * OUTWARD_STEP
            else:
                nxt = lo + abs(lo) * OUTWARD_STEP
        if not secant and nxt <= self.fastest < hi and not math.isfinite(lo):
            # No plan has met the budget, and a plain step from one implausible point (a plan
            # measured slower than the original) would jump to the fastest, most damaging
            # plan: halve the way there instead; the secant takes over from two plans on.
            nxt = (self.fastest + min(hi, target_ms)) / 2
        if math.isfinite(lo) and math.isfinite(hi) and hi - lo < BRACKET_CLOSED * self.budget_ms:
            return Step(True, "bracket closed")
        self.target = nxt
        return Step(False)


def savings_factor(original_ms: float, predicted_ms: float, measured_ms: float) -> float | None:
    """Measured saving over predicted saving of one plan (1: the prediction was right).

    ``None`` when the predicted saving is too small to say anything (under 5 % of the
    original). Negative when the plan was predicted faster and measured slower.
    """
    predicted_saving = original_ms - predicted_ms
    if not predicted_saving > _MIN_SAVING_SHARE * original_ms:
        return None
    return (original_ms - measured_ms) / predicted_saving


@dataclass(frozen=True)
class CostVerdict:
    """How far a cost model's latencies can be trusted, and what the search does about it.

    ``action`` is ``"anchored"`` (scaled to the measured original, as always),
    ``"rescaled"`` (off beyond :data:`PREDICTOR_MAX_FACTOR`, scaled with a note) or
    ``"set aside"`` (non-positive latencies: costs must come from elsewhere).
    """

    action: str
    scale: float
    note: str | None = None
    factor: float | None = None  # measured original / cost model's original
    reason: str | None = None  # what was wrong, without what was done about it

    def to_dict(self) -> dict:
        return {"action": self.action, "scale": self.scale, "factor": self.factor,
                "note": self.note}


def judge_costs(base_ms: float | None, original_ms: float,
                costs: Sequence[Sequence[float]], *, measured_on_device: bool,
                source: str = "the cost model") -> CostVerdict:
    """Judge a cost model's latencies against the measured original.

    Parameters
    ----------
    base_ms : the cost model's latency of the original (ms), ``None`` if it gives none.
    original_ms : the measured original (ms).
    costs : per slot, each candidate's predicted latency change (ms), unscaled.
    measured_on_device : layers timed alone on the device. Their sum usually exceeds the
        model's latency (each timed with its own buffers) while a sum short of it misses
        work no candidate changes, so they are only ever shrunk to the original.
    source : the cost model's name, for the note.

    Returns
    -------
    CostVerdict
        ``scale`` multiplies every cost (and makes the original's prediction the measured one).
    """
    if base_ms is None or not math.isfinite(base_ms):
        return CostVerdict("anchored", 1.0)
    lowest = min([base_ms, base_ms + sum(min(g) for g in costs)]
                 + [base_ms + c for g in costs for c in g])
    if measured_on_device:
        return CostVerdict("anchored", min(original_ms / base_ms, 1.0) if base_ms > 0 else 1.0)
    if lowest <= 0:
        reason = (f"{source} predicted non-positive latencies (the original {base_ms:.4g} ms, "
                  f"plans down to {lowest:.4g} ms; the device measured the original at "
                  f"{original_ms:.4g} ms)")
        return CostVerdict("set aside", 1.0, set_aside_note(reason), reason=reason)
    factor = original_ms / base_ms
    if max(factor, 1.0 / factor) > PREDICTOR_MAX_FACTOR:
        return CostVerdict(
            "rescaled", factor, f"{source} put the original at {base_ms:.4g} ms, the device "
            f"measured {original_ms:.4g} ms (×{factor:.3g}, beyond ×{PREDICTOR_MAX_FACTOR:g}): its "
            "costs were rescaled by that factor; retrain it on this device's data", factor)
    return CostVerdict("anchored", factor, factor=factor)


def set_aside_note(reason: str) -> str:
    """The note of a cost model set aside for layers measured on the device."""
    return (f"{reason}: it was set aside for layers measured on the device; retrain it on more "
            "rows of this device's data")
