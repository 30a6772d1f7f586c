"""Per-kind rescaling of predicted layer costs from the plans measured during verification.

Layers timed alone (or a predictor's marginal costs) are off from what they cost inside the
network by factors that differ between kinds of layer: on VGG-11 at 64×64 the 25088×4096
classifier (memory-bound, 411 MB of weights) and the small convolutions are mis-predicted in
opposite directions, so a single correction factor cannot make both right, and the solver's
plans jump between "cut the classifier" and "cut the convs" around the budget. After each
measured plan, this fits

    measured − original ≈ Σ_k s_k · Δ_k(plan)

(Δ_k: the plan's predicted change from layers of kind k; the original is the point Δ = 0) by
non-negative least squares, and the search re-solves with costs × s_k. It only does so when
the measured plans separate the kinds (a well-conditioned system); otherwise the search keeps
its single secant correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

__all__ = ["layer_kind", "kind_scales"]

#: Scales outside this range mean the fit is fitting noise: keep the uncalibrated costs.
_SANE = (0.05, 20.0)


def layer_kind(layer: nn.Module) -> str:
    """The kind a layer's cost is scaled with: ``"linear"`` or ``"conv"``."""
    return "linear" if isinstance(layer, nn.Linear) else "conv"


def kind_scales(kinds: Sequence[str], costs: Sequence[Sequence[float]],
                measured: Sequence[tuple[Sequence[int], float]],
                original_ms: float) -> dict[str, float] | None:
    """Scales per kind from measured plans, or ``None`` when they cannot be told apart.

    Parameters
    ----------
    kinds : one kind per layer slot
    costs : per slot, the predicted latency change of each candidate (ms; ``keep`` is 0)
    measured : (chosen candidate per slot, measured ms) of each measured plan
    original_ms : the measured latency of the original model
    """
    names = sorted(set(kinds))
    if len(names) < 2 or len(measured) < len(names):
        return None
    col = {k: i for i, k in enumerate(names)}
    D = np.zeros((len(measured), len(names)))
    y = np.zeros(len(measured))
    for r, (choices, ms) in enumerate(measured):
        for slot, j in enumerate(choices):
            D[r, col[kinds[slot]]] += costs[slot][j]
        y[r] = ms - original_ms
    norms = np.linalg.norm(D, axis=0)
    if np.any(norms <= 0):
        return None
    Dn = D / norms
    if np.linalg.matrix_rank(Dn) < len(names) or np.linalg.cond(Dn) > 1e3:
        return None
    from scipy.optimize import nnls

    s, _ = nnls(Dn, y)
    scales = s / norms
    if not np.all((scales >= _SANE[0]) & (scales <= _SANE[1])):
        return None
    return {k: float(scales[col[k]]) for k in names}
