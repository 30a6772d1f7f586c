"""Every path keeps the model's dtype and device and leaves the caller's model as it was."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from latbench.compress._base import LowRankSequential
from latbench.compress.export import export_onnx
from latbench.compress.model import compress_model, iterative_compress
from latbench.compress.plan import Plan
from latbench.data.features import layer_table
from latbench.exceptions import UserInputError

SHAPE = (1, 3, 10, 10)
FAST = {"n_iter_max": 10}
METHODS = [("svd", {}), ("tucker2", {}), ("cp", FAST), ("cp3", FAST), ("tt", {}), ("cur", {})]


def net(dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(24, 24, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )
    return model.to(device=device, dtype=dtype)


def snapshot(model: nn.Module) -> dict:
    return {
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "params": {k: (v.detach().clone(), v.dtype, v.device, v.requires_grad)
                   for k, v in model.named_parameters()},
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["hooks"] == before["hooks"]
    for k, (v, dtype, device, grad) in before["params"].items():
        w, dtype2, device2, grad2 = after["params"][k]
        assert (dtype2, device2, grad2) == (dtype, device, grad)
        assert torch.equal(v, w)
    for k, v in before["buffers"].items():
        assert torch.equal(v, after["buffers"][k])


def mixed_modes(model: nn.Module) -> nn.Module:
    model.train()
    model[1].eval()  # a frozen BatchNorm in a model being trained: flattening would lose it
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("method, options", METHODS, ids=[m for m, _ in METHODS])
def test_compress_keeps_dtype_and_leaves_the_model_alone(dtype, method, options):
    model = mixed_modes(net(dtype))
    before = snapshot(model)
    res = compress_model(model, Plan.uniform(method, 0.5, **options), input_shape=SHAPE)
    assert res.layers, f"{method} compressed nothing"
    assert {p.dtype for p in res.model.parameters()} == {dtype}
    assert_untouched(model, before)
    # the copy keeps every module's mode; its new layers take the mode of what they replace
    assert res.model.training and not res.model[1].training
    assert all(m.training for r in res.layers for m in res.model.get_submodule(r.name).modules())
    assert np.isfinite(res.output_rel_error) and res.output_rel_error < 1
    with torch.no_grad():
        out = res.model.eval()(torch.randn(SHAPE, dtype=dtype))
    assert out.dtype == dtype


def test_float64_decomposition_is_exact_at_full_rank():
    res = compress_model(net(torch.float64), Plan.from_layers({"3": ("tucker2", 1.0),
                                                               "8": ("svd", 1.0)}),
                         input_shape=SHAPE)
    assert res.output_rel_error < 1e-12  # float64 all the way: no float32 rounding


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_musco_recompression_keeps_dtype(dtype):
    steps = iterative_compress(net(dtype), Plan.uniform("tucker2", 0.75, "[35]"), steps=3,
                               input_shape=SHAPE)
    for res in steps:
        blocks = [res.model.get_submodule(r.name) for r in res.layers]
        assert blocks and all(isinstance(b, LowRankSequential) for b in blocks)
        assert {p.dtype for b in blocks for p in b.parameters()} == {dtype}
    assert "MUSCO" in " ".join(steps[-1].layers[0].notes)
    assert steps[-1].output_rel_error < 1


@pytest.mark.parametrize("dtype, onnx_type", [(torch.float64, onnx.TensorProto.DOUBLE),
                                              (torch.bfloat16, onnx.TensorProto.BFLOAT16)], ids=str)
def test_export_keeps_dtype_and_mode(tmp_path, dtype, onnx_type):
    model = mixed_modes(net(dtype))
    before = snapshot(model)
    art = export_onnx(model, SHAPE, tmp_path / "m.onnx")
    assert_untouched(model, before)
    graph = onnx.load(str(art.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx_type


def test_float64_svd_variant_runs_in_onnxruntime_like_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)  # (onnxruntime's CPU kernels take float64 Gemm, not float64 Conv)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)).double()
    res = compress_model(model, Plan.uniform("svd", 0.5), input_shape=(2, 20))
    art = export_onnx(res.model, (2, 20), tmp_path / "m.onnx")
    x = torch.randn(2, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    assert out.dtype == np.float64
    with torch.no_grad():
        np.testing.assert_allclose(out, res.model(x).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, size", [(torch.float64, 8), (torch.bfloat16, 2)], ids=str)
def test_layer_table_uses_the_model_dtype_and_leaves_the_model_alone(dtype, size):
    model = mixed_modes(net(dtype))
    before = snapshot(model)
    t = layer_table(model, SHAPE)
    assert_untouched(model, before)
    first = t.iloc[0]
    assert first.act_in_bytes == 3 * 10 * 10 * size and first.weight_bytes == (16 * 27 + 16) * size
    assert t["macs"].sum() == layer_table(net(), SHAPE)["macs"].sum()


def test_meta_model_gives_a_table_but_cannot_be_compressed():
    model = net(device="meta")
    assert layer_table(model, SHAPE)["macs"].sum() == layer_table(net(), SHAPE)["macs"].sum()
    with pytest.raises(UserInputError, match="meta"):
        compress_model(model, Plan.uniform("svd", 0.5), input_shape=SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method, options", METHODS, ids=[m for m, _ in METHODS])
def test_cuda_model_stays_on_cuda(tmp_path, method, options):
    model = net(device="cuda")
    before = snapshot(model)
    res = compress_model(model, Plan.uniform(method, 0.5, **options), input_shape=SHAPE)
    assert_untouched(model, before)
    assert {p.device.type for p in res.model.parameters()} == {"cuda"}
    steps = iterative_compress(model, Plan.uniform("tucker2", 0.75, "3"), steps=2, input_shape=SHAPE)
    assert {p.device.type for p in steps[-1].model.parameters()} == {"cuda"}
    export_onnx(res.model, SHAPE, tmp_path / "m.onnx")
    assert layer_table(res.model, SHAPE)["macs"].sum() == res.macs_after


def test_caller_model_in_train_mode_is_not_switched_to_eval():
    model = net().train()
    before = copy.deepcopy(model.state_dict())
    compress_model(model, Plan.uniform("svd", 0.5), input_shape=SHAPE)
    assert all(m.training for m in model.modules())
    # BatchNorm's running statistics did not move: the probe ran in eval mode
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
