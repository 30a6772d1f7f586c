"""Command lines for the on-device runners and the samples read back from them.

Each runner turns a :class:`~latbench.measure.spec.BenchSpec`-like request (threads, CPU mask,
warm-up, repeats) into shell invocations, and their outputs into per-run latencies in
seconds plus the runner's own summary numbers.

How per-run samples are obtained (the tools differ):

* ``onnxruntime_perf_test`` writes every timed run to its ``result_file``. One call runs
  ``warmup + repeats`` times (``-m times -r``); the first ``warmup`` runs are dropped
  (perf_test also does one untimed run of its own first).
* ``benchmark_model`` prints only statistics, but a ``Stat`` line over at most 3 runs fixes
  each run exactly (:func:`~latbench.devices.adb.parsers.tflite_stat_samples_us`). So it is
  called ``ceil(repeats / runs_per_call)`` times with ``--num_runs=runs_per_call`` (≤ 3,
  ``--min_secs=0`` so the count is exact), each call warming up ``warmup`` runs first. Each
  call loads the model again, which the samples do not include.
"""

from __future__ import annotations

import math
import posixpath
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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
    "RUNNERS",
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
    """

    kind: str
    runtime: str
    model_suffix: str
    providers: dict[str, tuple[str, ...]]

    def __init__(self, remote_path: str, *, provider: str = "cpu") -> None:
        if provider not in self.providers:
            raise UserInputError(f"runner {self.kind!r} has no provider {provider!r}; choose one "
                                 f"of: {', '.join(self.providers)}")
        self.remote_path = remote_path
        self.provider = provider

    @property
    def name(self) -> str:
        return posixpath.basename(self.remote_path)

    @abstractmethod
    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str) -> list[Invocation]:
        """The shell calls that time ``remote_model`` ``repeats`` times."""

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
    model_suffix = ".onnx"
    providers = {"cpu": ("-e", "cpu"), "xnnpack": ("-e", "xnnpack"), "nnapi": ("-e", "nnapi"),
                 "qnn": ("-e", "qnn")}

    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str) -> list[Invocation]:
        result = posixpath.join(work_dir, "perf_test_result.txt")
        args = [*self.providers[self.provider], "-m", "times", "-r", str(warmup + repeats),
                "-x", str(threads), "-I", "-s", remote_model, result]
        # perf_test appends to its result file, so an old one must go first.
        cmd = f"rm -f {shlex.quote(result)}; " + self._pinned(cpu_mask, args)
        return [Invocation(cmd, warmup + repeats, result)]

    def parse(self, outputs: list[str], result_files: list[str | None], *, warmup: int,
              repeats: int) -> RunnerResult:
        summary = parsers.parse_ort_summary(outputs[0])
        runs = parsers.parse_ort_result_file(result_files[0] or "")
        timed = runs[warmup:]
        if not timed:
            raise parsers.RunnerOutputError(
                f"perf_test recorded {len(runs)} runs, none after the {warmup} warm-up runs")
        summary = {**summary, "runner": "onnxruntime_perf_test", "recorded_runs": len(runs),
                   "dropped_warmup_runs": min(warmup, len(runs))}
        return RunnerResult(tuple(timed), summary)


class TfliteBenchmarkModel(Runner):
    """TFLite/LiteRT ``benchmark_model`` (``--num_threads``; samples from ≤ 3-run Stat lines)."""

    kind = "tflite"
    runtime = "tflite"
    model_suffix = ".tflite"
    providers = {"cpu": (), "xnnpack": ("--use_xnnpack=true",), "gpu": ("--use_gpu=true",),
                 "nnapi": ("--use_nnapi=true",)}

    def __init__(self, remote_path: str, *, provider: str = "cpu", runs_per_call: int = 3) -> None:
        super().__init__(remote_path, provider=provider)
        if not 1 <= runs_per_call <= 3:
            raise UserInputError(f"runs_per_call must be 1, 2 or 3 (benchmark_model prints "
                                 f"single runs only for up to 3), got {runs_per_call}")
        self.runs_per_call = runs_per_call

    def invocations(self, remote_model: str, *, cpu_mask: str, threads: int, warmup: int,
                    repeats: int, work_dir: str) -> list[Invocation]:
        calls = math.ceil(repeats / self.runs_per_call)
        out = []
        for i in range(calls):
            k = min(self.runs_per_call, repeats - i * self.runs_per_call)
            args = [f"--graph={remote_model}", f"--num_threads={threads}",
                    f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--num_runs={k}",
                    "--min_secs=0", *self.providers[self.provider]]
            out.append(Invocation(self._pinned(cpu_mask, args), k))
        return out

    def parse(self, outputs: list[str], result_files: list[str | None], *, warmup: int,
              repeats: int) -> RunnerResult:
        samples: list[float] = []
        per_call: dict[str, list[float]] = {}
        for text in outputs:
            stats = parsers.parse_tflite_stats(text)
            if not stats:
                raise parsers.RunnerOutputError("no 'count=' line in the benchmark_model output")
            samples.extend(us * 1e-6 for us in parsers.tflite_stat_samples_us(stats[-1]))
            for key, value in parsers.parse_tflite_summary(text).items():
                per_call.setdefault(key, []).append(value)
        summary: dict[str, Any] = {"runner": "benchmark_model", "calls": len(outputs),
                                   "runs_per_call": self.runs_per_call}
        for key, values in per_call.items():
            summary[key] = values
            summary[key.removesuffix("_s") + "_mean_s"] = sum(values) / len(values)
        return RunnerResult(tuple(samples), summary)


#: Runner kinds by name (``runner_kind`` in a profile).
RUNNERS: Registry[type[Runner]] = Registry("runner kind")
RUNNERS.register("ort", OrtPerfTest)
RUNNERS.register("tflite", TfliteBenchmarkModel)


def infer_runner_kind(path: str) -> str:
    """``ort`` or ``tflite`` from a runner's file name.

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
                         f"runner_kind = \"ort\" or \"tflite\" in the profile")
