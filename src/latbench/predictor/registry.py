"""The predictor kinds by name (``bench predictor --kind``)."""

from __future__ import annotations

from collections.abc import Callable

from latbench.registry import Registry

__all__ = ["PREDICTORS", "make_predictor", "NEEDS_LAYER_TABLE", "settable_params", "check_params"]

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


#: Constructor parameters wired from the data or from ``--seed``, never set by hand.
_WIRED_PARAMS = ("table", "layer_latency", "random_state")


def settable_params(kind: str) -> dict[str, object]:
    """The constructor parameters of ``kind`` a user may set, with their defaults.

    ``table``/``layer_latency`` (the per-layer measurements, taken from the store) and
    ``random_state`` (the seed) are left out.

    Raises
    ------
    UserInputError
        For an unknown kind (with close matches).
    """
    params = make_predictor(kind).get_params(deep=False)
    return {k: v for k, v in params.items() if k not in _WIRED_PARAMS}


def check_params(kind: str, params: dict[str, object]) -> None:
    """Refuse a parameter ``kind`` does not take, naming those it does.

    Raises
    ------
    UserInputError
        For an unknown parameter name (with close matches and the list of known ones).
    """
    from latbench.exceptions import UserInputError
    from latbench.registry import suggest

    known = settable_params(kind)
    for key in params:
        if key not in known:
            listing = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
            raise UserInputError(f"predictor kind {kind!r} has no parameter {key!r}"
                                 f"{suggest(key, list(known))}; its parameters (defaults): "
                                 f"{listing}")
