"""Export a model to ONNX as an :class:`~latbench.artifact.Artifact`."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import nn

from latbench.artifact import DEFAULT_OPSET, Artifact, sha256_file
from latbench.exceptions import ExportError

__all__ = ["export_onnx", "ExportError"]



def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> Artifact:
    """Export ``model`` (in eval mode) to ONNX at ``path`` and check the file.

    Uses the TorchScript exporter (0.4 s against 3.1 s for the dynamo exporter on
    ResNet-18 here) and falls back to the default exporter where that switch is missing.
    The example input is made in the model's dtype and on its device, so a float64,
    bfloat16 or CUDA model exports as it is (the ONNX graph then holds that dtype); the
    model is left as it was (every module's train/eval mode is put back).

    Parameters
    ----------
    model : nn.Module
    input_shape : sequence of int
        Full input shape including the batch.
    path : str or Path
        Where the ``.onnx`` file is written (parents are created).
    opset : int
    check : bool
        Run ``onnx.checker`` on the file.

    Raises
    ------
    ExportError
        If export or ``onnx.checker`` fails.
    """
    import onnx

    from latbench.data.features import eval_mode, model_dtype_device

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    dtype, device = model_dtype_device(model)
    kwargs = dict(opset_version=opset, input_names=["input"], output_names=["output"])
    try:
        x = torch.zeros(shape, dtype=dtype, device=device)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad(), \
                eval_mode(model):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
            except TypeError:  # an older torch has no ``dynamo`` switch: TorchScript is its exporter
                torch.onnx.export(model, (x,), str(path), **kwargs)
        if check:
            onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    return Artifact(path, sha256_file(path), shape, opset)
