"""Latency-constrained rank search (see :func:`latbench.search.search.search`)."""
