"""Parsers for the output of on-device runners (pure functions, no I/O).

Formats, read from the tools' sources:

* ``onnxruntime_perf_test`` (``onnxruntime/test/perftest/performance_runner.cc``) prints a
  summary (``Average inference time cost: X ms``, ``First inference time cost: N ms``...),
  with ``-s`` the order statistics ``P50 Latency: X s`` (seconds), and appends one line per
  timed run to its ``result_file``: ``model,time_cost_s,peak_workingset_bytes,cpu_usage,run``.
* TFLite/LiteRT ``benchmark_model`` (``tensorflow/lite/tools/benchmark/benchmark_model.cc``)
  prints one ``Stat`` line per phase (warm-up, then timed), in microseconds:
  ``count=N first=F curr=C min=A max=B avg=M std=S`` (newer builds add ``p5= median= p95=``;
  ``count=N curr=C`` or ``count=N curr=C(all same)`` when all values are equal), then
  ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A``.
  Lines may carry a log prefix (``INFO: ``, ``I tflite  : ``); numbers may be printed in
  scientific notation (``avg=2.95034e+06``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from latbench.exceptions import RunnerOutputError

__all__ = [
    "RunnerOutputError",
    "TfliteStat",
    "parse_ort_summary",
    "parse_ort_result_file",
    "parse_tflite_stats",
    "parse_tflite_summary",
    "tflite_stat_samples_us",
]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"



# --------------------------------------------------------------------- onnxruntime_perf_test
_ORT_SUMMARY = {
    # key → (regex, factor to seconds)
    "session_creation_s": (rf"Session creation time cost:\s*({_NUM})\s*s\b", 1.0),
    "first_inference_s": (rf"First inference time cost:\s*({_NUM})\s*ms\b", 1e-3),
    "total_inference_s": (rf"Total inference time cost:\s*({_NUM})\s*s\b", 1.0),
    "requests": (rf"Total inference requests:\s*({_NUM})", None),
    "average_s": (rf"Average inference time cost:\s*({_NUM})\s*ms\b", 1e-3),
    "inferences_per_s": (rf"Number of inferences per second:\s*({_NUM})", 1.0),
    "cpu_usage_pct": (rf"Avg CPU usage:\s*({_NUM})", 1.0),
    "peak_working_set_bytes": (rf"Peak working set size:\s*({_NUM})", None),
    "min_s": (rf"Min Latency:\s*({_NUM})\s*s\b", 1.0),
    "max_s": (rf"Max Latency:\s*({_NUM})\s*s\b", 1.0),
    "p50_s": (rf"P50 Latency:\s*({_NUM})\s*s\b", 1.0),
    "p90_s": (rf"P90 Latency:\s*({_NUM})\s*s\b", 1.0),
    "p95_s": (rf"P95 Latency:\s*({_NUM})\s*s\b", 1.0),
    "p99_s": (rf"P99 Latency:\s*({_NUM})\s*s\b", 1.0),
    "p999_s": (rf"P999 Latency:\s*({_NUM})\s*s\b", 1.0),
}


def parse_ort_summary(text: str) -> dict[str, float]:
    """The summary numbers ``onnxruntime_perf_test`` printed, converted to seconds.

    Keys (each present only when printed): ``session_creation_s``, ``first_inference_s``,
    ``total_inference_s``, ``requests``, ``average_s``, ``inferences_per_s``,
    ``cpu_usage_pct``, ``peak_working_set_bytes``, ``min_s``, ``max_s``, ``p50_s``,
    ``p90_s``, ``p95_s``, ``p99_s``, ``p999_s``.

    Raises
    ------
    RunnerOutputError
        If there is no ``Average inference time cost`` line (the run did not finish).
    """
    out: dict[str, float] = {}
    for key, (pattern, factor) in _ORT_SUMMARY.items():
        m = re.search(pattern, text)
        if m:
            v = float(m.group(1))
            out[key] = v * factor if factor is not None else int(v)
    if "average_s" not in out:
        raise RunnerOutputError("no 'Average inference time cost' line in the perf_test output")
    return out


def parse_ort_result_file(text: str) -> list[float]:
    """Per-run latencies in seconds, in run order, from a perf_test ``result_file``.

    Each timed run is a line ``model_name,time_cost_s,peak_workingset,cpu_usage,run_index``;
    the statistics block perf_test appends with ``-s`` is skipped.

    Raises
    ------
    RunnerOutputError
        If the file holds no run line.
    """
    samples: list[tuple[int, float]] = []
    for line in text.splitlines():
        # The model name may itself contain commas: read the numeric fields from the right.
        parts = line.strip().rsplit(",", 4)
        if len(parts) != 5:
            continue
        try:
            cost = float(parts[1])
            run = int(parts[4])
        except ValueError:
            continue
        if math.isfinite(cost) and cost >= 0:
            samples.append((run, cost))
    if not samples:
        raise RunnerOutputError("the perf_test result file holds no per-run line")
    samples.sort(key=lambda rc: rc[0])
    return [c for _, c in samples]


# ------------------------------------------------------------------------ benchmark_model
@dataclass(frozen=True)
class TfliteStat:
    """One ``Stat`` line of ``benchmark_model``, values in microseconds.

    ``first``, ``min``, ``max``, ``avg`` and ``std`` are ``None`` on the short forms
    (``count=N curr=C``); ``all_same`` says every value equalled ``curr``.
    """

    count: int
    curr: float
    first: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    percentiles: dict[str, float] = field(default_factory=dict)
    all_same: bool = False


_STAT_RE = re.compile(r"\bcount=(\d+)(?P<rest>[^\n]*)")
_FIELD_RE = re.compile(rf"\b(first|curr|min|max|avg|std|p\d+|median)=({_NUM})")


def parse_tflite_stats(text: str) -> list[TfliteStat]:
    """Every ``count=...`` line of ``benchmark_model`` output, in order (warm-up first).

    ``count=0`` lines are skipped: they carry no timing.
    """
    stats: list[TfliteStat] = []
    for m in _STAT_RE.finditer(text):
        count = int(m.group(1))
        if count == 0:
            continue
        fields = {k: float(v) for k, v in _FIELD_RE.findall(m.group("rest"))}
        if "curr" not in fields:
            continue
        pct = {k: v for k, v in fields.items() if k.startswith("p") or k == "median"}
        stats.append(TfliteStat(
            count=count, curr=fields["curr"], first=fields.get("first"),
            min=fields.get("min"), max=fields.get("max"), avg=fields.get("avg"),
            std=fields.get("std"), percentiles=pct,
            all_same="(all same)" in m.group("rest") or "first" not in fields,
        ))
    return stats


_SUMMARY_RE = re.compile(
    rf"Inference timings in us:\s*Init:\s*({_NUM}),\s*First inference:\s*({_NUM}),"
    rf"\s*Warmup \(avg\):\s*({_NUM}),\s*Inference \(avg\):\s*({_NUM})"
)


def parse_tflite_summary(text: str) -> dict[str, float]:
    """The ``Inference timings in us`` line, converted to seconds.

    Returns keys ``init_s``, ``first_inference_s``, ``warmup_avg_s``, ``inference_avg_s``.

    Raises
    ------
    RunnerOutputError
        If the line is missing (the benchmark did not finish).
    """
    m = _SUMMARY_RE.search(text)
    if not m:
        raise RunnerOutputError("no 'Inference timings in us' line in the benchmark_model output")
    init, first, warm, inf = (float(g) * 1e-6 for g in m.groups())
    return {"init_s": init, "first_inference_s": first, "warmup_avg_s": warm,
            "inference_avg_s": inf}


def tflite_stat_samples_us(stat: TfliteStat) -> list[float]:
    """The individual run times (µs, in run order) a ``Stat`` line determines exactly.

    ``benchmark_model`` prints no per-run times, but a line with ``count`` ≤ 3 fixes them:
    1 run is ``curr``; 2 runs are ``first`` and ``curr``; for 3 runs the middle one is
    ``min`` or ``max`` when neither ``first`` nor ``curr`` is that extreme, else the median
    when printed, else ``3·avg − first − curr`` (``avg`` is printed with 6 significant
    digits, so this last case is exact to about 1e-5 relative).

    Raises
    ------
    RunnerOutputError
        If ``count`` > 3: the individual runs are then not determined.
    """
    n = stat.count
    if stat.all_same:
        return [stat.curr] * n
    if n == 1:
        return [stat.curr]
    if stat.first is None:
        raise RunnerOutputError(f"Stat line with count={n} lacks 'first'")
    if n == 2:
        return [stat.first, stat.curr]
    if n == 3:
        ends = (stat.first, stat.curr)
        if stat.min is not None and stat.min not in ends:
            mid = stat.min
        elif stat.max is not None and stat.max not in ends:
            mid = stat.max
        elif "median" in stat.percentiles:
            # first and curr are the extremes here, so the median is the middle run.
            mid = stat.percentiles["median"]
        elif stat.avg is not None:
            mid = 3 * stat.avg - stat.first - stat.curr
        else:
            raise RunnerOutputError("Stat line with count=3 lacks 'avg'")
        return [stat.first, mid, stat.curr]
    raise RunnerOutputError(
        f"a Stat line with count={n} does not determine single runs; run at most 3 per call"
    )
