"""JSON that every parser reads: NaN and ±inf written as ``null``.

Python's :func:`json.dumps` writes bare ``NaN``/``Infinity`` tokens, which RFC 8259 does not
allow (jq, JavaScript and strict parsers reject them). An undefined figure — a Spearman
correlation of constant predictions, a ratio over an empty set — is ``null`` in what latbench
prints or writes.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["json_safe", "dumps"]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or numpy scalar) replaced by ``None``,
    through dicts, lists and tuples; other values unchanged."""
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == ()
                                  and getattr(obj.dtype, "kind", "") == "f"):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """:func:`json.dumps` of :func:`json_safe` ``(obj)`` (``allow_nan=False``; values JSON
    cannot hold are written by ``str``)."""
    return json.dumps(json_safe(obj), indent=indent, default=str, allow_nan=False)
