"""Command lines for the on-device runners and the samples read back from them.

Each runner turns a :class:`~latbench.measure.spec.BenchSpec`-like request (threads, CPU mask,
warm-up, repeats) into shell invocations, and their outputs into per-run latencies in
seconds plus the runner's own summary numbers.

How per-run samples are obtained (the tools differ):

* ``onnxruntime_perf_test`` writes every timed run to its ``result_file``. One call runs
  ``warmup + repeats`` times (``-m times -r``); the first ``warmup`` runs are dropped
  (perf_test also does one untimed run of its own first).
* ``benchmark_model`` (both generations) prints only statistics: neither the classic TFLite
  tool nor the LiteRT one has an option that prints or writes single runs (their
  ``--result_file_path`` protos hold aggregates too). A ``Stat`` line over at most 3 runs
  fixes each run exactly (:func:`~latbench.devices.adb.parsers.tflite_stat_samples_us`). So
  it is called ``ceil(repeats / runs_per_call)`` times with ``--num_runs=runs_per_call``
  (≤ 3, ``--min_secs=0`` so the count is exact), each call warming up ``warmup`` runs first.
  Each call loads the model again (and the GPU delegate compiles its kernels again), which
  the samples do not include but the wall time does; ``BENCHMARKS.md`` has the cost.
* Per-operator profiles (``--enable_op_profiling`` / the LiteRT tool's ``--use_profiler``)
  are one extra call of ``repeats`` runs; each operator's figure is its mean over them.
"""

from __future__ import annotations

import math
import posixpath
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from latbench.devices.adb import parsers
from latbench.exceptions import UserInputError
from latbench.registry import Registry

__all__ = [
    "Invocation",
    "RunnerResult",
    "Runner",
    "OrtPerfTest",
    "TfliteBenchmarkModel",
    "LiteRtBenchmarkModel",
    "RUNNERS",
    "BENCHMARK_MODEL_KINDS",
    "infer_runner_kind",
]


@dataclass(frozen=True)
class Invocation:
    """One shell call of a runner.

    ``result_file`` is a remote file to read back after the call (``None``: none).
    ``runs`` is how many timed runs the call makes.
    """

    command: str
    runs: int
    result_file: str | None = None


@dataclass(frozen=True)
class RunnerResult:
    """Per-run latencies (seconds, run order) and the runner's own summary numbers."""

    samples_s: tuple[float, ...]
    summary: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """A benchmark binary on the device.

    Parameters
    ----------
    remote_path : str
        Where the binary is on the device.
    provider : str
        Execution provider / delegate (``cpu`` by default).
    extra_args : tuple of str
        More command-line arguments for every call (``runner_args`` in the profile).
    """

    kind: str
    runtime: str
    tool: str
    model_suffix: str
    providers: dict[str, tuple[str, ...]]

    def __init__(self, remote_path: str, *, provider: str = "cpu",
                 extra_args: tuple[str, ...] = ()) -> None:
        if provider not in self.providers:
            raise UserInputError(f"runner {self.kind!r} ({self.tool}) has no provider "
                                 f"{provider!r}; choose one of: {', '.join(self.providers)}")
        self.remote_path = remote_path
        self.provider = provider
        self.extra_args = tuple(extra_args)

    @property
    def name(self) -> str:
        return posixpath.basename(self.remote_path)

    @abstractmethod
    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str, run_id: str = "") -> list[Invocation]:
        """The shell calls that time ``remote_model`` ``repeats`` times; files they write
        into ``work_dir`` carry ``run_id`` in their names (one run's files are its own)."""

    @abstractmethod
    def parse(self, outputs: list[str], result_files: list[str | None], *, warmup: int,
              repeats: int) -> RunnerResult:
        """Samples and summary from each call's output (and result file).

        Raises
        ------
        parsers.RunnerOutputError
            If an output lacks the expected numbers.
        """

    def _pinned(self, cpu_mask: str, args: list[str]) -> str:
        # taskset pins every thread the runner makes; the thread count is always explicit.
        return " ".join(["taskset", cpu_mask, shlex.quote(self.remote_path),
                         *(shlex.quote(a) for a in args)])


class OrtPerfTest(Runner):
    """onnxruntime's ``onnxruntime_perf_test`` (``-x`` intra-op threads, per-run result file)."""

    kind = "ort"
    runtime = "onnxruntime"
    tool = "onnxruntime_perf_test"
    model_suffix = ".onnx"
    providers = {"cpu": ("-e", "cpu"), "xnnpack": ("-e", "xnnpack"), "nnapi": ("-e", "nnapi"),
                 "qnn": ("-e", "qnn")}

    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str, run_id: str = "") -> list[Invocation]:
        # Each run its own result file: two runs writing one file mix their runs.
        result = posixpath.join(work_dir, f"perf_test_result-{run_id}.txt" if run_id
                                else "perf_test_result.txt")
        args = [*self.providers[self.provider], "-m", "times", "-r", str(warmup + repeats),
                "-x", str(threads), "-I", "-s", *self.extra_args, remote_model, result]
        # perf_test appends to its result file, so an old one must go first.
        cmd = f"rm -f {shlex.quote(result)}; " + self._pinned(cpu_mask, args)
        return [Invocation(cmd, warmup + repeats, result)]

    def parse(self, outputs: list[str], result_files: list[str | None], *, warmup: int,
              repeats: int) -> RunnerResult:
        summary = parsers.parse_ort_summary(outputs[0])
        runs = parsers.parse_ort_result_file(result_files[0] or "")
        # One call of warmup + repeats runs, all in the file and in the printed average.
        if len(runs) != warmup + repeats:
            raise parsers.RunnerOutputError(
                f"the result file holds {len(runs)} runs for the {warmup + repeats} asked "
                f"({warmup} warm-up + {repeats}): another run's results mixed in, or runs "
                "missing")
        parsers.check_ort_result_units(runs, summary)
        parsers.check_samples(runs, warmup + repeats, summary.get("average_s"))
        timed = runs[warmup:]
        if not timed:
            raise parsers.RunnerOutputError(
                f"perf_test recorded {len(runs)} runs, none after the {warmup} warm-up runs")
        summary = {**summary, "runner": "onnxruntime_perf_test", "recorded_runs": len(runs),
                   "dropped_warmup_runs": min(warmup, len(runs))}
        return RunnerResult(tuple(timed), summary)


class TfliteBenchmarkModel(Runner):
    """The classic TFLite ``benchmark_model`` (``--num_threads``; samples from ≤ 3-run Stat
    lines; per-operator profiles with ``--enable_op_profiling``).

    Providers: ``cpu`` (the tool's default CPU path: XNNPACK in builds of TF 2.4 and later),
    ``xnnpack`` (forced), ``builtin`` (TFLite's own kernels, ``--use_xnnpack=false``), ``gpu``
    (the GPU delegate), ``nnapi``.
    """

    kind = "tflite"
    runtime = "tflite"
    tool = "benchmark_model (TFLite)"
    model_suffix = ".tflite"
    providers = {"cpu": (), "xnnpack": ("--use_xnnpack=true",),
                 "builtin": ("--use_xnnpack=false",), "gpu": ("--use_gpu=true",),
                 "nnapi": ("--use_nnapi=true",)}
    profile_flags: tuple[str, ...] = ("--enable_op_profiling=true",)
    #: Whether the tool's summary block is always printed (the LiteRT tool had none before
    #: July 2025).
    summary_required = True
    #: How finely the summary prints the inference average, in seconds (µs here).
    average_resolution_s = 1e-6

    def __init__(self, remote_path: str, *, provider: str = "cpu", runs_per_call: int = 3,
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(remote_path, provider=provider, extra_args=extra_args)
        if not 1 <= runs_per_call <= 3:
            raise UserInputError(f"runs_per_call must be 1, 2 or 3 (benchmark_model prints "
                                 f"single runs only for up to 3), got {runs_per_call}")
        self.runs_per_call = runs_per_call

    def _args(self, remote_model: str, threads: int, warmup: int, runs: int) -> list[str]:
        # --min_secs=0 / --warmup_min_secs=0 make the counts exact (the defaults keep
        # running for 1 s / 0.5 s).
        return [f"--graph={remote_model}", f"--num_threads={threads}",
                f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--num_runs={runs}",
                "--min_secs=0", *self.providers[self.provider], *self.extra_args]

    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str, run_id: str = "") -> list[Invocation]:
        # benchmark_model writes no files here (its output is read from stdout).
        calls = math.ceil(repeats / self.runs_per_call)
        out = []
        for i in range(calls):
            k = min(self.runs_per_call, repeats - i * self.runs_per_call)
            out.append(Invocation(self._pinned(cpu_mask, self._args(remote_model, threads,
                                                                    warmup, k)), k))
        return out

    def profile_invocation(self, remote_model: str, *, cpu_mask: str, threads: int,
                           warmup: int, runs: int) -> Invocation:
        """One call that runs ``runs`` inferences with per-operator profiling on."""
        args = [*self._args(remote_model, threads, warmup, runs), *self.profile_flags]
        return Invocation(self._pinned(cpu_mask, args), runs)

    def parse(self, outputs: list[str], result_files: list[str | None], *, warmup: int,
              repeats: int) -> RunnerResult:
        samples: list[float] = []
        per_call: dict[str, list[float]] = {}
        for i, text in enumerate(outputs):
            asked = min(self.runs_per_call, repeats - i * self.runs_per_call)
            parsers.check_consumed_flags(text, self.tool)
            stats = parsers.parse_tflite_stats(text)
            if not stats:
                raise parsers.RunnerOutputError(
                    "no 'count=' line in the benchmark_model output; latbench reads "
                    f"{parsers.TFLITE_SUPPORTED}")
            if stats[-1].count != asked:
                raise parsers.RunnerOutputError(
                    f"call {i + 1} reported count={stats[-1].count} timed runs for the {asked} "
                    "asked (--num_runs)")
            call_s = [us * 1e-6 for us in parsers.tflite_stat_samples_us(stats[-1])]
            try:
                summary = parsers.parse_tflite_summary(text)
            except parsers.RunnerOutputError:
                if self.summary_required:
                    raise
                summary = {}
            # The summary's inference average is over the same runs as the Stat line.
            parsers.check_samples(call_s, asked, summary.get("inference_avg_s"),
                                  resolution_s=self.average_resolution_s)
            samples.extend(call_s)
            for key, value in summary.items():
                per_call.setdefault(key, []).append(value)
        summary_out: dict[str, Any] = {"runner": "benchmark_model", "generation": self.kind,
                                       "calls": len(outputs), "runs_per_call": self.runs_per_call}
        for key, values in per_call.items():
            summary_out[key] = values
            summary_out[key.removesuffix("_s") + "_mean_s"] = sum(values) / len(values)
        return RunnerResult(tuple(samples), summary_out)

    def parse_profile(self, output: str, runs: int) -> list[parsers.OpProfileRow]:
        """The per-operator rows of a :meth:`profile_invocation`'s output, ``times_called``
        per run.

        Raises
        ------
        parsers.RunnerOutputError
            If the output holds no per-operator table.
        """
        parsers.check_consumed_flags(output, self.tool)
        rows = parsers.parse_op_profile(output)
        if not rows:
            raise parsers.RunnerOutputError(
                "benchmark_model printed no 'Operator-wise Profiling Info' table; builds before "
                "TF 2.1 need TFLITE_PROFILING_ENABLED to profile operators")
        return rows


class LiteRtBenchmarkModel(TfliteBenchmarkModel):
    """The LiteRT ``benchmark_model`` (``litert/tools``, CompiledModel API): accelerators
    ``--use_cpu`` / ``--use_gpu`` / ``--use_npu``, profiles with ``--use_profiler``.

    Providers: ``cpu`` (the CPU accelerator, XNNPACK; ``xnnpack`` is the same), ``gpu`` (the
    GPU accelerator, CPU fallback for what it cannot run), ``npu`` (give the vendor's
    dispatch library with ``runner_args = ["--dispatch_library_path=..."]``). Its
    ``--num_threads`` sets the CPU accelerator's threads in builds from September 2025; older
    builds ignore it.
    """

    kind = "litert"
    runtime = "litert"
    tool = "benchmark_model (LiteRT)"
    providers = {"cpu": ("--use_cpu=true", "--use_gpu=false", "--use_npu=false"),
                 "xnnpack": ("--use_cpu=true", "--use_gpu=false", "--use_npu=false"),
                 "gpu": ("--use_gpu=true", "--use_npu=false"),
                 "npu": ("--use_npu=true",)}
    profile_flags = ("--use_profiler=true",)
    summary_required = False
    average_resolution_s = 1e-5  # "Inference (avg): 0.01 ms": two decimals of ms

    def parse_profile(self, output: str, runs: int) -> list[parsers.OpProfileRow]:
        parsers.check_consumed_flags(output, self.tool)
        rows = parsers.parse_op_profile(output)
        if not rows:
            raise parsers.RunnerOutputError(
                "the LiteRT benchmark_model printed no profile table with --use_profiler; builds "
                "before January 2026 print no per-operator summary")
        # The LiteRT summary counts calls over every profiled run.
        return [replace(r, times_called=max(1, round(r.times_called / max(runs, 1))))
                for r in rows]


#: Runner kinds by name (``runner_kind`` in a profile).
RUNNERS: Registry[type[Runner]] = Registry("runner kind")
RUNNERS.register("ort", OrtPerfTest)
RUNNERS.register("tflite", TfliteBenchmarkModel)
RUNNERS.register("litert", LiteRtBenchmarkModel)

#: Runner kinds that are a ``benchmark_model`` (told apart by probing ``--help``).
BENCHMARK_MODEL_KINDS = ("tflite", "litert")


def infer_runner_kind(path: str) -> str:
    """``ort`` or ``tflite`` from a runner's file name (a ``benchmark_model`` of either
    generation is ``tflite`` here; the device tells the LiteRT one apart by its ``--help``).

    Raises
    ------
    UserInputError
        If the name says neither; set ``runner_kind`` in the profile then.
    """
    name = posixpath.basename(path.replace("\\", "/")).lower()
    if "perf_test" in name or "onnxruntime" in name:
        return "ort"
    if "benchmark_model" in name or "tflite" in name or "litert" in name:
        return "tflite"
    raise UserInputError(f"cannot tell the kind of runner {path!r} from its name; set "
                         f"runner_kind = \"ort\", \"tflite\" or \"litert\" in the profile")
