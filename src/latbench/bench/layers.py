"""Measuring one layer configuration alone: the data of lookup tables and search costs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from latbench.measure.measurement import Measurement
from latbench.measure.timing import Sampling
from latbench.data.features import MEASURED_ALONE_OPS, STRING_COLUMNS
from latbench.devices.base import Device
from latbench.exceptions import UserInputError

__all__ = ["LAYER_OPS_MEASURED_ALONE", "LAYER_MAX_TIME_S", "single_layer_model", "measure_layer",
           "runtime_identity"]

#: Layer kinds measured alone. BatchNorm and activations are fused into the convolution by
#: onnxruntime's graph optimiser, so alone they would be timed in a form that never runs.
LAYER_OPS_MEASURED_ALONE = MEASURED_ALONE_OPS

#: Time cap (s) of adaptive sampling for one layer timed alone: a model has hundreds of them.
LAYER_MAX_TIME_S = 3.0


def single_layer_model(row: pd.Series | dict) -> tuple[nn.Module, tuple[int, ...]]:
    """A one-layer model reproducing a layer-table row, and its input shape.

    Raises
    ------
    UserInputError
        For a layer kind outside :data:`LAYER_OPS_MEASURED_ALONE`.
    """
    r = {k: (v if k in STRING_COLUMNS else int(v)) for k, v in dict(row).items()}
    op = r["op"]
    if op in ("conv", "dwconv"):
        padding: str | tuple[int, int] = (r["pad_h"], r["pad_w"])
        if r["pad_h"] < 0 or r["pad_w"] < 0:  # the table's mark of padding="same"/"valid"
            same = r.get("out_h", -1) == r["in_h"] and r.get("out_w", -1) == r["in_w"]
            padding = "same" if same and (r["stride_h"], r["stride_w"]) == (1, 1) else "valid"
        layer: nn.Module = nn.Conv2d(
            r["in_channels"], r["out_channels"], (r["kernel_h"], r["kernel_w"]),
            stride=(r["stride_h"], r["stride_w"]), padding=padding,
            dilation=(r["dilation_h"], r["dilation_w"]), groups=r["groups"], bias=bool(r["bias"]))
        return layer, (1, r["in_channels"], r["in_h"], r["in_w"])
    if op == "linear":
        return nn.Linear(r["in_channels"], r["out_channels"], bias=bool(r["bias"])), (1, r["in_channels"])
    if op in ("maxpool", "avgpool"):
        cls = nn.MaxPool2d if op == "maxpool" else nn.AvgPool2d
        layer = cls((r["kernel_h"], r["kernel_w"]), stride=(r["stride_h"], r["stride_w"]),
                    padding=(r["pad_h"], r["pad_w"]))
        return layer, (1, r["in_channels"], r["in_h"], r["in_w"])
    raise UserInputError(f"layers of kind {op!r} are not measured alone "
                         f"(only {', '.join(LAYER_OPS_MEASURED_ALONE)})")


def measure_layer(device: Device, row: pd.Series | dict, workdir: str | Path, *,
                  threads: int | None = None, warmup: int = 5, repeats: int = 20,
                  seed: int = 0, sampling: Sampling | None = None) -> Measurement:
    """Build, export (in the format the device runs) and time the one-layer model of ``row``
    on ``device``.

    ``sampling`` (e.g. :func:`latbench.bench.run.spread_guard`) lets an in-process device
    keep sampling while the timings are spread.

    Raises
    ------
    DeviceError
        If the device fails.
    """
    from latbench.bench.run import export_for

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer, shape = single_layer_model(row)
    path = Path(workdir) / f"layer-{abs(hash(tuple(sorted(dict(row).items(), key=str)))) % 10**12}"
    artifact = export_for(device, layer.eval(), shape, path)
    try:
        from latbench.bench.run import measure_artifact

        return measure_artifact(device, artifact, threads=threads, warmup=warmup, repeats=repeats,
                                sampling=sampling)
    finally:
        artifact.path.unlink(missing_ok=True)


def runtime_identity(device: Device, threads: int | None) -> tuple[str, str, int]:
    """``(runtime, runtime_version, threads)``: what a stored measurement must match to be reused.

    It is the same for every model on one device, so callers compute it once.
    """
    rt = device.runtime_identity(threads)
    return rt.runtime, rt.runtime_version, rt.threads
