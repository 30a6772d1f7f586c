"""Latency-constrained rank search (see :func:`latbench.search.search.search`).

``SearchResult``, ``Round``, ``Searcher`` and ``write_search_outputs`` are re-exported
lazily, so importing the package costs nothing. The function is
``latbench.search.search.search`` (the submodule of the same name would shadow a re-export).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SearchResult", "Round", "Searcher", "write_search_outputs"]


def __getattr__(name: str) -> Any:
    if name in ("SearchResult", "Round"):
        from latbench.search import result as _result

        return getattr(_result, name)
    if name == "Searcher":
        from latbench.search.search import Searcher

        return Searcher
    if name == "write_search_outputs":
        from latbench.search.report import write_search_outputs

        return write_search_outputs
    raise AttributeError(f"module 'latbench.search' has no attribute {name!r}")
