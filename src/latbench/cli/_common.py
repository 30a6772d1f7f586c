"""Helpers shared by the CLI commands: consoles, JSON output, shape parsing."""

from __future__ import annotations

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


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (no rich markup, so it stays machine-readable).

    Non-finite numbers (NaN, ±inf) are written as ``null``, so any JSON parser reads it.
    """
    from latbench.jsonio import dumps

    sys.stdout.write(dumps(obj) + "\n")
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
