"""Orchestration on top of devices: one-off runs (``run``), layers timed alone
(``layers``), what a sweep measures (``variants``) and the sweep itself (``sweep``).

The measurement types live one layer down, in :mod:`latbench.measure`.
"""
