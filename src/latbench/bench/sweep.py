"""``bench sweep``: compress, export and measure variants into the latency store.

Every variant is keyed before any work (:func:`~latbench.bench.variants.variant_key`), so a
rerun of the same sweep skips what the store already holds for this device, runtime and
thread count; each measurement is committed as soon as it is taken, so an interrupted sweep
loses at most the variant in flight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import random
import tempfile
import time
import tomllib
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
from latbench.exceptions import DeviceError, ExportError, OpProfileError, UserInputError

__all__ = ["Target", "SweepConfig", "SweepEvent", "SweepSummary", "run_sweep", "load_sweep_config",
           "plan_sweep", "default_config"]

#: What one variant (or one layer) may fail with and be recorded as failed while the sweep
#: goes on: a plan that does not fit the model, or an export the runtime cannot take. Anything
#: else is a bug in latbench and stops the sweep with its traceback (what was measured is kept).
RECORDABLE_ERRORS = (UserInputError, ExportError)

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
    ``measured``, ``skipped`` (already stored) or ``failed``; ``median_ms`` is set if measured,
    ``error`` if failed. ``done`` of ``total`` items of the phase are finished.
    """

    done: int
    total: int
    label: str
    status: str
    median_ms: float | None = None
    error: str | None = None
    phase: str = "variants"


@dataclass
class SweepSummary:
    """What a sweep did: counts of variants and layers, and seconds spent per stage."""

    measured: int = 0
    skipped: int = 0
    failed: int = 0
    layers_measured: int = 0
    layers_skipped: int = 0
    layers_failed: int = 0
    layers_profiled: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"compress": 0.0, "export": 0.0,
                                                               "measure": 0.0})

    def to_dict(self) -> dict[str, Any]:
        return {"measured": self.measured, "skipped": self.skipped, "failed": self.failed,
                "layers_measured": self.layers_measured, "layers_skipped": self.layers_skipped,
                "layers_failed": self.layers_failed, "layers_profiled": self.layers_profiled,
                "seconds": dict(self.seconds)}


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
    """
    out: list[Variant] = []
    for t in config.targets:
        out.extend(uniform_variants(t.model, t.input_shape, t.methods, t.ranks,
                                    layers=config.layers, seed=config.seed))
        if config.random_plans:
            rng = random.Random(f"{config.seed}:{t.model}:{t.input_shape}")
            net = resolve(t.model)
            for i in range(config.random_plans):
                plan = random_plan(net, t.methods, t.ranks, rng)
                out.append(Variant(t.model, t.input_shape, plan, "mixed", f"random#{i}", config.seed))
    seen: set[str] = set()
    return [v for v in out if not (v.key in seen or seen.add(v.key))]


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
        Where ONNX files are written (each is deleted once measured); a temporary directory
        by default.
    progress : callable, optional
        Called with a :class:`SweepEvent` after each variant and each layer.

    Returns
    -------
    SweepSummary
        Counts, and seconds spent compressing, exporting and measuring (in seconds).

    Raises
    ------
    UserInputError
        For an unknown model, method or device, or a bad option.
    DeviceError
        If the device is lost; the message says how much was kept.
    """
    from latbench.compress import reuse_subspaces
    from latbench.data.store import Store
    from latbench.devices.registry import get_device
    from latbench.models import resolve_model

    _check_config(config)
    # Memory stays flat across models: one model is held at a time (built again if a later
    # target names it), and released with its eigendecompositions once its variants are done.
    nets: dict[str, nn.Module] = {}

    def resolve(spec: str) -> nn.Module:
        if spec not in nets:
            nets.clear()
            nets[spec] = resolve_model(spec, seed=config.seed, trust_file=config.trust_file)
        return nets[spec]

    for t in config.targets:  # an unknown model or a wrong input → error before any work
        _check_runs(resolve(t.model), t)
    variants = plan_sweep(config, resolve)
    nets.clear()  # before the heap is frozen (a frozen model would outlive its phase)
    summary = SweepSummary()
    layer_rows: dict[str, dict] = {}
    # The device first: an unknown name must fail before a database file is created.
    with get_device(device, devices_file) as dev, Store(db) as store, \
            _workdir(workdir) as work, _frozen_heap():
        dev_id = store.add_device(dev.info())
        runtime = runtime_identity(dev, config.threads)
        fmt = dev.capabilities.format
        # Phones whose runner profiles operators give every layer's latency from one extra
        # call per variant; layers a profile cannot map are measured alone at the end.
        profiles = config.per_layer and dev.capabilities.op_profiles

        def emit(i: int, v_label: str, status: str, med: float | None = None, err: str | None = None):
            if progress is not None:
                progress(SweepEvent(i, len(variants), v_label, status, med, err))

        for _, group in itertools.groupby(enumerate(variants, start=1), key=lambda iv: iv[1].model):
            # Each event is sent when the next variant is about to start, the last one of a
            # model once the model is released: what a progress callback sees at the end of
            # a model's variants is the memory the sweep goes on with.
            pending: tuple | None = None
            try:
                # reuse_subspaces: the variants of one model share its weights, so SVD /
                # Tucker-2 factor each matrix once per model rather than once per variant; the
                # cache goes with the model.
                with reuse_subspaces():
                    for i, v in group:
                        if pending is not None:
                            emit(*pending)
                            pending = None
                        outcome = _sweep_variant(v, resolve, dev, store, dev_id, runtime, fmt,
                                                 profiles, work, config, summary,
                                                 layer_rows)
                        pending = (i, f"{v.model} {v.label}", *outcome)
                nets.clear()
                _release_memory()
            finally:
                if pending is not None:
                    emit(*pending)

        if config.per_layer:
            _measure_layers(store, dev, dev_id, layer_rows, config, work, runtime, summary,
                            progress)
    return summary


def _sweep_variant(v: Variant, resolve, dev, store, dev_id, runtime, fmt: str, profiles: bool,
                   work, config, summary: SweepSummary, layer_rows: dict
                   ) -> tuple[str, float | None, str | None]:
    """Compress, export (in the device's format), measure, profile and store one variant; its
    event's ``(status, median_ms, error)``."""
    from latbench.bench.run import export_for, measure_artifact, spread_guard
    from latbench.compress.model import compress_model
    from latbench.data.executed import executed_layer_table
    from latbench.data.features import layer_table

    key = v.key
    measured = store.has_measurement(key, v.input_shape, dev.name, *runtime, format=fmt)
    to_profile = profiles and not store.has_op_profile(key, dev.name, *runtime, format=fmt)
    if measured and not to_profile:
        summary.skipped += 1
        if config.per_layer:
            _collect_layers(store.variant_layers(key, v.input_shape), layer_rows)
        return "skipped", None, None
    stage = "compress"
    try:
        t0 = time.perf_counter()
        net = resolve(v.model)
        if v.plan is not None:
            net = compress_model(net, v.plan, input_shape=v.input_shape, seed=v.seed).model
        table = layer_table(net, v.input_shape)
        t1 = time.perf_counter()
        stage = "export"
        artifact = export_for(dev, net, v.input_shape, work / key)
        # The table stored is the graph the device's runtime executes where it can say
        # (ONNX Runtime's optimised graph on cpu/cuda), the module's otherwise.
        table = executed_layer_table(dev, artifact, table, threads=config.threads)
        t2 = time.perf_counter()
    except RECORDABLE_ERRORS as exc:  # one bad variant must not end a long sweep
        summary.failed += 1
        store.add_failure(stage, str(exc), device_id=dev_id, source_model=v.model,
                          content_hash=key, plan=v.plan)
        return "failed", None, f"{stage}: {exc}"
    summary.seconds["compress"] += t1 - t0
    summary.seconds["export"] += t2 - t1
    stage = "measure"
    m = None
    try:
        if not measured:
            m = measure_artifact(
                dev, artifact, threads=config.threads, warmup=config.warmup,
                repeats=config.repeats,
                sampling=spread_guard(dev, config.repeats) if config.adaptive else None)
            summary.seconds["measure"] += time.perf_counter() - t2
            with store.transaction():
                vid = store.add_variant(v.model, v.input_shape, table, plan=v.plan,
                                        method=v.method, content_hash=key)
                store.add_measurement(vid, dev_id, m)
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
    from latbench.data.features import layer_table

    try:
        layer_table(net, target.input_shape)
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for a wrong shape
        shape = "x".join(str(s) for s in target.input_shape)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"model {target.model!r} does not run on input {shape} ({first}); "
                             "give the input shape it takes with --input") from None


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
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="latbench-sweep-") as tmp:
        yield Path(tmp)


def _collect_layers(table: pd.DataFrame | None, into: dict[str, dict]) -> None:
    """Add the distinct layer configurations of ``table`` that are measured alone to ``into``."""
    from latbench.data.features import layer_key

    if table is None:
        return
    for _, row in table.iterrows():
        if row["op"] in LAYER_OPS_MEASURED_ALONE:
            into.setdefault(layer_key(row), row.to_dict())


def _measure_layers(store, dev, dev_id, layer_rows, config, work, runtime, summary, progress) -> None:
    from latbench.bench.run import spread_guard

    items = list(layer_rows.items())

    def emit(j: int, label: str, status: str, med: float | None = None, err: str | None = None):
        if progress is not None:
            progress(SweepEvent(j, len(items), label, status, med, err, phase="layers"))

    for j, (lkey, row) in enumerate(items, start=1):
        label = f"layer {row['op']} {row['in_channels']}→{row['out_channels']} " \
                f"{row['kernel_h']}x{row['kernel_w']}/{row['stride_h']} g{row['groups']} " \
                f"@{row['in_h']}x{row['in_w']}"
        if store.has_layer_measurement(lkey, dev.name, *runtime, format=dev.capabilities.format):
            summary.layers_skipped += 1
            emit(j, label, "skipped")
            continue
        try:
            m = measure_layer(dev, row, work, threads=config.threads, warmup=config.warmup,
                              repeats=config.repeats, seed=config.seed,
                              sampling=spread_guard(dev, config.repeats, LAYER_MAX_TIME_S)
                              if config.adaptive else None)
        except DeviceError as exc:
            raise DeviceError(f"{exc} — per-layer measurements stopped at {j - 1}/{len(items)}; "
                              "everything measured is kept, rerun the same command to resume"
                              ) from None
        except RECORDABLE_ERRORS as exc:  # one layer that cannot be built or exported
            msg = str(exc)
            summary.layers_failed += 1
            store.add_failure("layer", f"{lkey}: {msg}", device_id=dev_id)
            emit(j, label, "failed", err=msg)
            continue
        store.add_layer_measurement(dev_id, row, m)
        summary.layers_measured += 1
        emit(j, label, "measured", m.median_ms)


def default_config(**overrides: Any) -> SweepConfig:
    """The no-argument sweep: ResNet-18 at 224×224, Tucker-2 and SVD at ¼ and ½ ranks, 2 random plans.

    CP is left out of the default (ask for it with ``--methods``): its ALS took about 10 of the
    12 minutes of a default sweep that included it on the 2-core development machine.
    """
    base = SweepConfig((Target("resnet18", (1, 3, 224, 224), ("tucker2", "svd")),),
                       random_plans=2, repeats=30)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
