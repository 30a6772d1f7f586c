"""Without the ``tflite`` extra, everything that needs it says so in one line."""

from __future__ import annotations

import sys

import pytest
from torch import nn

from latbench.compress.export import export_tflite
from latbench.exceptions import MissingExtraError, UserInputError


def test_tflite_export_without_the_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes the import fail
    with pytest.raises(MissingExtraError) as e:
        export_tflite(nn.Linear(4, 2), (1, 4), tmp_path / "m.tflite")
    assert str(e.value) == ('TFLite export needs litert-torch, which is not installed: '
                            'pip install "latbench[tflite]"')
    assert isinstance(e.value, UserInputError) and e.value.exit_code == 2
    assert not (tmp_path / "m.tflite").exists()


def test_reading_a_tflite_file_without_the_extra_names_it(tmp_path, monkeypatch):
    from latbench.artifact import Artifact

    p = tmp_path / "m.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    with pytest.raises(MissingExtraError, match=r'pip install "latbench\[tflite\]"'):
        Artifact.from_file(p)


def test_missing_extra_error_survives_pickling():
    import pickle

    e = MissingExtraError("tflite", "ai-edge-litert", "the litert device")
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == str(e) and back.extra == "tflite"
