"""What runs on the cluster: a device's actor, and the compress/export task.

:class:`DeviceWorker` is one device, driven from the host it is attached to (Ray runs the
methods of one actor one at a time, so measurements on a device are strictly serial).
:func:`build` compresses and exports one variant on any host with a free CPU; the model
files travel to the device's host as :class:`ArtifactBlob` objects in Ray's object store.
Neither writes the store: the driver does (see :mod:`latbench.farm.sweep`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from latbench.artifact import Artifact
from latbench.exceptions import DeviceError

__all__ = ["ArtifactBlob", "BuildReport", "DeviceHello", "DeviceWorker", "build"]


@dataclass(frozen=True)
class ArtifactBlob:
    """An exported model in memory: what an :class:`~latbench.artifact.Artifact` points at."""

    name: str
    data: bytes
    sha256: str
    input_shape: tuple[int, ...]
    opset: int
    format: str

    @classmethod
    def read(cls, artifact: Artifact) -> "ArtifactBlob":
        return cls(artifact.path.name, artifact.path.read_bytes(), artifact.sha256,
                   tuple(artifact.input_shape), artifact.opset, artifact.format)

    def write(self, folder: Path) -> Artifact:
        """Write the model into ``folder`` and describe it.

        Raises
        ------
        DeviceError
            If the bytes that arrived are not those exported (a corrupted transfer).
        """
        path = Path(folder) / self.name
        path.write_bytes(self.data)
        if hashlib.sha256(self.data).hexdigest() != self.sha256:
            path.unlink(missing_ok=True)
            raise DeviceError(f"model file {self.name} arrived corrupted (sha256 differs)")
        return Artifact(path, self.sha256, self.input_shape, self.opset, self.format)


@dataclass(frozen=True)
class BuildReport:
    """What the driver learns of a build: the layer table, seconds per stage, the host, or
    the stage that failed and why (see :class:`~latbench.bench.sweep.BuiltVariant`)."""

    table: pd.DataFrame | None
    compress_s: float
    export_s: float
    node_id: str
    failed_stage: str | None = None
    error: str | None = None
    workdir_problem: str | None = None


def build(variant: Any, net: Any, formats: tuple[str, ...], gates: dict[str, Any]
          ) -> tuple[Any, ...]:
    """Compress and export ``variant`` (from the source module ``net``) in each of
    ``formats``; a Ray task with ``num_returns = 1 + len(formats)``.

    Returns the :class:`BuildReport`, then one :class:`ArtifactBlob` per format (``None``
    where the build failed). On a host with a :class:`~latbench.farm.gate.HostGate`
    (``gates`` by node id) it waits while that host measures on its own CPU.
    """
    import ray

    from latbench.bench.sweep import build_variant
    from latbench.concurrency import owned_tempdir
    from latbench.farm.gate import building

    node_id = ray.get_runtime_context().get_node_id()
    with building(gates.get(node_id)), owned_tempdir("latbench-sweep-") as work:
        built = build_variant(variant, lambda _spec: net, formats, work)
        blobs = [ArtifactBlob.read(built.artifacts[f]) if f in built.artifacts else None
                 for f in formats]
    report = BuildReport(built.table, built.compress_s, built.export_s, node_id,
                         built.failed_stage, built.error, built.workdir_problem)
    return (report, *blobs)


@dataclass(frozen=True)
class DeviceHello:
    """What a device actor tells the driver when it has opened its device."""

    info: Any  # DeviceInfo
    runtime: tuple[str, str, int]  # (runtime, runtime_version, threads)
    format: str
    in_process: bool
    node_id: str
    process: str  # str(ProcessId) of the actor
    version: str  # latbench.__version__ on that host


class DeviceWorker:
    """One device, opened on its host (a Ray actor: its methods run one at a time).

    Parameters
    ----------
    profile : Profile
        The device's profile (:class:`~latbench.devices.profiles.Profile`), read by the
        driver; paths in it (an ADB key, a runner) are paths on the device's host.
    """

    def __init__(self, profile: Any) -> None:
        self._profile = profile
        self._dev: Any = None
        self._tmp: Any = None
        self._work: Path | None = None

    def open(self, threads: int | None) -> DeviceHello:
        """Make the device and say what it is.

        Raises
        ------
        UserInputError
            If the profile is invalid.
        DeviceError
            If the device cannot be reached.
        """
        import ray

        import latbench
        from latbench.bench.layers import runtime_identity
        from latbench.concurrency import owned_tempdir, this_process
        from latbench.devices.registry import make_device

        if self._dev is None:
            self._dev = make_device(self._profile)
            self._tmp = owned_tempdir("latbench-sweep-")
            self._work = self._tmp.__enter__()
        dev = self._dev
        return DeviceHello(dev.info(), runtime_identity(dev, threads), dev.capabilities.format,
                           bool(dev.capabilities.in_process),
                           ray.get_runtime_context().get_node_id(), str(this_process()),
                           latbench.__version__)

    def measure(self, blob: ArtifactBlob, threads: int | None, warmup: int, repeats: int,
                adaptive: bool, gate: Any | None = None) -> tuple[Any, float]:
        """Measure one model: ``(Measurement, seconds it took)``.

        ``gate`` (a :class:`~latbench.farm.gate.HostGate` handle) is held as the writer while
        the device measures, for devices that time on this host's CPU.

        Raises
        ------
        DeviceError
            If the device fails.
        """
        from latbench.bench.run import measure_artifact, spread_guard
        from latbench.farm.gate import measuring

        assert self._work is not None, "open() first"
        artifact = blob.write(self._work)
        try:
            with measuring(gate):
                t0 = time.perf_counter()
                m = measure_artifact(
                    self._dev, artifact, threads=threads, warmup=warmup, repeats=repeats,
                    sampling=spread_guard(self._dev, repeats) if adaptive else None)
                return m, time.perf_counter() - t0
        finally:
            artifact.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the device and remove the folder models were written to."""
        try:
            if self._dev is not None:
                self._dev.close()
        finally:
            self._dev = None
            if self._tmp is not None:
                self._tmp.__exit__(None, None, None)
                self._tmp = None
