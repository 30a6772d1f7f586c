"""Latency-constrained rank search, verified on the device.

1. Measure the original model on the device; the budget is ``budget_ms`` or
   ``original / speedup``.
2. Candidates: every decomposable layer × method × fractional rank, plus ``keep``.
3. Damage per candidate on a calibration batch (:mod:`latbench.search.fidelity`); latency
   contribution per candidate from a predictor or from layers measured alone
   (:mod:`latbench.search.cost`).
4. A multiple-choice knapsack picks one candidate per layer: least damage whose predicted
   latency meets the (predicted) budget.
5. Verify: compress, export and measure the plan. Over budget → tighten the predicted
   budget by the observed ratio and solve again; far under (more than ``slack``) → loosen
   it the same way. Bounded rounds; every round is reported; the best plan that met the
   budget wins.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latbench.compress.model import compress_model
from latbench.compress.plan import Plan
from latbench.exceptions import DeviceError, UserInputError
from latbench.search.candidates import DEFAULT_FRACTIONS, LayerSlot, generate_candidates
from latbench.search.fidelity import calibration_batch, output_error, score_candidates
from latbench.search.knapsack import Solution, pareto_front, solve_mckp

__all__ = ["Round", "SearchResult", "search", "DEFAULT_SEARCH_METHODS"]

#: CP is left out by default: its ALS makes candidate generation minutes long on big layers.
DEFAULT_SEARCH_METHODS = ("tucker2", "svd")


@dataclass(frozen=True)
class Round:
    index: int
    target_ms: float  # the predicted budget solved for
    predicted_ms: float
    measured_ms: float
    met: bool
    fidelity: float
    output_rel_error: float
    estimated_damage: float
    plan: dict

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    """What a search found, how it was verified, and what it was compared with."""

    model_name: str
    device: str
    budget_ms: float
    original_ms: float
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
    fidelity_name: str = "1 - relative output error"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``bench search --json`` object."""
        return {
            "budget_ms": self.budget_ms,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "met": self.met,
            "rounds": [r.to_dict() for r in self.rounds],
            "fidelity": self.fidelity,
            "plan": self.plan.to_dict(),
            "model": self.model_name,
            "device": self.device,
            "original_ms": self.original_ms,
            "speedup": self.original_ms / self.measured_ms if self.measured_ms else None,
            "fidelity_name": self.fidelity_name,
            "output_rel_error": self.output_rel_error,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "search_seconds": self.search_seconds,
            "choices": self.choices,
            "uniform_baseline": self.baseline,
            "notes": self.notes,
        }


def _measure(dev, net: nn.Module, shape, work: Path, name: str, threads, warmup, repeats) -> float:
    from latbench.compress.export import export_onnx

    art = export_onnx(net, shape, work / f"{name}.onnx")
    try:
        return dev.measure(art, dev.make_spec(art, threads=threads, warmup=warmup,
                                              repeats=repeats)).median_ms
    finally:
        art.path.unlink(missing_ok=True)


def _plan_of(slots: list[LayerSlot], sol: Solution) -> Plan:
    choice = {}
    for slot, j in zip(slots, sol.choices):
        c = slot.candidates[j]
        if c.method != "keep":
            choice[slot.name] = (c.method, tuple(c.rank) if len(c.rank) > 1 else int(c.rank[0]))
    return Plan.from_layers(choice)


def search(
    model: str | nn.Module,
    device: Any,
    *,
    budget_ms: float | None = None,
    speedup: float | None = None,
    input_shape: Sequence[int] | None = None,
    predictor: Any = None,
    store: Any = None,
    methods: Sequence[str] = DEFAULT_SEARCH_METHODS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    calib: int | torch.Tensor = 8,
    fidelity_fn: Callable[[nn.Module], float] | None = None,
    finetune: Callable[[nn.Module], nn.Module | None] | None = None,
    max_rounds: int = 4,
    slack: float = 0.10,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 30,
    seed: int = 0,
    devices_file: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SearchResult:
    """Choose per-layer methods and ranks that meet a latency budget on ``device``.

    Parameters
    ----------
    model : str or nn.Module
        A MODEL spec (see :func:`latbench.models.resolve_model`) or a module.
    device : str or Device
        Where the budget holds; plans are verified there.
    budget_ms, speedup : float
        Exactly one: the latency budget in ms, or the wanted speed-up over the original.
    predictor : fitted latency predictor, optional
        Costs from its predictions; without it layers are measured alone on the device
        (reusing and filling ``store``'s per-layer measurements when a store is given).
    calib : int or Tensor
        Calibration batch size (seeded Gaussian inputs) or the batch itself.
    fidelity_fn : callable, optional
        ``fidelity_fn(model) -> float`` (higher is better, e.g. validation accuracy);
        without it fidelity is ``1 − relative output error`` on the calibration batch.
    finetune : callable, optional
        Applied to the final compressed model (may return a new one).
    max_rounds : int
        Verification rounds at most.
    slack : float
        A plan that meets the budget by more than this share is loosened and retried.

    Raises
    ------
    UserInputError
        Bad budget, or a budget below the fastest reachable latency (the message gives it).
    DeviceError
        If the device fails; rounds already verified are in the message.
    """
    from latbench.data.features import count_params, layer_table
    from latbench.models import default_input_shape, resolve_model

    if (budget_ms is None) == (speedup is None):
        raise UserInputError("give exactly one of a budget in ms (--budget-ms) or a speed-up (--speedup)")
    if budget_ms is not None and budget_ms <= 0:
        raise UserInputError(f"the budget must be positive, got {budget_ms} ms")
    if speedup is not None and speedup <= 1:
        raise UserInputError(f"the speed-up must be above 1, got {speedup}")
    if max_rounds < 1:
        raise UserInputError("max_rounds must be at least 1")
    name = model if isinstance(model, str) else type(model).__name__
    shape = tuple(input_shape) if input_shape else (
        default_input_shape(model) if isinstance(model, str) else (1, 3, 224, 224))
    net = copy.deepcopy(resolve_model(model, seed=seed)).eval()
    if isinstance(device, str):
        from latbench.devices.registry import get_device

        device = get_device(device, devices_file)
    say = progress or (lambda stage, done, total: None)
    work_dir = tempfile.TemporaryDirectory(prefix="latbench-search-")
    work = Path(work_dir.name)
    clock = 0.0
    rounds: list[Round] = []
    try:
        say("measure original", 0, 1)
        original_ms = _measure(device, net, shape, work, "original", threads, warmup, repeats)
        budget = float(budget_ms) if budget_ms is not None else original_ms / float(speedup)

        t0 = time.perf_counter()
        slots = generate_candidates(net, shape, methods, fractions, seed=seed,
                                    progress=lambda d, t: say("candidates", d, t))
        if not slots:
            raise UserInputError(f"no layer of {name} can be decomposed by {', '.join(methods)}")
        x = calib if isinstance(calib, torch.Tensor) else calibration_batch(shape, int(calib), seed)
        reference = score_candidates(net, slots, x, progress=lambda d, t: say("fidelity", d, t))
        table = layer_table(net, shape)
        clock += time.perf_counter() - t0

        if predictor is not None:
            from latbench.search.cost import PredictorCost

            t0 = time.perf_counter()
            base = PredictorCost(predictor).assign(slots, table)
            scale = original_ms / base if base > 0 else 1.0
            clock += time.perf_counter() - t0
        else:
            from latbench.search.cost import MeasuredLayerCost

            MeasuredLayerCost(device, store=store, threads=threads,
                              progress=lambda d, t: say("layer costs", d, t)).assign(slots, table)
            scale = 1.0

        t0 = time.perf_counter()
        costs = [[c.cost_ms * scale for c in s.candidates] for s in slots]
        damages = [[c.damage for c in s.candidates] for s in slots]
        fastest = original_ms + sum(min(g) for g in costs)
        if budget < fastest:
            raise UserInputError(
                f"budget {budget:.3f} ms is below the fastest reachable latency, about "
                f"{fastest:.3f} ms ({original_ms / fastest:.2f}× faster than the original "
                f"{original_ms:.3f} ms) with {', '.join(methods)} at ranks ≥ {min(fractions):g}; "
                "raise the budget or allow more methods or lower ranks")
        front = [dict(predicted_ms=original_ms + s.cost, estimated_damage=s.damage)
                 for s in pareto_front(costs, damages)]
        uniform = _uniform_points(slots, costs, damages, original_ms, methods, fractions)
        clock += time.perf_counter() - t0

        target = budget
        best: tuple[Round, nn.Module] | None = None
        seen: set[str] = set()
        for k in range(1, max_rounds + 1):
            t0 = time.perf_counter()
            sol = solve_mckp(costs, damages, target - original_ms) or \
                solve_mckp(costs, damages, fastest - original_ms + 1e-9)
            plan = _plan_of(slots, sol)
            compressed = compress_model(net, plan, input_shape=shape, seed=seed).model
            clock += time.perf_counter() - t0
            if plan.hash in seen:
                break  # the correction no longer changes the plan
            seen.add(plan.hash)
            say("verify", k, max_rounds)
            measured = _measure(device, compressed, shape, work, f"round{k}", threads, warmup, repeats)
            err = output_error(reference, compressed, x)
            fid = float(fidelity_fn(compressed)) if fidelity_fn else 1.0 - err
            rnd = Round(k, target, original_ms + sol.cost, measured, measured <= budget, fid, err,
                        sol.damage, plan.to_dict())
            rounds.append(rnd)
            if rnd.met and (best is None or rnd.fidelity > best[0].fidelity):
                best = (rnd, compressed)
            if rnd.met and measured >= (1 - slack) * budget:
                break
            target = max(target * budget / measured, fastest)
        final_round, final_model = best if best is not None else (rounds[-1], compressed)
        notes: list[str] = []
        if best is None:
            notes.append(f"no plan met the budget in {len(rounds)} rounds; the last one is reported")
        final_plan = Plan.from_dict(final_round.plan)
        if finetune is not None:
            tuned = finetune(final_model)
            final_model = tuned if tuned is not None else final_model
            notes.append("fine-tuned after the search")
        err = output_error(reference, final_model, x)
        fid = float(fidelity_fn(final_model)) if fidelity_fn else 1.0 - err
        baseline = _verify_uniform(net, uniform, final_round.measured_ms, device, shape, work,
                                   threads, warmup, repeats, reference, x, fidelity_fn, seed)
    except DeviceError as exc:
        done = "; ".join(f"round {r.index}: {r.measured_ms:.3f} ms" for r in rounds) or "no round verified"
        raise DeviceError(f"{exc} (search results so far: {done})") from None
    finally:
        work_dir.cleanup()
    after = layer_table(final_model, shape)
    choices = {}
    for slot in slots:
        rule = final_plan.rule_for(slot.name)
        choices[slot.name] = {"method": rule.method if rule else "keep",
                              "rank": (list(rule.rank) if isinstance(rule.rank, tuple) else rule.rank)
                              if rule else None}
    return SearchResult(
        model_name=name, device=device.name, budget_ms=budget, original_ms=original_ms,
        plan=final_plan, model=final_model, predicted_ms=final_round.predicted_ms,
        measured_ms=final_round.measured_ms, met=final_round.measured_ms <= budget,
        fidelity=fid, output_rel_error=err, rounds=rounds, choices=choices, front=front,
        uniform=uniform, baseline=baseline, params_before=count_params(net),
        params_after=count_params(final_model), macs_before=int(table["macs"].sum()),
        macs_after=int(after["macs"].sum()), search_seconds=clock,
        fidelity_name="custom" if fidelity_fn else "1 - relative output error", notes=notes)


def _uniform_points(slots, costs, damages, original_ms, methods, fractions) -> list[dict]:
    """Predicted latency and damage of each uniform-rank plan (one method, one fraction)."""
    from latbench.compress._base import METHODS
    from latbench.compress.ranks import resolve_rank

    out = []
    for m in methods:
        method = METHODS.get(m)
        for f in fractions:
            cost = dmg = 0.0
            layers = {}
            for slot, cg, dg in zip(slots, costs, damages):
                j = 0
                if method.supports(slot.layer) is None:
                    rank = resolve_rank(float(f), slot.layer, method)
                    j = next((i for i, c in enumerate(slot.candidates)
                              if c.method == m and tuple(c.rank) == tuple(rank)), 0)
                cost += cg[j]
                dmg += dg[j]
                if j:
                    layers[slot.name] = (m, float(f))
            out.append(dict(method=m, fraction=float(f), predicted_ms=original_ms + cost,
                            estimated_damage=dmg, plan=Plan.from_layers(layers).to_dict()))
    return out


def _verify_uniform(net, uniform, measured_ms, device, shape, work, threads, warmup, repeats,
                    reference, x, fidelity_fn, seed) -> dict | None:
    """Measure the uniform-rank plan predicted closest to the final plan's measured latency."""
    if not uniform:
        return None
    pick = min(uniform, key=lambda u: abs(u["predicted_ms"] - measured_ms))
    compressed = compress_model(net, Plan.from_dict(pick["plan"]), input_shape=shape, seed=seed).model
    measured = _measure(device, compressed, shape, work, "uniform", threads, warmup, repeats)
    err = output_error(reference, compressed, x)
    fid = float(fidelity_fn(compressed)) if fidelity_fn else 1.0 - err
    return dict(method=pick["method"], fraction=pick["fraction"], predicted_ms=pick["predicted_ms"],
                measured_ms=measured, fidelity=fid, output_rel_error=err)
