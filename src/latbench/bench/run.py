"""One-off measurements: time one model file on one device, or check that a device works,
and :func:`export_for` (a model in the format a device runs).

These are the library calls behind ``bench run`` and ``bench devices check``; they live
in ``bench`` because the check builds and exports a model, which ``devices`` may not do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from latbench.artifact import Artifact
from latbench.measure.measurement import Measurement
from latbench.measure.spec import DeviceInfo
from latbench.measure.timing import Sampling
from latbench.devices.base import Device

if TYPE_CHECKING:
    from torch import nn

__all__ = ["run_model", "check_device", "measure_artifact", "spread_guard", "export_for",
           "CheckResult", "CHECK_INPUT_SHAPE"]

#: Input of the tiny model ``check_device`` runs.
CHECK_INPUT_SHAPE = (1, 3, 32, 32)

ProgressFn = Callable[[int, int], None]


def spread_guard(device: Device, repeats: int, max_time_s: float = 20.0) -> Sampling | None:
    """The sampling that sweeps and searches use: past ``repeats``, keep sampling while the
    timings are spread (IQR/median ≥ 5 %), up to 10×``repeats`` samples or ``max_time_s``
    (whole models 20 s; single layers, of which there are hundreds, a few seconds).

    On a shared machine a burst of load during 20 samples moved a stored median by 15 %;
    more samples let the quiet ones outvote it. ``None`` for devices that time outside this
    process (adb runners take a fixed count).
    """
    if not device.capabilities.adaptive_sampling:
        return None
    return Sampling(adaptive=True, max_repeats=10 * max(1, repeats), max_time_s=max_time_s)


def export_for(device: Device, model: "nn.Module", input_shape: Sequence[int],
               path: str | Path) -> Artifact:
    """Export ``model`` in the format ``device`` runs (``device.capabilities.format``: ONNX
    for ``cpu``, ``cuda`` and perf_test phones, TFLite for ``litert`` and ``benchmark_model``
    phones) at ``path`` with that format's suffix.

    Raises
    ------
    ExportError
        If export fails.
    MissingExtraError
        For TFLite without the ``tflite`` extra.
    """
    from latbench.compress.export import export_model

    return export_model(model, input_shape, Path(path), device.capabilities.format)


def measure_artifact(device: Device, artifact: Artifact, *, threads: int | None = None,
                     warmup: int = 10, repeats: int = 50, sampling: Sampling | None = None,
                     progress: ProgressFn | None = None) -> Measurement:
    """Make the spec on ``device`` and measure ``artifact``, adaptively if ``sampling`` says so.

    Raises
    ------
    UserInputError
        If an option is out of range, or adaptive sampling is asked of a device that
        cannot do it.
    DeviceError
        If the device fails.
    """
    device.check_sampling(sampling)
    spec = device.make_spec(artifact, threads=threads, warmup=warmup, repeats=repeats)
    return device.measure(artifact, spec, progress=progress, sampling=sampling)


def run_model(model_path: str | Path, device: str, *, threads: int | None = None,
              warmup: int = 10, repeats: int = 50, adaptive: bool = False,
              max_repeats: int = 1000, max_time_s: float = 30.0,
              devices_file: str | Path | None = None,
              progress: ProgressFn | None = None) -> Measurement:
    """Time an ``.onnx`` or ``.tflite`` file on the named device.

    Parameters
    ----------
    model_path : str or Path
        An ONNX or TFLite model, in the format the device runs; its first input's shape is
        used (dynamic ONNX dimensions become 1).
    device : str
        Device name (``cpu``, ``cuda`` or a ``devices.toml`` profile).
    threads : int, optional
        Intra-op threads; the device's default when ``None``.
    warmup, repeats : int
        Untimed and timed runs (``repeats`` is the minimum in adaptive mode).
    adaptive : bool
        Keep sampling until IQR/median < 5 %, ``max_repeats`` samples or ``max_time_s``
        seconds (see :class:`~latbench.measure.timing.Sampling`).
    devices_file : str or Path, optional
        Explicit devices file.
    progress : callable, optional
        ``progress(done, total)`` after each timed run.

    Raises
    ------
    UserInputError
        If the file is missing or not a model, the device runs another format, the device is
        unknown, or an option is bad.
    DeviceError
        If the device cannot be reached or the run fails.
    """
    from latbench.devices.registry import get_device

    artifact = Artifact.from_file(model_path)
    sampling = Sampling(adaptive=True, max_repeats=max_repeats, max_time_s=max_time_s) \
        if adaptive else None
    with get_device(device, devices_file) as dev:
        return measure_artifact(dev, artifact, threads=threads, warmup=warmup, repeats=repeats,
                                sampling=sampling, progress=progress)


@dataclass(frozen=True)
class CheckResult:
    """What ``check_device`` found: the device's identity and a tiny model's timing."""

    info: DeviceInfo
    measurement: Measurement


def check_device(name: str, *, devices_file: str | Path | None = None, warmup: int = 3,
                 repeats: int = 10, progress: ProgressFn | None = None) -> CheckResult:
    """Connect to a device, read its info, and time a tiny conv model on it.

    The model (two 3×3 convolutions on a 1×3×32×32 input) is exported, in the format the
    device runs, to a temporary directory that is removed afterwards.

    Raises
    ------
    UserInputError
        If the name is unknown or the devices file is invalid.
    DeviceError
        If the device is unavailable or the run fails.
    """
    import torch
    from torch import nn

    import tempfile

    from latbench.concurrency import owned_tempdir
    from latbench.devices.registry import get_device
    from latbench.exceptions import WorkdirError

    with get_device(name, devices_file) as dev:
        info = dev.info()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        # A folder named after this process: one a killed check leaves is removed later.
        try:
            folder = owned_tempdir("latbench-check-")
            tmp = folder.__enter__()
        except OSError as exc:
            raise WorkdirError(f"cannot make a folder for the check model in "
                               f"{tempfile.gettempdir()!r}: {exc.strerror or exc}; free space "
                               "there or point TMPDIR at a writable folder") from None
        try:
            artifact = export_for(dev, model, CHECK_INPUT_SHAPE, tmp / "check")
            m = measure_artifact(dev, artifact, warmup=warmup, repeats=repeats,
                                 progress=progress)
        finally:
            folder.__exit__(None, None, None)
    return CheckResult(info, m)
