"""One resolver from a MODEL argument to an ``nn.Module``.

Accepted spellings:

* a torchvision classification model name (``resnet18``, ``vgg11``, ``mobilenet_v2``, ...),
  randomly initialised — nothing is downloaded;
* ``nb201:<arch string>`` — the NAS-Bench-201 network with its dead edges removed, and
  ``nb201-all:<arch string>`` — the same architecture as the NAS-Bench-201 reference code
  builds it, every edge present (see :mod:`latbench.models.nb201`);
* ``digits`` or ``digits:WIDTH`` — the small CNN of :mod:`latbench.models.digits`, trained
  here (seeded, a few seconds) on scikit-learn's digits at 32×32, one input channel;
* a path to a ``torch.save``-d ``nn.Module`` (read without running code from it unless
  ``trust_file``; see :mod:`latbench.models._files`);
* ``NAME@PATH``: one of the first three with a saved state dict loaded into it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from latbench.exceptions import UserInputError
from latbench.models._check import check_input_shape, input_checked, shape_text
from latbench.registry import suggest

__all__ = ["resolve_model", "default_input_shape", "torchvision_names", "NB201_SPECS",
           "check_input_shape", "input_checked", "shape_text"]


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def default_input_shape(spec: str) -> tuple[int, int, int, int]:
    """The natural input shape for a MODEL spelling (NB201: 32×32, digits: 1×32×32, else 224×224)."""
    if _is_digits(spec):
        return (1, 1, 32, 32)
    return (1, 3, 32, 32) if spec.startswith(NB201_PREFIXES) else (1, 3, 224, 224)


#: MODEL prefixes of the NAS-Bench-201 builds → their edge convention.
NB201_SPECS = {"nb201:": "live", "nb201-all:": "all"}
NB201_PREFIXES = tuple(NB201_SPECS)


def _is_digits(spec: str) -> bool:
    return spec == "digits" or spec.startswith("digits:")


def _digits_model(spec: str, seed: int) -> nn.Module:
    from latbench.models.digits import load_digits_data, train_digits_cnn

    width_text = spec.partition(":")[2] or "16"
    if not width_text.isdigit() or int(width_text) < 1:
        raise UserInputError(f"bad model {spec!r}: write 'digits' or 'digits:WIDTH' with a positive "
                             "int width (16 by default)")
    return train_digits_cnn(load_digits_data(32, seed=0), width=int(width_text), epochs=4, seed=seed)


def resolve_model(spec: str | nn.Module, *, seed: int = 0, trust_file: bool = False) -> nn.Module:
    """Return the ``nn.Module`` named by ``spec``, in eval mode.

    Parameters
    ----------
    spec : str or nn.Module
        A torchvision model name, ``nb201:<arch>`` / ``nb201-all:<arch>``, ``digits[:WIDTH]``, a
        path to a ``torch.save``-d module, or
        ``NAME@PATH``: the architecture ``NAME`` (either of the first two spellings) with
        the state dict saved at ``PATH`` (``torch.save(model.state_dict(), PATH)``; a
        checkpoint dict holding it under ``state_dict`` or ``model_state_dict`` also
        works). A module passes through unchanged.
    seed : int
        Seed of the random initialisation, so the same spec gives the same weights.
    trust_file : bool
        Unpickle a saved module fully (``torch.load(weights_only=False)``), which runs any
        code the file holds. Without it a file is read with ``weights_only=True``: state
        dicts, and whole modules built from torch, torchvision and latbench classes (what
        ``bench compress --save`` and ``bench search`` write) load; a module of other
        classes is refused with a message naming ``--trust-file``.

    Raises
    ------
    UserInputError
        If the spec names no known model, the file is missing or unreadable, holds no
        ``nn.Module`` (or no state dict for ``NAME@PATH``), the state dict does not fit the
        architecture, or it needs the full unpickler and ``trust_file`` is false.
    """
    if isinstance(spec, nn.Module):
        return spec
    path = Path(spec)
    if "@" in spec and not path.exists():
        name, _, weights = spec.partition("@")
        return _with_state_dict(resolve_model(name, seed=seed), spec, Path(weights).expanduser(),
                                trust_file)
    if _is_digits(spec):
        return _digits_model(spec, seed)
    for prefix, edges in NB201_SPECS.items():
        if spec.startswith(prefix):
            from latbench.models.nb201 import build_nb201

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return build_nb201(spec[len(prefix):], edges=edges)
    if path.suffix in {".pt", ".pth"} or path.exists():
        if not path.is_file():
            raise UserInputError(f"model file {spec!r} does not exist")
        from latbench.models._files import load_torch_file

        obj = load_torch_file(path, spec, trust_file=trust_file)
        if isinstance(obj, nn.Module):
            return obj.eval()
        if _state_dict_of(obj) is not None:
            raise UserInputError(
                f"{spec!r} holds a state dict (weights without the architecture); name the "
                f"architecture too, e.g. resnet18@{spec}")
        raise UserInputError(
            f"{spec!r} holds a {type(obj).__name__}, not an nn.Module; save the whole module "
            "with torch.save(model, path), or its state dict and give NAME@path"
        )
    names = torchvision_names()
    if spec not in names:
        raise UserInputError(
            f"unknown model {spec!r}{suggest(spec, names)}; give a torchvision model name, "
            "nb201:<arch string> (nb201-all:<arch string> for the reference code's graph), a "
            "path to a torch.save-d module, or NAME@STATE_DICT.pt"
        )
    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tvm.get_model(spec, weights=None).eval()


def _state_dict_of(obj: object) -> dict | None:
    """``obj`` if it is a state dict (names → tensors), or the one a checkpoint dict holds."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def _with_state_dict(net: nn.Module, spec: str, path: Path, trust_file: bool) -> nn.Module:
    from latbench.models._files import load_torch_file

    if not path.is_file():
        raise UserInputError(f"state dict file {str(path)!r} (in {spec!r}) does not exist")
    obj = load_torch_file(path, spec, trust_file=trust_file)
    state = _state_dict_of(obj)
    if state is None:
        hint = (" (it holds a whole module: give its path alone)" if isinstance(obj, nn.Module)
                else "")
        raise UserInputError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict"
                             f"{hint}; save one with torch.save(model.state_dict(), path)")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[1:3] if len(lines) > 1 else lines)[:300]
        raise UserInputError(f"the state dict in {str(path)!r} does not fit "
                             f"{spec.partition('@')[0]!r}: {detail}") from None
    return net.eval()
