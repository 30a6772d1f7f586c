"""The predictor kinds by name (``bench predictor --kind``)."""

from __future__ import annotations

from collections.abc import Callable

from latbench.registry import Registry

__all__ = ["PREDICTORS", "make_predictor", "NEEDS_LAYER_TABLE"]

#: name → factory taking keyword arguments.
PREDICTORS: Registry[Callable[..., object]] = Registry("predictor kind")

#: Kinds whose constructor takes the per-layer measurement table.
NEEDS_LAYER_TABLE = ("lut",)


def _flops(**kw):
    from latbench.predictor.flops import FlopsPredictor
    return FlopsPredictor(**kw)


def _flops_clustered(**kw):
    from latbench.predictor.flops import FlopsClusteredPredictor
    return FlopsClusteredPredictor(**kw)


def _lut(**kw):
    from latbench.predictor.lut import LUTPredictor
    return LUTPredictor(**kw)


def _gbm(**kw):
    from latbench.predictor.gbm import GBMPredictor
    return GBMPredictor(**kw)


def _gbm_layer(**kw):
    from latbench.predictor.gbm import GBMLayerPredictor
    return GBMLayerPredictor(**kw)


def _gcn(**kw):
    from latbench.predictor.gcn import GCNPredictor
    return GCNPredictor(**kw)


for _name, _f in (("flops", _flops), ("flops-clustered", _flops_clustered), ("lut", _lut),
                  ("gbm", _gbm), ("gbm-layer", _gbm_layer), ("gcn", _gcn)):
    PREDICTORS.register(_name, _f)


def make_predictor(kind: str, **params):
    """A new, unfitted predictor of ``kind`` (``UserInputError`` for unknown kinds)."""
    return PREDICTORS.get(kind)(**params)
