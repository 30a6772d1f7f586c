"""The built-in ``cpu`` device: onnxruntime's CPU execution provider, in this process.

Every knob that changes latency is set explicitly rather than left to onnxruntime's
defaults: intra-op threads (default: the physical cores this process may run on),
one inter-op thread, sequential execution, and the graph optimisation level.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latbench.artifact import Artifact
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, sample, wall_clock
from latbench.devices.base import Device
from latbench.exceptions import DeviceError, UserInputError
from latbench.registry import suggest

__all__ = [
    "CpuDevice",
    "GRAPH_OPTIMIZATION_LEVELS",
    "cpu_model_name",
    "physical_cores",
    "cpu_state",
    "random_input",
    "check_spec",
]

#: Spellings accepted for ``graph_optimization`` → onnxruntime ``GraphOptimizationLevel`` name.
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}



def check_graph_optimization(device: str, level: str) -> None:
    """Refuse an onnxruntime graph-optimisation level not in :data:`GRAPH_OPTIMIZATION_LEVELS`.

    Raises
    ------
    UserInputError
        Naming the device, the bad level, close matches and the choices.
    """
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserInputError(
            f"device {device!r}: unknown graph_optimization {level!r}"
            f"{suggest(level, list(GRAPH_OPTIMIZATION_LEVELS))}; choose one of: "
            + ", ".join(GRAPH_OPTIMIZATION_LEVELS)
        )


_ORT_TENSOR_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name, from ``/proc/cpuinfo`` text or, failing that, ``platform``.

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo``; read from the file when ``None``.
    """
    if cpuinfo is None:
        cpuinfo = _read(Path("/proc/cpuinfo")) or ""
    # x86 says "model name"; ARM kernels say "Hardware" or only "CPU part".
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in cpuinfo.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown"


def physical_cores(cpuinfo: str | None = None, allowed: int | None = None) -> int:
    """Physical cores this process may use: distinct (package, core) pairs, capped by affinity.

    SMT siblings share execution units, so one intra-op thread per physical core is the
    usual best setting for convolution-heavy models; the cap by the affinity mask keeps a
    container or ``taskset`` limit from being oversubscribed.

    Parameters
    ----------
    cpuinfo : str, optional
        ``/proc/cpuinfo`` text; read from the file when ``None``.
    allowed : int, optional
        Logical CPUs this process may run on; ``os.sched_getaffinity`` when ``None``.
    """
    if cpuinfo is None:
        cpuinfo = _read(Path("/proc/cpuinfo")) or ""
    if allowed is None:
        try:
            allowed = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            allowed = os.cpu_count() or 1
    pairs: set[tuple[str, str]] = set()
    phys = core = None
    for line in cpuinfo.splitlines() + [""]:
        k, _, v = line.partition(":")
        k = k.strip()
        if k == "physical id":
            phys = v.strip()
        elif k == "core id":
            core = v.strip()
        elif not k:  # a blank line ends one processor's block
            if core is not None:
                pairs.add((phys or "0", core))
            phys = core = None
    n = len(pairs) or (os.cpu_count() or 1)
    return max(1, min(n, allowed))


def cpu_state(sysfs: Path = Path("/sys/devices/system/cpu")) -> dict[str, Any]:
    """What changes between runs: governors, current frequencies (kHz), load average.

    Missing files (containers, macOS) are left out rather than guessed.
    """
    state: dict[str, Any] = {}
    governors: dict[str, str] = {}
    freqs: dict[str, int] = {}
    cpus = sorted(sysfs.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:]))
    for cpu in cpus:
        gov = _read(cpu / "cpufreq" / "scaling_governor")
        if gov:
            governors[cpu.name] = gov
        cur = _read(cpu / "cpufreq" / "scaling_cur_freq")
        if cur and cur.isdigit():
            freqs[cpu.name] = int(cur)
    if governors:
        state["governors"] = governors
    if freqs:
        state["freq_khz"] = freqs
    try:
        state["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        pass
    return state


def random_input(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """Seeded random input: standard normal for floats, small non-negative ints otherwise."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.integers(0, 10, size=shape).astype(dtype)


def check_spec(device: Device, artifact: Artifact, spec: BenchSpec, provider: str) -> None:
    """Refuse a spec that was made for another model, device or provider.

    Raises
    ------
    UserInputError
        If the spec's artifact hash, device name or provider does not match.
    """
    if spec.artifact_sha256 != artifact.sha256:
        raise UserInputError(
            f"spec is for artifact {spec.artifact_sha256[:12]}, not {artifact.sha256[:12]} "
            f"({artifact.path}); make the spec from this artifact"
        )
    if spec.device != device.name:
        raise UserInputError(
            f"spec is for device {spec.device!r}, not {device.name!r}; use {device.name}.make_spec"
        )
    if spec.provider != provider:
        raise UserInputError(f"spec asks for provider {spec.provider!r}; {device.name!r} runs {provider!r}")
    if spec.threads < 1:
        raise UserInputError(f"threads must be at least 1, got {spec.threads}")


def _feed(session: Any, spec: BenchSpec, seed: int) -> dict[str, np.ndarray]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise UserInputError(
            f"the model has {len(inputs)} inputs; latbench times single-input models"
        )
    dtype = _ORT_TENSOR_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise UserInputError(f"unsupported model input type {inputs[0].type}")
    return {inputs[0].name: random_input(tuple(spec.input_shape), dtype, seed)}


class CpuDevice(Device):
    """onnxruntime CPU execution provider in this process.

    Parameters
    ----------
    name : str
        Profile name (``cpu`` for the built-in one).
    threads : int, optional
        Default intra-op threads; ``None`` means :func:`physical_cores`.
    graph_optimization : {"disable", "basic", "extended", "all"}
        onnxruntime graph optimisation level.
    seed : int
        Seed of the random input.

    Raises
    ------
    UserInputError
        If ``threads`` < 1 or the optimisation level is unknown.
    """

    kind = "cpu"
    provider = "CPUExecutionProvider"

    def __init__(self, name: str = "cpu", *, threads: int | None = None,
                 graph_optimization: str = "all", seed: int = 0) -> None:
        if threads is not None and threads < 1:
            raise UserInputError(f"device {name!r}: threads must be at least 1, got {threads}")
        check_graph_optimization(name, graph_optimization)
        self.name = name
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.seed = seed

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> "CpuDevice":
        """Build from a validated ``devices.toml`` table (keys: threads, graph_optimization, seed)."""
        return cls(name, threads=profile.get("threads"),
                   graph_optimization=profile.get("graph_optimization", "all"),
                   seed=profile.get("seed", 0))

    def default_threads(self) -> int:
        """Threads used when none are asked for: the profile's, else the physical cores."""
        return self.threads if self.threads is not None else physical_cores()

    def info(self) -> DeviceInfo:
        """CPU model, OS, ABI, a stable fingerprint, runtime versions and current state."""
        import onnxruntime as ort

        cpuinfo = _read(Path("/proc/cpuinfo")) or ""
        model = cpu_model_name(cpuinfo)
        os_name = f"{platform.system()} {platform.release()}".strip()
        stable = {
            "cpu_model": model,
            "physical_cores": physical_cores(cpuinfo, allowed=1 << 30),
            "logical_cpus": os.cpu_count(),
            "os": os_name,
            "machine": platform.machine(),
        }
        fingerprint = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
        return DeviceInfo(
            name=self.name,
            kind=self.kind,
            model=model,
            soc=model,
            os=os_name,
            abi=platform.machine(),
            fingerprint=fingerprint,
            runtime_versions={
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            state={**cpu_state(), "threads_default": self.default_threads(),
                   "graph_optimization": self.graph_optimization},
        )

    def make_spec(self, artifact: Artifact, *, threads: int | None = None, warmup: int = 10,
                  repeats: int = 50) -> BenchSpec:
        """The spec for timing ``artifact`` here; ``threads=None`` → :meth:`default_threads`."""
        import onnxruntime as ort

        return BenchSpec(
            artifact_sha256=artifact.sha256,
            device=self.name,
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            provider=self.provider,
            threads=int(threads if threads is not None else self.default_threads()),
            input_shape=tuple(artifact.input_shape),
            warmup=warmup,
            repeats=repeats,
        )

    def session_options(self, threads: int) -> Any:
        """The onnxruntime ``SessionOptions`` used for ``threads`` intra-op threads."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization])
        so.log_severity_level = 3  # errors only: warnings would go to stderr, not to us
        return so

    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Time ``artifact`` with onnxruntime on this CPU.

        Parameters
        ----------
        artifact : Artifact
        spec : BenchSpec
            From :meth:`make_spec`; its threads, warm-up and repeats are used as given.
        progress : callable, optional
            ``progress(done, total)`` after each timed run.
        sampling : Sampling, optional
            Adaptive sampling policy (see :class:`~latbench.measure.timing.Sampling`).

        Returns
        -------
        Measurement
            Samples in seconds; ``extra`` holds the stop reason, warm-up times and session settings.

        Raises
        ------
        UserInputError
            If the spec does not match the artifact/device or the model has several inputs.
        DeviceError
            If onnxruntime cannot load or run the model.
        """
        import onnxruntime as ort

        check_spec(self, artifact, spec, self.provider)
        before = self.info()
        try:
            session = ort.InferenceSession(str(artifact.path), self.session_options(spec.threads),
                                           providers=[self.provider])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DeviceError(f"onnxruntime could not load {artifact.path}: {exc}") from None
        feed = _feed(session, spec, self.seed)
        run = session.run
        try:
            result = sample(wall_clock(lambda: run(None, feed)), warmup=spec.warmup,
                            repeats=spec.repeats, sampling=sampling, progress=progress)
        except (UserInputError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise DeviceError(f"onnxruntime failed running {artifact.path}: {exc}") from None
        after = self.info()
        extra = {**result.extra(), "graph_optimization": self.graph_optimization,
                 "inter_op_threads": 1, "execution_mode": "sequential", "seed": self.seed}
        if sampling is not None:
            extra["sampling"] = sampling.to_dict()
        threshold = sampling.threshold if sampling is not None else None
        kw = {"confidence_threshold": threshold} if threshold is not None else {}
        return Measurement(spec=spec, samples_s=result.samples_s, info_before=before,
                           info_after=after, extra=extra, **kw)
