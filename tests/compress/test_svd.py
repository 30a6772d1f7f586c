"""SVD / channel-SVD decomposition: parameter formula, exactness, geometry, ONNX, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress._base import METHODS, LowRankSequential
from latbench.compress.svd import METHOD, decompose_conv, decompose_linear
from latbench.exceptions import UserInputError


def _seeded(layer: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer.eval()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    scale = float(b.abs().max())
    assert float((a - b).abs().max()) <= tol * max(scale, 1.0)


def _onnx_matches(module: nn.Module, shape: tuple[int, ...], tmp_path) -> None:
    import onnxruntime as ort

    from latbench.compress.export import export_onnx

    art = export_onnx(module, shape, tmp_path / "m.onnx")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(x).numpy()
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


CONVS = {
    "stride2_padded": lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1),
    "dilated_nobias": lambda: nn.Conv2d(6, 10, 3, padding=2, dilation=2, bias=False),
    "3x5_stride21": lambda: nn.Conv2d(6, 10, (3, 5), stride=(2, 1), padding=(1, 2)),
    "reflect": lambda: nn.Conv2d(6, 10, 3, padding=1, padding_mode="reflect"),
    "grouped": lambda: nn.Conv2d(6, 9, 3, padding=1, groups=3),
    "pointwise_stride2": lambda: nn.Conv2d(6, 10, 1, stride=2),
}


def test_registered_under_svd():
    assert METHODS.get("svd") is METHOD


@pytest.mark.parametrize("m, n, k, bias", [(7, 10, 3, True), (12, 5, 4, False)])
def test_linear_param_formula_is_k_times_m_plus_n(m, n, k, bias):
    layer = _seeded(nn.Linear(n, m, bias=bias))
    d = METHOD.decompose(layer, (k,))
    assert METHOD.n_params(layer, (k,)) == k * (m + n) + (m if bias else 0) == d.params_after
    if not bias:
        assert d.compression == pytest.approx(m * n / (k * (m + n)))
    first, second = d.module
    assert first.bias is None and (first.in_features, first.out_features) == (n, k)
    assert (second.in_features, second.out_features) == (k, m) and (second.bias is not None) == bias


def test_conv_param_formula_counts_both_convs():
    layer = _seeded(nn.Conv2d(6, 10, (3, 5)))
    d = METHOD.decompose(layer, (4,))
    assert d.params_after == 4 * (6 * 15 + 10) + 10 == METHOD.n_params(layer, (4,))
    assert isinstance(d.module, LowRankSequential) and d.module.rank == (4,)


def test_linear_full_rank_reproduces_layer():
    layer = _seeded(nn.Linear(10, 7))
    d = METHOD.decompose(layer, METHOD.max_rank(layer))
    assert d.rel_error < 1e-6
    x = torch.randn(4, 10)
    with torch.no_grad():
        _close(d.module(x), layer(x))


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_full_rank_reproduces_layer(name):
    layer = _seeded(CONVS[name]())
    d = METHOD.decompose(layer, METHOD.max_rank(layer))
    assert d.rel_error < 1e-6
    first, second = d.module
    assert (first.stride, first.padding, first.dilation) == (layer.stride, layer.padding, layer.dilation)
    assert first.groups == second.groups == layer.groups and second.kernel_size == (1, 1)
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        _close(d.module(x), layer(x))


def test_grouped_rank_is_per_group():
    layer = _seeded(nn.Conv2d(6, 9, 3, groups=3))
    assert METHOD.max_rank(layer) == (3,)  # each group: 3 × (2·9) matrix
    d = METHOD.decompose(layer, (2,))
    assert d.module[0].out_channels == 6 and d.module[1].in_channels == 6


def test_error_is_the_optimal_truncation_and_never_grows_with_rank():
    layer = _seeded(nn.Conv2d(5, 8, 3))
    s = torch.linalg.svdvals(layer.weight.detach().double().reshape(8, -1))
    errors = [METHOD.decompose(layer, (k,)).rel_error for k in range(1, 9)]
    assert all(b <= a + 1e-7 for a, b in zip(errors, errors[1:]))
    expected = [float((s[k:] ** 2).sum().sqrt() / s.norm()) for k in range(1, 9)]
    np.testing.assert_allclose(errors, expected, atol=1e-6)


def test_keeps_dtype_device_and_training_flag_and_leaves_layer_alone():
    layer = _seeded(nn.Conv2d(4, 6, 3)).train()
    before = layer.weight.detach().clone()
    d = METHOD.decompose(layer, (2,))
    assert all(p.dtype == torch.float32 and p.device == layer.weight.device for p in d.module.parameters())
    assert d.module.training
    assert torch.equal(layer.weight, before)


def test_plain_functions_accept_any_rank_spelling():
    lin = _seeded(nn.Linear(10, 8))
    assert decompose_linear(lin, 0.5)[0].out_features == 4
    conv = _seeded(nn.Conv2d(4, 6, 3))
    # 222 parameters, budget 111: k (36 + 6) + 6 <= 111 holds for k = 2, not for k = 3
    assert decompose_conv(conv, "ratio=2").rank == (2,)
    assert decompose_conv(conv, 3)[0].out_channels == 3
    with pytest.raises(UserInputError, match="nn.Conv2d"):
        decompose_conv(lin, 2)  # type: ignore[arg-type]


def test_depthwise_and_other_layers_are_refused_with_a_reason():
    assert "depthwise" in METHOD.supports(nn.Conv2d(4, 4, 3, groups=4))
    assert METHOD.supports(nn.BatchNorm2d(4)) is not None
    with pytest.raises(UserInputError, match="depthwise"):
        METHOD.decompose(nn.Conv2d(4, 4, 3, groups=4), (1,))


@pytest.mark.parametrize("rank", [(0,), (-1,), (9,), (2, 2)])
def test_bad_ranks_are_user_errors_naming_the_layer(rank):
    layer = _seeded(nn.Linear(8, 12))
    with pytest.raises(UserInputError, match=r"weight shape \(12, 8\)"):
        METHOD.decompose(layer, rank)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserInputError, match="no option 'hooi_iters'"):
        METHOD.decompose(_seeded(nn.Linear(4, 4)), (2,), hooi_iters=1)


@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Linear(10, 7), (2, 10)),
    (lambda: nn.Conv2d(6, 9, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3), (1, 6, 10, 12)),
])
def test_onnx_round_trip_matches_torch(layer, shape, tmp_path):
    layer = _seeded(layer())
    _onnx_matches(METHOD.decompose(layer, (2,)).module, shape, tmp_path)


@pytest.mark.parametrize("shape", [(40, 300), (300, 40)])
def test_linear_error_from_the_projection_identity_matches_the_product(shape):
    from latbench.compress._linalg import rel_error

    layer = _seeded(nn.Linear(shape[1], shape[0]))
    for k in (1, 7, min(shape) - 1):
        d = METHOD.decompose(layer, (k,))
        w_hat = d.module[1].weight.double() @ d.module[0].weight.double()
        assert abs(d.rel_error - rel_error(layer.weight, w_hat)) < 1e-6
