"""Latency contribution of each candidate: from a trained predictor, or measured per layer.

Both cost models fill ``candidate.cost_ms`` with the change of model latency (ms) that the
candidate causes against keeping the layer (``keep`` costs 0), and give ``base_ms``, the
latency of the unmodified model as the cost model sees it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd

from latbench.data.features import rows_of
from latbench.search.candidates import LayerSlot

__all__ = ["CostModel", "PredictorCost", "MeasuredLayerCost"]


class CostModel(Protocol):
    """Fills candidates' ``cost_ms``; ``source`` names it in reports."""

    source: str

    def assign(self, slots: list[LayerSlot], model_table: pd.DataFrame) -> float:
        """Fill ``cost_ms`` of every candidate; return the predicted latency of the model (ms)."""


def _with_candidate(table: pd.DataFrame, slot: LayerSlot, rows: pd.DataFrame) -> pd.DataFrame:
    """The model's layer table with ``slot``'s rows replaced by ``rows`` (in place of them)."""
    mask = rows_of(table, slot.name)
    first = int(mask.to_numpy().argmax())
    new = rows.copy()
    new["name"] = [f"{slot.name}.{n}" if n else slot.name for n in new["name"]]
    return pd.concat([table.iloc[:first], new, table.iloc[first:][~mask.iloc[first:]]],
                     ignore_index=True)


class PredictorCost:
    """Costs from a fitted latency predictor (any of :mod:`latbench.predictor`).

    Each candidate's cost is the predictor's latency for the model with only that layer
    replaced, minus its latency for the original: a marginal cost, exact for additive
    (lookup-table, layer-wise) predictors and a first-order estimate for whole-model ones.
    """

    measures_on_device = False

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.source = f"predictor {type(predictor).__name__}"

    def assign(self, slots: list[LayerSlot], model_table: pd.DataFrame) -> float:
        tables = [model_table]
        index = []
        for slot in slots:
            for c in slot.candidates[1:]:
                tables.append(_with_candidate(model_table, slot, c.rows))
                index.append(c)
        preds = [float(p) for p in np.asarray(self.predictor.predict(tables), dtype=float).ravel()]
        if len(preds) != len(tables) or not all(np.isfinite(preds)):
            from latbench.exceptions import PredictorError

            raise PredictorError(f"the predictor returned {len(preds)} latencies for {len(tables)} "
                                 "models, or non-finite ones")
        base = preds[0]
        for slot in slots:
            slot.candidates[0].cost_ms = 0.0
        for c, p in zip(index, preds[1:]):
            c.cost_ms = p - base
        return base


class MeasuredLayerCost:
    """Costs from layers measured alone on the device (a lookup table built on demand).

    Every distinct layer configuration among the candidates is exported as a one-layer
    model and timed on ``device``; results are reused from, and added to, the latency
    store when one is given (the same rows ``bench sweep --per-layer`` makes). The fixed
    per-call cost of the runtime, timed on a trivial model, is subtracted from each layer.
    One instance keeps its table, so reusing it across searches on one device measures
    every layer configuration once.
    """

    measures_on_device = True
    source = "layers measured alone on the device"

    def __init__(self, device: Any, *, store: Any = None, threads: int | None = None,
                 warmup: int = 5, repeats: int = 20,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.device = device
        self.store = store
        self.threads = threads
        self.warmup = warmup
        self.repeats = repeats
        self.progress = progress
        self.lut_ms: dict[str, float] = {}
        self.overhead_ms: float | None = None

    def _stored(self, key: str) -> float | None:
        if self.store is None:
            return None
        hit = self.store.layer_latency_ms(key, self.device.name, *self._runtime)
        return None if hit is None or not np.isfinite(hit) else float(hit)

    def _measure_all(self, rows: dict[str, dict]) -> None:
        from latbench.bench.layers import LAYER_MAX_TIME_S, measure_layer, runtime_identity
        from latbench.bench.run import spread_guard

        todo = [k for k in rows if k not in self.lut_ms]
        if not todo and self.overhead_ms is not None:
            return
        self._runtime = runtime_identity(self.device, self.threads)
        dev_id = self.store.add_device(self.device.info()) if self.store is not None else None
        # A burst of load while one layer is timed would bias every budget searched with these
        # costs: keep sampling while a layer's timings are spread.
        sampling = spread_guard(self.device, self.repeats, LAYER_MAX_TIME_S)
        with tempfile.TemporaryDirectory(prefix="latbench-search-") as tmp:
            trivial = {"op": "conv", "in_channels": 1, "out_channels": 1, "kernel_h": 1,
                       "kernel_w": 1, "stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0,
                       "dilation_h": 1, "dilation_w": 1, "groups": 1, "bias": 0, "in_h": 1, "in_w": 1}
            if self.overhead_ms is None:
                self.overhead_ms = measure_layer(self.device, trivial, tmp, threads=self.threads,
                                                 warmup=self.warmup, repeats=self.repeats,
                                                 sampling=sampling).median_ms
            for i, key in enumerate(todo, start=1):
                hit = self._stored(key)
                if hit is None:
                    m = measure_layer(self.device, rows[key], tmp, threads=self.threads,
                                      warmup=self.warmup, repeats=self.repeats, sampling=sampling)
                    if self.store is not None:
                        self.store.add_layer_measurement(dev_id, rows[key], m)
                    hit = m.median_ms
                self.lut_ms[key] = hit
                if self.progress is not None:
                    self.progress(i, len(todo))

    def _cost(self, rows: pd.DataFrame) -> float:
        from latbench.bench.layers import LAYER_OPS_MEASURED_ALONE
        from latbench.data.features import layer_key

        return sum(max(self.lut_ms[layer_key(r)] - (self.overhead_ms or 0.0), 0.0)
                   for _, r in rows.iterrows() if r["op"] in LAYER_OPS_MEASURED_ALONE)

    def assign(self, slots: list[LayerSlot], model_table: pd.DataFrame) -> float:
        """Fill ``cost_ms``; return the lookup-table latency of the whole model.

        That is the runtime's per-call cost plus every layer of ``model_table`` timed alone
        (the layers outside the candidates are measured too). Layers timed alone usually add
        up to more than the model takes, and their differences overstate savings alike; the
        search uses the ratio of this sum to the measured original to shrink the costs.
        """
        from latbench.bench.layers import LAYER_OPS_MEASURED_ALONE
        from latbench.data.features import layer_key

        rows: dict[str, dict] = {}
        tables = [c.rows for slot in slots for c in slot.candidates] + [model_table]
        for t in tables:
            for _, r in t.iterrows():
                if r["op"] in LAYER_OPS_MEASURED_ALONE:
                    rows.setdefault(layer_key(r), r.to_dict())
        self._measure_all(rows)
        for slot in slots:
            keep = self._cost(slot.candidates[0].rows)
            for c in slot.candidates:
                c.cost_ms = self._cost(c.rows) - keep
        return (self.overhead_ms or 0.0) + self._cost(model_table)
