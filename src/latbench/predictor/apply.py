"""Predict the latency of one model spec (optionally compressed by a plan) with a saved predictor."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from latbench.data.features import TORCH_GRAPH
from latbench.exceptions import OutOfRangeWarning
from latbench.predictor.base import load_predictor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ModelPrediction", "predict_model", "MODEL_OUTSIDE"]

#: How the CLI introduces the reasons a model lies outside a predictor's training data.
MODEL_OUTSIDE = "the model lies outside what the predictor was trained on (an extrapolation)"


@dataclass(frozen=True)
class ModelPrediction:
    """A predicted latency and what it was predicted for.

    ``out_of_range`` says the model lies outside what the predictor was trained on
    (``out_of_range_reasons``: MACs beyond its range, unseen layer kinds, another graph or
    batch); ``graph`` names the graph the model was featurised as.
    """

    latency_ms: float
    model: str
    device: str
    kind: str | None
    input_shape: tuple[int, ...]
    n_layers: int
    missing_layers: int
    out_of_range: bool = False
    out_of_range_reasons: tuple[str, ...] = ()
    graph: str = "torch"


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
    table = _as_trained(pred, net, shape)
    with warnings.catch_warnings():
        # Reported through the result (and by the CLI), not as a warning line here.
        warnings.simplefilter("ignore", OutOfRangeWarning)
        y = float(pred.predict([table])[0])
    reasons = tuple(getattr(pred, "last_out_of_range_", [[]])[0])
    missing = int(getattr(pred, "last_missing_", {}).get("count", 0))
    graph = str(table["graph"].iloc[0]) if len(table) else TORCH_GRAPH
    return ModelPrediction(y, model, info["device"], info["kind"], shape, len(table), missing,
                           bool(reasons), reasons, graph)


def _as_trained(pred, net, shape) -> "pd.DataFrame":
    """The model's layer table as the predictor's training tables were made: the PyTorch
    module's, or — for a predictor trained on the graph ONNX Runtime's CPU provider executes —
    that graph, reproduced on this host (other executed graphs cannot be; the table stays
    the module's and the prediction is flagged out of range)."""
    from latbench.data.executed import parse_graph_label
    from latbench.data.features import layer_table

    table = layer_table(net, shape)
    graphs = getattr(pred, "train_range_", {}).get("graphs", [])
    if len(graphs) != 1 or graphs[0] == TORCH_GRAPH:
        return table
    label = parse_graph_label(graphs[0])
    if label.get("runtime") != "onnxruntime" or label.get("provider") != "CPUExecutionProvider":
        return table
    import tempfile
    from pathlib import Path

    from latbench.compress.export import export_onnx
    from latbench.data.executed import onnx_graph_table, write_ort_graph

    with tempfile.TemporaryDirectory(prefix="latbench-predict-") as tmp:
        art = export_onnx(net, shape, Path(tmp) / "model.onnx")
        out = Path(tmp) / "executed.onnx"
        used = write_ort_graph(art.path, out, level=label["level"], provider=label["provider"])
        return onnx_graph_table(out, shape, graph=used)
