"""Latency-constrained rank search, verified on the device.

1. Measure the original model on the device; the budget is ``budget_ms`` or
   ``original / speedup``.
2. Candidates: every decomposable layer × method × fractional rank, plus ``keep``
   (:mod:`latbench.search.candidates`).
3. Damage per candidate on a calibration batch (:mod:`latbench.search.fidelity`); latency
   contribution per candidate from a predictor or from layers measured alone
   (:mod:`latbench.search.cost`), anchored to the measured original.
4. A multiple-choice knapsack (:mod:`latbench.search.knapsack`) picks one candidate per
   layer: the least total damage whose predicted latency fits the *predicted budget*.
5. Verify: build, export and measure the plan. The predicted budget is then corrected by
   the observed error (``next = target + (aim − measured)``, ``aim`` the middle of the
   accepted window ``[(1 − slack)·budget, budget]``), kept inside the bracket of
   predicted budgets already known to meet / to miss (bisection when the correction
   leaves it). Stop when a plan lands in the window, or after ``max_rounds`` measured
   rounds. Every round is reported; the met plan with the best fidelity wins.
6. Baseline: the uniform-rank plans (one method, one fraction for every layer) are
   scored the same way, and those around the final plan's latency are measured, so the
   report compares fidelity at equal *measured* latency.

Steps 2–3 do not depend on the budget: a :class:`Searcher` does them once and answers any
number of budgets (``search()`` is a one-budget ``Searcher``).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latbench.compress.plan import Plan
from latbench.exceptions import DeviceError, UserInputError
from latbench.predictor.base import check_predictor
from latbench.search.baseline import measure_uniform, uniform_points
from latbench.search.calibrate import kind_scales, layer_kind
from latbench.search.candidates import DEFAULT_FRACTIONS, LayerSlot, generate_candidates
from latbench.search.fidelity import calibration_batch, output_error, score_candidates
from latbench.search.knapsack import pareto_front, solve_mckp
from latbench.search.plans import assemble, plan_of
from latbench.search.result import Round, SearchResult

__all__ = ["Round", "SearchResult", "Searcher", "search", "check_predictor", "assemble",
           "DEFAULT_SEARCH_METHODS"]

#: CP is left out by default: its ALS makes candidate generation minutes long on big layers.
DEFAULT_SEARCH_METHODS = ("tucker2", "svd")


# --------------------------------------------------------------------------- helpers
class _Meter:
    """Exports and measures models on the device, keeping the time it takes apart."""

    def __init__(self, device: Any, shape: tuple[int, ...], work: Path, threads: int | None,
                 warmup: int, repeats: int) -> None:
        self.device, self.shape, self.work = device, shape, work
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.seconds = 0.0

    def __call__(self, net: nn.Module, name: str) -> float:
        from latbench.bench.run import export_for, measure_artifact, spread_guard

        t0 = time.perf_counter()
        art = export_for(self.device, net, self.shape, self.work / name)
        try:

            return float(measure_artifact(
                self.device, art, threads=self.threads, warmup=self.warmup, repeats=self.repeats,
                sampling=spread_guard(self.device, self.repeats)).median_ms)
        finally:
            art.path.unlink(missing_ok=True)
            self.seconds += time.perf_counter() - t0


def _check_budget_args(budget_ms: float | None, speedup: float | None, max_rounds: int,
                       slack: float) -> None:
    """Refuse a bad budget, speed-up, round count or slack (one line each)."""
    if (budget_ms is None) == (speedup is None):
        raise UserInputError("give exactly one of a budget in ms (--budget-ms) or a speed-up (--speedup)")
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise UserInputError(f"the budget must be a positive number of ms, got {budget_ms}")
    if speedup is not None and not (math.isfinite(speedup) and speedup > 1):
        raise UserInputError(f"the speed-up must be above 1, got {speedup}")
    if max_rounds < 1:
        raise UserInputError("max_rounds must be at least 1")
    if not 0 <= slack < 1:
        raise UserInputError(f"slack must be in [0, 1), got {slack}")


# --------------------------------------------------------------------------- the search
@dataclass
class _Prepared:
    """What a search needs that does not depend on the budget."""

    slots: list[LayerSlot]
    x: torch.Tensor  # calibration batch
    reference: torch.Tensor  # the original's output on it
    table: Any  # the original's layer table
    base_ms: float | None  # the cost model's latency of the original
    cost_source: str
    seconds: float  # time it took, without device measurement


class Searcher:
    """A rank search prepared once for one model on one device, asked for any budget.

    Candidate generation, damage scoring and per-candidate costs (steps 2–3 of the module
    docstring) depend on the model, the device and the method/rank grid, not on the
    budget; they are done on the first :meth:`search` (or by :meth:`prepare`) and reused
    by every later one. Parameters are those of :func:`search` that are not about one
    budget.

    Examples
    --------
    >>> s = Searcher("resnet18", "cpu", input_shape=(1, 3, 64, 64))   # doctest: +SKIP
    >>> results = [s.search(speedup=1 / f) for f in (0.5, 0.7, 0.9)]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | nn.Module,
        device: Any,
        *,
        input_shape: Sequence[int] | None = None,
        predictor: Any = None,
        store: Any = None,
        cost_model: Any = None,
        methods: Sequence[str] = DEFAULT_SEARCH_METHODS,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        calib: int | torch.Tensor = 8,
        fidelity_fn: Callable[[nn.Module], float] | None = None,
        threads: int | None = None,
        warmup: int = 10,
        repeats: int = 30,
        seed: int = 0,
        devices_file: str | Path | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        trust_file: bool = False,
    ) -> None:
        from latbench.models import default_input_shape, resolve_model

        self.methods = tuple(methods)
        if not self.methods:
            raise UserInputError("no decomposition method given: allow e.g. tucker2,svd")
        import latbench.compress  # noqa: F401  (registers the built-in methods)
        from latbench.compress._base import METHODS

        for m in self.methods:
            METHODS.get(m)  # an unknown method fails here, with suggestions, before any measurement
        self.fractions = tuple(fractions)
        self.name = model if isinstance(model, str) else type(model).__name__
        self.shape = tuple(int(s) for s in input_shape) if input_shape else (
            default_input_shape(model) if isinstance(model, str) else (1, 3, 224, 224))
        self.net = copy.deepcopy(resolve_model(model, seed=seed, trust_file=trust_file)).eval()
        if isinstance(device, str):
            from latbench.devices.registry import get_device

            device = get_device(device, devices_file)
        self.device = device
        self.notes: list[str] = []
        if cost_model is None and predictor is not None:
            self.notes += check_predictor(predictor, device.name)
        self.predictor, self.store, self.cost_model = predictor, store, cost_model
        self.calib, self.fidelity_fn, self.seed = calib, fidelity_fn, seed
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.say = progress or (lambda stage, done, total: None)
        self._prepared: _Prepared | None = None
        self._cost_model: Any = cost_model
        self._device_seconds = 0.0  # layer measurements made by the cost model

    # ------------------------------------------------------------------ budget-free part
    def prepare(self) -> Searcher:
        """Generate candidates, score their damage and cost them (once); returns ``self``.

        Raises
        ------
        UserInputError
            If no layer can be decomposed by the methods.
        DeviceError
            If the cost model measures on the device and the device fails.
        """
        if self._prepared is not None:
            return self
        from latbench.data.features import layer_table

        say, net, shape = self.say, self.net, self.shape
        t_start = time.perf_counter()
        slots = generate_candidates(net, shape, self.methods, self.fractions, seed=self.seed,
                                    progress=lambda d, t: say("candidates", d, t))
        if not slots:
            raise UserInputError(f"no layer of {self.name} can be decomposed (and made smaller) by "
                                 f"{', '.join(self.methods)}")
        calib = self.calib
        x = calib if isinstance(calib, torch.Tensor) else calibration_batch(shape, int(calib), self.seed)
        reference = score_candidates(net, slots, x, progress=lambda d, t: say("fidelity", d, t))
        table = layer_table(net, shape)
        cost_model = self.cost_model
        if cost_model is None:
            if self.predictor is not None:
                from latbench.search.cost import PredictorCost

                cost_model = PredictorCost(self.predictor)
            else:
                from latbench.search.cost import MeasuredLayerCost

                cost_model = MeasuredLayerCost(self.device, store=self.store, threads=self.threads,
                                               progress=lambda d, t: say("layer costs", d, t))
        t0 = time.perf_counter()
        base = cost_model.assign(slots, table)
        device_s = time.perf_counter() - t0 if getattr(cost_model, "measures_on_device", False) else 0.0
        self._device_seconds += device_s
        self._cost_model = cost_model
        self._prepared = _Prepared(
            slots, x, reference, table, base, getattr(cost_model, "source", type(cost_model).__name__),
            time.perf_counter() - t_start - device_s)
        return self

    @property
    def slots(self) -> list[LayerSlot]:
        """The layers and their candidates (after :meth:`prepare`)."""
        return self.prepare()._prepared.slots  # type: ignore[union-attr]

    # ------------------------------------------------------------------ one budget
    def search(
        self,
        *,
        budget_ms: float | None = None,
        speedup: float | None = None,
        max_rounds: int = 5,
        slack: float = 0.08,
        baseline: bool = True,
        front_points: int = 12,
        finetune: Callable[[nn.Module], nn.Module | None] | None = None,
    ) -> SearchResult:
        """Search and verify one budget; see :func:`search` for the parameters and errors.

        The original is measured again on every call, so the budget (``original /
        speedup``) follows the device as it is now.
        """
        from latbench.data.features import count_params, layer_table

        _check_budget_args(budget_ms, speedup, max_rounds, slack)
        net, shape, name, device, say = self.net, self.shape, self.name, self.device, self.say
        fidelity_fn, methods, fractions = self.fidelity_fn, self.methods, self.fractions
        notes = list(self.notes)
        work_dir = tempfile.TemporaryDirectory(prefix="latbench-search-")
        meter = _Meter(device, shape, Path(work_dir.name), self.threads, self.warmup, self.repeats)
        started = time.perf_counter()
        device_before = self._device_seconds
        prepared_now = self._prepared is None
        rounds: list[Round] = []
        original_ms = budget = float("nan")
        try:
            say("measure original", 0, 1)
            original_ms = meter(net, "original")
            say("measure original", 1, 1)
            budget = float(budget_ms) if budget_ms is not None else original_ms / float(speedup)

            prep = self.prepare()._prepared
            assert prep is not None
            slots, x, reference, table = prep.slots, prep.x, prep.reference, prep.table
            base, cost_source = prep.base_ms, prep.cost_source
            device_seconds = self._device_seconds - device_before
            # Costs are anchored to the measured original: a predictor's by the ratio of measured
            # to predicted original; layers timed alone only ever shrunk by it (their sum can
            # exceed the model's latency — each timed with its own input and output buffers —
            # while a sum short of it misses work that no candidate changes).
            scale = original_ms / base if base is not None and math.isfinite(base) and base > 0 else 1.0
            if getattr(self._cost_model, "measures_on_device", False):
                scale = min(scale, 1.0)

            raw_costs = [[c.cost_ms * scale for c in s.candidates] for s in slots]
            costs = [list(g) for g in raw_costs]  # rescaled per kind as plans are measured
            kinds = [layer_kind(s.layer) for s in slots]
            damages = [[c.damage for c in s.candidates] for s in slots]
            fastest = original_ms + sum(min(g) for g in costs)

            def fid_of(m: nn.Module) -> tuple[float, float]:
                err = output_error(reference, m, x)
                return (float(fidelity_fn(m)) if fidelity_fn else 1.0 - err), err

            original_fidelity = float(fidelity_fn(net)) if fidelity_fn else 1.0
            measured_plans: dict[str, tuple[float, Round, tuple[int, ...]]] = {}
            # (predicted budget, measured) of measured plans. The original is the first point: at
            # a predicted budget of original_ms every layer is kept, so the first secant step is
            # the ratio of measured to predicted savings.
            history: list[tuple[float, float]] = [(original_ms, original_ms)]
            last_choices: list[int] = []  # the plan the last verify() solved for

            def verify(t: float) -> float:
                """Solve for predicted budget ``t``, measure the plan (once per plan), return ms."""
                sol = solve_mckp(costs, damages, t - original_ms) or \
                    solve_mckp(costs, damages, fastest - original_ms + 1e-9 * max(1.0, abs(fastest)))
                assert sol is not None  # the cheapest choice of every layer always fits
                last_choices[:] = sol.choices
                plan = plan_of(slots, sol.choices)
                if plan.hash in measured_plans:
                    return measured_plans[plan.hash][0]
                compressed = assemble(net, slots, sol.choices)
                fid, err = fid_of(compressed)
                say("verify", len(rounds) + 1, max_rounds)
                predicted = original_ms + sol.cost
                measured = meter(compressed, f"round{len(rounds) + 1}")
                near_miss = budget < measured <= budget * (1.0 + slack)
                if near_miss or abs(measured - predicted) > 0.25 * max(predicted, 1e-12):
                    # A surprise is as likely a burst of load as a bad prediction, and a near
                    # miss may be one: load only ever adds time, so the lower of two medians is
                    # the better estimate.
                    measured = min(measured, meter(compressed, f"round{len(rounds) + 1}b"))
                macs = int(table["macs"].sum()) + sum(
                    s.candidates[j].macs - s.candidates[0].macs for s, j in zip(slots, sol.choices))
                rnd = Round(len(rounds) + 1, t, predicted, measured, measured <= budget, fid, err,
                            sol.damage, count_params(compressed), macs, plan.to_dict())
                rounds.append(rnd)
                measured_plans[plan.hash] = (measured, rnd, sol.choices)
                history.append((t, measured))
                return measured

            aim = budget * (1.0 - slack / 2.0)
            lo, hi = -math.inf, math.inf  # predicted budgets known to meet / to miss
            target = aim
            if budget < fastest:
                # The prediction says no plan is fast enough; ask the device before refusing.
                m_fast = verify(fastest)
                if m_fast > budget:
                    raise UserInputError(
                        f"budget {budget:.4g} ms is below the fastest reachable latency, about "
                        f"{m_fast:.4g} ms measured ({fastest:.4g} ms predicted; the original takes "
                        f"{original_ms:.4g} ms) with {', '.join(methods)} at ranks >= "
                        f"{min(fractions):g} of full; raise the budget, or allow more methods or "
                        "lower ranks")
                notes.append(f"the prediction put the fastest plan at {fastest:.4g} ms; the device "
                             f"measured {m_fast:.4g} ms, so the budget was searched")
                lo = fastest
                target = fastest + (aim - m_fast)

            # --------------------------------------------------------------- verify rounds
            solves = 0
            calibrated_note: tuple[dict[str, float], int] | None = None
            while len(rounds) < max_rounds and solves < 4 * max_rounds:
                solves += 1
                t = max(target, fastest)
                measured = verify(t)
                if measured <= budget:
                    lo = max(lo, t)
                    if measured >= (1.0 - slack) * budget:
                        break
                else:
                    hi = min(hi, t)
                    if t <= fastest:
                        notes.append("even the fastest plan the grid allows is over the budget on the device")
                        break
                scales = kind_scales(kinds, raw_costs,
                                     [(c, m) for m, _, c in measured_plans.values()], original_ms)
                if scales is not None:
                    # Re-solve with per-kind costs; the bracket and the secant history move to the
                    # new prediction scale (each measured plan at its re-predicted latency).
                    for i, k in enumerate(kinds):
                        costs[i] = [v * scales[k] for v in raw_costs[i]]
                    fastest = original_ms + sum(min(g) for g in costs)

                    def repredict(choices: Sequence[int]) -> float:
                        return original_ms + sum(costs[i][j] for i, j in enumerate(choices))

                    # In measurement order, so the secant below runs through the two latest
                    # plans (as without recalibration), now at their re-predicted latencies.
                    pts = [(repredict(c), m) for m, _, c in measured_plans.values()]
                    history[:] = [(original_ms, original_ms)] + pts
                    lo = max((p for p, m in pts if m <= budget), default=-math.inf)
                    hi = min((p for p, m in pts if m > budget), default=math.inf)
                    if lo >= hi:
                        lo, hi = -math.inf, math.inf
                    t = repredict(last_choices)
                    if calibrated_note is None or calibrated_note[0] != scales:
                        calibrated_note = (scales, len(rounds))
                nxt = t + (aim - measured)
                if len(history) >= 2 and history[-1][0] != history[-2][0]:
                    (t0_, m0), (t1_, m1) = history[-2], history[-1]
                    slope = (m1 - m0) / (t1_ - t0_)
                    if 0.2 <= slope <= 5.0:  # measured ms per predicted ms: a secant step
                        nxt = t + (aim - measured) / slope
                if not lo < nxt < hi:
                    nxt = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else \
                        (hi - abs(hi) * 0.05 if math.isfinite(hi) else lo + abs(lo) * 0.05)
                if math.isfinite(lo) and math.isfinite(hi) and hi - lo < 1e-4 * budget:
                    break  # the bracket is closed: no plan lies between
                target = nxt
            if calibrated_note is not None:
                notes.append("costs rescaled per layer kind from the measured plans (after round "
                             f"{calibrated_note[1]}): " + ", ".join(
                                 f"{k} ×{v:.3g}" for k, v in sorted(calibrated_note[0].items())))
            met_rounds = [r for r in rounds if r.met]
            if met_rounds:
                final_round = max(met_rounds, key=lambda r: (r.fidelity, r.measured_ms))
            else:
                final_round = min(rounds, key=lambda r: r.measured_ms)
                notes.append(f"no plan met the budget in {len(rounds)} round(s); the fastest one is reported")
            final_choices = measured_plans[Plan.from_dict(final_round.plan).hash][2]
            final_plan = Plan.from_dict(final_round.plan)
            final_model = assemble(net, slots, final_choices, fresh=True)

            # --------------------------------------------------------------- front and uniform
            front_sols = pareto_front(costs, damages, points=max(front_points, 2))
            front = []
            for s in front_sols:
                fid, err = fid_of(assemble(net, slots, s.choices))
                front.append(dict(predicted_ms=original_ms + s.cost, estimated_damage=s.damage,
                                  fidelity=fid, output_rel_error=err,
                                  plan=plan_of(slots, s.choices).to_dict()))
            uniform = uniform_points(net, slots, costs, damages, original_ms, methods, fractions, fid_of)
            base_doc = None
            if baseline and uniform:
                say("baseline", 0, 1)
                base_doc = measure_uniform(net, slots, uniform, final_round, meter)
                say("baseline", 1, 1)

            fidelity_before = None
            if finetune is not None:
                fidelity_before = final_round.fidelity
                tuned = finetune(final_model)
                final_model = (tuned if tuned is not None else final_model).eval()
                notes.append("fine-tuned after the search (fidelity_before_finetune is the plan's own)")
                fid, err = fid_of(final_model)
            else:
                fid, err = final_round.fidelity, final_round.output_rel_error
        except DeviceError as exc:
            partial = {"budget_ms": budget, "original_ms": original_ms,
                       "rounds": [r.to_dict() for r in rounds]}
            done = "; ".join(f"round {r.index}: {r.measured_ms:.4g} ms "
                             f"({'met' if r.met else 'over'})" for r in rounds) or "no round verified"
            err_out = DeviceError(f"{exc} (search results so far: original {original_ms:.4g} ms, "
                                  f"budget {budget:.4g} ms; {done})")
            err_out.partial = partial  # type: ignore[attr-defined]
            raise err_out from None
        finally:
            work_dir.cleanup()
        after = layer_table(final_model, shape)
        choices = {}
        for slot in slots:
            rule = final_plan.rule_for(slot.name)
            choices[slot.name] = {"method": rule.method if rule else "keep",
                                  "rank": (list(rule.rank) if isinstance(rule.rank, tuple) else rule.rank)
                                  if rule else None}
        clock = time.perf_counter() - started - meter.seconds - device_seconds
        return SearchResult(
            model_name=name, device=device.name, input_shape=shape, budget_ms=budget,
            original_ms=original_ms, original_fidelity=original_fidelity, plan=final_plan,
            model=final_model, predicted_ms=final_round.predicted_ms,
            measured_ms=final_round.measured_ms, met=final_round.measured_ms <= budget,
            fidelity=fid, output_rel_error=err, rounds=rounds, choices=choices, front=front,
            uniform=uniform, baseline=base_doc, params_before=count_params(net),
            params_after=count_params(final_model), macs_before=int(table["macs"].sum()),
            macs_after=int(after["macs"].sum()), search_seconds=clock, cost_source=cost_source,
            prepare_seconds=prep.seconds if prepared_now else 0.0,
            fidelity_name="custom (fidelity_fn)" if fidelity_fn else "1 - relative output error",
            fidelity_before_finetune=fidelity_before, notes=notes)



def search(
    model: str | nn.Module,
    device: Any,
    *,
    budget_ms: float | None = None,
    speedup: float | None = None,
    input_shape: Sequence[int] | None = None,
    predictor: Any = None,
    store: Any = None,
    cost_model: Any = None,
    methods: Sequence[str] = DEFAULT_SEARCH_METHODS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    calib: int | torch.Tensor = 8,
    fidelity_fn: Callable[[nn.Module], float] | None = None,
    finetune: Callable[[nn.Module], nn.Module | None] | None = None,
    max_rounds: int = 5,
    slack: float = 0.08,
    baseline: bool = True,
    front_points: int = 12,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 30,
    seed: int = 0,
    devices_file: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    trust_file: bool = False,
) -> SearchResult:
    """Choose per-layer methods and ranks that meet a latency budget on ``device``.

    Parameters
    ----------
    model : str or nn.Module
        A MODEL spec (see :func:`latbench.models.resolve_model`) or a module (not modified).
    device : str or Device
        Where the budget holds; plans are verified there.
    budget_ms, speedup : float
        Exactly one: the latency budget in ms, or the wanted speed-up over the original's
        measured latency.
    input_shape : sequence of int, optional
        Full input shape (batch 1); the MODEL spec's default otherwise.
    predictor : fitted latency predictor, optional
        Costs from its predictions (``predictor.predict(list of layer tables) -> ms``),
        scaled to the original's measured latency. Refused if it records another device
        or feature schema.
    store : latbench.data.store.Store, optional
        Without a predictor, layers are measured alone on the device; a store supplies
        earlier per-layer measurements and receives the new ones.
    cost_model : optional
        A ready cost model (``assign(slots, table) -> float``), e.g. a
        :class:`~latbench.search.cost.MeasuredLayerCost` reused across searches; overrides
        ``predictor`` and ``store``.
    methods : sequence of str
        Decomposition methods allowed (``tucker2``, ``cp``, ``svd``, ...).
    fractions : sequence of float
        Rank grid, as fractions of each layer's full rank.
    calib : int or Tensor
        Calibration batch size (seeded Gaussian inputs) or the batch itself (real data
        gives better damage estimates).
    fidelity_fn : callable, optional
        ``fidelity_fn(model) -> float`` (higher is better, e.g. validation accuracy), used
        to report and to rank verified plans; without it fidelity is
        ``1 − relative output error`` on the calibration batch. The knapsack always
        minimises the estimated output damage.
    finetune : callable, optional
        ``finetune(model) -> model or None``, applied to the final compressed model.
    max_rounds : int
        Measured verification rounds at most.
    slack : float
        Accepted window is ``[(1 − slack)·budget, budget]``; a plan faster than that is
        loosened and retried (within ``max_rounds``).
    baseline : bool
        Measure the uniform-rank plans around the final latency for the comparison.
    front_points : int
        Points of the Pareto front whose fidelity is evaluated for the report.
    threads, warmup, repeats : int
        Device measurement settings of every whole-model measurement.
    progress : callable, optional
        ``progress(stage, done, total)``.
    trust_file : bool
        Let a model file be fully unpickled (it may run code); see
        :func:`latbench.models.resolve_model`.

    Returns
    -------
    SearchResult

    See Also
    --------
    Searcher : the same search prepared once and asked for several budgets.

    Raises
    ------
    UserInputError
        A bad budget, or a budget below the fastest reachable latency (the message gives
        it), or a model none of whose layers the methods can decompose.
    PredictorError
        A predictor made for another device or feature schema.
    DeviceError
        If the device fails; the rounds already verified are in the message and in the
        exception's ``partial`` attribute (a dict).
    """
    _check_budget_args(budget_ms, speedup, max_rounds, slack)  # before the model is built
    searcher = Searcher(model, device, input_shape=input_shape, predictor=predictor, store=store,
                        cost_model=cost_model, methods=methods, fractions=fractions, calib=calib,
                        fidelity_fn=fidelity_fn, threads=threads, warmup=warmup, repeats=repeats,
                        seed=seed, devices_file=devices_file, progress=progress,
                        trust_file=trust_file)
    return searcher.search(budget_ms=budget_ms, speedup=speedup, max_rounds=max_rounds,
                           slack=slack, baseline=baseline, front_points=front_points,
                           finetune=finetune)
