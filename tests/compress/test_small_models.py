"""The smallest models: a model that is one nn.Conv2d or nn.Linear compresses, exports,
measures (cpu device) and is priced by a fitted flops predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress._base import LowRankSequential
from latbench.compress.export import export_onnx
from latbench.compress.model import compress_model, decomposable_layers, iterative_compress
from latbench.compress.plan import Plan
from latbench.data.features import layer_table

CONV_SHAPE, LINEAR_SHAPE = (1, 8, 6, 6), (2, 20)
FAST = {"n_iter_max": 10}


def conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(8, 16, 3, padding=1).eval()


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(20, 30).eval()


CASES = [(conv, CONV_SHAPE, m, o) for m, o in
         [("svd", {}), ("tucker2", {}), ("cp", FAST), ("cp3", FAST), ("tt", {})]]
CASES += [(linear, LINEAR_SHAPE, m, {}) for m in ("svd", "cur")]


def test_a_single_layer_model_is_its_own_decomposable_layer():
    assert [n for n, _ in decomposable_layers(conv())] == [""]
    res = compress_model(conv(), Plan.uniform("tucker2", 4), input_shape=CONV_SHAPE)
    assert [n for n, _ in decomposable_layers(res.model)] == [""]  # the block, not its insides


@pytest.mark.parametrize("make, shape, method, options", CASES,
                         ids=[f"{c[0].__name__}-{c[2]}" for c in CASES])
def test_compress_and_export_a_single_layer_model(tmp_path, make, shape, method, options):
    ort = pytest.importorskip("onnxruntime")
    model = make()
    res = compress_model(model, Plan.uniform(method, 0.5, **options), input_shape=shape)
    (report,) = res.layers
    assert report.name == "" and report.method == method
    assert isinstance(res.model, LowRankSequential) and isinstance(model, type(make()))
    # the whole model is the layer: its report and the model totals are the same numbers
    assert (report.params_before, report.params_after) == (res.params_before, res.params_after)
    assert (report.macs_before, report.macs_after) == (res.macs_before, res.macs_after)
    assert res.macs_after == layer_table(res.model, shape)["macs"].sum() > 0
    art = export_onnx(res.model, shape, tmp_path / "m.onnx")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], res.model(x).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_single_layer_report_values_by_hand():
    res = compress_model(conv(), Plan.from_layers({"": ("svd", 4)}), input_shape=CONV_SHAPE)
    (r,) = res.layers
    assert r.params_before == 16 * 8 * 9 + 16 and r.params_after == 4 * (8 * 9 + 16) + 16
    assert r.macs_before == 16 * 36 * 8 * 9  # out elements × Cin·kh·kw
    assert r.macs_after == 4 * 36 * 8 * 9 + 16 * 36 * 4


def test_musco_on_a_single_layer_model():
    steps = iterative_compress(conv(), Plan.uniform("tucker2", "ratio=2"), steps=3,
                               input_shape=CONV_SHAPE)
    assert [s.layers[0].name for s in steps] == ["", "", ""]
    params = [count for s in steps for count in (s.layers[0].params_before, s.layers[0].params_after)]
    assert params[1] == params[2] and params[3] == params[4]  # each step starts from the last
    assert all(s.layers[0].params_after <= s.layers[0].params_before / 2 for s in steps)


def test_a_decomposed_single_layer_model_reports_why_it_is_left_alone():
    first = compress_model(linear(), Plan.uniform("svd", 0.5), input_shape=LINEAR_SHAPE).model
    again = compress_model(first, Plan.uniform("svd", 0.5), input_shape=LINEAR_SHAPE)
    assert again.layers == () and again.skipped == (("", "already decomposed by svd; only "
                                                          "Tucker-2 blocks can be re-compressed (MUSCO)"),)


def test_measure_on_the_cpu_device(tmp_path):
    from latbench.devices.cpu import CpuDevice

    res = compress_model(conv(), Plan.uniform("tucker2", 0.5), input_shape=CONV_SHAPE)
    art = export_onnx(res.model, CONV_SHAPE, tmp_path / "m.onnx")
    dev = CpuDevice(threads=1)
    m = dev.measure(art, dev.make_spec(art, warmup=1, repeats=3))
    assert len(m.samples_s) == 3 and all(s > 0 for s in m.samples_s)


def test_predict_with_a_fitted_flops_predictor(tmp_path):
    from latbench.predictor.apply import predict_model
    from latbench.predictor.base import save_predictor
    from latbench.predictor.flops import FlopsPredictor

    # A line through MACs that the predictor can learn exactly: 0.1 ms + 1 ms per MMAC.
    models = [nn.Sequential(nn.Conv2d(8, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 16, 1))
              for c in (4, 8, 16, 32, 64, 96, 128)]
    tables = [layer_table(m, CONV_SHAPE) for m in models]
    y = [0.1 + t["macs"].sum() / 1e6 for t in tables]
    path = save_predictor(FlopsPredictor().fit(tables, y, device="cpu"), tmp_path / "p.pkl",
                          device="cpu", kind="flops")
    for name, model in (("conv", conv()), ("tucker", compress_model(
            conv(), Plan.uniform("tucker2", 0.5), input_shape=CONV_SHAPE).model)):
        pt = tmp_path / f"{name}.pt"
        torch.save(model, pt)
        pred = predict_model(path, str(pt), input_shape=CONV_SHAPE)
        macs = layer_table(model, CONV_SHAPE)["macs"].sum()
        assert pred.latency_ms == pytest.approx(0.1 + macs / 1e6, rel=1e-6)
        assert pred.n_layers == len(layer_table(model, CONV_SHAPE))
