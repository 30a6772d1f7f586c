"""Export a model as an :class:`~latbench.artifact.Artifact`: ONNX (``export_onnx``) or
TFLite (``export_tflite``, through ``litert-torch``), and ``export_model`` to pick by format.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import nn

from latbench.artifact import DEFAULT_OPSET, FORMATS, Artifact, sha256_file
from latbench.exceptions import ExportError, MissingExtraError, UserInputError

__all__ = ["export_onnx", "export_tflite", "export_model", "ExportError", "TFLITE_RTOL"]

#: Largest |TFLite − torch| allowed by :func:`export_tflite`'s check, relative to the largest
#: |torch output| (the output's scale): float32 kernels that reorder sums differ by ~1e-6.
TFLITE_RTOL = 1e-4


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def _litert_torch():
    # TensorFlow's C++ logging (pulled in by the converter) is noisy on import; a user's own
    # setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import litert_torch
    except ImportError:
        raise MissingExtraError("tflite", "litert-torch", "TFLite export") from None
    return litert_torch


def export_tflite(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    *,
    check: bool = True,
    rtol: float = TFLITE_RTOL,
    seed: int = 0,
) -> Artifact:
    """Convert ``model`` (in eval mode) to a ``.tflite`` file at ``path`` with ``litert-torch``
    (``torch.export`` → StableHLO → the TFLite converter; no TensorFlow install) and check it.

    The input keeps PyTorch's layout (e.g. NCHW): the converter inserts the transposes. BatchNorm
    folds into the convolutions and activations fuse into them, as the TFLite converter does.

    Parameters
    ----------
    model : nn.Module
        A float32 model; it is left as it was (a model on another device is exported from a
        CPU copy).
    input_shape : sequence of int
        Full input shape including the batch.
    path : str or Path
        Where to write the ``.tflite`` file (parents are created).
    check : bool
        Run the file once with the LiteRT interpreter (``ai-edge-litert``) on a seeded normal
        input and compare with torch: max |TFLite − torch| ≤ ``rtol`` · max |torch|.
    rtol : float
        Tolerance of the check, relative to the output's scale.
    seed : int
        Seed of the check input.

    Returns
    -------
    Artifact
        ``format="tflite"``, ``opset=0``.

    Raises
    ------
    MissingExtraError
        Without ``litert-torch`` / ``ai-edge-litert`` (``pip install "latbench[tflite]"``).
    UserInputError
        For a model that is not float32.
    ExportError
        If conversion fails or the check finds the outputs apart.
    """
    litert_torch = _litert_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point() and param.dtype != torch.float32:
        raise UserInputError(f"TFLite export takes float32 models; {type(model).__name__} is "
                             f"{str(param.dtype).removeprefix('torch.')}: export model.float()")
    net = model
    if param is not None and param.device.type != "cpu":
        net = copy.deepcopy(model).cpu()
    was_training = net.training
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float32)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(net, (x,))
            edge.export(str(path))
            reference = net(x) if check else None
    except Exception as exc:  # torch.export and the converter raise many kinds
        raise ExportError(f"TFLite export of {type(model).__name__} failed: "
                          f"{_first_line(exc)}") from exc
    finally:
        net.train(was_training)
    if check:
        _check_tflite(path, x, reference, rtol, type(model).__name__)
    return Artifact(path, sha256_file(path), shape, 0, "tflite")


def _check_tflite(path: Path, x: torch.Tensor, reference: object, rtol: float, name: str) -> None:
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingExtraError("tflite", "ai-edge-litert", "checking a TFLite export") from None
    if not isinstance(reference, torch.Tensor):
        raise ExportError(f"TFLite export of {name}: the model returns "
                          f"{type(reference).__name__}, not one tensor")
    try:
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        (inp,) = interp.get_input_details()
        interp.set_tensor(inp["index"], x.numpy())
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
    except Exception as exc:
        raise ExportError(f"the TFLite export of {name} does not run in the LiteRT interpreter: "
                          f"{_first_line(exc)}") from exc
    ref = reference.detach().cpu().numpy()
    if out.shape != ref.shape:
        raise ExportError(f"the TFLite export of {name} gives shape {tuple(out.shape)}, torch "
                          f"{tuple(ref.shape)}")
    scale = float(np.max(np.abs(ref))) or 1.0
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) / scale
    if not err <= rtol:
        raise ExportError(f"the TFLite export of {name} is off: max |TFLite − torch| is "
                          f"{err:.2e} of the output scale (allowed {rtol:.0e})")


def export_model(model: nn.Module, input_shape: Sequence[int], path: str | Path,
                 fmt: str | None = None, **kwargs) -> Artifact:
    """Export in ``fmt`` (``onnx`` or ``tflite``; by default the one ``path``'s suffix names).

    ``path``'s suffix is replaced by the format's. Keyword arguments go to the exporter.

    Raises
    ------
    UserInputError
        For an unknown format or suffix.
    ExportError, MissingExtraError
        As :func:`export_onnx` / :func:`export_tflite`.
    """
    from latbench.artifact import format_of

    path = Path(path)
    fmt = fmt or format_of(path)
    suffix = next((s for s, f in FORMATS.items() if f == fmt), None)
    if suffix is None:
        raise UserInputError(f"unknown model format {fmt!r}; latbench exports "
                             f"{', '.join(FORMATS.values())}")
    path = path.with_suffix(suffix)
    if fmt == "tflite":
        return export_tflite(model, input_shape, path, **kwargs)
    return export_onnx(model, input_shape, path, **kwargs)
