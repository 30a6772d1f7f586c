"""compress_model: whole-model compression, reports, MUSCO re-compression, export of every method."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from latbench.compress._base import LowRankSequential
from latbench.compress.export import export_onnx
from latbench.compress.model import compress_model, decomposable_layers, iterative_compress
from latbench.compress.plan import Plan
from latbench.exceptions import UserInputError

SHAPE = (1, 3, 16, 16)


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 24, (3, 5), padding=(2, 4), dilation=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 10),
    ).eval()


def test_original_is_untouched_and_report_adds_up():
    net = small_cnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = compress_model(net, Plan.uniform("tucker2", 0.5), input_shape=SHAPE)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(res.model[2], LowRankSequential) and not isinstance(net[2], LowRankSequential)
    assert [r.name for r in res.layers] == ["0", "2", "5"]  # tucker2 takes convs; linears skipped
    saved = sum(r.params_before - r.params_after for r in res.layers)
    assert res.params_before - res.params_after == saved
    assert res.macs_after < res.macs_before
    assert 0 < res.output_rel_error < 1
    assert {n for n, _ in res.skipped} >= {"9", "11"}


def test_full_rank_reproduces_the_network():
    net = small_cnn()
    plan = Plan.from_layers({"2": ("tucker2", 1.0), "5": ("svd", 1.0), "9": ("svd", 1.0)})
    res = compress_model(net, plan, input_shape=SHAPE)
    assert res.output_rel_error < 1e-5
    assert all(r.rel_error < 1e-5 for r in res.layers)


@pytest.mark.parametrize("method, rank", [("svd", 0.5), ("tucker2", 0.5), ("cp", 0.5), ("cp3", 0.5),
                                          ("tt", 0.5), ("cur", 0.5)])
@pytest.mark.slow
def test_every_method_exports_and_onnxruntime_agrees_with_torch(tmp_path, method, rank):
    net = small_cnn()
    res = compress_model(net, Plan.uniform(method, rank), input_shape=SHAPE)
    assert res.layers, f"{method} compressed nothing"
    art = export_onnx(res.model, SHAPE, tmp_path / f"{method}.onnx")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = res.model(x).numpy()
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert len(art.sha256) == 64 and art.input_shape == SHAPE


def test_unknown_method_and_unknown_exact_layer_are_clear_errors():
    with pytest.raises(UserInputError, match="unknown decomposition method 'tuker2'.*tucker2"):
        compress_model(small_cnn(), Plan.uniform("tuker2", 0.5), input_shape=SHAPE)
    with pytest.raises(UserInputError, match="does not have"):
        compress_model(small_cnn(), Plan.from_layers({"conv9": ("svd", 2)}), input_shape=SHAPE)


def test_exact_layer_the_method_cannot_take_is_an_error_not_a_skip():
    with pytest.raises(UserInputError, match="cannot decompose"):
        compress_model(small_cnn(), Plan.from_layers({"9": ("tucker2", 2)}), input_shape=SHAPE)


def test_bad_rank_is_a_clear_error():
    with pytest.raises(UserInputError):
        compress_model(small_cnn(), Plan.from_layers({"2": ("tucker2", (0, 4))}), input_shape=SHAPE)
    with pytest.raises(UserInputError):
        compress_model(small_cnn(), Plan.from_layers({"2": ("svd", 10_000)}), input_shape=SHAPE)


def test_musco_recompression_shrinks_the_core_and_folds_factors():
    net = small_cnn()
    plan = Plan.from_layers({"5": ("tucker2", (20, 20))})
    first = compress_model(net, plan, input_shape=SHAPE).model
    second_res = compress_model(first, Plan.from_layers({"5": ("tucker2", (10, 12))}), input_shape=SHAPE)
    block = second_res.model[5]
    assert isinstance(block, LowRankSequential) and len(block) == 3  # still three layers
    assert block.rank == (10, 12)
    assert block[0].in_channels == 24 and block[2].out_channels == 24
    assert "MUSCO" in " ".join(second_res.layers[0].notes)
    # the folded block equals decomposing the block's own weight to those ranks: error is modest
    assert second_res.layers[0].rel_error < 1.0


def test_iterative_compress_calls_finetune_between_steps():
    calls = []
    res = iterative_compress(small_cnn(), Plan.from_layers({"5": ("tucker2", 0.75)}), steps=3,
                             finetune=lambda m, step: calls.append(step), input_shape=SHAPE)
    assert calls == [0, 1]
    ranks = [r.layers[0].rank for r in res]
    assert ranks[0] > ranks[1] > ranks[2]


def test_decomposable_layers_lists_blocks_not_their_insides():
    res = compress_model(small_cnn(), Plan.from_layers({"5": ("tucker2", 8)}), input_shape=SHAPE)
    names = [n for n, _ in decomposable_layers(res.model)]
    assert "5" in names and not any(n.startswith("5.") for n in names)
