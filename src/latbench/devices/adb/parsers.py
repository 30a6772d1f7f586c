"""Parsers for the output of on-device runners (pure functions, no I/O).

Every format below was read from the tools' sources and their history; outputs of releases
people still run are accepted, anything else is refused with a message naming the versions
latbench reads (:class:`~latbench.exceptions.RunnerOutputError`).

``onnxruntime_perf_test`` (``onnxruntime/test/perftest/performance_runner.cc``)
    * ONNX Runtime 1.x prints ``Session creation time cost: X s``, ``First inference time
      cost: N ms`` (later 1.x), ``Total inference time cost: X s``, ``Total inference
      requests: N``, ``Average inference time cost: X ms``, ``Total inference run time: X s``,
      ``Number of inferences per second: X``, ``Avg CPU usage: X %`` (vendor builds: ``Total
      CPU usage``), ``Peak working set size: X bytes``; with ``-s`` the order statistics
      ``P50 Latency: X s`` (seconds).
    * Releases from 2025 print ``Average inference time cost total: X ms`` instead.
    * The first releases (0.x, 1.0) printed ``Total time cost:X``, ``Total iterations:N``,
      ``Average time cost:X ms`` and wrote ``P50 Latency is Xsec`` to the result file only.
    * Every release appends one line per timed run to its ``result_file``:
      ``model,time_cost_s,peak_workingset_bytes,cpu_usage,run``.

``benchmark_model``, classic TFLite (``tensorflow/lite/tools/benchmark``, now also
``tflite/tools/benchmark`` in the LiteRT repository)
    * One ``Stat`` line per phase (warm-up, then timed), in microseconds:
      ``count=N first=F curr=C min=A max=B avg=M std=S``; since ``StatWithPercentiles``
      (TF 2.13-ish) ``p5= median= p95=`` follow; ``count=N curr=C`` or ``count=N
      curr=C(all same)`` when all values are equal. Numbers may be in scientific notation.
    * The summary line went through three forms: ``Average inference timings in us:
      Warmup: W, Init: I, no stats: A`` (TF 1.12-1.13), ``Average inference timings in us:
      Warmup: W, Init: I, Inference: A`` (TF 1.14-2.1, and the Android app's logcat line),
      ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference
      (avg): A`` (TF 2.2 on).
    * Lines carry no prefix (TF ≤ 2.3), ``INFO: `` (``tflite/tools/logging.h``) or a logcat
      prefix (``I tflite  : ``).
    * ``--enable_op_profiling`` adds per-operator tables (``profile_summary_formatter.cc``,
      ``stats_calculator.cc``): a ``Run Order`` table with the columns ``[node type] [start]
      [first] [avg ms] [%] [cdf%] [mem KB] [times called] [Name]`` (``[start]`` until about
      TF 2.9) or as CSV (``--op_profiling_output_mode=csv``: ``node type, first, avg_ms, %,
      cdf%, mem KB, times called, name``, the node type unquoted and commas in names turned
      into tabs). Builtin kernels are named ``[output tensor names]:node_index``; operators a
      delegate profiles (XNNPACK, GPU) ``Delegate/<kernel>:<delegate's index>``. ``times
      called`` is per run. The tables end with ``Timings (microseconds): count=...`` lines
      that are not timing phases.

``benchmark_model``, LiteRT (``litert/tools/benchmark_litert_model*``, 2025 on)
    * The same ``Stat`` lines (it derives from the classic ``BenchmarkModel``).
    * From July 2025 a block ``========== BENCHMARK RESULTS ==========`` with ``Model
      initialization: X ms``, ``Warmup (first): X ms``, ``Warmup (avg): X ms (N runs)``,
      ``Inference (avg): X ms (N runs)``, ``Inference (min|max): X ms``; before, no summary.
    * ``--use_profiler=true`` (profile summary from January 2026): a ``Run Order`` table with
      ``[start]``, builtin kernels named ``[Builtin]:node_index``, delegate kernels
      ``Delegate/<kernel>`` typed and named ``[Delegate]:index``; ``times called`` counts
      every run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from latbench.devices.base import OpProfileRow
from latbench.exceptions import RunnerOutputError

__all__ = [
    "RunnerOutputError",
    "TfliteStat",
    "ORT_SUPPORTED",
    "TFLITE_SUPPORTED",
    "parse_ort_summary",
    "parse_ort_result_file",
    "check_ort_result_units",
    "check_samples",
    "SAMPLE_AVERAGE_TOLERANCE",
    "parse_tflite_stats",
    "parse_tflite_summary",
    "tflite_stat_samples_us",
    "detect_benchmark_model",
    "check_consumed_flags",
    "parse_op_profile",
]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

#: What the perf_test parser reads, for messages and ``--help``.
ORT_SUPPORTED = ("onnxruntime_perf_test of ONNX Runtime 1.0 and later (summary 'Average "
                 "inference time cost[ total]: X ms' or the first releases' 'Average time "
                 "cost:X ms', per-run result file 'model,seconds,bytes,cpu,run')")
#: What the benchmark_model parsers read.
TFLITE_SUPPORTED = ("benchmark_model of TensorFlow Lite 1.12 and later (Stat lines 'count=N "
                    "first=... curr=...'; summaries 'Average inference timings in us: ...' and "
                    "'Inference timings in us: ...') and the LiteRT benchmark_model of 2025 on "
                    "('BENCHMARK RESULTS' block)")


# --------------------------------------------------------------------- onnxruntime_perf_test
_ORT_SUMMARY = {
    # key → (regexes tried in order, factor to seconds; None keeps an int)
    "session_creation_s": ((rf"Session creation time cost:\s*({_NUM})\s*s\b",), 1.0),
    "first_inference_s": ((rf"First inference time cost:\s*({_NUM})\s*ms\b",), 1e-3),
    "total_inference_s": ((rf"Total inference time cost:\s*({_NUM})\s*s\b",
                           rf"^\s*Total time cost:\s*({_NUM})\s*$"), 1.0),
    "requests": ((rf"Total inference requests:\s*({_NUM})", rf"Total iterations:\s*({_NUM})"),
                 None),
    "average_s": ((rf"Average inference time cost(?: total)?:\s*({_NUM})\s*ms\b",
                   rf"Average time cost:\s*({_NUM})\s*ms\b"), 1e-3),
    "inferences_per_s": ((rf"Number of inferences per second:\s*({_NUM})",), 1.0),
    "cpu_usage_pct": ((rf"Avg CPU usage:\s*({_NUM})", rf"Total CPU usage:\s*({_NUM})"), 1.0),
    "peak_working_set_bytes": ((rf"Peak working set size:\s*({_NUM})",), None),
    "min_s": ((rf"Min Latency:\s*({_NUM})\s*s\b", rf"Min Latency is\s*({_NUM})\s*sec"), 1.0),
    "max_s": ((rf"Max Latency:\s*({_NUM})\s*s\b", rf"Max Latency is\s*({_NUM})\s*sec"), 1.0),
    "p50_s": ((rf"P50 Latency:\s*({_NUM})\s*s\b", rf"P50 Latency is\s*({_NUM})\s*sec"), 1.0),
    "p90_s": ((rf"P90 Latency:\s*({_NUM})\s*s\b", rf"P90 Latency is\s*({_NUM})\s*sec"), 1.0),
    "p95_s": ((rf"P95 Latency:\s*({_NUM})\s*s\b", rf"P95 Latency is\s*({_NUM})\s*sec"), 1.0),
    "p99_s": ((rf"P99 Latency:\s*({_NUM})\s*s\b", rf"P99 Latency is\s*({_NUM})\s*sec"), 1.0),
    "p999_s": ((rf"P999 Latency:\s*({_NUM})\s*s\b", rf"P999 Latency is\s*({_NUM})\s*sec"), 1.0),
}


def parse_ort_summary(text: str) -> dict[str, float]:
    """The summary numbers ``onnxruntime_perf_test`` printed, converted to seconds.

    Keys (each present only when printed): ``session_creation_s``, ``first_inference_s``,
    ``total_inference_s``, ``requests``, ``average_s``, ``inferences_per_s``,
    ``cpu_usage_pct``, ``peak_working_set_bytes``, ``min_s``, ``max_s``, ``p50_s``,
    ``p90_s``, ``p95_s``, ``p99_s``, ``p999_s``. Every release's spelling is read (see the
    module notes).

    Raises
    ------
    RunnerOutputError
        If no average line is found: the run did not finish, or the build prints a summary
        of a release latbench does not know (the message says which it reads).
    """
    out: dict[str, float] = {}
    for key, (patterns, factor) in _ORT_SUMMARY.items():
        for pattern in patterns:
            m = re.search(pattern, text, re.MULTILINE)
            if m:
                v = float(m.group(1))
                out[key] = v * factor if factor is not None else int(v)
                break
    if "average_s" not in out:
        finished = any(k in out for k in ("total_inference_s", "requests", "p50_s"))
        why = ("it printed timings but no average line latbench knows; this build's summary "
               "format is not supported" if finished else "the run did not finish")
        raise RunnerOutputError(f"no 'Average inference time cost' line in the perf_test output "
                                f"({why}); latbench reads {ORT_SUPPORTED}")
    return out


def parse_ort_result_file(text: str) -> list[float]:
    """Per-run latencies in seconds, in run order, from a perf_test ``result_file``.

    Each timed run is a line ``model_name,time_cost_s,peak_workingset,cpu_usage,run_index``;
    the statistics block perf_test appends with ``-s`` is skipped.

    Raises
    ------
    RunnerOutputError
        If the file holds no run line, or a run time that is not a positive finite number
        (a run line is never dropped: a dropped line would shift which runs are warm-up).
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
        if not (math.isfinite(cost) and cost > 0):
            raise RunnerOutputError(f"the perf_test result file holds a run time of {parts[1]} "
                                    f"s (run {run}); run times must be positive numbers of "
                                    "seconds")
        samples.append((run, cost))
    if not samples:
        raise RunnerOutputError("the perf_test result file holds no per-run line "
                                f"'model,seconds,bytes,cpu,run'; latbench reads {ORT_SUPPORTED}")
    samples.sort(key=lambda rc: rc[0])
    return [c for _, c in samples]


#: How far the result file's mean may sit from the printed average before the units are
#: taken to differ (runs vary, and the average includes the warm-up-free runs only).
_UNIT_TOLERANCE = 3.0


def check_ort_result_units(samples_s: list[float], summary: dict[str, float]) -> None:
    """Refuse a result file whose times are not in seconds: its mean must agree with the
    printed average (within a factor of 3; a unit change is a factor of 1000 or more).

    Raises
    ------
    RunnerOutputError
        Naming the factor, when they disagree.
    """
    avg = summary.get("average_s")
    if not samples_s or not avg or avg <= 0:
        return
    mean = sum(samples_s) / len(samples_s)
    ratio = mean / avg if mean > 0 else float("inf")
    if not 1 / _UNIT_TOLERANCE <= ratio <= _UNIT_TOLERANCE:
        raise RunnerOutputError(
            f"the result file's per-run times average {mean:.6g} but perf_test printed an "
            f"average of {avg:.6g} s (×{ratio:.3g}): this build writes its result file in "
            f"another unit; latbench reads {ORT_SUPPORTED}")


#: Relative tolerance between the mean of a runner's per-run times and the average it
#: prints itself over the same runs: only rounding (6 significant digits) separates them;
#: anything more means the samples are not the runs that were asked for.
SAMPLE_AVERAGE_TOLERANCE = 0.1


def check_samples(samples_s: tuple[float, ...] | list[float], repeats: int,
                  average_s: float | None = None, *, resolution_s: float = 1e-6) -> None:
    """Refuse per-run times (seconds) that cannot be the ``repeats`` timed runs asked for: another
    count, a value that is not a positive finite number of seconds, or (when the runner
    printed its own average over the same runs) a mean more than
    :data:`SAMPLE_AVERAGE_TOLERANCE` (plus ``resolution_s``, how finely the average is
    printed) away from it.

    Raises
    ------
    RunnerOutputError
        Naming the problem (the device turns it into a :class:`~latbench.exceptions.DeviceError`).
    """
    if len(samples_s) != repeats:
        raise RunnerOutputError(f"the runner reported {len(samples_s)} timed runs for the "
                                f"{repeats} asked (another run's results mixed in, or runs "
                                "missing)")
    bad = [s for s in samples_s if not (math.isfinite(s) and s > 0)]
    if bad:
        raise RunnerOutputError(f"{len(bad)} of {len(samples_s)} run times are not positive "
                                f"numbers of seconds (e.g. {bad[0]!r})")
    if average_s is not None and average_s > 0:
        mean = sum(samples_s) / len(samples_s)
        if abs(mean - average_s) > SAMPLE_AVERAGE_TOLERANCE * average_s + resolution_s:
            raise RunnerOutputError(
                f"the runs' mean {mean:.6g} s disagrees with the runner's own average "
                f"{average_s:.6g} s (×{mean / average_s:.3g}, more than "
                f"{SAMPLE_AVERAGE_TOLERANCE:.0%} apart)")



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


_STAT_RE = re.compile(r"^(?P<prefix>[^\n]*?)\bcount=(\d+)(?P<rest>[^\n]*)", re.MULTILINE)
_FIELD_RE = re.compile(rf"\b(first|curr|min|max|avg|std|p\d+|median)=({_NUM})")
#: Lines with ``count=`` that are not timing phases (the op-profile tables' summaries).
_NOT_A_PHASE = re.compile(r"Timings \(microseconds\)|Memory \(bytes\)")


def parse_tflite_stats(text: str) -> list[TfliteStat]:
    """Every timing-phase ``count=...`` line of ``benchmark_model`` output, in order
    (warm-up first); the op-profile summaries' ``Timings (microseconds): count=...`` lines are
    not phases and are skipped.

    ``count=0`` lines are skipped: they carry no timing.
    """
    stats: list[TfliteStat] = []
    for m in _STAT_RE.finditer(text):
        if _NOT_A_PHASE.search(m.group("prefix")):
            continue
        count = int(m.group(2))
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


_SUMMARY_FORMS = (
    # TF 2.2 on
    (re.compile(rf"Inference timings in us:\s*Init:\s*({_NUM}),\s*First inference:\s*({_NUM}),"
                rf"\s*Warmup \(avg\):\s*({_NUM}),\s*Inference \(avg\):\s*({_NUM})"),
     ("init_s", "first_inference_s", "warmup_avg_s", "inference_avg_s")),
    # TF 1.14 - 2.1, and the Android benchmark app's logcat line
    (re.compile(rf"Average inference timings in us:\s*Warmup:\s*({_NUM}),\s*Init:\s*({_NUM}),"
                rf"\s*Inference:\s*({_NUM})"),
     ("warmup_avg_s", "init_s", "inference_avg_s")),
    # TF 1.12 - 1.13
    (re.compile(rf"Average inference timings in us:\s*Warmup:\s*({_NUM}),\s*Init:\s*({_NUM}),"
                rf"\s*no stats:\s*({_NUM})"),
     ("warmup_avg_s", "init_s", "inference_avg_s")),
)

_LITERT_RESULTS = {
    "init_s": rf"Model initialization:\s*({_NUM})\s*ms",
    "first_inference_s": rf"(?:Warmup \(first\)|First inference):\s*({_NUM})\s*ms",
    "warmup_avg_s": rf"Warmup \(avg\):\s*({_NUM})\s*ms",
    "inference_avg_s": rf"Inference \(avg\):\s*({_NUM})\s*ms",
    "inference_min_s": rf"Inference \(min\):\s*({_NUM})\s*ms",
    "inference_max_s": rf"Inference \(max\):\s*({_NUM})\s*ms",
}


def parse_tflite_summary(text: str) -> dict[str, float]:
    """The run's summary, converted to seconds, from any ``benchmark_model`` generation.

    Returns ``init_s``, ``warmup_avg_s``, ``inference_avg_s`` and, where printed,
    ``first_inference_s`` (and for the LiteRT tool ``inference_min_s``/``inference_max_s``).

    Raises
    ------
    RunnerOutputError
        If no summary of a known form is found (the benchmark did not finish, or a build
        whose summary latbench does not read; the message lists the forms it reads).
    """
    for pattern, keys in _SUMMARY_FORMS:
        m = pattern.search(text)
        if m:
            return {k: float(v) * 1e-6 for k, v in zip(keys, m.groups())}
    if "BENCHMARK RESULTS" in text:
        out = {}
        for key, pattern in _LITERT_RESULTS.items():
            m = re.search(pattern, text)
            if m:
                out[key] = float(m.group(1)) * 1e-3
        if "inference_avg_s" in out:
            return out
    raise RunnerOutputError("no 'Inference timings in us' line (nor 'Average inference timings' "
                            "nor a 'BENCHMARK RESULTS' block) in the benchmark_model output; "
                            f"latbench reads {TFLITE_SUPPORTED}")


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


#: Flags only the LiteRT benchmark_model has (``benchmark_litert_model.h``), and its banner.
_LITERT_MARKERS = ("--use_npu", "--use_cpu", "--use_profiler", "NPU Vendor Flags from LiteRT",
                   "--dispatch_library_path")
#: Flags only the classic TFLite benchmark_model has (its delegate providers, op profiling).
_CLASSIC_MARKERS = ("--use_xnnpack", "--use_nnapi", "--enable_op_profiling", "--use_hexagon",
                    "--max_profiling_buffer_entries", "--use_legacy_nnapi")


def detect_benchmark_model(help_text: str) -> str:
    """Which ``benchmark_model`` printed ``help_text`` (its ``--help`` output): ``"litert"``
    (the LiteRT tool, CompiledModel API) or ``"tflite"`` (the classic TFLite tool).

    Both list their flags as ``--name=default<TAB>type<TAB>optional<TAB>help`` (the usage of
    ``tflite/tools/command_line_flags.cc``); they are told apart by flags only one has.

    Raises
    ------
    RunnerOutputError
        If the text names no flag of either tool (not a benchmark_model, or a build that does
        not print its flags).
    """
    if any(m in help_text for m in _LITERT_MARKERS):
        return "litert"
    if any(m in help_text for m in _CLASSIC_MARKERS):
        return "tflite"
    raise RunnerOutputError("its --help lists neither the classic TFLite benchmark_model's flags "
                            "(--use_xnnpack, --enable_op_profiling) nor the LiteRT one's "
                            "(--use_cpu, --use_npu); latbench runs "
                            f"{TFLITE_SUPPORTED}")


_UNCONSUMED = re.compile(r"Unconsumed cmdline flags:\s*(.+)")


def check_consumed_flags(text: str, tool: str) -> None:
    """Refuse a run in which ``benchmark_model`` ignored flags (it only warns ``Unconsumed
    cmdline flags: ...`` and runs on without them, e.g. a delegate flag an older build lacks).

    Raises
    ------
    RunnerOutputError
        Naming the ignored flags.
    """
    m = _UNCONSUMED.search(text)
    if m:
        raise RunnerOutputError(f"{tool} ignored {m.group(1).strip()} (its 'Unconsumed cmdline "
                                "flags' warning): this build lacks them, so the run is not the "
                                "one asked for; use a newer build or another provider")


# ------------------------------------------------------------------ per-operator profiles
_OP_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_RUN_ORDER = re.compile(r"=+ Run Order =+")
_LOG_PREFIX = re.compile(r"^(?:INFO:\s?|[IWE] (?:tflite|litert)\s*:\s?)")
_NODE_INDEX = re.compile(r":(\d+)\s*$")
_CELL = rf"({_NUM})%?"


def _table_lines(text: str) -> list[str] | None:
    """The lines of the per-operator ``Run Order`` table of the regular runs, header first."""
    lines = [_LOG_PREFIX.sub("", ln.rstrip("\r")) for ln in text.splitlines()]
    start = 0
    for i, ln in enumerate(lines):
        if _OP_SECTION in ln:
            start = i  # the classic tool: the regular runs' section, not the initialisation's
    for i in range(start, len(lines)):
        if _RUN_ORDER.search(lines[i]) and i + 1 < len(lines):
            out = [lines[i + 1]]
            for ln in lines[i + 2:]:
                if not ln.strip() or _RUN_ORDER.search(ln) or ln.lstrip().startswith("="):
                    break
                out.append(ln)
            return out
    return None


def _columns(header: str) -> list[str] | None:
    if "[node type]" in header:
        return [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", header)]
    if header.strip().lower().startswith("node type"):
        return [c.strip().lower() for c in header.split(",")]
    return None


def parse_op_profile(text: str) -> list[OpProfileRow]:
    """The regular runs' per-operator ``Run Order`` table of a ``benchmark_model`` output.

    Reads the classic tool's table with or without the ``[start]`` column and its CSV form,
    and the LiteRT tool's profiler summary. ``times_called`` is returned as printed (per
    run for the classic tool, over every run for the LiteRT one).

    Returns
    -------
    list of OpProfileRow
        Empty when the output holds no per-operator table.

    Raises
    ------
    RunnerOutputError
        If a table is there but its header or a row is of a form latbench does not read.
    """
    lines = _table_lines(text)
    if lines is None:
        return []
    cols = _columns(lines[0])
    if cols is None or cols[0] != "node type" or cols[-1] != "name":
        raise RunnerOutputError(f"the op-profiling table's header {lines[0].strip()!r} is not one "
                                "latbench reads ('[node type] ... [Name]' or the CSV "
                                "'node type, first, avg_ms, ..., name')")
    numeric = cols[1:-1]
    try:
        i_first = next(i for i, c in enumerate(numeric) if c == "first")
        i_avg = next(i for i, c in enumerate(numeric) if c in ("avg ms", "avg_ms"))
        i_calls = next(i for i, c in enumerate(numeric) if c == "times called")
    except StopIteration:
        raise RunnerOutputError(f"the op-profiling table lacks first/avg/times-called columns: "
                                f"{lines[0].strip()!r}") from None
    csv = "[node type]" not in lines[0]
    rows = []
    for ln in lines[1:]:
        if csv:
            parts = ln.rsplit(",", len(numeric) + 1)
            if len(parts) != len(numeric) + 2:
                raise RunnerOutputError(f"unreadable op-profiling CSV row {ln.strip()!r}")
            node_type, cells, name = parts[0].strip(), parts[1:-1], parts[-1].strip()
            try:
                values = [float(c.strip().rstrip("%")) for c in cells]
            except ValueError:
                raise RunnerOutputError(f"unreadable op-profiling CSV row {ln.strip()!r}") from None
            name = name.replace("\t", ",")
        else:
            m = re.match(r"^\s*(.+?)" + r"\s+" + r"\s+".join([_CELL] * len(numeric))
                         + r"\s+(\S.*?)\s*$", ln)
            if not m:
                raise RunnerOutputError(f"unreadable op-profiling row {ln.strip()!r}")
            node_type, name = m.group(1).strip(), m.group(len(numeric) + 2)
            values = [float(v) for v in m.groups()[1:-1]]
        delegated = name.startswith(("Delegate/", "[Delegate]"))
        if node_type.startswith("Delegate/"):
            node_type = node_type[len("Delegate/"):]
        idx = _NODE_INDEX.search(name)
        rows.append(OpProfileRow(
            node_type=node_type, name=name, first_s=values[i_first] * 1e-3,
            avg_s=values[i_avg] * 1e-3, times_called=int(round(values[i_calls])),
            node_index=int(idx.group(1)) if idx else None, delegated=delegated))
    return rows
