"""Latency predictors (scikit-learn regressors over layer tables), metrics and evaluation.

Kinds: ``flops`` and ``flops-clustered`` (:mod:`.flops`), ``lut`` (:mod:`.lut`),
``gbm`` and ``gbm-layer`` (:mod:`.gbm`). Reports are rendered by :mod:`.report`.
Submodules are imported on first use, so importing this package does no work.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FlopsPredictor", "FlopsClusteredPredictor", "LUTPredictor", "GBMPredictor",
    "GBMLayerPredictor", "LatencyPredictor", "NotFittedPredictorError", "check_predictor",
    "save_predictor",
    "load_predictor", "convert_predictor", "make_predictor", "PREDICTORS", "regression_metrics",
    "evaluate_predictor", "train_predictor", "learning_curve", "device_data", "model_matrix",
    "layer_matrix",
]

_WHERE = {
    "FlopsPredictor": "flops", "FlopsClusteredPredictor": "flops", "LUTPredictor": "lut",
    "GBMPredictor": "gbm", "GBMLayerPredictor": "gbm", "LatencyPredictor": "base",
    "NotFittedPredictorError": "base", "check_predictor": "base", "save_predictor": "base", "load_predictor": "base",
    "convert_predictor": "base",
    "make_predictor": "registry", "PREDICTORS": "registry", "regression_metrics": "metrics",
    "evaluate_predictor": "evaluate", "train_predictor": "evaluate",
    "learning_curve": "evaluate", "device_data": "evaluate", "model_matrix": "encode",
    "layer_matrix": "encode",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"latbench.predictor.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'latbench.predictor' has no attribute {name!r}")
