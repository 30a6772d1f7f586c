"""Predict the latency of one model spec (optionally compressed by a plan) with a saved predictor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from latbench.predictor.base import load_predictor

__all__ = ["ModelPrediction", "predict_model"]


@dataclass(frozen=True)
class ModelPrediction:
    """A predicted latency and what it was predicted for."""

    latency_ms: float
    model: str
    device: str
    kind: str | None
    input_shape: tuple[int, ...]
    n_layers: int
    missing_layers: int


def predict_model(predictor_path: str | Path, model: str, *, plan_path: str | Path | None = None,
                  input_shape: Sequence[int] | None = None, seed: int = 0,
                  trust_file: bool = False,
                  progress: Callable[[str, int, int], None] | None = None) -> ModelPrediction:
    """Load a predictor, build ``model`` (``latbench.models.resolve_model``), apply a plan
    if given, featurise it and predict its latency in ms.

    ``progress(layer, done, total)`` follows the plan's compression (see
    :func:`latbench.compress.model.compress_model`).

    ``trust_file`` lets an old pickled predictor file and a model file needing Python's
    full unpickler load (see :func:`~latbench.predictor.base.load_predictor` and
    :func:`~latbench.models.resolve_model`); both may run code from the file.

    Raises
    ------
    UserInputError
        Bad model, plan or predictor file.
    PredictorError
        Schema mismatch, or a layer a lookup table cannot price.
    """
    from latbench.data.features import layer_table
    from latbench.models import check_input_shape, default_input_shape, resolve_model

    pred, info = load_predictor(predictor_path, trust_file=trust_file)
    shape = tuple(input_shape) if input_shape else default_input_shape(model)
    net = resolve_model(model, seed=seed, trust_file=trust_file)
    check_input_shape(net, shape, name=model)  # a wrong --input: one clear line, before any work
    if plan_path is not None:
        # Imported lazily: compression is only needed when a plan is given.
        from latbench.compress.plan import Plan
        try:
            from latbench.compress.plan import compress_model
        except ImportError:
            from latbench.compress.model import compress_model
        result = compress_model(net, Plan.load(plan_path), input_shape=shape, seed=seed,
                                progress=progress)
        net = getattr(result, "model", result)
    table = layer_table(net, shape)
    y = float(pred.predict([table])[0])
    missing = int(getattr(pred, "last_missing_", {}).get("count", 0))
    return ModelPrediction(y, model, info["device"], info["kind"], shape, len(table), missing)
