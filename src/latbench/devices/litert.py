"""The built-in ``litert`` device: the LiteRT (TFLite) interpreter in this process.

``.tflite`` artifacts run on ``ai-edge-litert``'s interpreter with XNNPACK (its default CPU
delegate) or with TFLite's own builtin kernels, an explicit number of threads, and the same
timing protocol as the ``cpu`` device: warm-up, raw per-run samples, adaptive sampling. Each
timed run is one ``interpreter.invoke()`` on a seeded random input set once beforehand.
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
from latbench.devices._ort import random_input
from latbench.devices.base import Capabilities, Device, RuntimeIdentity
from latbench.devices.cpu import cpu_model_name, cpu_state, physical_cores
from latbench.exceptions import DeviceError, MissingExtraError, UserInputError
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, sample, wall_clock
from latbench.registry import suggest

__all__ = ["LiteRtDevice", "DELEGATES", "litert_version", "litert_status"]

#: ``delegate`` spellings → the provider name stored with each measurement.
DELEGATES = {"xnnpack": "XNNPACK", "none": "builtin"}


def litert_version() -> str:
    """The installed ``ai-edge-litert`` version.

    Raises
    ------
    MissingExtraError
        When it is not installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        raise MissingExtraError("tflite", "ai-edge-litert", "the litert device") from None


def litert_status() -> tuple[bool, str]:
    """Whether the LiteRT interpreter can be used here, and why not (for ``devices list``)."""
    try:
        return True, f"in-process LiteRT {litert_version()} (XNNPACK)"
    except MissingExtraError as exc:
        return False, str(exc)


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise MissingExtraError("tflite", "ai-edge-litert", "the litert device") from None
    return interpreter


class LiteRtDevice(Device):
    """The LiteRT interpreter (``ai-edge-litert``) on this host's CPU.

    Parameters
    ----------
    name : str
        Profile name (``litert`` for the built-in one).
    threads : int, optional
        Default interpreter threads; ``None`` means the physical cores.
    delegate : {"xnnpack", "none"}
        ``xnnpack``: the interpreter's default XNNPACK delegate (what phones' CPUs run);
        ``none``: TFLite's builtin kernels only.
    seed : int
        Seed of the random input.

    Raises
    ------
    UserInputError
        If ``threads`` < 1 or the delegate is unknown.
    """

    kind = "litert"
    capabilities = Capabilities(formats=("tflite",), adaptive_sampling=True, layer_timing=True,
                                in_process=True)

    def __init__(self, name: str = "litert", *, threads: int | None = None,
                 delegate: str = "xnnpack", seed: int = 0) -> None:
        if threads is not None and threads < 1:
            raise UserInputError(f"device {name!r}: threads must be at least 1, got {threads}")
        if delegate not in DELEGATES:
            raise UserInputError(f"device {name!r}: unknown delegate {delegate!r}"
                                 f"{suggest(delegate, list(DELEGATES))}; choose one of: "
                                 f"{', '.join(DELEGATES)}")
        self.name = name
        self.threads = threads
        self.delegate = delegate
        self.seed = seed

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> "LiteRtDevice":
        """Build from a validated ``devices.toml`` table (keys: threads, delegate, seed)."""
        return cls(name, threads=profile.get("threads"),
                   delegate=profile.get("delegate", "xnnpack"), seed=profile.get("seed", 0))

    @property
    def provider(self) -> str:
        return DELEGATES[self.delegate]

    def default_threads(self) -> int:
        """Threads used when none are asked for: the profile's, else the physical cores."""
        return self.threads if self.threads is not None else physical_cores()

    def info(self) -> DeviceInfo:
        """CPU model, OS, ABI, a stable fingerprint, the LiteRT version and the current state.

        Raises
        ------
        MissingExtraError
            Without ``ai-edge-litert``.
        """
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        model = cpu_model_name(cpuinfo)
        os_name = f"{platform.system()} {platform.release()}".strip()
        stable = {"cpu_model": model, "physical_cores": physical_cores(cpuinfo, allowed=1 << 30),
                  "logical_cpus": os.cpu_count(), "os": os_name, "machine": platform.machine()}
        fingerprint = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
        return DeviceInfo(
            name=self.name, kind=self.kind, model=model, soc=model, os=os_name,
            abi=platform.machine(), fingerprint=fingerprint,
            runtime_versions={"litert": litert_version(), "numpy": np.__version__,
                              "python": platform.python_version()},
            state={**cpu_state(), "threads_default": self.default_threads(),
                   "delegate": self.delegate})

    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        """``litert``, the ai-edge-litert version, the delegate and the threads.

        Raises
        ------
        UserInputError
            If ``threads`` < 1.
        MissingExtraError
            Without ``ai-edge-litert``.
        """
        n = int(threads if threads is not None else self.default_threads())
        if n < 1:
            raise UserInputError(f"threads must be at least 1, got {n}")
        return RuntimeIdentity("litert", litert_version(), self.provider, n)

    def interpreter(self, path: str | Path, threads: int) -> Any:
        """A LiteRT ``Interpreter`` for ``path`` with this device's delegate, tensors allocated.

        Raises
        ------
        DeviceError
            If the interpreter cannot load the model.
        """
        mod = _interpreter_module()
        resolver = (mod.OpResolverType.AUTO if self.delegate == "xnnpack"
                    else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            interp = mod.Interpreter(model_path=str(path), num_threads=int(threads),
                                     experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(f"LiteRT could not load {path}: {exc}") from None
        return interp

    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Time ``artifact`` (``.tflite``) with the LiteRT interpreter on this CPU.

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
            Samples in seconds; ``extra`` holds the stop reason, warm-up times, delegate, seed.

        Raises
        ------
        UserInputError
            If the spec does not match the artifact/device, or the model has several inputs
            or another input shape.
        DeviceError
            If the interpreter cannot load or run the model.
        MissingExtraError
            Without ``ai-edge-litert``.
        """
        self.check_spec(artifact, spec)
        self.check_sampling(sampling)
        before = self.info()
        interp = self.interpreter(artifact.path, spec.threads)
        inputs = interp.get_input_details()
        if len(inputs) != 1:
            raise UserInputError(f"{artifact.path} has {len(inputs)} inputs; latbench times "
                                 "models with one input")
        shape = tuple(int(d) for d in inputs[0]["shape"])
        if shape != tuple(spec.input_shape):
            raise UserInputError(f"{artifact.path} takes input {shape}, the spec says "
                                 f"{tuple(spec.input_shape)}")
        interp.set_tensor(inputs[0]["index"], random_input(shape, inputs[0]["dtype"], self.seed))
        invoke = interp.invoke
        try:
            result = sample(wall_clock(invoke), warmup=spec.warmup, repeats=spec.repeats,
                            sampling=sampling, progress=progress)
        except (UserInputError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise DeviceError(f"LiteRT failed running {artifact.path}: {exc}") from None
        after = self.info()
        extra = {**result.extra(), "delegate": self.delegate, "seed": self.seed}
        if sampling is not None:
            extra["sampling"] = sampling.to_dict()
        threshold = sampling.threshold if sampling is not None else None
        kw = {"confidence_threshold": threshold} if threshold is not None else {}
        return Measurement(spec=spec, samples_s=result.samples_s, info_before=before,
                           info_after=after, extra=extra, **kw)
