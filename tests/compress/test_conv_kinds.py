"""1-D, 3-D and transposed convolutions: svd / tucker2 / cur decompose 1-D and 3-D convs;
what a method does not take is skipped with its reason in the report, never silently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress.export import export_onnx
from latbench.compress.model import compress_model
from latbench.compress.plan import Plan
from latbench.exceptions import UserInputError

SHAPE_1D, SHAPE_3D = (1, 6, 40), (1, 3, 6, 8, 8)


def net1d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(6, 24, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(24, 32, 3, padding=1, dilation=1, padding_mode="circular"),
                         nn.ReLU(), nn.Conv1d(32, 16, 1), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(16, 4)).eval()


def net3d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 12, 3, padding=1), nn.ReLU(),
                         nn.Conv3d(12, 16, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))).eval()


@pytest.mark.parametrize("make, shape", [(net1d, SHAPE_1D), (net3d, SHAPE_3D)], ids=["1d", "3d"])
@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_full_rank_reproduces_and_half_rank_compresses(make, shape, method):
    full = compress_model(make(), Plan.uniform(method, 1.0, "[0-4]"), input_shape=shape)
    assert full.output_rel_error < 1e-5
    half = compress_model(make(), Plan.uniform(method, 0.5, "[0-4]"), input_shape=shape)
    assert half.layers and all(r.macs_after < r.macs_before for r in half.layers)
    assert half.params_after < half.params_before and half.macs_after < half.macs_before
    kinds = {type(m) for r in half.layers for m in half.model.get_submodule(r.name)}
    assert kinds == {type(make()[0])}  # factors are convs of the same dimensionality


@pytest.mark.parametrize("method", ["svd", "tucker2", "cur"])
def test_1d_variants_export_and_onnxruntime_agrees(tmp_path, method):
    ort = pytest.importorskip("onnxruntime")
    res = compress_model(net1d(), Plan.uniform(method, 0.5), input_shape=SHAPE_1D)
    assert res.layers
    art = export_onnx(res.model, SHAPE_1D, tmp_path / "m.onnx")
    x = torch.randn(SHAPE_1D, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], res.model(x).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_cur_takes_pointwise_1d_convs_only():
    res = compress_model(net1d(), Plan.uniform("cur", 0.5, "[0-4]"), input_shape=SHAPE_1D)
    assert [r.name for r in res.layers] == ["4"]
    assert dict(res.skipped)["0"].startswith("cur applies to Linear layers and 1x1 convs")


@pytest.mark.parametrize("method", ["cp", "cp3", "tt"])
def test_2d_only_methods_skip_1d_and_3d_convs_with_the_reason(method):
    res = compress_model(net1d(), Plan.uniform(method, 0.5), input_shape=SHAPE_1D)
    assert res.layers == ()
    reasons = dict(res.skipped)
    assert set(reasons) >= {"0", "2", "4"}
    assert "only Conv2d layers are supported, not Conv1d" in reasons["0"]
    assert "use svd or tucker2" in reasons["0"]
    with pytest.raises(UserInputError, match="not Conv3d"):
        compress_model(net3d(), Plan.from_layers({"0": (method, 2)}), input_shape=SHAPE_3D)


@pytest.mark.parametrize("method", ["svd", "tucker2", "cp", "cp3", "tt", "cur"])
def test_transposed_convs_are_reported_as_skipped(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose2d(8, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 16, 1))
    res = compress_model(net, Plan.uniform(method, 0.5), input_shape=(1, 8, 5, 5))
    assert "transposed convolution" in dict(res.skipped)["0"]
    assert "0" not in {r.name for r in res.layers}
    with pytest.raises(UserInputError, match="transposed convolution"):
        compress_model(net, Plan.from_layers({"0": (method, 1)}), input_shape=(1, 8, 5, 5))
