"""What a rank search returns: its verification rounds and the result with its comparisons."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from latbench.compress.plan import Plan

__all__ = ["Round", "SearchResult"]


@dataclass(frozen=True)
class Round:
    """One verification round: the predicted budget solved for and what the device said.

    Latencies in ms. ``fidelity`` is the search's fidelity (``fidelity_fn`` or
    ``1 − relative output error``) of this round's plan, before any fine-tuning.
    ``measured_ms`` is the plan's median on the device (the lower one when measured again),
    ``original_ms`` the original's in the same window, and ``judged_ms`` the plan in the
    search's reference ms (their ratio × the original at the start of the search): what
    ``met`` compares with the budget. ``remeasured`` says what was measured again
    (``"plan"``, ``"original"``, and ``"drift"`` when the original had moved).
    """

    index: int
    target_ms: float
    predicted_ms: float
    measured_ms: float
    met: bool
    fidelity: float
    output_rel_error: float
    estimated_damage: float
    params: int
    macs: int
    plan: dict
    original_ms: float = math.nan
    judged_ms: float = math.nan
    remeasured: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    """What a search found, how it was verified, and what it was compared with.

    ``front`` and ``uniform`` are lists of points ``{predicted_ms, estimated_damage,
    fidelity, ...}``: the knapsack's Pareto front and the uniform-rank plans, both scored
    without the device. ``baseline`` is the uniform-rank plan family measured around the
    final plan's latency (``fidelity_at_equal_latency`` interpolated between the measured
    points that bracket it).

    ``measured_ms``, ``original_ms``, ``speedup`` and ``met`` come from the final plan's
    back-to-back verification with the original (``verification``); ``budget_ms`` is the
    requested budget, or for a speed-up the verification's original over it.
    ``original_ms_start`` is the original at the start of the search, the reference a
    budget in ms is judged at: ``measured_ms_at_start`` (= ``original_ms_start / speedup``)
    is compared with it, so a device that slowed down during the search cannot make a plan
    look over budget, nor one that sped up make it look under. ``original_drift`` says how
    much the original moved. ``fidelity_check`` compares the plan's fidelity with what the
    predicted front promised and with the uniform baseline; ``cost_check`` says whether the
    cost model's latencies were trusted, rescaled or set aside.
    """

    model_name: str
    device: str
    input_shape: tuple[int, ...]
    budget_ms: float
    original_ms: float
    original_fidelity: float
    plan: Plan
    model: nn.Module
    predicted_ms: float
    measured_ms: float
    met: bool
    fidelity: float
    output_rel_error: float
    rounds: list[Round]
    choices: dict[str, dict]
    front: list[dict]
    uniform: list[dict]
    baseline: dict | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    search_seconds: float
    cost_source: str
    fidelity_name: str = "1 - relative output error"
    fidelity_before_finetune: float | None = None
    notes: list[str] = field(default_factory=list)
    prepare_seconds: float = 0.0  # candidates, damages, costs; 0 when a Searcher reused them
    speedup: float | None = None  # verified: median of the back-to-back pairs' ratios
    original_ms_start: float | None = None
    requested_budget_ms: float | None = None
    requested_speedup: float | None = None
    measured_ms_at_start: float | None = None
    verification: dict | None = None
    original_drift: dict | None = None
    fidelity_check: dict | None = None
    cost_check: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``bench search --json`` object."""
        return {
            "budget_ms": self.budget_ms,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "met": bool(self.met),
            "rounds": [r.to_dict() for r in self.rounds],
            "fidelity": self.fidelity,
            "plan": self.plan.to_dict(),
            "model": self.model_name,
            "device": self.device,
            "input_shape": list(self.input_shape),
            "original_ms": self.original_ms,
            "original_fidelity": self.original_fidelity,
            "speedup": self.speedup if self.speedup is not None else
            (self.original_ms / self.measured_ms if self.measured_ms else None),
            "fidelity_name": self.fidelity_name,
            "fidelity_before_finetune": self.fidelity_before_finetune,
            "output_rel_error": self.output_rel_error,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "search_seconds": self.search_seconds,
            "prepare_seconds": self.prepare_seconds,
            "cost_source": self.cost_source,
            "choices": self.choices,
            "uniform_baseline": self.baseline,
            "notes": self.notes,
            "original_ms_start": self.original_ms_start,
            "requested_budget_ms": self.requested_budget_ms,
            "requested_speedup": self.requested_speedup,
            "budget_speedup": self.budget_speedup,
            "measured_ms_at_start": self.measured_ms_at_start,
            "verification": self.verification,
            "original_drift": self.original_drift,
            "fidelity_check": self.fidelity_check,
            "cost_check": self.cost_check,
        }

    @property
    def budget_speedup(self) -> float | None:
        """The speed-up over the original that the budget asks for."""
        if self.requested_speedup is not None:
            return self.requested_speedup
        start = self.original_ms_start if self.original_ms_start is not None else self.original_ms
        return start / self.budget_ms if self.budget_ms else None
