"""What a rank search returns: its verification rounds and the result with its comparisons."""

from __future__ import annotations

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
            "speedup": self.original_ms / self.measured_ms if self.measured_ms else None,
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
        }
