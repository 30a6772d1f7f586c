"""The one check that a model runs on an input shape: a wrong ``--input`` is one clear line.

Every command that takes a model and an input shape (``compress``, ``sweep``, ``search``,
``layers``, ``predictor predict``) goes through :func:`check_input_shape` (up front) or
:func:`input_checked` (only when the first run of the model failed, so the happy path costs
nothing). Both run the model *plainly* — no featuriser hooks, no exporter — so a failure
there is the model refusing the input, not a bug of latbench's, which keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from latbench.exceptions import LatbenchError, UserInputError

__all__ = ["check_input_shape", "input_checked", "shape_text"]


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 3, 224, 224)`` → ``"1x3x224x224"`` (how ``--input`` is written)."""
    return "x".join(str(int(s)) for s in shape)


def _spatial(shape: tuple[int, ...], dims: int, channels: int) -> list[int]:
    """The spatial size the user most likely meant, read from a wrong ``shape``.

    ``HxW`` (no batch, no channels), ``CxHxW`` (no batch), ``NxCxH`` (a spatial size short:
    taken square), ``NxCxHxWx...`` (one too many) keep their sizes; else 224.
    """
    n = len(shape)
    if n == dims + 2 or (n > dims + 2 and shape[1] == channels):
        return [int(s) for s in shape[2:2 + dims]]
    if n == dims:
        return [int(s) for s in shape]
    if n == dims + 1 and shape[0] == channels:
        return [int(s) for s in shape[1:]]
    if n >= 3 and shape[1] == channels:
        return [int(shape[-1])] * dims
    return [224] * dims


def _suggestion(layer: tuple[str, nn.Module] | None, shape: tuple[int, ...]) -> str:
    """An input shape the first weighted layer would take, keeping what fits of ``shape``."""
    if layer is None:
        return ""
    name, mod = layer
    where = f"layer {name!r} is a {type(mod).__name__}" if name else \
        f"the model is a {type(mod).__name__}"
    if isinstance(mod, nn.modules.conv._ConvNd):
        dims = len(mod.kernel_size)
        example = (1, mod.in_channels, *_spatial(shape, dims, mod.in_channels))
        if example[1:] == shape[1:] and len(shape) == dims + 2:
            return (f" (the first layer, {where}, takes this shape: a larger spatial size may "
                    "be needed by the layers after it)")
        return f", e.g. {shape_text(example)} ({where} of {mod.in_channels} input channels)"
    if isinstance(mod, nn.Linear):
        if len(shape) >= 2 and shape[-1] == mod.in_features:
            return ""
        return f", e.g. 1x{mod.in_features} ({where} of {mod.in_features} input features)"
    return ""


def check_input_shape(model: nn.Module, input_shape: Sequence[int], *,
                      name: str | None = None) -> None:
    """Run ``model`` once on zeros of ``input_shape``; raise one clear error if it refuses them.

    The run is in eval mode without gradients, in the model's dtype and on its device;
    every module's train/eval flag is put back afterwards, so the model is not changed
    (batch-norm statistics are not updated in eval mode).

    Parameters
    ----------
    model : nn.Module
    input_shape : sequence of int
        The shape of one input tensor, batch first (``(1, 3, 224, 224)``).
    name : str, optional
        The MODEL spelling the user gave, for the message.

    Raises
    ------
    UserInputError
        If the model raises on that input: ``model 'resnet18' does not run on input
        224x224 (<torch's first line>); give the input shape it takes with --input, e.g. ...``
        (the example comes from the first convolution or linear layer the input reached).
    """
    shape = tuple(int(s) for s in input_shape)
    first: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}

    def pre_hook(mod: nn.Module, _args: object) -> None:
        if not first and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            first.append((names.get(mod, ""), mod))

    dtype, device = torch.float32, torch.device("cpu")
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            dtype, device = t.dtype, t.device
            break
    flags = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, dtype=dtype, device=device))
    except LatbenchError:
        raise
    except Exception as exc:  # torch raises RuntimeError/ValueError/IndexError/... for a wrong shape
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        who = f"model {name!r}" if name else "the model"
        raise UserInputError(
            f"{who} does not run on input {shape_text(shape)} ({detail}); give the input "
            f"shape it takes with --input{_suggestion(first[0] if first else None, shape)}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag


@contextmanager
def input_checked(model: nn.Module, input_shape: Sequence[int], *,
                  name: str | None = None) -> Iterator[None]:
    """Inside the block, an error of the model's first run is checked against the input shape.

    If the block raises anything but a :class:`~latbench.exceptions.LatbenchError`,
    :func:`check_input_shape` runs the model plainly: when that fails too, its one-line
    :class:`UserInputError` replaces the error; otherwise the original error (a bug) is
    raised unchanged. Nothing runs when the block succeeds.

    Raises
    ------
    UserInputError
        If the model does not run on ``input_shape``.
    """
    try:
        yield
    except LatbenchError:
        raise
    except Exception:
        check_input_shape(model, input_shape, name=name)
        raise
