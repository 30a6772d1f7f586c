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
from latbench.devices._ort import GRAPH_OPTIMIZATION_LEVELS, check_graph_optimization, \
    input_feed, open_session, random_input, session_options
from latbench.devices.base import Capabilities, Device, RuntimeIdentity
from latbench.exceptions import DeviceError, UserInputError
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, sample, wall_clock

__all__ = [
    "CpuDevice",
    "GRAPH_OPTIMIZATION_LEVELS",
    "cpu_model_name",
    "physical_cores",
    "cpu_state",
    "random_input",
]

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
    capabilities = Capabilities(formats=("onnx",), adaptive_sampling=True, layer_timing=True,
                                in_process=True)

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

    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        """onnxruntime's version and CPU provider; ``threads=None`` → :meth:`default_threads`."""
        import onnxruntime as ort

        n = int(threads if threads is not None else self.default_threads())
        if n < 1:
            raise UserInputError(f"threads must be at least 1, got {n}")
        return RuntimeIdentity("onnxruntime", ort.__version__, self.provider, n)

    def session_options(self, threads: int) -> Any:
        """The onnxruntime ``SessionOptions`` used for ``threads`` intra-op threads."""
        return session_options(threads, self.graph_optimization)

    def executed_graph(self, artifact: Artifact, out_path: str | Path, *,
                       threads: int | None = None) -> str | None:
        """Have onnxruntime write the graph it executes at this device's optimisation level
        (``SessionOptions.optimized_model_filepath``); return its label."""
        from latbench.data.executed import ort_graph_label

        self.check_format(artifact)
        n = self.runtime_identity(threads).threads
        open_session(artifact.path, session_options(n, self.graph_optimization,
                                                    optimized_model_path=out_path),
                     [self.provider], what="onnxruntime")
        return ort_graph_label(self.graph_optimization, self.provider)

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
        self.check_spec(artifact, spec)
        self.check_sampling(sampling)
        before = self.info()
        session = open_session(artifact.path, self.session_options(spec.threads), [self.provider],
                               what="onnxruntime")
        name, x = input_feed(session, spec.input_shape, self.seed)
        feed = {name: x}
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
