"""An exported model on disk: path, content hash, input shape, opset.

It sits at the top of the package because both ``compress`` (which makes it) and
``devices`` (which runs it) need it, and neither may import the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latbench.exceptions import UserInputError

__all__ = ["Artifact", "sha256_file", "DEFAULT_OPSET", "FORMATS", "format_of"]

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
        """Describe an existing ``.onnx`` file; the input shape is read from it if not given.

        Raises
        ------
        UserInputError
            If the file is missing or is not an ONNX model.
        """
        import onnx

        p = Path(path)
        if not p.is_file():
            raise UserInputError(f"model file {str(p)!r} does not exist")
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
