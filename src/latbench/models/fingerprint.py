"""What a model *is*, as a hash: its structure and its state, not the file it came from.

A sweep keys each variant before any work so that a rerun skips what is stored
(:func:`latbench.bench.variants.variant_key`). A built-in spelling (``resnet18``,
``nb201:<arch>``, ``digits``) with its seed always builds the same network, so the spelling
is its key; a *file* can be overwritten with another network under the same path, so
variants of models read from files are keyed by this fingerprint too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["model_fingerprint", "reads_model_file"]


def reads_model_file(spec: str) -> bool:
    """Whether the MODEL spelling ``spec`` reads a file (a saved module, or ``NAME@PATH``):
    then the same spelling may name another network tomorrow."""
    path = Path(spec)
    if path.suffix in {".pt", ".pth"} or path.exists():
        return True
    return "@" in spec


def model_fingerprint(model: nn.Module) -> str:
    """A sha256 (hex) of ``model``'s structure and state.

    Structure: every submodule's name, class (module and qualified name) and
    ``extra_repr`` (kernel sizes, strides, ...), in registration order. State: every
    parameter and buffer's name, dtype, shape and bytes. Two modules with equal fingerprints
    run the same layers with the same weights; saving and loading a module again (or under
    another file name, or with other checkpoint entries beside its state dict) keeps it.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()
    for name, mod in model.named_modules():
        cls = type(mod)
        h.update(f"M|{name}|{cls.__module__}.{cls.__qualname__}|{mod.extra_repr()}\n".encode())
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=False).items():
            if not isinstance(t, torch.Tensor):
                h.update(f"S|{name}|{t!r}\n".encode())
                continue
            h.update(f"T|{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            flat = t.detach().to("cpu")
            if flat.is_quantized:  # its integer values and scale are its state
                flat = flat.int_repr()
            flat = flat.contiguous().reshape(-1)
            if flat.numel():
                h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
