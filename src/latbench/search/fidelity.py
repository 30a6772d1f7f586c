"""How much each candidate damages the network, measured on a calibration batch.

The damage of a candidate is its layer's relative squared output error
``‖ĝ(X) − g(X)‖² / ‖g(X)‖²`` (``X`` the layer's real input on the calibration batch),
scaled by the layer's *sensitivity*: how much of a layer-level error reaches the network
output. Sensitivity is measured once per layer by swapping in one mid-rank candidate and
comparing the network outputs. Damages of different layers then add up to an estimate of
the squared relative output error, which the knapsack minimises. Where the forward passes
are cheap enough, each candidate is instead scored on the network output directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from latbench.search.candidates import LayerSlot

__all__ = ["calibration_batch", "score_candidates", "output_error"]


def calibration_batch(input_shape: Sequence[int], n: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal batch of ``n`` inputs shaped like ``input_shape[1:]``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((int(n),) + tuple(input_shape[1:]), generator=gen)


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def output_error(reference: torch.Tensor, model: nn.Module, x: torch.Tensor) -> float:
    """Relative output error ``‖f(x) − ref‖ / ‖ref‖`` of ``model`` on ``x``."""
    with torch.no_grad():
        y = _out(model.eval(), x)
    return float(torch.linalg.norm(y - reference) / torch.linalg.norm(reference).clamp_min(1e-30))


def _rel_sq(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum() / (b ** 2).sum().clamp_min(1e-30))


def score_candidates(model: nn.Module, slots: list[LayerSlot], x: torch.Tensor, *,
                     mode: str = "auto", max_network_seconds: float = 10.0,
                     progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Fill ``candidate.damage`` for every candidate; return the reference output ``f(x)``.

    Parameters
    ----------
    mode : {"auto", "network", "layer"}
        ``network``: each candidate's damage is the squared relative change of the network
        output with that one layer swapped in (one forward pass per candidate).
        ``layer``: the layer's own squared relative output error times the layer's
        sensitivity (one network pass per layer; see the module docstring). ``auto``
        takes ``network`` when its forward passes are estimated to take at most
        ``max_network_seconds``.

    ``model`` is modified only temporarily (one layer swapped at a time) and restored.

    Raises
    ------
    UserInputError
        For an unknown mode.
    """
    import time

    from latbench.exceptions import UserInputError

    if mode not in ("auto", "network", "layer"):
        raise UserInputError(f"unknown damage mode {mode!r}: choose auto, network or layer")
    mods = dict(model.named_modules())
    io: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    # Copies, not views: an in-place op after the layer (VGG's ReLU(inplace=True)) would
    # otherwise overwrite the recorded output, and every rank would look equally damaging.
    handles = [mods[s.name].register_forward_hook(
        lambda m, i, o, _n=s.name: io.__setitem__(_n, (i[0].detach().clone(), o.detach().clone())))
        for s in slots]
    model.eval()
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            reference = _out(model, x)
            forward_s = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    ref_norm_sq = float((reference ** 2).sum().clamp_min(1e-30))
    n_cands = sum(len(s.candidates) - 1 for s in slots)
    if mode == "network" or (mode == "auto" and n_cands * forward_s <= max_network_seconds):
        for k, slot in enumerate(slots):
            slot.candidates[0].damage = 0.0
            for c in slot.candidates[1:]:
                model.set_submodule(slot.name, c.module.eval())
                try:
                    with torch.no_grad():
                        c.damage = float(((_out(model, x) - reference) ** 2).sum()) / ref_norm_sq
                finally:
                    model.set_submodule(slot.name, slot.layer)
            if progress is not None:
                progress(k + 1, len(slots))
        return reference
    for k, slot in enumerate(slots):
        xin, yout = io[slot.name]
        with torch.no_grad():
            layer_err = [0.0] + [_rel_sq(c.module.eval()(xin), yout) for c in slot.candidates[1:]]
        # Sensitivity from the candidate whose layer error is the median of this layer's.
        order = sorted(range(1, len(slot.candidates)), key=lambda j: layer_err[j])
        probe = order[len(order) // 2]
        model.set_submodule(slot.name, slot.candidates[probe].module)
        try:
            with torch.no_grad():
                out_sq = float(((_out(model, x) - reference) ** 2).sum()) / ref_norm_sq
        finally:
            model.set_submodule(slot.name, slot.layer)
        sensitivity = out_sq / layer_err[probe] if layer_err[probe] > 0 else 1.0
        for c, e in zip(slot.candidates, layer_err):
            c.damage = sensitivity * e
        if progress is not None:
            progress(k + 1, len(slots))
    return reference
