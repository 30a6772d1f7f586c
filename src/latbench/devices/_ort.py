"""The ONNX Runtime session code the ``cpu`` and ``cuda`` devices share: explicit session
options, loading with errors turned into :class:`DeviceError`, and the seeded input feed.

Every knob that changes latency is set rather than left to onnxruntime's defaults:
intra-op threads, one inter-op thread, sequential execution, the graph optimisation level.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latbench.exceptions import DeviceError, UserInputError
from latbench.registry import suggest

__all__ = ["GRAPH_OPTIMIZATION_LEVELS", "check_graph_optimization", "session_options",
           "open_session", "input_feed", "random_input"]

#: Spellings accepted for ``graph_optimization`` → onnxruntime ``GraphOptimizationLevel`` name.
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

_ORT_TENSOR_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def check_graph_optimization(device: str, level: str) -> None:
    """Refuse an onnxruntime graph-optimisation level not in :data:`GRAPH_OPTIMIZATION_LEVELS`.

    Raises
    ------
    UserInputError
        Naming the device, the bad level, close matches and the choices.
    """
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserInputError(
            f"device {device!r}: unknown graph_optimization {level!r}"
            f"{suggest(level, list(GRAPH_OPTIMIZATION_LEVELS))}; choose one of: "
            + ", ".join(GRAPH_OPTIMIZATION_LEVELS)
        )


def session_options(threads: int, graph_optimization: str = "all",
                    optimized_model_path: str | Path | None = None) -> Any:
    """onnxruntime ``SessionOptions`` for ``threads`` intra-op threads, one inter-op thread,
    sequential execution and the named optimisation level; errors-only logging (warnings
    would go to stderr, not to us). ``optimized_model_path`` makes onnxruntime write the graph
    it will execute (after fusions) there."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[graph_optimization])
    so.log_severity_level = 3
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    return so


def open_session(path: str | Path, options: Any, providers: Sequence[Any], *, what: str) -> Any:
    """An ``InferenceSession``; any load failure becomes one :class:`DeviceError` line.

    ``what`` names the runtime in the message (``onnxruntime``, ``onnxruntime-cuda``). A
    provider onnxruntime cannot load is only warned about by it; callers that need a
    provider check ``session.get_providers()``, so the warning is silenced as noise.
    """
    import onnxruntime as ort

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise DeviceError(f"{what} could not load {path}: {exc}") from None


def random_input(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """Seeded random input: standard normal for floats, small non-negative ints otherwise."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.integers(0, 10, size=shape).astype(dtype)


def input_feed(session: Any, shape: Sequence[int], seed: int) -> tuple[str, np.ndarray]:
    """The single input's name and seeded random data of ``shape`` and the input's dtype.

    Raises
    ------
    UserInputError
        If the model has several inputs or an input type latbench cannot fill.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise UserInputError(
            f"the model has {len(inputs)} inputs; latbench times single-input models")
    dtype = _ORT_TENSOR_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise UserInputError(f"unsupported model input type {inputs[0].type}")
    return inputs[0].name, random_input(tuple(shape), dtype, seed)
