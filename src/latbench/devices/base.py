"""The one device interface: what a device can do (:class:`Capabilities`), which runtime it
times with (:class:`RuntimeIdentity`), ``info()`` and ``measure(artifact, spec)``.

A device says what it can do as data, as nn-Meter's backends pair a profiler with a parser:
callers read :attr:`Device.capabilities` instead of probing signatures or building fake
artifacts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from latbench.artifact import Artifact
from latbench.exceptions import UserInputError
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling

__all__ = ["Device", "Capabilities", "RuntimeIdentity", "OpProfile", "OpProfileRow"]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Capabilities:
    """What a device can do.

    Attributes
    ----------
    formats : tuple of str
        Artifact formats it runs (``"onnx"``, ``"tflite"``), the one to export first.
    adaptive_sampling : bool
        ``measure`` takes an adaptive :class:`~latbench.measure.timing.Sampling` (it times
        in this process and can decide how many runs to take as it goes).
    layer_timing : bool
        Single layers can be exported and timed alone (lookup tables, search costs).
    in_process : bool
        It times on this host's CPU/GPU from this process, so other work on this host
        (compression, export) disturbs its timings.
    op_profiles : bool
        It can time every operator of a whole model in one run (``benchmark_model
        --enable_op_profiling``): :meth:`Device.profile_ops` gives per-layer latencies.
    """

    formats: tuple[str, ...] = ("onnx",)
    adaptive_sampling: bool = False
    layer_timing: bool = True
    in_process: bool = False
    op_profiles: bool = False

    @property
    def format(self) -> str:
        """The artifact format to export for this device."""
        return self.formats[0]


@dataclass(frozen=True)
class RuntimeIdentity:
    """What a stored measurement must match to be reused: the runtime, its version, the
    execution provider or delegate, and the intra-op threads. The same for every model on
    one device, so callers compute it once."""

    runtime: str
    runtime_version: str
    provider: str
    threads: int


@dataclass(frozen=True)
class OpProfileRow:
    """One operator of a per-operator profile, in run order.

    Attributes
    ----------
    node_type : str
        What the runtime calls the kernel (``CONV_2D``, ``Convolution (NHWC, F32) IGEMM``).
    name : str
        The runtime's node name: output tensor names and node index for builtin kernels
        (``[a, b]:3``), ``Delegate/<kernel>:<index>`` for operators a delegate profiles.
    first_s, avg_s : float
        The first profiled run's time and the mean over the profiled runs, in seconds.
    times_called : int
        Calls per run (more than one when several nodes share the name).
    node_index : int or None
        The TFLite node index when the name carries one for a builtin kernel.
    delegated : bool
        Profiled inside a delegate (XNNPACK, GPU): ``node_index`` is the delegate's own.
    """

    node_type: str
    name: str
    first_s: float
    avg_s: float
    times_called: int = 1
    node_index: int | None = None
    delegated: bool = False


@dataclass(frozen=True)
class OpProfile:
    """A per-operator profile of one model.

    Attributes
    ----------
    rows : tuple of OpProfileRow
        In run order.
    runs : int
        Profiled inferences (each row's ``avg_s`` is a mean over them).
    tool : str
        The tool that profiled (e.g. ``benchmark_model (TFLite)``).
    info_before, info_after : DeviceInfo or None
        Device identity and state around the profiling run.
    extra : dict
        Tool facts (command line, output format).
    """

    rows: tuple[OpProfileRow, ...]
    runs: int
    tool: str
    info_before: DeviceInfo | None = None
    info_after: DeviceInfo | None = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)


class Device(ABC):
    """A place where a model can be timed.

    Subclasses set :attr:`capabilities` and implement :meth:`info`,
    :meth:`runtime_identity` and :meth:`measure`; :meth:`make_spec` is built from them.
    """

    name: str
    kind: str
    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def info(self) -> DeviceInfo:
        """Identity, runtime versions and current state of the device."""

    @abstractmethod
    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        """The runtime this device times with, for ``threads`` (``None``: its default).

        Raises
        ------
        UserInputError
            If ``threads`` < 1.
        """

    def make_spec(self, artifact: Artifact, *, threads: int | None = None, warmup: int = 10,
                  repeats: int = 50) -> BenchSpec:
        """The :class:`BenchSpec` this device would use to time ``artifact``.

        Raises
        ------
        UserInputError
            If the artifact's format is not one this device runs, threads or repeats < 1,
            or warmup < 0.
        """
        self.check_format(artifact)
        if threads is not None and threads < 1:
            raise UserInputError(f"threads must be at least 1, got {threads}")
        if warmup < 0:
            raise UserInputError(f"warm-up runs must be 0 or more, got {warmup}")
        if repeats < 1:
            raise UserInputError(f"repeats must be at least 1, got {repeats}")
        rt = self.runtime_identity(threads)
        return BenchSpec(artifact_sha256=artifact.sha256, device=self.name, runtime=rt.runtime,
                         runtime_version=rt.runtime_version, provider=rt.provider,
                         threads=int(rt.threads), input_shape=tuple(artifact.input_shape),
                         warmup=int(warmup), repeats=int(repeats),
                         format=self.run_format(artifact))

    def run_format(self, artifact: Artifact) -> str:
        """The format this device runs ``artifact`` in: its own when the device runs it, else
        the device's first (a device that finds a converted twin beside the file)."""
        fmt = artifact.format
        return fmt if fmt in self.capabilities.formats else self.capabilities.format

    def check_format(self, artifact: Artifact) -> None:
        """Refuse an artifact whose format this device does not run.

        Raises
        ------
        UserInputError
            Naming the formats the device runs.
        """
        if artifact.format not in self.capabilities.formats:
            raise UserInputError(
                f"device {self.name!r} runs {' or '.join(self.capabilities.formats)} models, "
                f"not {artifact.format} ({artifact.path}); export the model as "
                f"{self.capabilities.format}")

    def check_spec(self, artifact: Artifact, spec: BenchSpec) -> None:
        """Refuse a spec made for another model, device, runtime or provider.

        Raises
        ------
        UserInputError
            Listing every mismatch.
        """
        self.check_format(artifact)
        rt = self.runtime_identity(spec.threads)
        problems = []
        if spec.artifact_sha256 != artifact.sha256:
            problems.append(f"it is for artifact {spec.artifact_sha256[:12]}, not "
                            f"{artifact.sha256[:12]} ({artifact.path})")
        if spec.device != self.name:
            problems.append(f"it is for device {spec.device!r}")
        if spec.runtime != rt.runtime:
            problems.append(f"it asks for runtime {spec.runtime!r}, this device runs "
                            f"{rt.runtime!r}")
        if spec.format != self.run_format(artifact):
            problems.append(f"it is for a {spec.format} model, not {self.run_format(artifact)}")
        if spec.provider != rt.provider:
            problems.append(f"it asks for provider {spec.provider!r}; {self.name!r} runs "
                            f"{rt.provider!r}")
        if spec.threads < 1 or spec.repeats < 1 or spec.warmup < 0:
            problems.append("threads and repeats must be at least 1 and warmup at least 0")
        if problems:
            raise UserInputError(f"spec does not fit device {self.name!r}: "
                                 f"{'; '.join(problems)}; make it with {self.name}.make_spec")

    def check_sampling(self, sampling: Sampling | None) -> None:
        """Refuse adaptive sampling on a device that cannot do it.

        Raises
        ------
        UserInputError
            If ``sampling`` is adaptive and :attr:`Capabilities.adaptive_sampling` is false.
        """
        if sampling is not None and sampling.adaptive and not self.capabilities.adaptive_sampling:
            raise UserInputError(f"device {self.name!r} (kind {self.kind!r}) does not support "
                                 "adaptive sampling; give --repeats instead")

    @abstractmethod
    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: ProgressFn | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Time ``artifact`` as ``spec`` says and return the raw samples.

        Parameters
        ----------
        artifact : Artifact
        spec : BenchSpec
            From :meth:`make_spec`.
        progress : callable, optional
            ``progress(done, total)`` as timed runs complete.
        sampling : Sampling, optional
            Adaptive policy; only for devices whose capabilities say ``adaptive_sampling``.

        Raises
        ------
        UserInputError
            If the spec or the sampling does not fit this device.
        DeviceError
            If the device cannot be reached or the run fails.
        """

    def executed_graph(self, artifact: Artifact, out_path: str | Path, *,
                       threads: int | None = None) -> str | None:
        """Write the graph this device's runtime executes for ``artifact`` to ``out_path``.

        The graph is what the runtime runs after its own rewrites (batch norms folded,
        activations fused, layout changes): :func:`latbench.data.executed.onnx_graph_table`
        reads it into a layer table. Devices whose runtime does not expose it return
        ``None`` (the default), and their tables stay the PyTorch module's.

        Returns
        -------
        str or None
            The graph's label for the ``graph`` column of layer tables (e.g.
            ``"onnxruntime:all:CPUExecutionProvider"``), or ``None``.

        Raises
        ------
        DeviceError
            If the runtime cannot load the artifact.
        """
        return None

    def profile_ops(self, artifact: Artifact, spec: BenchSpec) -> "OpProfile":
        """Time every operator of ``artifact`` in one run of ``spec.repeats`` inferences.

        Only for devices whose :attr:`Capabilities.op_profiles` is true.

        Raises
        ------
        UserInputError
            On a device that cannot profile operators.
        DeviceError
            If the profiling run fails or its output cannot be read.
        """
        raise UserInputError(f"device {self.name!r} (kind {self.kind!r}) does not profile "
                             "operators; measure layers alone instead")

    def close(self) -> None:
        """Release connections; the default has none."""

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
