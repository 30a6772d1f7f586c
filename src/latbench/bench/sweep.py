"""``bench sweep``: compress, export and measure variants into the latency store.

Every variant is keyed before any work (:func:`~latbench.bench.variants.variant_key`), so a
rerun of the same sweep skips what the store already holds for this device, runtime and
thread count; each measurement is committed as soon as it is taken, so an interrupted sweep
loses at most the variant in flight.

Several sweeps may run on one database at once (on one device or several): each claims a
variant (or a layer measured alone) in the store before measuring it
(:meth:`~latbench.data.store.Store.claim`), skips what another live process holds, and
comes back at the end to what others held, so every variant × device × runtime × format
is measured once and every sweep ends with all of its variants stored. A killed sweep's
claims are taken over by the next one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import gc
import itertools
import os
import random
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from latbench.bench.layers import (LAYER_MAX_TIME_S, LAYER_OPS_MEASURED_ALONE, measure_layer,
                                   runtime_identity)
from latbench.bench.variants import Variant, parse_rank_range, random_plan, uniform_variants
from latbench.exceptions import DeviceError, ExportError, Interrupted, LatbenchNotice, \
    OpProfileError, StoreError, UserInputError, WorkdirError

__all__ = ["Target", "SweepConfig", "SweepEvent", "SweepSummary", "run_sweep", "load_sweep_config",
           "plan_sweep", "default_config", "prepare_sweep", "SweepModels", "build_variant",
           "BuiltVariant", "store_measurement", "variant_item", "wait_for_others", "release_quietly",
           "RECORDABLE_ERRORS"]

#: What one variant (or one layer) may fail with and be recorded as failed while the sweep
#: goes on: a plan that does not fit the model, or an export the runtime cannot take. Anything
#: else is a bug in latbench and stops the sweep with its traceback (what was measured is kept).
RECORDABLE_ERRORS = (UserInputError, ExportError)

#: Errors of writing a file that say the folder cannot take it, whatever the file: the sweep
#: stops (every later variant would fail the same way) instead of recording a failure.
_WORKDIR_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS,
                                        errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO)
                            if e is not None)

#: Seconds between looks at what another process is still measuring, at the end of a sweep.
_CLAIM_POLL_S = 0.5

DEFAULT_METHODS = ("tucker2", "cp", "svd")
DEFAULT_RANKS = (0.25, 0.5)
_OPTION_TYPES: dict[str, type] = {"random_plans": int, "per_layer": bool, "layers": str,
                                  "threads": int, "warmup": int, "repeats": int, "seed": int,
                                  "adaptive": bool}


@dataclass(frozen=True)
class Target:
    """One model to sweep at one input shape, with its methods and fractional ranks."""

    model: str
    input_shape: tuple[int, ...]
    methods: tuple[str, ...] = DEFAULT_METHODS
    ranks: tuple[float, ...] = DEFAULT_RANKS


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures and how.

    ``random_plans`` per-layer plans are drawn per target (seeded by ``seed``).
    ``threads=None`` uses the device's default; ``warmup``/``repeats`` go into every spec.
    ``adaptive`` (devices that time in-process: cpu, cuda) keeps sampling a variant past
    ``repeats`` while its samples are spread (:func:`latbench.bench.run.spread_guard`).
    ``trust_file`` lets model files be fully unpickled (see
    :func:`latbench.models.resolve_model`); it is never read from a sweep TOML file.
    """

    targets: tuple[Target, ...]
    random_plans: int = 0
    per_layer: bool = False
    layers: str = "*"
    threads: int | None = None
    warmup: int = 10
    repeats: int = 50
    seed: int = 0
    adaptive: bool = True
    trust_file: bool = False


@dataclass(frozen=True)
class SweepEvent:
    """Progress of one item.

    ``phase`` is ``variants`` or ``layers`` (layers measured alone); ``status`` is
    ``measured``, ``skipped`` (already stored, or measured meanwhile by another process) or
    ``failed``; ``median_ms`` is set if measured, ``error`` if failed. ``done`` of ``total``
    items of the phase are finished. ``device`` names the device of the item in a sweep over
    several devices (:func:`latbench.farm.run_farm_sweep`, which counts ``done`` and
    ``total`` per device); ``None`` in a single-device sweep.
    """

    done: int
    total: int
    label: str
    status: str
    median_ms: float | None = None
    error: str | None = None
    phase: str = "variants"
    device: str | None = None


@dataclass
class SweepSummary:
    """What a sweep did: counts of variants and layers, and seconds spent per stage.

    ``measured_elsewhere`` (``layers_measured_elsewhere``) counts what another process
    sweeping the same database measured while this one ran (they split the work).
    """

    measured: int = 0
    skipped: int = 0
    failed: int = 0
    layers_measured: int = 0
    layers_skipped: int = 0
    layers_failed: int = 0
    layers_profiled: int = 0
    measured_elsewhere: int = 0
    layers_measured_elsewhere: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"compress": 0.0, "export": 0.0,
                                                               "measure": 0.0})

    def to_dict(self) -> dict[str, Any]:
        return {"measured": self.measured, "skipped": self.skipped, "failed": self.failed,
                "layers_measured": self.layers_measured, "layers_skipped": self.layers_skipped,
                "layers_failed": self.layers_failed, "layers_profiled": self.layers_profiled,
                "measured_elsewhere": self.measured_elsewhere,
                "layers_measured_elsewhere": self.layers_measured_elsewhere,
                "seconds": dict(self.seconds)}

    def kept(self) -> str:
        """What a stopped sweep kept, in words, for the message that stops it."""
        parts = [f"{self.skipped} already stored"]
        if self.measured_elsewhere:
            parts.append(f"{self.measured_elsewhere} by another process")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return (f"sweep stopped after {self.measured} new measurements ({', '.join(parts)}); "
                "everything measured is kept, rerun the same command to resume")


def load_sweep_config(path: str | Path, **overrides: Any) -> SweepConfig:
    """Read a sweep TOML file.

    Format::

        random_plans = 4          # optional top-level options: per_layer, threads,
        seed = 0                  # warmup, repeats, layers
        [[models]]
        name = "resnet18"
        inputs = ["1x3x224x224", "1x3x160x160"]   # or input = "..."
        methods = ["tucker2", "svd"]              # optional
        ranks = "0.25:0.75:0.25"                  # optional

    Raises
    ------
    UserInputError
        If the file is missing, not TOML, or a value is malformed.
    """
    from latbench.data.store import parse_shape_str
    from latbench.models import default_input_shape

    p = Path(path)
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))  # TOML is UTF-8 by definition
    except FileNotFoundError:
        raise UserInputError(f"sweep config {str(p)!r} does not exist") from None
    except OSError as exc:
        raise UserInputError(f"cannot read sweep config {str(p)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserInputError(f"sweep config {str(p)!r} is not UTF-8 text (byte {exc.start}); "
                             "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"sweep config {str(p)!r} is not valid TOML: {exc}") from None
    where = f"sweep config {str(p)!r}"
    unknown = sorted(set(data) - {"models", *_OPTION_TYPES})
    if unknown:
        raise UserInputError(f"{where}: unknown option {unknown[0]!r}; known: "
                             f"models, {', '.join(_OPTION_TYPES)}")
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(e, dict) for e in models):
        raise UserInputError(f"{where} needs at least one [[models]] table with a name")
    targets = []
    for entry in models:
        extra = sorted(set(entry) - {"name", "input", "inputs", "methods", "ranks"})
        if extra:
            raise UserInputError(f"{where}: unknown key {extra[0]!r} in [[models]]; known: "
                                 "name, input, inputs, methods, ranks")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise UserInputError(f"{where}: every [[models]] table needs a name")
        inputs = entry.get("inputs") or ([entry["input"]] if "input" in entry else [])
        if isinstance(inputs, str):
            inputs = [inputs]
        shapes = [parse_shape_str(str(s)) for s in inputs] if inputs else [default_input_shape(entry["name"])]
        methods = entry.get("methods", DEFAULT_METHODS)
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        ranks = entry.get("ranks")
        if ranks is None:
            rank_values = DEFAULT_RANKS
        elif isinstance(ranks, list):
            rank_values = parse_rank_range(",".join(str(r) for r in ranks))
        else:
            rank_values = parse_rank_range(str(ranks))
        targets.extend(Target(entry["name"], tuple(s), tuple(methods), rank_values) for s in shapes)
    options = {k: data[k] for k in _OPTION_TYPES if k in data}
    for k, v in options.items():
        want = _OPTION_TYPES[k]
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise UserInputError(f"{where}: {k} = {v!r} should be a{'n' if want is int else ''} "
                                 f"{want.__name__}")
    options.update({k: v for k, v in overrides.items() if v is not None})
    return SweepConfig(tuple(targets), **options)


def plan_sweep(config: SweepConfig, resolve: Callable[[str], nn.Module]) -> list[Variant]:
    """Every variant of the sweep, in order: per target the original, uniform plans, random plans.

    A variant that occurs twice (a repeated rank, two equal random plans) is listed once.
    Models read from files are resolved (``resolve``) and keyed by their content
    (:func:`~latbench.models.fingerprint.model_fingerprint`), not only their path.
    """
    from latbench.models.fingerprint import model_fingerprint, reads_model_file

    hashes: dict[str, str | None] = {}

    def model_hash(spec: str) -> str | None:
        if spec not in hashes:
            hashes[spec] = model_fingerprint(resolve(spec)) if reads_model_file(spec) else None
        return hashes[spec]

    out: list[Variant] = []
    for t in config.targets:
        h = model_hash(t.model)
        out.extend(uniform_variants(t.model, t.input_shape, t.methods, t.ranks,
                                    layers=config.layers, seed=config.seed, model_hash=h))
        if config.random_plans:
            rng = random.Random(f"{config.seed}:{t.model}:{t.input_shape}")
            net = resolve(t.model)
            for i in range(config.random_plans):
                plan = random_plan(net, t.methods, t.ranks, rng)
                out.append(Variant(t.model, t.input_shape, plan, "mixed", f"random#{i}",
                                   config.seed, h))
    seen: set[str] = set()
    return [v for v in out if not (v.key in seen or seen.add(v.key))]


class SweepModels:
    """The models of a sweep, resolved on demand, one held at a time.

    Calling it with a model spec returns the module (resolved again if another model was
    asked for since: memory stays flat across models); :meth:`clear` lets the held one go.
    A model read from a file is checked against the fingerprint its variants were keyed by
    (:meth:`pin`), so a file overwritten during a sweep is an error, not a silent mix.
    """

    def __init__(self, config: SweepConfig) -> None:
        self._config = config
        self._nets: dict[str, nn.Module] = {}
        self._planned: dict[str, str] = {}  # model spec → fingerprint the variants were keyed by

    def __call__(self, spec: str) -> nn.Module:
        from latbench.models import resolve_model
        from latbench.models.fingerprint import model_fingerprint

        if spec not in self._nets:
            self._nets.clear()
            net = resolve_model(spec, seed=self._config.seed, trust_file=self._config.trust_file)
            if spec in self._planned and model_fingerprint(net) != self._planned[spec]:
                raise UserInputError(f"model file {spec!r} changed during the sweep (it holds "
                                     "another network than the one the sweep planned); rerun "
                                     "the sweep")
            self._nets[spec] = net
        return self._nets[spec]

    def pin(self, variants: list[Variant]) -> None:
        """Remember the fingerprints ``variants`` were keyed by."""
        self._planned.update({v.model: v.model_hash for v in variants if v.model_hash is not None})

    def clear(self) -> None:
        """Let the held model go."""
        self._nets.clear()


def prepare_sweep(config: SweepConfig) -> tuple[list[Variant], SweepModels]:
    """Check ``config``, check that every model runs on its input, and list the variants.

    Returns the variants (:func:`plan_sweep`) and the :class:`SweepModels` that builds them,
    holding no model yet (so a heap frozen next does not keep one alive).

    Raises
    ------
    UserInputError
        For a bad option, an unknown model or method, or a model that does not run on the
        input shape given.
    """
    _check_config(config)
    models = SweepModels(config)
    for t in config.targets:  # an unknown model or a wrong input → error before any work
        _check_runs(models(t.model), t)
    variants = plan_sweep(config, models)
    models.pin(variants)
    models.clear()
    return variants, models


@dataclass
class BuiltVariant:
    """A variant compressed and exported: its layer table, its artifact per format, and the
    seconds each stage took; or the stage that failed (``failed_stage``: ``compress`` or
    ``export``) and why (``error``). ``workdir_problem`` says why the folder cannot take
    model files, when that is what failed (every later variant would fail the same way)."""

    table: pd.DataFrame | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    compress_s: float = 0.0
    export_s: float = 0.0
    failed_stage: str | None = None
    error: str | None = None
    workdir_problem: str | None = None


def build_variant(v: Variant, resolve: Callable[[str], nn.Module], formats: tuple[str, ...],
                  work: Path) -> BuiltVariant:
    """Compress ``v`` (its plan on its source model), count its layers, and export it in each
    of ``formats`` (``onnx``, ``tflite``) as ``work/<key>.<suffix>``.

    Failures a variant may have (:data:`RECORDABLE_ERRORS`: a plan that does not fit, an
    export the runtime cannot take) come back in the result; anything else raises.
    """
    from latbench.compress.export import export_model
    from latbench.compress.model import compress_model
    from latbench.data.features import layer_table

    out = BuiltVariant()
    stage = "compress"
    try:
        t0 = time.perf_counter()
        net = resolve(v.model)
        if v.plan is not None:
            net = compress_model(net, v.plan, input_shape=v.input_shape, seed=v.seed).model
        out.table = layer_table(net, v.input_shape)
        t1 = time.perf_counter()
        out.compress_s = t1 - t0
        stage = "export"
        for fmt in formats:
            out.artifacts[fmt] = export_model(net, v.input_shape, work / v.key, fmt)
        out.export_s = time.perf_counter() - t1
    except RECORDABLE_ERRORS as exc:  # one bad variant must not end a long sweep
        for a in out.artifacts.values():
            a.path.unlink(missing_ok=True)
        out.artifacts = {}
        out.failed_stage, out.error = stage, str(exc)
        if stage == "export":  # ... but a full $TMPDIR fails every variant alike
            out.workdir_problem = _workdir_problem(exc, work)
    return out


def store_measurement(store, v: Variant, table: pd.DataFrame, device_id: int, m) -> None:
    """Store ``v`` (its layer table) and its measurement ``m`` on device ``device_id`` in one
    transaction: a sweep killed in between leaves neither."""
    with store.transaction():
        vid = store.add_variant(v.model, v.input_shape, table, plan=v.plan, method=v.method,
                                content_hash=v.key)
        store.add_measurement(vid, device_id, m)


def _check_config(config: SweepConfig) -> None:
    if not config.targets:
        raise UserInputError("the sweep has no models: give --model or a --config with [[models]]")
    if config.threads is not None and config.threads < 1:
        raise UserInputError(f"--threads must be at least 1, got {config.threads}")
    if config.repeats < 1:
        raise UserInputError(f"--repeats must be at least 1, got {config.repeats}")
    if config.warmup < 0:
        raise UserInputError(f"--warmup must be 0 or more, got {config.warmup}")
    if config.random_plans < 0:
        raise UserInputError(f"--random-plans must be 0 or more, got {config.random_plans}")
    for t in config.targets:
        if not t.methods:
            raise UserInputError(f"no methods given for {t.model!r}: give e.g. tucker2,cp,svd")
        if not t.ranks:
            raise UserInputError(f"no ranks given for {t.model!r}: give e.g. 0.25,0.5")


def run_sweep(
    config: SweepConfig,
    device: str,
    db: str | Path,
    *,
    devices_file: str | Path | None = None,
    workdir: str | Path | None = None,
    progress: Callable[[SweepEvent], None] | None = None,
) -> SweepSummary:
    """Measure every variant of ``config`` on ``device`` into the store at ``db``.

    Each variant's row (variant, layer table, measurement) is committed as soon as it is
    measured, and what the store already holds for this device, runtime and thread count is
    skipped, so a rerun after Ctrl-C or ``kill -9`` loses at most the variant in flight.
    Memory stays flat across models: one model is held at a time, and it is released with
    its cached eigendecompositions before the event of its last variant is sent.
    Failures to compress or export one variant are recorded in the store and the sweep
    goes on; a device failure stops the sweep (what was measured stays; rerun to resume).

    Sweeps running at once on one database split the work: each variant (and each layer
    measured alone) is claimed in the store before it is measured
    (:meth:`~latbench.data.store.Store.claim`); what another live process holds is skipped
    and looked at again at the end, where this sweep waits (a
    :class:`~latbench.exceptions.LatbenchNotice` says so) until the other has stored it, or
    takes it over if the other died. Every variant is measured once.

    Parameters
    ----------
    config : SweepConfig
    device : str
        Device name (``cpu``, ``cuda`` or a ``devices.toml`` profile).
    db : str or Path
        The SQLite latency store; created if missing.
    devices_file : str or Path, optional
        The ``devices.toml`` to read profiles from.
    workdir : str or Path, optional
        Where model files are written (each is deleted once measured); by default a
        temporary folder named after this process, removed at the end, and folders that
        killed sweeps left behind are removed at the start.
    progress : callable, optional
        Called with a :class:`SweepEvent` after each variant and each layer.

    Returns
    -------
    SweepSummary
        Counts, and seconds spent compressing, exporting and measuring (in seconds).

    Raises
    ------
    UserInputError
        For an unknown model, method or device, a bad option, or a model file that changed
        during the sweep.
    WorkdirError
        If the folder models are written to is full or cannot be written (``$TMPDIR``).
    DeviceError
        If the device is lost; the message says how much was kept.
    StoreError
        If the store cannot be written (a full disk); the message says how much was kept.
    Interrupted
        On Ctrl-C (a ``KeyboardInterrupt`` saying what was kept and how to resume).
    """
    from latbench.compress import reuse_subspaces
    from latbench.data.store import Store
    from latbench.devices.registry import get_device

    variants, resolve = prepare_sweep(config)
    summary = SweepSummary()
    layer_rows: dict[str, dict] = {}
    started = time.time()
    # The device first: an unknown name must fail before a database file is created.
    with get_device(device, devices_file) as dev, Store(db) as store, \
            _workdir(workdir) as work, _frozen_heap():
        try:
            dev_id = store.add_device(dev.info())
            runtime = runtime_identity(dev, config.threads)
            fmt = dev.capabilities.format
            # Phones whose runner profiles operators give every layer's latency from one
            # extra call per variant; layers a profile cannot map are measured alone at the end.
            profiles = config.per_layer and dev.capabilities.op_profiles
            finished = 0

            def emit(v_label: str, status: str, med: float | None = None,
                     err: str | None = None) -> None:
                nonlocal finished
                finished += 1
                if progress is not None:
                    progress(SweepEvent(finished, len(variants), v_label, status, med, err))

            def sweep_group(group: list[Variant], deferred: bool) -> list[Variant]:
                """Sweep one model's variants; those another process holds are returned."""
                # Each event is sent when the next variant is about to start, the last one of
                # a model once the model is released: what a progress callback sees at the
                # end of a model's variants is the memory the sweep goes on with.
                pending: tuple | None = None
                held: list[Variant] = []
                try:
                    # reuse_subspaces: the variants of one model share its weights, so SVD /
                    # Tucker-2 factor each matrix once per model rather than once per
                    # variant; the cache goes with the model.
                    with reuse_subspaces():
                        for v in group:
                            if pending is not None:
                                emit(*pending)
                                pending = None
                            outcome = _sweep_variant(v, resolve, dev, store, dev_id, runtime,
                                                     fmt, profiles, work, config, summary,
                                                     layer_rows, started=started,
                                                     deferred=deferred)
                            if outcome is None:  # another process measures it right now
                                held.append(v)
                                continue
                            pending = (f"{v.model} {v.label}", *outcome)
                    resolve.clear()
                    _release_memory()
                finally:
                    if pending is not None:
                        emit(*pending)
                return held

            held: list[Variant] = []
            for _, group in itertools.groupby(variants, key=lambda v: v.model):
                held += sweep_group(list(group), deferred=False)
            # What others held: their measurement lands in the store (skipped here), or
            # their claim lapses (a killed process) and this sweep takes the variant over.
            held = wait_for_others(
                held, lambda vs: [x for _, g in itertools.groupby(vs, key=lambda v: v.model)
                                  for x in sweep_group(list(g), deferred=True)],
                store, lambda v: variant_item(v, dev.name, runtime, fmt), "variants")
            if config.per_layer:
                _measure_layers(store, dev, dev_id, layer_rows, config, work, runtime, summary,
                                progress, started)
        except KeyboardInterrupt:
            raise Interrupted(f"sweep interrupted: {summary.kept()}") from None
        except StoreError as exc:
            raise StoreError(f"{exc} — {summary.kept()}") from None
        finally:
            release_quietly(store, None)  # whatever this process still holds
    return summary


def variant_item(v: Variant, device: str, runtime: tuple[str, str, int], fmt: str) -> str:
    """The store claim of measuring ``v`` on ``device`` with ``runtime`` (runtime, version,
    threads) in ``fmt``."""
    from latbench.data.store import variant_claim

    return variant_claim(v.key, v.input_shape, device, *runtime, fmt)


def release_quietly(store, item: str | None) -> None:
    """Release this process's claim (all of them for ``None``): best effort, since it runs
    while another error may be on its way out (a dead process's claims lapse anyway)."""
    try:
        store.release(item)
    except StoreError:
        pass


def wait_for_others(held: list, retry: Callable[[list], list], store,
                     item_of: Callable[[Any], str], what: str) -> list:
    """Call ``retry(held)`` until another process no longer holds any of ``held``; the
    items still held after each round are waited for (one notice naming their owners)."""
    noticed = False
    while held:
        owners = sorted({o for o in (store.claim_holder(item_of(x)) for x in held) if o})
        if owners and not noticed:
            warnings.warn(f"{len(held)} {what} of this sweep are being measured by another "
                          f"process ({', '.join(owners)}); waiting for them to be stored",
                          LatbenchNotice, stacklevel=3)
            noticed = True
        if owners:
            time.sleep(_CLAIM_POLL_S)
        held = retry(held)
    return held


def _sweep_variant(v: Variant, resolve, dev, store, dev_id, runtime, fmt: str, profiles: bool,
                   work, config, summary: SweepSummary, layer_rows: dict, *,
                   started: float = 0.0, deferred: bool = False
                   ) -> tuple[str, float | None, str | None] | None:
    """Compress, export (in the device's format), measure, profile and store one variant; its
    event's ``(status, median_ms, error)``, or ``None`` when another live process holds its
    claim (``deferred``: a second look at such a variant, after this sweep's own work)."""
    key = v.key

    def stored() -> tuple[bool, bool]:
        measured = store.has_measurement(key, v.input_shape, dev.name, *runtime, format=fmt)
        to_profile = profiles and not store.has_op_profile(key, dev.name, *runtime, format=fmt)
        return measured, to_profile

    def skip() -> tuple[str, None, None]:
        if deferred:
            summary.measured_elsewhere += 1
        else:
            summary.skipped += 1
        if config.per_layer:
            _collect_layers(store.variant_layers(key, v.input_shape), layer_rows)
        return "skipped", None, None

    measured, to_profile = stored()
    if measured and not to_profile:
        return skip()
    item = variant_item(v, dev.name, runtime, fmt)
    if not store.claim(item, note=f"{v.model} {v.label}"):
        return None
    try:
        measured, to_profile = stored()  # another process may have stored it meanwhile
        if measured and not to_profile:
            return skip()
        if deferred and not measured:
            error = store.failed_since(key, dev.name, started)
            if error is not None:  # the other process tried and failed: so would this one
                summary.failed += 1
                return "failed", None, f"in another process: {error}"
        return _build_and_measure(v, resolve, dev, store, dev_id, fmt, work, config, summary,
                                  layer_rows, measured, to_profile, item)
    finally:
        release_quietly(store, item)


def _build_and_measure(v: Variant, resolve, dev, store, dev_id, fmt, work, config,
                       summary: SweepSummary, layer_rows: dict, measured: bool, to_profile: bool,
                       item: str) -> tuple[str, float | None, str | None]:
    from latbench.bench.run import measure_artifact, spread_guard
    from latbench.data.executed import executed_layer_table

    key = v.key
    built = build_variant(v, resolve, (fmt,), work)
    if built.workdir_problem is not None:
        raise WorkdirError(
            f"cannot write models into {str(work)!r}: {built.workdir_problem} — "
            f"{summary.kept()}; free space there or point TMPDIR at a folder with room")
    if built.failed_stage is not None:
        summary.failed += 1
        store.add_failure(built.failed_stage, built.error, device_id=dev_id,
                          source_model=v.model, content_hash=key, plan=v.plan)
        return "failed", None, f"{built.failed_stage}: {built.error}"
    table, artifact = built.table, built.artifacts[fmt]
    # The table stored is the graph the device's runtime executes where it can say (ONNX
    # Runtime's optimised graph on cpu/cuda), the module's otherwise.
    t_graph = time.perf_counter()
    table = executed_layer_table(dev, artifact, table, threads=config.threads)
    built.export_s += time.perf_counter() - t_graph
    t2 = time.perf_counter()
    summary.seconds["compress"] += built.compress_s
    summary.seconds["export"] += built.export_s
    store.renew(item)  # compressing took a while; measuring may too
    stage = "measure"
    m = None
    try:
        if not measured:
            m = measure_artifact(
                dev, artifact, threads=config.threads, warmup=config.warmup,
                repeats=config.repeats,
                sampling=spread_guard(dev, config.repeats) if config.adaptive else None)
            summary.seconds["measure"] += time.perf_counter() - t2
            store_measurement(store, v, table, dev_id, m)
        if to_profile:
            stage = "profile"  # a lost device; unreadable profiles are "op_profile"
            t3 = time.perf_counter()
            _profile_variant(store, dev, dev_id, v, artifact, table, config, summary, layer_rows)
            summary.seconds["profile"] = summary.seconds.get("profile", 0.0) + \
                time.perf_counter() - t3
    except DeviceError as exc:
        store.add_failure(stage, str(exc), device_id=dev_id, source_model=v.model,
                          content_hash=key, plan=v.plan)
        raise DeviceError(
            f"{exc} — sweep stopped after {summary.measured + (m is not None)} new "
            f"measurements ({summary.skipped} already stored); everything measured is "
            "kept, rerun the same command to resume") from None
    finally:
        artifact.path.unlink(missing_ok=True)
    if m is None:  # measured before, profiled now
        summary.skipped += 1
        return "skipped", None, None
    summary.measured += 1
    if config.per_layer and not to_profile:
        _collect_layers(table, layer_rows)
    return "measured", m.median_ms, None


def _workdir_problem(exc: BaseException, work: Path) -> str | None:
    """Why ``work`` cannot take model files, if that is what ``exc`` (an export failure)
    comes from: an ``OSError`` of a full, read-only or forbidden folder in its chain, or a
    small file that cannot be written there now. ``None``: the variant itself failed."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _WORKDIR_ERRNOS:
            return os.strerror(e.errno)
        e = e.__cause__ or e.__context__
    probe = Path(work) / f".latbench-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:  # the exporters do not always keep the OSError
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return err.strerror or str(err)
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def _release_memory() -> None:
    """Give what a finished model used back to the OS.

    ``gc.collect`` frees cycles; glibc keeps freed heap pages of a process by default (the
    RSS of a sweep then only grows), ``malloc_trim(0)`` returns them. Elsewhere it is a no-op.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def _profile_variant(store, dev, dev_id, v, artifact, table, config, summary, layer_rows) -> None:
    """Profile ``artifact`` on ``dev``, store the layers its profile times (source
    ``op_profile:<variant key>``), and queue the rest to be measured alone."""
    from latbench.artifact import read_tflite
    from latbench.bench.profiles import map_profile
    from latbench.data.features import layer_key
    from latbench.measure.measurement import Measurement

    spec = dev.make_spec(artifact, threads=config.threads, warmup=config.warmup,
                         repeats=config.repeats)
    try:
        profile = dev.profile_ops(artifact, spec)
    except OpProfileError as exc:
        # The runner ran but gave no profile we read: the variant's layers are timed alone.
        store.add_failure("op_profile", str(exc), device_id=dev_id, source_model=v.model,
                          content_hash=v.key, plan=v.plan)
        _collect_layers(table, layer_rows)
        return
    mapping = map_profile(profile, read_tflite(artifact.path), table)
    for note in mapping.notes:
        store.add_failure("op_profile", f"{v.model} {v.label}: {note}", device_id=dev_id,
                          source_model=v.model, content_hash=v.key, plan=v.plan)
    groups: dict[str, list] = {}
    for t in mapping.layers.values():
        groups.setdefault(layer_key(t.row), []).append(t)
    source = f"op_profile:{v.key}"
    with store.transaction():
        for timings in groups.values():
            m = Measurement(
                spec=spec, samples_s=tuple(t.avg_s for t in timings),
                info_before=profile.info_before or dev.info(),
                info_after=profile.info_after or profile.info_before or dev.info(),
                extra={"statistic": f"mean over {profile.runs} profiled runs, one sample per "
                                    "layer of this configuration",
                       "tool": profile.tool, "layers": [t.name for t in timings],
                       "first_s": [t.first_s for t in timings],
                       "tflite_nodes": [t.nodes for t in timings], **profile.extra})
            store.add_layer_measurement(dev_id, timings[0].row, m, source=source)
        if not groups:  # nothing mapped: still remember that the variant was profiled
            store.add_failure("op_profile", f"{v.model} {v.label}: no layer of the profile "
                              "could be mapped", device_id=dev_id, source_model=v.model,
                              content_hash=v.key, plan=v.plan)
    summary.layers_profiled += len(mapping.layers)
    unmapped = set(mapping.unmapped)
    _collect_layers(table[table["name"].isin(unmapped)], layer_rows)


def _check_runs(net: nn.Module, target: Target) -> None:
    from latbench.models import check_input_shape

    check_input_shape(net, target.input_shape, name=target.model)  # the one shared check


@contextmanager
def _frozen_heap() -> Iterator[None]:
    # The timing loop runs a full gc.collect() before each measurement; with torch, the models
    # and pandas loaded that walks ~400k long-lived objects (0.5 s here) per variant and per
    # layer. Freezing them once makes each collection walk only what the sweep made since.
    if gc.get_freeze_count():  # the caller manages freezing; leave it to them
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _workdir(workdir: str | Path | None) -> Iterator[Path]:
    from latbench.concurrency import owned_tempdir

    try:
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            made = None
        else:
            made = owned_tempdir("latbench-sweep-")
            path = made.__enter__()
    except OSError as exc:
        where = str(workdir) if workdir is not None else tempfile.gettempdir()
        raise WorkdirError(f"cannot make a folder for model files in {where!r}: "
                           f"{exc.strerror or exc}; free space there or point TMPDIR at a "
                           "writable folder with room") from None
    if made is None:
        yield Path(workdir)  # type: ignore[arg-type]
        return
    try:
        yield path
    finally:
        made.__exit__(None, None, None)


def _collect_layers(table: pd.DataFrame | None, into: dict[str, dict]) -> None:
    """Add the distinct layer configurations of ``table`` that are measured alone to ``into``."""
    from latbench.data.features import layer_key

    if table is None:
        return
    for _, row in table.iterrows():
        if row["op"] in LAYER_OPS_MEASURED_ALONE:
            into.setdefault(layer_key(row), row.to_dict())


def _measure_layers(store, dev, dev_id, layer_rows, config, work, runtime, summary, progress,
                    started: float = 0.0) -> None:
    from latbench.bench.run import spread_guard
    from latbench.data.store import layer_claim

    fmt = dev.capabilities.format
    items = list(layer_rows.items())
    finished = 0

    def emit(label: str, status: str, med: float | None = None, err: str | None = None):
        nonlocal finished
        finished += 1
        if progress is not None:
            progress(SweepEvent(finished, len(items), label, status, med, err, phase="layers"))

    def item_of(entry: tuple[str, dict]) -> str:
        return layer_claim(entry[0], dev.name, *runtime, fmt)

    def one(lkey: str, row: dict, deferred: bool) -> bool:
        """Measure one layer unless stored; ``False`` when another process holds it."""
        label = f"layer {row['op']} {row['in_channels']}→{row['out_channels']} " \
                f"{row['kernel_h']}x{row['kernel_w']}/{row['stride_h']} g{row['groups']} " \
                f"@{row['in_h']}x{row['in_w']}"

        def skip() -> bool:
            if deferred:
                summary.layers_measured_elsewhere += 1
            else:
                summary.layers_skipped += 1
            emit(label, "skipped")
            return True

        if store.has_layer_measurement(lkey, dev.name, *runtime, format=fmt):
            return skip()
        item = item_of((lkey, row))
        if not store.claim(item, note=label):
            return False
        try:
            if store.has_layer_measurement(lkey, dev.name, *runtime, format=fmt):
                return skip()
            try:
                m = measure_layer(dev, row, work, threads=config.threads, warmup=config.warmup,
                                  repeats=config.repeats, seed=config.seed,
                                  sampling=spread_guard(dev, config.repeats, LAYER_MAX_TIME_S)
                                  if config.adaptive else None)
            except DeviceError as exc:
                raise DeviceError(f"{exc} — per-layer measurements stopped at "
                                  f"{finished}/{len(items)}; everything measured is kept, "
                                  "rerun the same command to resume") from None
            except RECORDABLE_ERRORS as exc:  # one layer that cannot be built or exported
                problem = _workdir_problem(exc, work)
                if problem is not None:
                    raise WorkdirError(
                        f"cannot write models into {str(work)!r}: {problem} — per-layer "
                        f"measurements stopped at {finished}/{len(items)}; everything measured "
                        "is kept, free space there or point TMPDIR at a folder with room, "
                        "then rerun") from None
                msg = str(exc)
                summary.layers_failed += 1
                store.add_failure("layer", f"{lkey}: {msg}", device_id=dev_id)
                emit(label, "failed", err=msg)
                return True
            store.add_layer_measurement(dev_id, row, m)
            summary.layers_measured += 1
            emit(label, "measured", m.median_ms)
            return True
        finally:
            release_quietly(store, item)

    held = [(lkey, row) for lkey, row in items if not one(lkey, row, deferred=False)]
    wait_for_others(held, lambda hs: [h for h in hs if not one(*h, deferred=True)], store,
                     item_of, "layers")


def default_config(**overrides: Any) -> SweepConfig:
    """The no-argument sweep: ResNet-18 at 224×224, Tucker-2 and SVD at ¼ and ½ ranks, 2 random plans.

    CP is left out of the default (ask for it with ``--methods``): its ALS took about 10 of the
    12 minutes of a default sweep that included it on the 2-core development machine.
    """
    base = SweepConfig((Target("resnet18", (1, 3, 224, 224), ("tucker2", "svd")),),
                       random_plans=2, repeats=30)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
