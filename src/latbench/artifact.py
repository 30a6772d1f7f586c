"""An exported model on disk: path, content hash, input shape, opset, format.

It sits at the top of the package because both ``compress`` (which makes it) and
``devices`` (which runs it) need it, and neither may import the other. It also reads the
structure of a ``.tflite`` file (:func:`read_tflite`: inputs and operators, from the TFLite
flatbuffer schema shipped with ``ai-edge-litert``), which the LiteRT devices and the mapping
of per-operator profiles back to layers need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latbench.exceptions import MissingExtraError, UserInputError

__all__ = ["Artifact", "sha256_file", "DEFAULT_OPSET", "FORMATS", "format_of", "TfliteNode",
           "TfliteGraph", "read_tflite"]

DEFAULT_OPSET = 17

#: Artifact formats by file suffix.
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def format_of(path: str | Path) -> str:
    """The artifact format a file's suffix names (``onnx``, ``tflite``).

    Raises
    ------
    UserInputError
        For another suffix, naming the ones latbench knows.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserInputError(f"{str(path)!r}: unknown model format {suffix or '(no suffix)'!r}; "
                             f"latbench runs {', '.join(FORMATS)} files")
    return FORMATS[suffix]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TfliteNode:
    """One operator of a ``.tflite`` graph, in execution order.

    ``op`` is the builtin operator name (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ...; a custom
    operator's custom code). ``inputs`` / ``outputs`` are tensor names; ``constant_inputs``
    are the names of the inputs held in the file (weights, biases).
    """

    index: int
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constant_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TfliteGraph:
    """The primary subgraph of a ``.tflite`` file: its inputs and its operators."""

    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    nodes: tuple[TfliteNode, ...]


def _tflite_schema(what: str):
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise MissingExtraError("tflite", "ai-edge-litert", what) from None
    return schema_py_generated


def read_tflite(path: str | Path) -> TfliteGraph:
    """Inputs and operators of the first subgraph of a ``.tflite`` file.

    Read with the TFLite flatbuffer schema (``tensorflow/lite/schema/schema.fbs``) as
    generated into ``ai-edge-litert``; nothing is executed.

    Raises
    ------
    UserInputError
        If the file is missing or is not a TFLite flatbuffer (identifier ``TFL3``).
    MissingExtraError
        Without ``ai-edge-litert`` (``pip install "latbench[tflite]"``).
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"model file {str(p)!r} does not exist")
    buf = p.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserInputError(f"{str(p)!r} is not a TFLite model (no TFL3 flatbuffer identifier); "
                             "export it with 'bench compress ... --out model.tflite'")
    schema = _tflite_schema(f"reading {p.name}")
    try:
        model = schema.Model.GetRootAs(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        sg = model.Subgraphs(0)
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

        def tensor_name(i: int) -> str:
            return sg.Tensors(i).Name().decode("utf-8", "replace") if i >= 0 else ""

        def is_constant(i: int) -> bool:
            b = sg.Tensors(i).Buffer()
            if b <= 0 or b >= model.BuffersLength():
                return False
            buffer = model.Buffers(b)
            return buffer.DataLength() > 0 or buffer.Offset() > 1

        inputs = [sg.Inputs(i) for i in range(sg.InputsLength())]
        nodes = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM" and code.CustomCode():
                name = code.CustomCode().decode("utf-8", "replace")
            ins = [op.Inputs(j) for j in range(op.InputsLength())]
            nodes.append(TfliteNode(
                k, name, tuple(tensor_name(i) for i in ins),
                tuple(tensor_name(op.Outputs(j)) for j in range(op.OutputsLength())),
                tuple(tensor_name(i) for i in ins if i >= 0 and is_constant(i))))
        return TfliteGraph(
            tuple(tensor_name(i) for i in inputs),
            tuple(tuple(int(d) for d in sg.Tensors(i).ShapeAsNumpy()) for i in inputs),
            tuple(type_names.get(sg.Tensors(i).Type(), "?").lower() for i in inputs),
            tuple(nodes))
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise UserInputError(f"{str(p)!r} is not a readable TFLite model: {exc}") from None


@dataclass(frozen=True)
class Artifact:
    """An exported model: where it is, what it is (sha256), how it is called, and its
    format (``onnx`` or ``tflite``; ``opset`` is ONNX's and means nothing for TFLite)."""

    path: Path
    sha256: str
    input_shape: tuple[int, ...]
    opset: int = DEFAULT_OPSET
    format: str = "onnx"

    @classmethod
    def from_file(cls, path: str | Path, input_shape: Sequence[int] | None = None) -> "Artifact":
        """Describe an existing ``.onnx`` or ``.tflite`` file; the input shape is read from it
        if not given (dynamic ONNX dimensions become 1).

        Raises
        ------
        UserInputError
            If the file is missing, has another suffix, or is not a model of its format, or a
            TFLite model has several inputs.
        MissingExtraError
            For a ``.tflite`` file without ``ai-edge-litert`` installed.
        """
        p = Path(path)
        fmt = format_of(p)
        if not p.is_file():
            raise UserInputError(f"model file {str(p)!r} does not exist")
        if fmt == "tflite":
            graph = read_tflite(p)
            if len(graph.input_shapes) != 1:
                raise UserInputError(f"{str(p)!r} has {len(graph.input_shapes)} inputs; latbench "
                                     "times models with one input")
            shape = tuple(int(s) for s in (input_shape or graph.input_shapes[0]))
            return cls(p, sha256_file(p), shape, 0, "tflite")
        import onnx

        try:
            m = onnx.load(str(p), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and others for a bad file
            raise UserInputError(f"{str(p)!r} is not a readable ONNX model: {exc}") from None
        if not m.graph.node or not m.graph.input:  # an empty file parses as an empty model
            raise UserInputError(f"{str(p)!r} is not an ONNX model (it has "
                                 f"{'no bytes' if p.stat().st_size == 0 else 'no graph'}); "
                                 "export it again")
        if input_shape is None:
            dims = m.graph.input[0].type.tensor_type.shape.dim
            input_shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
        opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
        return cls(p, sha256_file(p), tuple(int(s) for s in input_shape), int(opset))
