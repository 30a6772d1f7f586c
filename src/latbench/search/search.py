"""Latency-constrained rank search, verified on the device.

1. Measure the original model on the device; the budget is ``budget_ms`` or
   ``original / speedup``.
2. Candidates: every decomposable layer × method × fractional rank, plus ``keep``
   (:mod:`latbench.search.candidates`).
3. Damage per candidate on a calibration batch (:mod:`latbench.search.fidelity`); latency
   contribution per candidate from a predictor or from layers measured alone
   (:mod:`latbench.search.cost`), anchored to the measured original. A predictor whose
   latencies go non-positive is set aside for measured layer costs; one off from the measured
   original beyond a factor is rescaled with a note (:func:`~latbench.search.controller.judge_costs`).
4. A multiple-choice knapsack (:mod:`latbench.search.knapsack`) picks one candidate per
   layer: the least total damage whose predicted latency fits the *predicted budget*.
5. Rounds: build, export and measure the plan against the original measured around it
   (:mod:`latbench.search.policy`: a round far from its prediction measures the original
   again before the search changes course). The budget controller
   (:mod:`latbench.search.controller`, pure) corrects the predicted budget by the observed
   error with a secant step, inside the bracket of predicted budgets known to meet / to
   miss, and rescales costs per layer kind. Stop when a plan lands in the accepted window
   ``[(1 − slack)·budget, budget]``, or after ``max_rounds`` measured rounds.
6. Verify: the met plan with the best fidelity is measured back to back with the original;
   the reported latency, speed-up and "met" come from that verification (a plan that fails
   it gives way to a faster met plan; without one, the fastest plan is reported, not met).
7. Baseline: the uniform-rank plans (one method, one fraction for every layer) are
   scored the same way, and those around the final plan's latency are measured, so the
   report compares fidelity at equal *measured* latency; the result says when the plan is
   worse than that, or far worse than the predicted front promised
   (:mod:`latbench.search.assembly`).

Steps 2–3 do not depend on the budget: a :class:`Searcher` does them once (on its first
:meth:`~Searcher.search`, or :meth:`~Searcher.prepare`) and answers any number of budgets
(``search()`` is a one-budget ``Searcher``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latbench.compress.plan import Plan
from latbench.exceptions import DeviceError, PredictorError, UserInputError
from latbench.predictor.base import check_predictor
from latbench.search.assembly import drift_note, fidelity_check, front_points, layer_choices
from latbench.search.baseline import measure_uniform, uniform_points
from latbench.search.calibrate import layer_kind
from latbench.search.candidates import DEFAULT_FRACTIONS, LayerSlot, generate_candidates
from latbench.search.controller import (PREDICTOR_MAX_FACTOR, SOLVES_PER_ROUND, BudgetController,
                                        CostVerdict, judge_costs, savings_factor,
                                        set_aside_note)
from latbench.search.fidelity import calibration_batch, output_error, score_candidates
from latbench.search.plans import assemble, plan_of
from latbench.search.policy import MeasurementPolicy, Verification, Window
from latbench.search.result import Round, SearchResult

__all__ = ["Round", "SearchResult", "Searcher", "search", "check_predictor", "assemble",
           "DEFAULT_SEARCH_METHODS", "MAX_VERIFICATIONS"]

#: CP is left out by default: its ALS makes candidate generation minutes long on big layers.
DEFAULT_SEARCH_METHODS = ("tucker2", "svd")

#: Met plans verified back to back with the original at most before the search gives up on
#: meeting the budget: each verification costs 2 × ``VERIFY_PAIRS`` measurements, and a
#: second failure means the device's speed moves faster than the rounds can follow.
MAX_VERIFICATIONS = 2


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


@dataclass
class _Run:
    """What one :meth:`Searcher.search` knows so far (a device failure reports it)."""

    budget_ms: float  # in reference ms (the original's first median)
    slack: float
    max_rounds: int
    notes: list[str]
    original_ms: float = math.nan
    rounds: list[Round] = field(default_factory=list)
    plans: dict[tuple[int, ...], Round] = field(default_factory=dict)
    verified: dict[tuple[int, ...], Verification] = field(default_factory=dict)
    savings_checked: bool = False
    cost_check: CostVerdict | None = None

    def choices(self, rnd: Round) -> tuple[int, ...]:
        return next(c for c, r in self.plans.items() if r is rnd)

    def partial_error(self, exc: DeviceError) -> DeviceError:
        """``exc`` with the rounds so far in its message and ``partial`` attribute."""
        partial = {"budget_ms": self.budget_ms, "original_ms": self.original_ms,
                   "rounds": [r.to_dict() for r in self.rounds]}
        done = "; ".join(f"round {r.index}: {r.measured_ms:.4g} ms "
                         f"({'met' if r.met else 'over'})" for r in self.rounds) or "no round verified"
        out = DeviceError(f"{exc} (search results so far: original {self.original_ms:.4g} ms, "
                          f"budget {self.budget_ms:.4g} ms; {done})")
        out.partial = partial  # type: ignore[attr-defined]
        return out


class Searcher:
    """A rank search prepared once for one model on one device, asked for any budget.

    Construction only checks the arguments and builds the model (cheap, and a bad method,
    predictor or device fails at once). Candidate generation, damage scoring and
    per-candidate costs (steps 2–3 of the module docstring) depend on the model, the device
    and the method/rank grid, not on the budget; they are done on the first :meth:`search`
    (or by :meth:`prepare`, to pay for them up front) and reused by every later one; the
    search that made them reports their time in ``prepare_seconds``.

    Parameters
    ----------
    model : str or nn.Module
        A MODEL spec (see :func:`latbench.models.resolve_model`) or a module (not modified).
    device : str or Device
        Where the budget holds; plans are verified there.
    input_shape : sequence of int, optional
        Full input shape (batch 1); the MODEL spec's default otherwise.
    predictor : fitted latency predictor, optional
        Costs from its predictions (``predictor.predict(list of layer tables) -> ms``),
        anchored to the original's measured latency. Refused if it records another device
        or feature schema; set aside for layers measured on the device (with a note) if its
        latencies go non-positive or its savings on the first measured plan are off beyond
        :data:`~latbench.search.controller.PREDICTOR_MAX_FACTOR`.
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
    threads, warmup, repeats : int
        Device measurement settings of every whole-model measurement.
    seed : int
        Seed of the model's weights (MODEL specs) and of the calibration batch.
    devices_file : str or Path, optional
        ``devices.toml`` to resolve a device name with.
    progress : callable, optional
        ``progress(stage, done, total)``.
    trust_file : bool
        Let a model file be fully unpickled (it may run code); see
        :func:`latbench.models.resolve_model`.

    Raises
    ------
    UserInputError
        An unknown method, model or device, or an input shape the model does not run on.
    PredictorError
        A predictor made for another device or feature schema.

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
        from latbench.data.features import check_runs

        check_runs(self.net, self.shape, f"model {self.name!r}")  # a wrong --input: exit 2, not a failed export
        if isinstance(device, str):
            from latbench.devices.registry import get_device

            device = get_device(device, devices_file)
        self.device = device
        self.notes: list[str] = []  # notes every search of this Searcher carries
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
                cost_model = self._measured_costs()
        self._prepared = _Prepared(slots, x, reference, table, None, "", 0.0)
        device_s = self._assign_costs(cost_model)
        self._prepared.seconds = time.perf_counter() - t_start - device_s
        return self

    def _measured_costs(self) -> Any:
        from latbench.search.cost import MeasuredLayerCost

        return MeasuredLayerCost(self.device, store=self.store, threads=self.threads,
                                 progress=lambda d, t: self.say("layer costs", d, t))

    def _assign_costs(self, cost_model: Any) -> float:
        """Fill every candidate's cost with ``cost_model``; returns the device seconds it took."""
        prep = self._prepared
        assert prep is not None
        t0 = time.perf_counter()
        prep.base_ms = cost_model.assign(prep.slots, prep.table)
        on_device = getattr(cost_model, "measures_on_device", False)
        device_s = time.perf_counter() - t0 if on_device else 0.0
        self._device_seconds += device_s
        self._cost_model = cost_model
        prep.cost_source = getattr(cost_model, "source", type(cost_model).__name__)
        return device_s

    @property
    def slots(self) -> list[LayerSlot]:
        """The layers and their candidates (after :meth:`prepare`)."""
        return self.prepare()._prepared.slots  # type: ignore[union-attr]

    def _fidelity(self, model: nn.Module) -> tuple[float, float]:
        """``(fidelity, relative output error)`` of ``model`` on the calibration batch."""
        prep = self._prepared
        assert prep is not None
        err = output_error(prep.reference, model, prep.x)
        return (float(self.fidelity_fn(model)) if self.fidelity_fn else 1.0 - err), err

    # ------------------------------------------------------------------ costs
    def _judged_costs(self, original_ms: float, run: _Run) -> list[list[float]]:
        """Candidate costs anchored to the measured original; a cost model whose latencies go
        non-positive is set aside for layers measured on the device (with a note).

        Raises
        ------
        PredictorError
            If the predictor must be set aside and the device cannot time layers alone.
        """
        prep = self._prepared
        assert prep is not None
        on_device = getattr(self._cost_model, "measures_on_device", False)
        verdict = judge_costs(prep.base_ms, original_ms, self._raw_costs(),
                              measured_on_device=on_device, source=prep.cost_source)
        if verdict.action == "set aside":
            self._set_aside(verdict.reason or "", run)
            anchored = judge_costs(prep.base_ms, original_ms, self._raw_costs(),
                                   measured_on_device=True)
            verdict = dataclasses.replace(verdict, scale=anchored.scale)
        elif verdict.note:
            run.notes.append(verdict.note)
        run.cost_check = verdict
        return [[c * verdict.scale for c in g] for g in self._raw_costs()]

    def _raw_costs(self) -> list[list[float]]:
        prep = self._prepared
        assert prep is not None
        return [[c.cost_ms for c in s.candidates] for s in prep.slots]

    def _set_aside(self, reason: str, run: _Run) -> None:
        """Replace the cost model by layers measured on the device, for this search and every
        later one of this Searcher (the note goes into each result).

        Raises
        ------
        PredictorError
            If the device cannot time layers alone.
        """
        if not self.device.capabilities.layer_timing:
            raise PredictorError(f"{reason}; device {self.device.name!r} cannot time layers alone "
                                 "to replace it: retrain the predictor on more rows of this "
                                 "device's data, or search without it")
        note = set_aside_note(reason)
        self.notes.append(note)
        run.notes.append(note)
        self._assign_costs(self._measured_costs())

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
        """Search and verify one budget.

        The original is measured again on every call, so the budget (``original /
        speedup``) follows the device as it is now.

        Parameters
        ----------
        budget_ms, speedup : float
            Exactly one: the latency budget in ms, or the wanted speed-up over the
            original's measured latency. A budget in ms is judged at the device's speed
            at the start of the search (each plan by its ratio to the original measured
            around it), so a device whose speed drifts cannot move the goal.
        max_rounds : int
            Measured verification rounds at most.
        slack : float
            Accepted window is ``[(1 − slack)·budget, budget]``; a plan faster than that is
            loosened and retried (within ``max_rounds``).
        baseline : bool
            Measure the uniform-rank plans around the final latency for the comparison.
        front_points : int
            Points of the Pareto front whose fidelity is evaluated for the report.
        finetune : callable, optional
            ``finetune(model) -> model or None``, applied to the final compressed model.

        Returns
        -------
        SearchResult
            ``met``, ``measured_ms`` and ``speedup`` from the final plan measured back to
            back with the original. A budget not met still returns the fastest plan
            (``met`` false, with a note).

        Raises
        ------
        UserInputError
            A bad budget, or a budget below the fastest reachable latency (the message
            gives it), or a model none of whose layers the methods can decompose.
        PredictorError
            A predictor whose latencies go non-positive, on a device that cannot time
            layers alone to replace it.
        DeviceError
            If the device fails; the rounds already verified are in the message and in the
            exception's ``partial`` attribute (a dict).
        """
        _check_budget_args(budget_ms, speedup, max_rounds, slack)
        started, device_before = time.perf_counter(), self._device_seconds
        prepared_now = self._prepared is None
        run = _Run(budget_ms=math.nan, slack=slack, max_rounds=max_rounds, notes=list(self.notes))
        with tempfile.TemporaryDirectory(prefix="latbench-search-") as work:
            policy = MeasurementPolicy(self.device, self.shape, Path(work), self.threads,
                                       self.warmup, self.repeats)
            try:
                ctl = self._start(policy, run, budget_ms, speedup)
                ctl, final, ver = self._search_and_verify(ctl, policy, run)
                comparisons = self._compare(ctl, policy, run, final, ver, baseline, front_points)
                result = self._assemble(policy, run, final, ver, comparisons, finetune,
                                        budget_ms, speedup)
            except DeviceError as exc:
                raise run.partial_error(exc) from None
        device_s = self._device_seconds - device_before
        result.search_seconds = time.perf_counter() - started - policy.seconds - device_s
        result.prepare_seconds = self._prepared.seconds if prepared_now and self._prepared else 0.0
        return result

    def _start(self, policy: MeasurementPolicy, run: _Run, budget_ms: float | None,
               speedup: float | None) -> BudgetController:
        """Measure the original, prepare (first search), judge the costs; the controller."""
        self.say("measure original", 0, 1)
        run.original_ms = policy.start(self.net)
        self.say("measure original", 1, 1)
        run.budget_ms = float(budget_ms) if budget_ms is not None else run.original_ms / float(speedup)
        on_device = self._device_seconds
        self.prepare()
        costs = self._judged_costs(run.original_ms, run)
        if self._device_seconds > on_device:
            policy.stale = True  # the device timed layers since the original was measured
        ctl = self._controller(costs, run)
        if ctl.needs_fastest_probe:
            ctl = self._probe_fastest(ctl, policy, run)
        return ctl

    def _controller(self, costs: list[list[float]], run: _Run,
                    measured: Sequence[tuple[Sequence[int], float]] = ()) -> BudgetController:
        prep = self._prepared
        assert prep is not None
        return BudgetController(costs, [layer_kind(s.layer) for s in prep.slots],
                                [[c.damage for c in s.candidates] for s in prep.slots],
                                run.original_ms, run.budget_ms, run.slack, measured)

    # ------------------------------------------------------------------ rounds
    def _run_rounds(self, ctl: BudgetController, policy: MeasurementPolicy,
                    run: _Run) -> BudgetController:
        """Measure plans until one lands in the window or the rounds run out; returns the
        controller (a new one if the predictor was set aside on the way)."""
        solves = 0
        while len(run.rounds) < run.max_rounds and solves < SOLVES_PER_ROUND * run.max_rounds:
            solves += 1
            target = ctl.next_target()
            choices, rnd, new = self._measure_plan(ctl, target, policy, run)
            step = ctl.observe(target, choices, self._known_ms(choices, policy, run))
            if step.done:
                if step.reason == "fastest over budget":
                    run.notes.append("even the fastest plan the grid allows is over the budget on "
                                     "the device")
                break
            if new:
                ctl = self._check_savings(ctl, policy, run, rnd)
        return ctl

    def _check_savings(self, ctl: BudgetController, policy: MeasurementPolicy, run: _Run,
                       rnd: Round) -> BudgetController:
        """On the first plan with a telling predicted saving, a predictor whose saving is off
        beyond the factor is recalibrated or set aside (see :meth:`_recalibrate_costs`)."""
        if run.savings_checked or getattr(self._cost_model, "measures_on_device", True):
            return ctl
        f = savings_factor(run.original_ms, rnd.predicted_ms, rnd.judged_ms)
        if f is None:
            return ctl
        run.savings_checked = True
        if f <= 0 or max(f, 1.0 / f) > PREDICTOR_MAX_FACTOR:
            return self._recalibrate_costs(ctl, policy, run, rnd)
        return ctl

    def _search_and_verify(self, ctl: BudgetController, policy: MeasurementPolicy,
                           run: _Run) -> tuple[BudgetController, Round, Verification]:
        """Rounds, then the back-to-back verification; a plan that fails it while rounds are
        left teaches the controller its verified latency, and the rounds go on."""
        ctl = self._run_rounds(ctl, policy, run)
        corrected: set[tuple[int, ...]] = set()
        while (chosen := self._choose_final(policy, run)) is None:
            for choices, v in run.verified.items():
                if choices not in corrected:
                    ctl.correct(choices, policy.reference_ms / v.speedup)
                    corrected.add(choices)
            ctl = self._run_rounds(ctl, policy, run)
        if ctl.scales is not None:
            run.notes.append("costs rescaled per layer kind from the measured plans (after round "
                             f"{ctl.scales_after}): " + ", ".join(
                                 f"{k} ×{v:.3g}" for k, v in sorted(ctl.scales.items())))
        return ctl, chosen[0], chosen[1]

    @staticmethod
    def _known_ms(choices: tuple[int, ...], policy: MeasurementPolicy, run: _Run) -> float:
        """A plan's latency in reference ms: verified back to back if it was, else its round's."""
        ver = run.verified.get(choices)
        return policy.reference_ms / ver.speedup if ver else run.plans[choices].judged_ms

    def _probe_fastest(self, ctl: BudgetController, policy: MeasurementPolicy,
                       run: _Run) -> BudgetController:
        """The prediction says no plan is fast enough: ask the device before refusing.

        Raises
        ------
        UserInputError
            If even the fastest plan misses the budget, as predicted and as measured.
        """
        fastest = ctl.fastest
        choices, rnd, _ = self._measure_plan(ctl, fastest, policy, run)
        if not ctl.observe_fastest(choices, rnd.judged_ms):
            raise UserInputError(
                f"budget {run.budget_ms:.4g} ms is below the fastest reachable latency, about "
                f"{rnd.judged_ms:.4g} ms measured ({fastest:.4g} ms predicted; the original takes "
                f"{run.original_ms:.4g} ms) with {', '.join(self.methods)} at ranks >= "
                f"{min(self.fractions):g} of full; raise the budget, or allow more methods or "
                "lower ranks")
        run.notes.append(f"the prediction put the fastest plan at {fastest:.4g} ms; the device "
                         f"measured {rnd.judged_ms:.4g} ms, so the budget was searched")
        return self._check_savings(ctl, policy, run, rnd)

    def _measure_plan(self, ctl: BudgetController, target: float, policy: MeasurementPolicy,
                      run: _Run) -> tuple[tuple[int, ...], Round, bool]:
        """Solve for predicted budget ``target`` and measure the plan (once per plan): its
        choices, its round, and whether it was measured now."""
        from latbench.data.features import count_params

        prep = self._prepared
        assert prep is not None
        sol = ctl.solve(target)
        key = tuple(sol.choices)
        if key in run.plans:
            return key, run.plans[key], False
        compressed = assemble(self.net, prep.slots, key)
        fid, err = self._fidelity(compressed)
        index = len(run.rounds) + 1
        self.say("verify", index, run.max_rounds)
        predicted = run.original_ms + sol.cost
        macs = int(prep.table["macs"].sum()) + sum(
            s.candidates[j].macs - s.candidates[0].macs for s, j in zip(prep.slots, key))
        known = dict(index=index, target_ms=target, predicted_ms=predicted, fidelity=fid,
                     output_rel_error=err, estimated_damage=sol.damage,
                     params=count_params(compressed), macs=macs,
                     plan=plan_of(prep.slots, key).to_dict())

        def record(w: Window) -> None:  # after the first measurement, and when settled
            judged = policy.judged(w)
            run.rounds[index - 1:] = [Round(measured_ms=w.plan, met=judged <= run.budget_ms,
                                            original_ms=w.original, judged_ms=judged,
                                            remeasured=tuple(w.remeasured), **known)]

        record(policy.measure_round(compressed, f"round{index}", predicted, run.budget_ms,
                                    run.slack, on_first=record))
        run.plans[key] = run.rounds[-1]
        return key, run.rounds[-1], True

    def _recalibrate_costs(self, ctl: BudgetController, policy: MeasurementPolicy, run: _Run,
                           rnd: Round) -> BudgetController:
        """The predictor's savings disagree with the device's beyond the factor: set it aside
        for measured layer costs (a new controller, seeded with the plans measured so far), or
        where the device cannot time layers, say that the rounds recalibrate it."""
        f = savings_factor(run.original_ms, rnd.predicted_ms, rnd.judged_ms)
        prep = self._prepared
        assert prep is not None and f is not None
        reason = (f"{prep.cost_source} predicted round {rnd.index}'s plan to save "
                  f"{run.original_ms - rnd.predicted_ms:.4g} ms, the device measured "
                  f"{run.original_ms - rnd.judged_ms:.4g} ms (×{f:.3g}, beyond "
                  f"×{PREDICTOR_MAX_FACTOR:g})")
        if not self.device.capabilities.layer_timing:
            run.notes.append(f"{reason}: the rounds recalibrate it from the measured plans (secant "
                             "steps, per-kind scales); retrain it on this device's data")
            run.cost_check = CostVerdict("recalibrated", 1.0, run.notes[-1], f, reason)
            return ctl
        self._set_aside(reason, run)
        note = run.notes[-1]
        costs = self._judged_costs(run.original_ms, run)
        run.cost_check = CostVerdict("set aside", run.cost_check.scale if run.cost_check else 1.0,
                                     note, f, reason)
        policy.stale = True
        return self._controller(costs, run, [(c, r.judged_ms) for c, r in run.plans.items()])

    # ------------------------------------------------------------------ the final plan
    def _choose_final(self, policy: MeasurementPolicy,
                      run: _Run) -> tuple[Round, Verification] | None:
        """The round whose plan is reported, and its back-to-back verification.

        Met plans are verified best fidelity first, at most :data:`MAX_VERIFICATIONS` in all;
        the first that holds the budget is the result. One that fails while rounds are left
        returns ``None`` (search on); with no rounds left, the next faster met plan is tried.
        Without one that holds, the fastest plan is reported (verified).
        """
        met = sorted((r for r in run.rounds if r.met and run.choices(r) not in run.verified),
                     key=lambda r: (r.fidelity, r.measured_ms), reverse=True)
        failed = [run.plans[c].judged_ms for c in run.verified]
        for rnd in met:
            if len(run.verified) >= MAX_VERIFICATIONS:
                break
            if failed and rnd.judged_ms >= min(failed):
                continue  # only a faster plan can hold where that one failed
            ver = self._verify(rnd, policy, run)
            if not self._verified_met(ver, policy, run) and \
                    policy.reference_ms / ver.speedup <= run.budget_ms * (1.0 + run.slack):
                ver = self._verify(rnd, policy, run, pool=ver)  # a near miss: verify again, pooled
            if self._verified_met(ver, policy, run):
                return rnd, ver
            failed.append(rnd.judged_ms)
            run.notes.append(
                f"round {rnd.index}'s plan measured {rnd.judged_ms:.4g} ms in its round, but "
                f"{policy.reference_ms / ver.speedup:.4g} ms back to back with the original "
                f"(speed-up {ver.speedup:.3g}): over the budget")
            if len(run.rounds) < run.max_rounds:
                return None
        fastest = min(run.rounds, key=lambda r: self._known_ms(run.choices(r), policy, run))
        ver = run.verified.get(run.choices(fastest)) or self._verify(fastest, policy, run)
        if not any(r.met for r in run.rounds):
            run.notes.append(f"no plan met the budget in {len(run.rounds)} round(s); the fastest "
                             "one is reported")
        elif not self._verified_met(ver, policy, run):
            run.notes.append("no plan held the budget back to back with the original; the "
                             "fastest one is reported")
        return fastest, ver

    def _verify(self, rnd: Round, policy: MeasurementPolicy, run: _Run,
                pool: Verification | None = None) -> Verification:
        prep = self._prepared
        assert prep is not None
        choices = run.choices(rnd)
        self.say("verify back to back", 0, 1)
        ver = policy.verify(assemble(self.net, prep.slots, choices), f"verify{rnd.index}", pool)
        self.say("verify back to back", 1, 1)
        run.verified[choices] = ver
        return ver

    @staticmethod
    def _verified_met(ver: Verification, policy: MeasurementPolicy, run: _Run) -> bool:
        """The verified speed-up meets the budget (at the reference speed of the original)."""
        return policy.reference_ms / ver.speedup <= run.budget_ms * (1.0 + 1e-12)

    def _compare(self, ctl: BudgetController, policy: MeasurementPolicy, run: _Run, final: Round,
                 ver: Verification, baseline: bool, points: int) -> dict[str, Any]:
        """The predicted front, the uniform plans (measured around the final plan's latency
        when ``baseline``), and the fidelity check against both."""
        prep = self._prepared
        assert prep is not None
        front = front_points(self.net, prep.slots, ctl.costs, ctl.damages, run.original_ms,
                             self._fidelity, points)
        uniform = uniform_points(self.net, prep.slots, ctl.costs, ctl.damages, run.original_ms,
                                 self.methods, self.fractions, self._fidelity)
        base_doc = None
        if baseline and uniform:
            self.say("baseline", 0, 1)
            # Uniform plans are judged against the latest original (the verification's last
            # pair) on the verification's scale, so they compare with the verified latency.
            base_doc = measure_uniform(
                self.net, prep.slots, uniform, dataclasses.replace(final, measured_ms=ver.plan_ms),
                lambda net, name: policy.measure_in_window(net, name, ver.original_ms))
            self.say("baseline", 1, 1)
        check, notes = fidelity_check(final.fidelity, self._original_fidelity(), front, uniform,
                                      base_doc, run.budget_ms)
        run.notes += notes
        return {"front": front, "uniform": uniform, "baseline": base_doc, "check": check}

    def _original_fidelity(self) -> float:
        return float(self.fidelity_fn(self.net)) if self.fidelity_fn else 1.0

    def _assemble(self, policy: MeasurementPolicy, run: _Run, final: Round, ver: Verification,
                  comparisons: dict[str, Any], finetune: Callable | None,
                  budget_ms: float | None, speedup: float | None) -> SearchResult:
        """The result: the verified numbers, the (fine-tuned) model, comparisons and notes."""
        from latbench.data.features import count_params, layer_table

        prep = self._prepared
        assert prep is not None
        at_start = policy.reference_ms / ver.speedup
        drift = policy.drift()
        note = drift_note(drift, requested_budget_ms=budget_ms, measured_ms_at_start=at_start,
                          measured_ms=ver.plan_ms)
        if note:
            run.notes.append(note)
        model = assemble(self.net, prep.slots, run.choices(final), fresh=True)
        fid, err, before = final.fidelity, final.output_rel_error, None
        if finetune is not None:
            before = final.fidelity
            tuned = finetune(model)
            model = (tuned if tuned is not None else model).eval()
            run.notes.append("fine-tuned after the search (fidelity_before_finetune is the plan's own)")
            fid, err = self._fidelity(model)
        plan = Plan.from_dict(final.plan)
        return SearchResult(
            model_name=self.name, device=self.device.name, input_shape=self.shape,
            budget_ms=float(budget_ms) if budget_ms is not None else ver.original_ms / float(speedup),
            original_ms=ver.original_ms, original_fidelity=self._original_fidelity(), plan=plan,
            model=model, predicted_ms=final.predicted_ms, measured_ms=ver.plan_ms,
            met=self._verified_met(ver, policy, run), fidelity=fid, output_rel_error=err,
            rounds=list(run.rounds), choices=layer_choices(prep.slots, plan),
            front=comparisons["front"], uniform=comparisons["uniform"],
            baseline=comparisons["baseline"], params_before=count_params(self.net),
            params_after=count_params(model), macs_before=int(prep.table["macs"].sum()),
            macs_after=int(layer_table(model, self.shape)["macs"].sum()), search_seconds=0.0,
            cost_source=prep.cost_source,
            fidelity_name="custom (fidelity_fn)" if self.fidelity_fn else "1 - relative output error",
            fidelity_before_finetune=before, notes=run.notes, speedup=ver.speedup,
            original_ms_start=policy.reference_ms, requested_budget_ms=budget_ms,
            requested_speedup=speedup, measured_ms_at_start=at_start,
            verification=ver.to_dict(), original_drift=drift,
            fidelity_check=comparisons["check"],
            cost_check=run.cost_check.to_dict() if run.cost_check else None)

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

    A one-budget :class:`Searcher`: the parameters are those of :class:`Searcher` (the
    model, device, costs, rank grid, fidelity and measurement settings) and of
    :meth:`Searcher.search` (the budget, rounds, slack, baseline, front and fine-tuning).

    Returns
    -------
    SearchResult

    Raises
    ------
    UserInputError
        A bad budget (checked before the model is built), a budget below the fastest
        reachable latency, or a model none of whose layers the methods can decompose.
    PredictorError
        A predictor made for another device or feature schema, or one that must be set
        aside on a device that cannot time layers alone.
    DeviceError
        If the device fails (the rounds so far in its ``partial`` attribute).
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
