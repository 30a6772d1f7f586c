"""Helpers shared by the CLI commands: consoles, JSON output, shape parsing."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

from latbench.exceptions import UserInputError

__all__ = ["console", "err_console", "print_json", "parse_shape", "TRUST_FILE_HELP"]

#: Help of every command's ``--trust-file``.
TRUST_FILE_HELP = ("Load model (.pt) and predictor files with Python's full unpickler, which "
                   "runs any code a file holds: only for files you made or trust. Without it "
                   "files are read safely (state dicts, torch/torchvision/latbench modules, "
                   "latbench predictor files) and anything else is refused.")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _json_safe(obj: Any) -> Any:
    # NaN and ±inf are not JSON (RFC 8259): jq, JavaScript and strict parsers reject
    # Python's bare NaN/Infinity tokens. An undefined figure (a Spearman correlation of
    # constant predictions) is null.
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == ()
                                  and getattr(obj.dtype, "kind", "") == "f"):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (no rich markup, so it stays machine-readable).

    Non-finite numbers (NaN, ±inf) are written as ``null``, so any JSON parser reads it.
    """
    sys.stdout.write(json.dumps(_json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x3x224x224`` into ``(1, 3, 224, 224)``.

    Raises
    ------
    UserInputError
        If the text is not positive integers separated by ``x``.
    """
    try:
        shape = tuple(int(p) for p in text.lower().replace("×", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise UserInputError(f"bad input shape {text!r}: write it like 1x3x224x224")
    return shape
