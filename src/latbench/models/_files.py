"""Reading ``torch.save`` files without running code from them.

``torch.load(weights_only=True)`` unpickles with an allowlist: tensors, containers and
primitive types, nothing that can call an arbitrary function. A whole saved ``nn.Module``
also names its classes; those are allowed here when they are ``nn.Module`` subclasses
defined by torch (``torch.nn``), torchvision (``torchvision.models``, ``torchvision.ops``)
or latbench itself (``latbench.models``, ``latbench.compress`` — what ``bench compress
--save`` and ``bench search`` write), plus ``functools.partial`` (torchvision's vision
transformers keep their norm layer as one). Unpickling such a module only creates
objects of those classes and sets their attributes; it calls no other code. A class from
anywhere else (your own network's, or one a crafted file names) needs the full unpickler,
which runs whatever the file says, so it is refused unless the caller passes
``trust_file=True`` (``--trust-file``).

The allowlist is built per file from the globals its pickle names
(``torch.serialization.get_unsafe_globals_in_checkpoint``, a static scan); the
``weights_only`` unpickler still enforces it, so a name the scan missed is refused, not run.
"""

from __future__ import annotations

import functools
import importlib
import re
import warnings
from pathlib import Path
from typing import Any

from latbench.exceptions import UserInputError

__all__ = ["load_torch_file", "TRUSTED_MODULE_PREFIXES"]

#: Modules whose ``nn.Module`` classes a saved module may use under safe loading.
TRUSTED_MODULE_PREFIXES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.",
                           "latbench.models.", "latbench.compress.")

_UNSUPPORTED_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _trusted_global(name: str) -> Any | None:
    """The object ``module.qualname`` names if safe loading may create it, else ``None``."""
    from torch import nn

    if name == "functools.partial":
        return functools.partial
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if not (module + ".").startswith(TRUSTED_MODULE_PREFIXES):
            continue
        try:
            obj: Any = importlib.import_module(module)
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
    return None


def _refusal(spec: str, what: str) -> UserInputError:
    return UserInputError(
        f"model file {spec!r} needs {what}, which safe loading does not allow: unpickling it "
        "could run any code the file holds. If you made the file yourself, pass --trust-file "
        "(trust_file=True); or save a state dict (torch.save(model.state_dict(), path)) and "
        "give NAME@path, e.g. resnet18@weights.pt")


def load_torch_file(path: Path, spec: str, *, trust_file: bool = False) -> Any:
    """What ``torch.save`` wrote at ``path``, unpickled safely unless ``trust_file``.

    Parameters
    ----------
    path : Path
        The file.
    spec : str
        How the user named it (for messages).
    trust_file : bool
        Use the full unpickler (``weights_only=False``): the file may run code.

    Raises
    ------
    UserInputError
        If the file is unreadable, not a torch file, or (without ``trust_file``) needs a
        class or function outside the allowlist.
    """
    import pickle

    import torch

    if trust_file:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises RuntimeError, EOFError, ... for a bad file
            raise UserInputError(f"cannot load model file {spec!r}: {_reason(exc)}") from None
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        # Not a zip: torch's legacy format (state dicts load, whole modules cannot), which
        # starts with a protocol-2 pickle, or not a torch file at all.
        if head[:1] != b"\x80":
            raise UserInputError(f"cannot load model file {spec!r}: not a torch.save file "
                                 f"({'empty' if not head else 'neither a zip nor a pickle'})"
                                 ) from None
        names = []
    except Exception as exc:  # a truncated or foreign file
        raise UserInputError(f"cannot load model file {spec!r}: {_reason(exc)}") from None
    refused = sorted(n for n in names if _trusted_global(n) is None)
    if refused:
        shown = ", ".join(repr(n) for n in refused[:3]) + (
            f" and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise _refusal(spec, shown)
    allowed = [_trusted_global(name) for name in sorted(names)]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the refusal below says more
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = _UNSUPPORTED_RE.search(text)  # the legacy (non-zip) format is not scanned above
        if m is not None:
            raise _refusal(spec, repr(m.group(1))) from None
        if "WeightsUnpickler error" in text:
            detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
            raise _refusal(spec, f"more than tensors and torch modules ({detail})") from None
        raise UserInputError(f"cannot load model file {spec!r}: {_reason(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError ... for a bad file
        raise UserInputError(f"cannot load model file {spec!r}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """Why torch could not read a file, in one short line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if ". " in first[:200]:
        first = first[: first.index(". ") + 1]
    return f"not a readable torch.save file ({type(exc).__name__}: {first[:200]})" if first \
        else f"not a readable torch.save file ({type(exc).__name__})"
