"""The search's measurement policy: what is measured on the device, when, and against what.

A device's speed moves while a search runs (a CPU's load, a phone's temperature). A plan's
latency therefore means something only beside the original's latency *in the same window*:
the policy judges every plan by its ratio to the original measured around it, and expresses
it in the search's **reference ms**, ``ratio × original at the start of the search``, the
scale the budget and the controller work in. So:

* a round measures its plan right after the original (the original is measured again
  unless the device's last measurement was of it): a back-to-back pair;
* a round that lands far from its prediction (:data:`SURPRISE`) is as likely a change of the
  device as a bad prediction: the original is measured again before the controller acts on
  it, and the plan right after it. If the original moved (:data:`DRIFT`), the round is judged
  on that new back-to-back pair alone; otherwise both pairs count, each side by its lower
  median (load only ever adds time);
* a plan just over the budget (a near miss, within the slack) is measured again and the
  lower median kept;
* plans of the uniform baseline are measured the same way, each right after the original;
* the final plan is verified back to back with the original, interleaved ``O C O C … O``
  (:data:`VERIFY_PAIRS` plan measurements, each between two of the original); bursts of load
  (a median above both its neighbours) are replaced (:func:`despike`), the plan's ratio is
  the median over its measurements of its median over the mean of the two original medians
  around it, and the reported latency, speed-up and "met" come from that verification.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["MeasurementPolicy", "Window", "Verification", "despike", "SURPRISE", "DRIFT",
           "VERIFY_PAIRS", "DRIFT_NOTE"]

#: A round whose reference latency is further than this (relative) from its prediction is a
#: surprise, and the original is measured again before the search changes course. Costs
#: anchored to the measured original predict plans within ~10–20 % on our CPU (BENCHMARKS.md),
#: so a larger miss is more likely the device than the prediction (the issue's round measured
#: 44.6 ms against 8.2 ms predicted because the machine had slowed).
SURPRISE = 0.25

#: Two medians of the original further apart than this (relative) mean the device's speed
#: changed between them, and measurements from before and after must not share a window. Two
#: medians of one model on a loaded CPU differ by up to ~5–8 % without any change of load.
DRIFT = 0.10

#: Measurements of the plan in the final verification, each between two of the original
#: (``O C O C O C O C O``). Judging each against the mean of its two neighbours cancels a linear
#: ramp of the device's speed, and the median over four is unmoved by one step of it (a step
#: corrupts one of them); four keeps the verification at nine measurements.
VERIFY_PAIRS = 4

#: When the original's medians over the search spread by more than this share of the first,
#: the result's notes say how much the device moved.
DRIFT_NOTE = 0.10


@dataclass
class Window:
    """Medians (ms) of a plan and of the original measured around it, in one window."""

    plan_ms: list[float]
    original_ms: list[float]
    remeasured: list[str] = field(default_factory=list)  # "original", "plan", "drift"

    @property
    def plan(self) -> float:
        """The plan's latency in this window: its lowest median (load only adds time)."""
        return min(self.plan_ms)

    @property
    def original(self) -> float:
        """The original's latency in this window: its lowest median."""
        return min(self.original_ms)

    @property
    def ratio(self) -> float:
        """Plan latency over original latency (1 / speed-up)."""
        return self.plan / self.original


@dataclass(frozen=True)
class Verification:
    """The final plan measured back to back with the original.

    ``originals`` and ``plans`` are medians (ms) in measurement order (``O C O … C O``);
    ``speedup`` is ``1 / median_i(plan_i / mean(original_i, original_i+1))``;
    ``original_ms`` the median of the original's medians, and ``plan_ms = original_ms /
    speedup`` (so the three always agree).
    """

    originals: tuple[float, ...]
    plans: tuple[float, ...]
    speedup: float
    original_ms: float
    plan_ms: float
    spikes: tuple[str, ...] = ()  # measurements taken for bursts of load (see despike)
    ratios: tuple[float, ...] = ()  # each plan median over the mean of the originals around it
    sequences: int = 1  # O C … O sequences pooled (a near miss is verified again)

    def to_dict(self) -> dict[str, Any]:
        return {"original_ms_each": list(self.originals), "measured_ms_each": list(self.plans),
                "speedup": self.speedup, "original_ms": self.original_ms,
                "measured_ms": self.plan_ms,
                "order": " ".join(["O" + "CO" * VERIFY_PAIRS] * self.sequences),
                "spikes": list(self.spikes), "sequences": self.sequences}


def _agree(values: Sequence[float]) -> bool:
    return max(values) <= min(values) * (1.0 + DRIFT)


def despike(medians: Sequence[float],
            end_ok: Callable[[int], bool] = lambda i: True) -> tuple[list[float], list[int]]:
    """Medians of one model in measurement order, with bursts of load replaced.

    A median above each of its neighbours (of the same model) by more than :data:`DRIFT`,
    where those neighbours agree within it, is a burst: load only adds time, while a step or
    a ramp of the device's speed moves the neighbours too. It is replaced by their mean. At
    either end the one neighbour must agree with the next one (a ramp does not), and
    ``end_ok(index)`` must hold (the caller's check that the device did not step there).

    Returns
    -------
    (list of float, list of int)
        The medians, and the indices replaced.
    """
    out, spikes, n = list(medians), [], len(medians)
    for i, v in enumerate(medians):
        nb = [medians[j] for j in (i - 1, i + 1) if 0 <= j < n]
        if not nb or not all(v > x * (1.0 + DRIFT) for x in nb):
            continue
        if len(nb) == 2 and not _agree(nb):
            continue
        if len(nb) == 1:
            j = 1 if i == 0 else n - 2
            k = 2 if i == 0 else n - 3
            if not (0 <= k < n and _agree([medians[j], medians[k]]) and end_ok(i)):
                continue
        out[i] = sum(nb) / len(nb)
        spikes.append(i)
    return out, spikes


def despike_interleaved(originals: Sequence[float],
                        plans: Sequence[float]) -> tuple[list[float], list[float], tuple[str, ...]]:
    """:func:`despike` both models of an ``O C O … C O`` sequence.

    The original's first (they are never alone in the window); a plan's first or last median
    counts as a burst only where the original's medians around it and the next one agree
    (so a step of the device there is not taken for one).
    """
    o, o_spikes = despike(originals)

    def plan_end_ok(i: int) -> bool:
        around = [o[i], o[i + 1], o[i + 2] if i == 0 else o[i - 1]]
        return _agree(around)

    c, c_spikes = despike(plans, plan_end_ok)
    return o, c, tuple([f"original {i + 1}" for i in o_spikes] + [f"plan {i + 1}" for i in c_spikes])


class MeasurementPolicy:
    """Exports and measures models on the device following the rules of the module docstring.

    Parameters
    ----------
    device : Device
    shape : input shape of every model
    work : directory for exported artifacts (each removed after its measurement)
    threads, warmup, repeats : measurement settings of every whole-model measurement

    Attributes
    ----------
    seconds : float
        Time spent exporting and measuring (kept apart from the search's own time).
    originals : list of float
        Every median of the original (ms), in measurement order.
    stale : bool
        The device's last measurement was not of the original (the next plan is preceded
        by one). Set it when the device was used outside the policy.
    """

    def __init__(self, device: Any, shape: tuple[int, ...], work: Path, threads: int | None,
                 warmup: int, repeats: int) -> None:
        self.device, self.shape, self.work = device, shape, work
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.seconds = 0.0
        self.originals: list[float] = []
        self.stale = True
        self._original_net: nn.Module | None = None
        self._exported: list[tuple[nn.Module, Any]] = []  # (model, its artifact), at most two

    # ------------------------------------------------------------------ single measurements
    def measure(self, net: nn.Module, name: str) -> float:
        """Return the median latency (ms) of ``net`` on the device (exported once while it is
        the original or the plan measured last: pairs and verifications measure the same two
        models again and again).

        Raises
        ------
        DeviceError
            If the device fails.
        """
        from latbench.bench.run import measure_artifact, spread_guard

        t0 = time.perf_counter()
        self.stale = True
        try:
            return float(measure_artifact(
                self.device, self._artifact(net, name), threads=self.threads, warmup=self.warmup,
                repeats=self.repeats, sampling=spread_guard(self.device, self.repeats)).median_ms)
        finally:
            self.seconds += time.perf_counter() - t0

    def _artifact(self, net: nn.Module, name: str) -> Any:
        """The exported ``net``: the original's kept for the whole search, one other kept
        until another is measured (its file then removed)."""
        from latbench.bench.run import export_for

        for model, art in self._exported:
            if model is net:
                return art
        keep = [(m, a) for m, a in self._exported if m is self._original_net]
        for m, a in self._exported:
            if m is not self._original_net:
                a.path.unlink(missing_ok=True)  # before the export: the name may be the same
        art = export_for(self.device, net, self.shape, self.work / name)  # the device's format
        self._exported = keep + [(net, art)]
        return art

    def start(self, net: nn.Module) -> float:
        """Measure the original for the first time; its median is the reference (ms)."""
        self._original_net = net
        return self.original()

    def original(self) -> float:
        """Measure the original again; returns its median (ms)."""
        assert self._original_net is not None, "start() first"
        ms = self.measure(self._original_net, f"original{len(self.originals)}")
        self.originals.append(ms)
        self.stale = False
        return ms

    @property
    def reference_ms(self) -> float:
        """The original's first median: the scale budgets and predictions are in."""
        return self.originals[0]

    def judged(self, window: Window) -> float:
        """A window's plan in reference ms: its ratio to the original × the reference."""
        return window.ratio * self.reference_ms

    # ------------------------------------------------------------------ rounds
    def measure_round(self, net: nn.Module, name: str, predicted_ms: float, budget_ms: float,
                      slack: float, on_first: Callable[[Window], None] | None = None) -> Window:
        """Measure one round's plan and settle its window (``predicted_ms`` and ``budget_ms``
        in reference ms). ``on_first`` sees the window after the first measurement, so a
        device that fails during a re-measurement leaves the round known.
        """
        if self.stale:
            self.original()
        w = Window([self.measure(net, name)], [self.originals[-1]])
        if on_first is not None:
            on_first(w)
        judged = self.judged(w)
        if abs(judged - predicted_ms) > SURPRISE * max(predicted_ms, 1e-12):
            before = w.original
            o_new = self.original()
            c_new = self.measure(net, f"{name}b")
            if abs(o_new / before - 1.0) > DRIFT:
                w = Window([c_new], [o_new], ["original", "plan", "drift"])
            else:
                w.original_ms.append(o_new)
                w.plan_ms.append(c_new)
                w.remeasured += ["original", "plan"]
        if len(w.plan_ms) == 1 and budget_ms < self.judged(w) <= budget_ms * (1.0 + slack):
            w.plan_ms.append(self.measure(net, f"{name}c"))
            w.remeasured.append("plan")
        return w

    def measure_in_window(self, net: nn.Module, name: str, scale_to_ms: float) -> float:
        """A plan's latency against the original measured right before it, scaled to an
        original of ``scale_to_ms`` (e.g. the verification's), in ms."""
        if self.stale:
            self.original()
        return Window([self.measure(net, name)], [self.originals[-1]]).ratio * scale_to_ms

    # ------------------------------------------------------------------ verification
    def verify(self, net: nn.Module, name: str, pool: Verification | None = None) -> Verification:
        """Measure ``net`` interleaved with the original (``O C O … C O``, :data:`VERIFY_PAIRS`
        of the plan); with ``pool``, a verification of the same plan to pool this one with."""
        originals = [self.original()]
        plans = []
        for i in range(VERIFY_PAIRS):
            plans.append(self.measure(net, f"{name}-{i}"))
            originals.append(self.original())
        o, c, spikes = despike_interleaved(originals, plans)
        ratios = [ci / ((o[i] + o[i + 1]) / 2.0) for i, ci in enumerate(c)]
        if pool is not None:
            originals, plans = list(pool.originals) + originals, list(pool.plans) + plans
            o = [v for v in despike_interleaved(pool.originals, pool.plans)[0]] + o
            ratios, spikes = list(pool.ratios) + ratios, pool.spikes + spikes
        ratio, original = statistics.median(ratios), statistics.median(o)
        return Verification(tuple(originals), tuple(plans), 1.0 / ratio, original,
                            original * ratio, spikes, tuple(ratios),
                            1 + (pool.sequences if pool else 0))

    def drift(self) -> dict[str, Any]:
        """How much the original moved during the search (medians in ms; ``moved`` is
        ``(max − min) / first``)."""
        o = self.originals
        return {"measurements_ms": list(o), "first_ms": o[0], "last_ms": o[-1], "min_ms": min(o),
                "max_ms": max(o), "moved": (max(o) - min(o)) / o[0]}
