"""Candidates of a rank search: for every decomposable layer, each method at a grid of ranks.

A candidate carries the decomposed module and its own per-layer feature rows (the rows
it would contribute to the model's layer table), so cost models never rebuild the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from torch import nn

from latbench.compress._base import METHODS
from latbench.compress._linalg import reuse_subspaces
from latbench.compress.model import decomposable_layers
from latbench.compress.ranks import resolve_rank
from latbench.data.features import layer_table
from latbench.exceptions import UserInputError

__all__ = ["Candidate", "LayerSlot", "DEFAULT_FRACTIONS", "generate_candidates"]

#: Fractional ranks tried per method and layer.
DEFAULT_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class Candidate:
    """One way to treat one layer: ``method="keep"`` is the layer as it is."""

    layer: str
    method: str
    rank: tuple[int, ...]
    module: nn.Module
    rows: pd.DataFrame
    params: int
    macs: int
    rel_error: float = 0.0
    cost_ms: float = 0.0  # latency contribution (filled by a cost model)
    damage: float = 0.0  # fidelity loss (filled by fidelity scoring)
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "keep" if self.method == "keep" else f"{self.method}{list(self.rank)}"


@dataclass
class LayerSlot:
    """A decomposable layer, the input shape it sees, and its candidates (``keep`` first)."""

    name: str
    layer: nn.Module
    input_shape: tuple[int, ...]
    candidates: list[Candidate] = field(default_factory=list)


def _input_shapes(model: nn.Module, input_shape: Sequence[int], names: list[str]) -> dict[str, tuple]:
    import torch

    shapes: dict[str, tuple] = {}
    mods = dict(model.named_modules())

    def hook(name: str):
        def record(module, inputs, output) -> None:  # must return None: a value replaces the output
            shapes.setdefault(name, tuple(inputs[0].shape))
        return record

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(tuple(input_shape)))
    finally:
        for h in handles:
            h.remove()
    return shapes


def generate_candidates(
    model: nn.Module,
    input_shape: Sequence[int],
    methods: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    layers: str = "*",
    seed: int = 0,
    method_options: dict[str, dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[LayerSlot]:
    """Decompose every matching layer with every method at every fraction.

    Candidates that would not reduce the layer's parameters, or repeat a rank already
    generated, are dropped. Layers no method supports are left out.

    Raises
    ------
    UserInputError
        For an unknown method or an empty grid.
    """
    import fnmatch

    if not fractions:
        raise UserInputError("the rank grid is empty: give at least one fraction")
    objs = {m: METHODS.get(m) for m in methods}
    todo = [(n, l) for n, l in decomposable_layers(model)
            if fnmatch.fnmatchcase(n, layers) and isinstance(l, (nn.Conv2d, nn.Linear))]
    shapes = _input_shapes(model, input_shape, [n for n, _ in todo])
    slots: list[LayerSlot] = []
    for i, (name, layer) in enumerate(todo):
        if name not in shapes:
            continue  # never executed on this input
        shape = (1,) + shapes[name][1:]
        own = layer_table(layer, shape)
        n_params = sum(p.numel() for p in layer.parameters())
        slot = LayerSlot(name, layer, shape, [Candidate(name, "keep", (), layer, own, n_params,
                                                        int(own["macs"].sum()))])
        with reuse_subspaces():  # one eigendecomposition per layer, not one per rank
            for mname, method in objs.items():
                if method.supports(layer) is not None:
                    continue
                seen: set[tuple[int, ...]] = set()
                for f in fractions:
                    rank = resolve_rank(float(f), layer, method)
                    if rank in seen or method.n_params(layer, rank) >= n_params:
                        continue
                    seen.add(rank)
                    opts = dict((method_options or {}).get(mname, {}))
                    if mname == "cur":
                        opts.setdefault("seed", seed)
                    d = method.decompose(layer, rank, **opts)
                    rows = layer_table(d.module, shape)
                    slot.candidates.append(Candidate(name, mname, tuple(d.rank), d.module, rows,
                                                     d.params_after, int(rows["macs"].sum()),
                                                     float(d.rel_error), notes=tuple(d.notes)))
        if len(slot.candidates) > 1:
            slots.append(slot)
        if progress is not None:
            progress(i + 1, len(todo))
    return slots
