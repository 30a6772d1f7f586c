"""Plans as candidate choices: build the compressed model, name the plan."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from latbench.compress.plan import Plan
from latbench.search.candidates import LayerSlot

__all__ = ["assemble", "plan_of"]


def assemble(net: nn.Module, slots: Sequence[LayerSlot], choices: Sequence[int], *,
             fresh: bool = False) -> nn.Module:
    """A copy of ``net`` with slot ``i``'s candidate ``choices[i]`` in place of its layer.

    With ``fresh`` the candidate modules are copied too (the result owns all its
    weights, e.g. for fine-tuning); otherwise they are shared with the candidates.
    """
    out = copy.deepcopy(net).eval()
    for slot, j in zip(slots, choices):
        c = slot.candidates[j]
        if c.method != "keep":
            out.set_submodule(slot.name, copy.deepcopy(c.module) if fresh else c.module)
    return out


def plan_of(slots: Sequence[LayerSlot], choices: Sequence[int]) -> Plan:
    layers = {}
    for slot, j in zip(slots, choices):
        c = slot.candidates[j]
        if c.method != "keep":
            layers[slot.name] = (c.method, tuple(c.rank) if len(c.rank) > 1 else int(c.rank[0]))
    return Plan.from_layers(layers)
