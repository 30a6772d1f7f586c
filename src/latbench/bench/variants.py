"""Which variants a sweep measures: the original, uniform-rank plans, random per-layer plans.

Everything here is pure: it decides *what* to measure, never measures. A variant's
``key`` is computed before any work so a resumed sweep can skip it without compressing.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from latbench.compress._base import METHODS
from latbench.compress.model import decomposable_layers
from latbench.compress.plan import KEEP, Plan, Rule
from latbench.exceptions import UserInputError

__all__ = ["Variant", "parse_rank_range", "uniform_variants", "random_plan", "variant_key"]


@dataclass(frozen=True)
class Variant:
    """One model to build and measure: a source model, an input shape, and a plan (or none)."""

    model: str
    input_shape: tuple[int, ...]
    plan: Plan | None
    method: str  # "none" for the original, the method for uniform plans, "mixed" otherwise
    label: str
    seed: int = 0
    #: :func:`~latbench.models.fingerprint.model_fingerprint` of the source model when it is
    #: read from a file (whose path may hold another network tomorrow); ``None`` otherwise.
    model_hash: str | None = None

    @property
    def key(self) -> str:
        return variant_key(self.model, self.input_shape, self.plan, self.seed,
                           model_hash=self.model_hash)


def variant_key(model: str, input_shape: Sequence[int], plan: Plan | None, seed: int, *,
                model_hash: str | None = None) -> str:
    """Content key of a variant: same model, shape, plan and seed → same key.

    A model read from a file is also keyed by ``model_hash`` (its structure and state,
    :func:`~latbench.models.fingerprint.model_fingerprint`): overwriting ``model.pt`` with
    another network gives its variants other keys, so a resumed sweep measures them rather
    than taking them for stored. Built-in spellings (``resnet18``, ``nb201:...``) keep the
    key of spelling and seed alone.
    """
    doc = {"model": model, "input": list(input_shape), "plan": plan.hash if plan else None, "seed": seed}
    if model_hash is not None:
        doc["model_hash"] = model_hash
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def parse_rank_range(text: str) -> tuple[float, ...]:
    """Parse ``0.1:0.9:0.1`` (start:stop:step, inclusive) or ``0.25,0.5`` into fractions.

    Raises
    ------
    UserInputError
        If the range is malformed, empty, or leaves (0, 1].
    """
    if not text.strip():
        raise UserInputError("the rank range is empty: write start:stop:step (0.1:0.9:0.1) "
                             "or a list (0.25,0.5)")
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or not parts[2] > 0 or not all(math.isfinite(p) for p in parts):
                raise ValueError
            start, stop, step = parts
            # Inclusive of ``stop`` up to float error, never past it (0.1:0.95:0.1 ends at 0.9).
            n = math.floor((stop - start) / step + 1e-9) + 1
            values = tuple(round(start + i * step, 6) for i in range(max(n, 0)))
        else:
            values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UserInputError(f"bad rank range {text!r}: write start:stop:step (0.1:0.9:0.1) "
                             "or a list (0.25,0.5)") from None
    if not values:
        why = "check that start ≤ stop" if ":" in text else "give at least one fraction"
        raise UserInputError(f"rank range {text!r} is empty: {why}")
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise UserInputError(f"rank range {text!r} has {bad[0]}, outside (0, 1]: ranks are fractions of channels")
    return values


def uniform_variants(model: str, input_shape: Sequence[int], methods: Sequence[str],
                     ranks: Sequence[float], *, layers: str = "*", seed: int = 0,
                     model_hash: str | None = None) -> list[Variant]:
    """The original plus each method at each uniform fractional rank."""
    shape = tuple(input_shape)
    out = [Variant(model, shape, None, "none", "original", seed, model_hash)]
    for m in methods:
        METHODS.get(m)
        for r in ranks:
            out.append(Variant(model, shape, Plan.uniform(m, r, layers), m, f"{m}@{r:g}", seed,
                               model_hash))
    return out


def random_plan(net: nn.Module, methods: Sequence[str], ranks: Sequence[float],
                rng: random.Random, keep_prob: float = 0.2) -> Plan:
    """A per-layer plan: each layer draws ``keep`` (with ``keep_prob``) or a method and rank.

    A layer only draws among the methods that support it, so the plan is always valid.
    """
    rules = []
    for name, layer in decomposable_layers(net):
        ok = [m for m in methods if METHODS.get(m).supports(layer) is None]
        if not ok or rng.random() < keep_prob:
            rules.append(Rule(name, KEEP, 1))
            continue
        rules.append(Rule(name, rng.choice(ok), float(rng.choice(list(ranks)))))
    return Plan(tuple(rules))
