"""What a sweep's variants measured, read back from the store: the table a sweep ends with.

Kept apart from :mod:`latbench.bench.sweep` (orchestration): it only reads the store, so it
gives the same table for a sweep that just ran, one that was resumed, or one another process
finished, and it can be shown again later for the same configuration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from latbench.bench.sweep import SweepConfig, plan_sweep
from latbench.measure.measurement import NOISY_RELATIVE_IQR

__all__ = ["VariantResult", "sweep_results", "noisy_advice", "suggest_next"]


@dataclass(frozen=True)
class VariantResult:
    """The newest stored measurement of one variant of a sweep on one device.

    Attributes
    ----------
    model, label, method : str
        Source model spec, the variant's label (``original``, ``svd@0.5``, ``random#0``) and
        method (``none``, a method name, ``mixed``).
    input_shape : tuple of int
    macs : float
        Multiply–accumulates of the variant (its stored layer table).
    median_ms, iqr_ms : float or None
        Latency statistics in ms (``None``: not measured, e.g. failed).
    n_samples : int
        Timed runs.
    speedup : float or None
        The original's median over this variant's (same model, input shape and device).
    noisy : bool
        IQR / median ≥ :data:`~latbench.measure.measurement.NOISY_RELATIVE_IQR`.
    """

    model: str
    label: str
    method: str
    input_shape: tuple[int, ...]
    macs: float | None
    median_ms: float | None
    iqr_ms: float | None
    n_samples: int
    speedup: float | None
    noisy: bool

    @property
    def relative_iqr(self) -> float | None:
        if self.median_ms is None or self.iqr_ms is None or self.median_ms <= 0:
            return None
        return self.iqr_ms / self.median_ms

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape),
                "relative_iqr": self.relative_iqr}


def sweep_results(config: SweepConfig, device: str, db: str | Path) -> list[VariantResult]:
    """One row per variant of ``config`` (in sweep order) with its newest measurement on ``device``.

    Only the store is read (no device is opened); models are built only where the sweep's
    own plan needs them (random plans). With ``config.threads`` set, only measurements at
    that thread count are read.

    Parameters
    ----------
    config : SweepConfig
        The sweep (as given to :func:`latbench.bench.sweep.run_sweep`).
    device : str
        The device name measurements are stored under.
    db : str or Path
        The latency store.

    Returns
    -------
    list of VariantResult
        Variants without a measurement have ``median_ms=None``.
    """
    from latbench.data.store import Store, shape_str
    from latbench.models import resolve_model

    nets: dict[str, Any] = {}

    def resolve(spec: str):
        if spec not in nets:
            nets.clear()
            nets[spec] = resolve_model(spec, seed=config.seed, trust_file=config.trust_file)
        return nets[spec]

    variants = plan_sweep(config, resolve)
    nets.clear()
    sql = ("SELECT m.median_ms, m.iqr_ms, m.n_samples, t.features FROM measurements m "
           "JOIN variants v ON v.id = m.variant_id JOIN devices d ON d.id = m.device_id "
           "JOIN layer_tables t ON t.id = v.layer_table_id "
           "WHERE v.content_hash = ? AND v.input_shape = ? AND d.name = ?"
           + (" AND m.threads = ?" if config.threads is not None else "")
           + " ORDER BY COALESCE(m.timestamp, m.created_at) DESC, m.id DESC LIMIT 1")
    rows: list[tuple[Any, ...]] = []
    with Store(db) as store:
        for v in variants:
            args: Sequence[Any] = (v.key, shape_str(v.input_shape), device) + \
                ((config.threads,) if config.threads is not None else ())
            rows.append(store.connection.execute(sql, args).fetchone())
    originals = {(v.model, v.input_shape): r[0] for v, r in zip(variants, rows)
                 if v.plan is None and r is not None}
    out = []
    for v, r in zip(variants, rows):
        med, iqr, n, feats = r if r is not None else (None, None, 0, None)
        base = originals.get((v.model, v.input_shape))
        macs = json.loads(feats).get("macs") if feats else None
        out.append(VariantResult(
            v.model, v.label, v.method, tuple(v.input_shape), macs, med, iqr, int(n or 0),
            base / med if base and med else None,
            bool(med and iqr is not None and iqr / med >= NOISY_RELATIVE_IQR)))
    return out


def noisy_advice(results: Sequence[VariantResult], *, device: str, threads: int | None,
                 adaptive: bool) -> str | None:
    """One line for a user whose timings were spread, or ``None`` if none were.

    The advice follows :mod:`torch.utils.benchmark` (whose measurements warn at IQR/median
    ≥ 10 %): a quiet machine, fewer threads than cores, adaptive sampling, more repeats.
    """
    measured = [r for r in results if r.median_ms is not None]
    noisy = [r for r in measured if r.noisy]
    if not noisy:
        return None
    worst = max(r.relative_iqr or 0.0 for r in noisy)
    tips = ["run on a quiet machine (close other programs; on a phone: screen off, cool, "
            "charged)",
            "pin fewer threads than cores (--threads 1 on a loaded machine)"
            if threads is None or threads > 1 else "keep --threads 1"]
    tips.append("keep --adaptive (the default) or raise --repeats" if adaptive
                else "drop --fixed-repeats (adaptive sampling) or raise --repeats")
    return (f"{len(noisy)} of {len(measured)} measurements on {device} are noisy (IQR/median "
            f"≥ {NOISY_RELATIVE_IQR:.0%}, up to {worst:.0%}): their medians may be off; "
            + "; ".join(tips) + ", then measure again into a fresh --db")


def suggest_next(config: SweepConfig, results: Sequence[VariantResult], *, device: str,
                 db: str | Path) -> list[str]:
    """What to run after a sweep, most useful first (commands, or a sentence with one).

    A search on the first model at a speed-up the sweep showed reachable (80 % of the best
    measured, between 1.1× and 2×); then training a predictor: ``lut`` when layers were
    measured alone, else ``flops`` (two parameters) until the device has
    :data:`~latbench.predictor.evaluate.MIN_TRAIN_MEASUREMENTS` measurements, ``gbm`` from
    there; ``bench report`` once there are enough to test on, else how to get more.
    """
    from latbench.data.store import Store
    from latbench.exceptions import LatbenchError
    from latbench.models import default_input_shape
    from latbench.predictor.evaluate import MIN_TEST_MEASUREMENTS, MIN_TRAIN_MEASUREMENTS

    with Store(db) as store:
        n = int(store.connection.execute(
            "SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id "
            "WHERE d.name = ?", (device,)).fetchone()[0])
    out = []
    first = next((r for r in results if r.label == "original" and r.median_ms), None)
    if first is not None:
        best = max((r.speedup for r in results if r.model == first.model and r.speedup),
                   default=None)
        target = 1.5 if best is None else max(1.1, min(2.0, round(0.8 * best, 1)))
        try:
            default = tuple(default_input_shape(first.model))
        except LatbenchError:
            default = None
        inp = "" if default == first.input_shape else \
            f" --input {'x'.join(map(str, first.input_shape))}"
        model = first.model if " " not in first.model and "|" not in first.model \
            else f"'{first.model}'"
        name = Path(first.model.split(":")[0].split("@")[0]).stem
        threads = f" --threads {config.threads}" if config.threads is not None else ""
        out.append(f"bench search {model} --device {device} --speedup {target:g}{inp}{threads} "
                   f"--out search-{name}/")
    kind = "lut" if config.per_layer else ("gbm" if n >= MIN_TRAIN_MEASUREMENTS else "flops")
    out.append(f"bench predictor train --db {db} --device {device} --kind {kind} "
               f"--out {device}-{kind}.predictor")
    if n >= 4 * MIN_TEST_MEASUREMENTS:
        out.append(f"bench report --db {db} --device {device} --out report/")
    else:
        out.append(f"more data for learned predictors and `bench report` ({n} measurements on "
                   f"{device} now, {4 * MIN_TEST_MEASUREMENTS} wanted): run this sweep again "
                   "with --random-plans 30")
    return out
