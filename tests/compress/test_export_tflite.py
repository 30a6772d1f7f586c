"""TFLite export through litert-torch: every decomposition and the original convert, run on
the LiteRT interpreter and agree with torch; a missing extra is one line naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.artifact import Artifact, read_tflite
from latbench.compress.export import TFLITE_RTOL, export_model, export_tflite
from latbench.compress.model import compress_model
from latbench.compress.plan import Plan
from latbench.exceptions import ExportError, UserInputError

pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')
pytest.importorskip("ai_edge_litert", reason='TFLite needs pip install "latbench[tflite]"')

SHAPE = (1, 3, 16, 16)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)).eval()


def run_tflite(path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("method,layers", [
    (None, None), ("svd", "*"), ("cur", "9"), ("tucker2", "[35]"), ("cp", "[35]"),
    ("cp3", "[35]"), ("tt", "[35]"),
])
@pytest.mark.slow
def test_every_method_exports_and_matches_torch(tmp_path, method, layers):
    net = small_cnn()
    if method is not None:
        res = compress_model(net, Plan.uniform(method, 0.5, layers), input_shape=SHAPE)
        assert res.layers, f"{method} compressed nothing"
        net = res.model
    art = export_tflite(net, SHAPE, tmp_path / "m.tflite")
    assert art.format == "tflite" and art.input_shape == SHAPE and art.path.suffix == ".tflite"
    # An independent check on another input: |TFLite - torch| within rtol of the output scale.
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    ref = net(torch.from_numpy(x)).detach().numpy()
    out = run_tflite(art.path, x)
    assert np.max(np.abs(out - ref)) <= TFLITE_RTOL * np.max(np.abs(ref))
    if method == "cp":  # CP's k×1 / 1×k convolutions become depthwise convolutions
        assert "DEPTHWISE_CONV_2D" in {n.op for n in read_tflite(art.path).nodes}


@pytest.mark.slow
def test_artifact_from_tflite_file_reads_shape_and_format(tmp_path):
    art = export_tflite(small_cnn(), SHAPE, tmp_path / "m.tflite")
    again = Artifact.from_file(art.path)
    assert again == art
    graph = read_tflite(art.path)
    assert graph.input_shapes == (SHAPE,) and graph.input_dtypes == ("float32",)
    ops = [n.op for n in graph.nodes]
    assert ops.count("CONV_2D") == 3 and "FULLY_CONNECTED" in ops and "MEAN" in ops
    # litert-torch names tensors after the modules that made them
    conv = next(n for n in graph.nodes if n.op == "CONV_2D")
    assert any("Conv2d_0" in t for t in (*conv.outputs, *conv.constant_inputs))


@pytest.mark.slow
def test_check_catches_a_converted_model_that_disagrees(tmp_path, monkeypatch):
    import latbench.compress.export as ex

    net = small_cnn()
    art = export_tflite(net, SHAPE, tmp_path / "m.tflite")
    x = torch.randn(SHAPE)
    wrong = net(x) * 1.01
    with pytest.raises(ExportError, match=r"is off: max \|TFLite − torch\| is 9\.9\de-03"):
        ex._check_tflite(art.path, x, wrong, TFLITE_RTOL, "Sequential")


@pytest.mark.slow
def test_export_model_picks_the_format_by_suffix_or_argument(tmp_path):
    net = small_cnn()
    assert export_model(net, SHAPE, tmp_path / "a.tflite").format == "tflite"
    art = export_model(net, SHAPE, tmp_path / "b", "onnx")
    assert art.format == "onnx" and art.path.name == "b.onnx"
    with pytest.raises(UserInputError, match="unknown model format"):
        export_model(net, SHAPE, tmp_path / "c.pt")


def test_float64_model_is_refused_and_left_as_it_was(tmp_path):
    net = small_cnn().double()
    with pytest.raises(UserInputError, match="float32 models.*float64"):
        export_tflite(net, SHAPE, tmp_path / "m.tflite")
    assert next(net.parameters()).dtype == torch.float64


@pytest.mark.slow
def test_conversion_failure_is_an_export_error(tmp_path):
    class Two(nn.Module):
        def forward(self, x):
            return x.nonzero()  # data-dependent shape: torch.export cannot trace it

    with pytest.raises(ExportError, match="TFLite export of Two failed"):
        export_tflite(Two(), (1, 4), tmp_path / "m.tflite")


def test_not_a_tflite_file_is_refused(tmp_path):
    p = tmp_path / "fake.tflite"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(UserInputError, match="not a TFLite model"):
        Artifact.from_file(p)
