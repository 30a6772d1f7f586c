"""One resolver from a MODEL argument to an ``nn.Module``.

Accepted spellings:

* a torchvision classification model name (``resnet18``, ``vgg11``, ``mobilenet_v2``, ...),
  randomly initialised — nothing is downloaded;
* ``nb201:<arch string>`` — the NAS-Bench-201 network with its dead edges removed, and
  ``nb201-all:<arch string>`` — the same architecture as the NAS-Bench-201 reference code
  builds it, every edge present (see :mod:`latbench.models.nb201`);
* a path to a ``torch.save``-d ``nn.Module``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from latbench.exceptions import UserInputError
from latbench.registry import suggest

__all__ = ["resolve_model", "default_input_shape", "torchvision_names", "NB201_SPECS"]


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def default_input_shape(spec: str) -> tuple[int, int, int, int]:
    """The natural input shape for a MODEL spelling (NB201: 32×32, otherwise 224×224)."""
    return (1, 3, 32, 32) if spec.startswith(NB201_PREFIXES) else (1, 3, 224, 224)


#: MODEL prefixes of the NAS-Bench-201 builds → their edge convention.
NB201_SPECS = {"nb201:": "live", "nb201-all:": "all"}
NB201_PREFIXES = tuple(NB201_SPECS)


def resolve_model(spec: str | nn.Module, *, seed: int = 0) -> nn.Module:
    """Return the ``nn.Module`` named by ``spec``, in eval mode.

    Parameters
    ----------
    spec : str or nn.Module
        A torchvision model name, ``nb201:<arch>``, or a path to a saved module.
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
    for prefix, edges in NB201_SPECS.items():
        if spec.startswith(prefix):
            from latbench.models.nb201 import build_nb201

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return build_nb201(spec[len(prefix):], edges=edges)
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
            "nb201:<arch string> (nb201-all:<arch string> for the reference code's graph), or a "
            "path to a torch.save-d module"
        )
    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tvm.get_model(spec, weights=None).eval()
