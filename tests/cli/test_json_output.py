"""--json output is strict JSON: no bare NaN/Infinity tokens that jq or JavaScript reject."""

import json
import math

import numpy as np

from latbench.cli._common import print_json


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_at_any_depth(capsys):
    print_json({"spearman": float("nan"), "r2": 0.5, "worst": math.inf,
                "rows": [{"x": -math.inf, "y": np.float64("nan"), "z": np.float32(2.5)}],
                "pair": (np.float32("nan"), 3), "n": 7, "name": "gbm"})
    doc = _strict(capsys.readouterr().out)
    assert doc == {"spearman": None, "r2": 0.5, "worst": None,
                   "rows": [{"x": None, "y": None, "z": 2.5}], "pair": [None, 3], "n": 7,
                   "name": "gbm"}


def test_finite_numbers_are_unchanged(capsys):
    print_json({"a": 1e-300, "b": -0.0, "c": 12345.678, "d": [np.float64(0.1)]})
    doc = _strict(capsys.readouterr().out)
    assert doc == {"a": 1e-300, "b": -0.0, "c": 12345.678, "d": [0.1]}
