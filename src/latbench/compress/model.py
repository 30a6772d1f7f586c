"""Compress a whole model by a :class:`~latbench.compress.plan.Plan`.

``compress_model`` copies the model, replaces every layer a rule matches by its
decomposition, and reports per layer and for the whole network. A layer that is already
a Tucker-2 block (:class:`LowRankSequential` with method ``tucker2``) and is matched by
a ``tucker2`` rule is re-compressed MUSCO-style (Gusak et al. 2019): only its core is
decomposed and the new 1×1 factors are folded into the old ones, so the block stays
three layers deep (see :mod:`latbench.compress.tucker`); its rank, ``ratio=`` included, is
resolved against the whole block.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from latbench.compress._base import METHODS, Decomposition, LowRankSequential, count_params
from latbench.compress.plan import KEEP, Plan, Rule
from latbench.compress.tucker import is_tucker2_block
from latbench.exceptions import UserInputError

__all__ = ["LayerReport", "CompressionResult", "compress_model", "iterative_compress",
           "decomposable_layers"]


@dataclass(frozen=True)
class LayerReport:
    """What happened to one layer (MACs at the report's input shape)."""

    name: str
    method: str
    rank: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    rel_error: float
    notes: tuple[str, ...] = ()
    #: Method-specific figures (``ron``: the stage's errors, see :mod:`latbench.compress.ron`).
    details: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rank"] = list(self.rank)
        d["notes"] = list(self.notes)
        d["details"] = dict(self.details)
        return d


@dataclass(frozen=True)
class CompressionResult:
    """A compressed copy of a model and the report of how it was made.

    ``output_rel_error`` is ``‖f(x) − g(x)‖ / ‖f(x)‖`` of the original ``f`` and the
    compressed ``g`` on the calibration data when they were given (up to 64 samples; all of
    them for ``ron``), else on a seeded Gaussian probe batch ``x``; ``seconds`` is the wall
    time of the decompositions (for ``ron``: of the whole reduction).
    """

    model: nn.Module
    plan: Plan
    input_shape: tuple[int, ...]
    layers: tuple[LayerReport, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    output_rel_error: float
    seconds: float
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The ``bench compress --json`` object."""
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "seconds": self.seconds,
            "output_rel_error": self.output_rel_error,
            "input_shape": list(self.input_shape),
            "plan": self.plan.to_dict(),
            "plan_hash": self.plan.hash,
            "layers": [r.to_dict() for r in self.layers],
            "skipped": [{"name": n, "reason": why} for n, why in self.skipped],
        }


def decomposable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions, Linear layers and decomposed blocks, outermost first, in order.

    Every convolution is listed (1-, 2- and 3-D, transposed too), and every decomposed block
    (only Tucker-2 blocks can be re-compressed), so that a plan matching one a method cannot
    take reports why it was skipped. Layers inside a decomposed block are not listed
    separately. A model that is itself one layer is listed under the name ``""``
    (PyTorch's name for the root module).
    """
    out: list[tuple[str, nn.Module]] = []
    blocked: list[str] = []
    for name, m in model.named_modules():
        if any(b == "" or name.startswith(b + ".") for b in blocked):
            continue
        if isinstance(m, LowRankSequential):
            blocked.append(name)
            out.append((name, m))
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            out.append((name, m))
    return out


def _macs_by_prefix(table, names: Sequence[str]) -> dict[str, int]:
    from latbench.data.features import rows_of

    return {n: int(table.loc[rows_of(table, n), "macs"].sum()) for n in names}


def _probe_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from latbench.data.features import eval_mode

    with torch.no_grad(), eval_mode(model):
        out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.detach().to(torch.float64)


def _decompose(name: str, layer: nn.Module, rule: Rule, seed: int,
               skipped: list[tuple[str, str]]) -> Decomposition | None:
    """Decompose one layer by its rule, or record in ``skipped`` why not (``None``)."""
    from latbench.compress.ranks import as_rank_spec, resolve_rank

    method = METHODS.get(rule.method)
    if isinstance(layer, LowRankSequential) and not is_tucker2_block(layer):
        why = (f"already decomposed by {layer.method}; only Tucker-2 blocks can be "
               "re-compressed (MUSCO)")
        if rule.exact:
            raise UserInputError(f"layer {name or '(the model)'!r} is {why}")
        skipped.append((name, why))
        return None
    if is_tucker2_block(layer) and rule.method != "tucker2":
        skipped.append((name, "already a Tucker-2 block; only tucker2 can re-compress it"))
        return None
    reason = method.supports(layer)
    if reason is not None:
        if rule.exact:
            raise UserInputError(f"{rule.method} cannot decompose layer {name or '(the model)'!r}: "
                                 f"{reason}")
        skipped.append((name, reason))
        return None
    options = dict(rule.options)
    if rule.method == "cur":
        options.setdefault("seed", seed)
    spec = as_rank_spec(rule.rank)  # a malformed rank is an error for every rule
    try:
        rank = resolve_rank(spec, layer, method)
    except UserInputError as exc:
        if rule.exact or spec.kind != "ratio":
            raise
        # A glob asks for a compression; a layer too small to reach it is left as it is.
        skipped.append((name, str(exc)))
        return None
    n_before = count_params(layer)
    if not rule.exact and method.n_params(layer, rank) >= n_before:
        # A glob asks to compress; a factorisation that grows the layer is not that.
        skipped.append((name, f"{rule.method} at rank {rank} would not reduce its "
                              f"{n_before:,} parameters"))
        return None
    return method.decompose(layer, rank, **options)


def compress_model(
    model: nn.Module,
    plan: Plan,
    *,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    probe_batch: int = 2,
    seed: int = 0,
    calibration: Any = None,
) -> CompressionResult:
    """Return a compressed copy of ``model`` and a per-layer report; ``model`` is untouched.

    The copy keeps the model's dtype, device and the train/eval mode of every module; its
    new layers are made in the dtype and on the device of the layers they replace. The MAC
    counts and the probe run in eval mode without gradients, and put every module of
    ``model`` back in the mode it was in. A model that is itself one layer (a bare
    ``nn.Conv2d`` or ``nn.Linear``) is compressed like any other: its layer is named ``""``.

    Parameters
    ----------
    model : nn.Module
    plan : Plan
        Rules naming layers (globs over qualified names) with a method and rank.
    input_shape : sequence of int
        Shape used to count MACs and to probe the output error (batch replaced by
        ``probe_batch`` for the probe).
    seed : int
        Seed of the probe input and of randomised methods (CUR).
    calibration : Tensor (N, ...) or iterable of batches, optional
        Inputs from the data the model will see. ``ron`` (Reduced-Order Network) needs
        them: its plan is one rule whose pattern names the layer the reduced tail starts
        at and whose rank is the subspace dimension (:func:`latbench.compress.ron.reduce_order`).
        For the other methods they replace the Gaussian probe of ``output_rel_error``.

    Raises
    ------
    UserInputError
        For an unknown method, a bad rank, an exact layer name that matches no layer, an
        exact layer name the method cannot decompose, a model on the ``meta`` device
        (it has no weights to decompose), ``ron`` without calibration data or beside other
        rules, calibration data that do not fit the model, or an input shape the model
        does not run on.
    """
    from latbench.data.features import check_runs, layer_table, model_dtype_device

    if RON in plan.methods:
        return _compress_ron(model, plan, input_shape, calibration)

    for m in plan.methods:
        METHODS.get(m)  # unknown method → error with suggestions, before any work
    dtype, device = model_dtype_device(model)
    if device.type == "meta":
        raise UserInputError("the model is on the 'meta' device: it has no weights to decompose; "
                             "load its weights (or build it on a real device) first")
    original = model
    model = copy.deepcopy(original)
    candidates = decomposable_layers(model)
    missing = plan.unmatched(n for n, _ in candidates)
    if missing:
        names = [n for n, _ in candidates]
        from latbench.registry import suggest

        raise UserInputError(f"plan names layer {missing[0]!r}, which the model does not have"
                             f"{suggest(missing[0], names)}")
    shape = tuple(int(s) for s in input_shape)
    check_runs(original, shape, f"model {type(original).__name__}")
    table_before = layer_table(original, shape)

    decomps: dict[str, Decomposition] = {}
    skipped: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for name, layer in candidates:
        rule = plan.rule_for(name)
        if rule is None or rule.method == KEEP:
            continue
        dec = _decompose(name, layer, rule, seed, skipped)
        if dec is None:
            continue
        decomps[name] = dec
        if name == "":  # the model is this one layer: the decomposition is the new model
            model = dec.module
        else:
            model.set_submodule(name, dec.module)
    seconds = time.perf_counter() - t0

    table_after = layer_table(model, shape)
    macs_b = _macs_by_prefix(table_before, list(decomps))
    macs_a = _macs_by_prefix(table_after, list(decomps))
    reports = tuple(
        LayerReport(n, d.method, tuple(d.rank), d.params_before, d.params_after,
                    macs_b[n], macs_a[n], float(d.rel_error), tuple(d.notes))
        for n, d in decomps.items()
    )
    if calibration is not None:
        from latbench.compress.ron import as_calibration

        x = as_calibration(calibration)[:_CALIBRATION_PROBE]
    else:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((probe_batch,) + shape[1:], generator=gen, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype if dtype.is_floating_point else torch.float32)
    ref = _probe_output(original, x)
    out = _probe_output(model, x)
    out_err = float(torch.linalg.norm(ref - out) / torch.linalg.norm(ref).clamp_min(1e-30))
    return CompressionResult(
        model=model, plan=plan, input_shape=shape, layers=reports,
        params_before=count_params(original), params_after=count_params(model),
        macs_before=int(table_before["macs"].sum()), macs_after=int(table_after["macs"].sum()),
        output_rel_error=out_err, seconds=seconds, skipped=tuple(skipped),
    )


RON = "ron"
#: Calibration samples that probe ``output_rel_error`` of the per-layer methods.
_CALIBRATION_PROBE = 64


def _compress_ron(model: nn.Module, plan: Plan, input_shape: Sequence[int],
                  calibration: Any) -> CompressionResult:
    """``ron``: one rule, the tail from its pattern's first layer reduced (see :mod:`.ron`)."""
    from latbench.compress.ron import reduce_order
    from latbench.data.features import count_params, eval_mode, layer_table, rows_of

    if len(plan.rules) != 1:
        raise UserInputError("ron replaces a network's tail as a whole: give it as the plan's only "
                             "rule (its layers pattern names where the tail starts)")
    if calibration is None:
        raise UserInputError("ron needs calibration data: compress_model(..., calibration=batches), "
                             "or bench compress --calibration FILE.pt")
    rule = plan.rules[0]
    unknown = set(rule.options) - {"maxvol_tol"}
    if unknown:
        raise UserInputError(f"unknown ron option(s) {sorted(unknown)}; ron takes maxvol_tol")
    shape = tuple(int(s) for s in input_shape)
    from latbench.compress.ron import as_calibration

    calibration = as_calibration(calibration)
    if tuple(calibration.shape[1:]) != shape[1:]:
        raise UserInputError(f"calibration samples have shape {tuple(calibration.shape[1:])} but "
                             f"input_shape is {shape}; give the model's input shape")
    original = model
    with eval_mode(original):  # the caller's modes are left as they were
        res = reduce_order(original, rule.rank, calibration, start=rule.pattern,
                           **dict(rule.options))
    table_before = layer_table(original, shape)
    table_after = layer_table(res.model, shape)
    modules = dict(original.named_modules())
    reports = []
    for j, st in enumerate(res.stages):
        prefix = "readout" if st.name == "readout" else f"stages.{j}"
        macs_b = sum(int(table_before.loc[rows_of(table_before, m), "macs"].sum()) for m in st.modules)
        params_b = sum(p.numel() for m in st.modules for p in modules[m].parameters(recurse=False))
        notes = tuple(st.notes)
        if st.rank:
            notes = (f"{st.n:,} values → {st.rank[0]} sampled"
                     + (f" (max over {st.window}-position windows)" if st.window > 1 else ""),
                     f"DEIM: interpolation error {st.interpolation_error:.4f} ≤ bound "
                     f"{st.error_bound:.4f} = ‖(V_I)⁻¹‖₂ {st.deim_constant:.2f} × projection "
                     f"error {st.projection_error:.4f}") + notes
        reports.append(LayerReport(
            st.name, RON, tuple(st.rank), params_b, st.params_after, macs_b,
            int(table_after.loc[rows_of(table_after, prefix), "macs"].sum()), st.propagated_error,
            notes, st.details()))
    return CompressionResult(
        model=res.model, plan=plan, input_shape=shape, layers=tuple(reports),
        params_before=count_params(original), params_after=count_params(res.model),
        macs_before=int(table_before["macs"].sum()), macs_after=int(table_after["macs"].sum()),
        output_rel_error=res.stages[-1].propagated_error, seconds=res.seconds,
    )


def iterative_compress(
    model: nn.Module,
    plan: Plan,
    *,
    steps: int,
    finetune: Callable[[nn.Module, int], nn.Module | None] | None = None,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    seed: int = 0,
) -> list[CompressionResult]:
    """MUSCO-style iterative compression: ``steps`` rounds of ``plan`` with fine-tuning between.

    Round 1 decomposes the original layers; later rounds re-compress the Tucker-2 cores
    (other methods are left as they are after round 1). ``finetune(model, step)`` is called
    after every round but the last and may return a new model (or ``None`` to keep it).
    With a weakened EVBMF rank (``"evbmf:0.6"``) every round removes a share of the
    redundancy that remains, as in Gusak et al. 2019.
    """
    if steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps}")
    results: list[CompressionResult] = []
    current = model
    for step in range(steps):
        res = compress_model(current, plan, input_shape=input_shape, seed=seed)
        results.append(res)
        current = res.model
        if finetune is not None and step < steps - 1:
            tuned = finetune(current, step)
            current = tuned if tuned is not None else current
    return results
