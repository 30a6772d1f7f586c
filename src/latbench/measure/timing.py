"""The sampling loop every in-process device shares: warm-up, repeats, adaptive batches.

A device turns "run the model once" into a zero-argument callable and hands it to
:func:`sample`; the loop decides how many times to call it and returns the raw samples.
Devices that time on the host wrap their run with :func:`wall_clock`; devices with their
own clock (CUDA events) pass a callable that returns the seconds it measured.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from latbench.measure.measurement import DEFAULT_CONFIDENCE_THRESHOLD
from latbench.exceptions import UserInputError

__all__ = [
    "Sampling",
    "TimingResult",
    "StopReason",
    "sample",
    "wall_clock",
    "relative_iqr",
]

#: Why the loop stopped: the fixed count was taken, the samples became confident,
#: the repeat ceiling was reached, or the time cap ran out.
StopReason = Literal["repeats", "confident", "max_repeats", "time_cap"]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Sampling:
    """How many timed runs to take beyond the spec's fixed ``repeats``.

    With ``adaptive=False`` the loop takes exactly ``repeats`` samples. With
    ``adaptive=True`` it takes ``repeats`` samples (the minimum) and then keeps adding
    batches of ``batch`` samples until IQR / median < ``threshold``, until
    ``max_repeats`` samples are held, or until ``max_time_s`` seconds of wall time have
    passed since the first timed run, whichever comes first. The minimum is always taken,
    even past the time cap, so a measurement never has fewer samples than its spec says.

    Parameters
    ----------
    adaptive : bool
        Whether to keep sampling until confident.
    max_repeats : int
        Ceiling on the number of timed samples in adaptive mode.
    max_time_s : float
        Wall-time cap in seconds on the timed phase in adaptive mode (warm-up excluded).
    batch : int
        Samples taken between two confidence checks.
    threshold : float
        Relative IQR (IQR / median, a fraction) under which samples count as confident.

    Raises
    ------
    UserInputError
        If a field is out of range.
    """

    adaptive: bool = False
    max_repeats: int = 1000
    max_time_s: float = 30.0
    batch: int = 10
    threshold: float = DEFAULT_CONFIDENCE_THRESHOLD

    def __post_init__(self) -> None:
        if self.max_repeats < 1:
            raise UserInputError(f"max_repeats must be at least 1, got {self.max_repeats}")
        if not (math.isfinite(self.max_time_s) and self.max_time_s > 0):
            raise UserInputError(f"max_time_s must be a positive number of seconds, got "
                                 f"{self.max_time_s}")
        if self.batch < 1:
            raise UserInputError(f"batch must be at least 1, got {self.batch}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise UserInputError(f"threshold must be a positive fraction, got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimingResult:
    """What the loop measured.

    Attributes
    ----------
    samples_s : tuple of float
        Timed runs in seconds, in order.
    warmup_s : tuple of float
        Warm-up runs in seconds (kept for diagnosis, never used in statistics).
    stop_reason : StopReason
        Why sampling stopped.
    elapsed_s : float
        Wall time of the timed phase in seconds, loop bookkeeping included.
    """

    samples_s: tuple[float, ...]
    warmup_s: tuple[float, ...]
    stop_reason: StopReason
    elapsed_s: float

    def extra(self) -> dict[str, Any]:
        """Facts for :attr:`Measurement.extra` (JSON-ready)."""
        return {
            "stop_reason": self.stop_reason,
            "timed_phase_s": self.elapsed_s,
            "warmup_s": list(self.warmup_s),
        }


def relative_iqr(samples: Any) -> float:
    """IQR / median of ``samples`` (unit-free), computed as :class:`Measurement` does.

    Returns ``inf`` for an empty sequence or a non-positive median.
    """
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        return float("inf")
    q75, q50, q25 = np.percentile(a, [75, 50, 25])
    return float((q75 - q25) / q50) if q50 > 0 else float("inf")


def wall_clock(fn: Callable[[], object], clock: Callable[[], int] = time.perf_counter_ns
               ) -> Callable[[], float]:
    """Wrap ``fn`` so that calling the wrapper runs it once and returns its wall time in s.

    ``perf_counter_ns`` is read immediately around the call so that the only extra cost
    inside the timed region is one Python call frame.
    """

    def timed() -> float:
        t0 = clock()
        fn()
        return (clock() - t0) * 1e-9

    return timed


def sample(
    timed_run: Callable[[], float],
    *,
    warmup: int,
    repeats: int,
    sampling: Sampling | None = None,
    progress: ProgressFn | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
    pause_gc: bool = True,
) -> TimingResult:
    """Warm up, then take timed samples as ``sampling`` says.

    Parameters
    ----------
    timed_run : callable
        Runs the model once and returns that run's latency in seconds (see :func:`wall_clock`).
    warmup : int
        Untimed runs first (they fill caches, pick kernels, grow memory arenas).
    repeats : int
        Timed runs; the minimum in adaptive mode.
    sampling : Sampling, optional
        Adaptive policy; ``None`` means exactly ``repeats`` samples.
    progress : callable, optional
        Called as ``progress(done, total)`` after each timed sample, outside the timed
        region; ``total`` is ``repeats``, or ``max_repeats`` in adaptive mode.
    clock : callable
        Nanosecond clock for the time cap (injectable for tests).
    pause_gc : bool
        Collect garbage first and keep the collector off while timing (real timings); a
        simulated clock turns it off, since a full collection costs more than its runs.

    Returns
    -------
    TimingResult

    Raises
    ------
    UserInputError
        If ``warmup`` < 0, ``repeats`` < 1, or ``max_repeats`` < ``repeats``.
    """
    if warmup < 0:
        raise UserInputError(f"warm-up runs must be 0 or more, got {warmup}")
    if repeats < 1:
        raise UserInputError(f"repeats must be at least 1, got {repeats}")
    policy = sampling or Sampling()
    if policy.adaptive and policy.max_repeats < repeats:
        raise UserInputError(
            f"max_repeats ({policy.max_repeats}) is below repeats ({repeats}); raise it or "
            "lower repeats"
        )
    total = policy.max_repeats if policy.adaptive else repeats
    cap_ns = int(policy.max_time_s * 1e9)

    # A collection pause inside a timed run would be charged to the model; Python's own
    # timeit disables the collector for the same reason.
    gc_was_enabled = gc.isenabled()
    if pause_gc:
        gc.collect()
        gc.disable()
    try:
        warm = tuple(timed_run() for _ in range(warmup))
        samples: list[float] = []
        start = clock()

        def take(n: int) -> None:
            for _ in range(n):
                samples.append(timed_run())
                if progress is not None:
                    progress(len(samples), total)

        take(repeats)
        reason: StopReason = "repeats"
        if policy.adaptive:
            while True:
                if relative_iqr(samples) < policy.threshold:
                    reason = "confident"
                    break
                if len(samples) >= policy.max_repeats:
                    reason = "max_repeats"
                    break
                if clock() - start >= cap_ns:
                    reason = "time_cap"
                    break
                take(min(policy.batch, policy.max_repeats - len(samples)))
        elapsed = (clock() - start) * 1e-9
    finally:
        if gc_was_enabled:
            gc.enable()
    return TimingResult(tuple(samples), warm, reason, elapsed)
