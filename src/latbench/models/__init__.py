"""One resolver from a MODEL argument to an ``nn.Module``.

Accepted spellings:

* a torchvision classification model name (``resnet18``, ``vgg11``, ``mobilenet_v2``, ...),
  randomly initialised — nothing is downloaded;
* ``nb201:<arch string>`` — the NAS-Bench-201 network (see :mod:`latbench.models.nb201`);
* ``digits`` or ``digits:WIDTH`` — the small CNN of :mod:`latbench.models.digits`, trained
  here (seeded, a few seconds) on scikit-learn's digits at 32×32, one input channel;
* a path to a ``torch.save``-d ``nn.Module``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from latbench.exceptions import UserInputError
from latbench.registry import suggest

__all__ = ["resolve_model", "default_input_shape", "torchvision_names"]


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def default_input_shape(spec: str) -> tuple[int, int, int, int]:
    """The natural input shape for a MODEL spelling (NB201: 32×32, digits: 1×32×32, else 224×224)."""
    if _is_digits(spec):
        return (1, 1, 32, 32)
    return (1, 3, 32, 32) if spec.startswith("nb201:") else (1, 3, 224, 224)


def _is_digits(spec: str) -> bool:
    return spec == "digits" or spec.startswith("digits:")


def _digits_model(spec: str, seed: int) -> nn.Module:
    from latbench.models.digits import load_digits_data, train_digits_cnn

    width_text = spec.partition(":")[2] or "16"
    if not width_text.isdigit() or int(width_text) < 1:
        raise UserInputError(f"bad model {spec!r}: write 'digits' or 'digits:WIDTH' with a positive "
                             "int width (16 by default)")
    return train_digits_cnn(load_digits_data(32, seed=0), width=int(width_text), epochs=4, seed=seed)


def resolve_model(spec: str | nn.Module, *, seed: int = 0) -> nn.Module:
    """Return the ``nn.Module`` named by ``spec``, in eval mode.

    Parameters
    ----------
    spec : str or nn.Module
        A torchvision model name, ``nb201:<arch>``, ``digits[:WIDTH]``, or a path to a saved
        module.
        A module passes through unchanged.
    seed : int
        Seed of the random initialisation, so the same spec gives the same weights.

    Raises
    ------
    UserInputError
        If the spec names no known model or the file holds no ``nn.Module``.
    """
    if isinstance(spec, nn.Module):
        return spec
    if _is_digits(spec):
        return _digits_model(spec, seed)
    if spec.startswith("nb201:"):
        from latbench.models.nb201 import build_nb201

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_nb201(spec[len("nb201:"):])
    path = Path(spec)
    if path.suffix in {".pt", ".pth"} or path.exists():
        if not path.is_file():
            raise UserInputError(f"model file {spec!r} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises many types for a bad file
            raise UserInputError(f"cannot load model file {spec!r}: {exc}") from None
        if not isinstance(obj, nn.Module):
            raise UserInputError(
                f"{spec!r} holds a {type(obj).__name__}, not an nn.Module; save the whole module "
                "with torch.save(model, path)"
            )
        return obj.eval()
    names = torchvision_names()
    if spec not in names:
        raise UserInputError(
            f"unknown model {spec!r}{suggest(spec, names)}; give a torchvision model name, "
            "nb201:<arch string>, or a path to a torch.save-d module"
        )
    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tvm.get_model(spec, weights=None).eval()
