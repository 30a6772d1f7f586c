"""Tucker-2: parameter formula, exactness over conv geometries and groups, HOOI, ONNX, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress._base import METHODS
from latbench.compress.tucker import METHOD, decompose_conv, tucker2_factors, tucker2_weight
from latbench.exceptions import UserInputError


def _seeded(layer: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer.eval()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert float((a - b).abs().max()) <= tol * max(float(b.abs().max()), 1.0)


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
    "pointwise": lambda: nn.Conv2d(6, 10, 1),
}


def test_registered_under_tucker2():
    assert METHODS.get("tucker2") is METHOD


@pytest.mark.parametrize("bias", [True, False])
def test_param_formula_is_kim_et_al(bias):
    layer = _seeded(nn.Conv2d(8, 12, 3, bias=bias))
    r_in, r_out = 3, 5
    expected = 8 * r_in + r_in * r_out * 9 + r_out * 12 + (12 if bias else 0)
    d = METHOD.decompose(layer, (r_in, r_out))
    assert METHOD.n_params(layer, (r_in, r_out)) == expected == d.params_after


def test_rank_order_is_input_then_output_and_layers_are_1x1_kxk_1x1():
    layer = _seeded(nn.Conv2d(8, 12, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)))
    first, core, last = METHOD.decompose(layer, (3, 5)).module
    assert (first.in_channels, first.out_channels, first.kernel_size) == (8, 3, (1, 1))
    assert (core.in_channels, core.out_channels, core.kernel_size) == (3, 5, (3, 5))
    assert (core.stride, core.padding, core.dilation) == ((2, 1), (1, 2), (1, 2))
    assert (last.in_channels, last.out_channels, last.kernel_size) == (5, 12, (1, 1))
    assert first.bias is None and core.bias is None and last.bias is not None


@pytest.mark.parametrize("name", sorted(CONVS))
def test_full_rank_reproduces_layer(name):
    layer = _seeded(CONVS[name]())
    d = METHOD.decompose(layer, METHOD.max_rank(layer))
    assert d.rel_error < 1e-6
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        _close(d.module(x), layer(x))


def test_grouped_convs_are_decomposed_per_group():
    layer = _seeded(nn.Conv2d(6, 9, 3, groups=3))
    assert METHOD.max_rank(layer) == (2, 3)
    d = METHOD.decompose(layer, (1, 2))
    assert [m.groups for m in d.module] == [3, 3, 3]
    assert d.module[0].out_channels == 3 and d.module[1].out_channels == 6
    assert d.params_after == 6 * 1 + 3 * 1 * 2 * 9 + 2 * 9 + 9 == METHOD.n_params(layer, (1, 2))


def test_rel_error_is_that_of_the_module_weight():
    layer = _seeded(nn.Conv2d(6, 9, 3, groups=3))
    d = METHOD.decompose(layer, (1, 2))
    first, core, last = d.module
    g = 3
    with torch.no_grad():
        w_hat = tucker2_weight(first.weight.double().reshape(g, 1, -1).transpose(1, 2),
                               core.weight.double().reshape(g, 2, 1, 3, 3),
                               last.weight.double().reshape(g, -1, 2))
        direct = float((layer.weight.double() - w_hat).norm() / layer.weight.double().norm())
    assert d.rel_error == pytest.approx(direct, abs=1e-7)


def test_error_never_grows_with_either_rank():
    layer = _seeded(nn.Conv2d(6, 8, 3))
    grid = [[METHOD.decompose(layer, (ri, ro)).rel_error for ro in range(1, 9)] for ri in range(1, 7)]
    e = np.array(grid)
    assert np.all(np.diff(e, axis=0) <= 1e-7) and np.all(np.diff(e, axis=1) <= 1e-7)
    assert e[-1, -1] < 1e-6 < e[0, 0]


def test_hooi_does_not_worsen_hosvd_and_is_noted():
    layer = _seeded(nn.Conv2d(8, 10, 3), seed=3)
    hosvd = METHOD.decompose(layer, (3, 4))
    hooi = METHOD.decompose(layer, (3, 4), hooi_iters=4)
    assert hooi.rel_error <= hosvd.rel_error + 1e-7
    assert any("HOOI" in n for n in hooi.notes) and not hosvd.notes


def test_factors_are_orthonormal_and_reconstruct():
    w = torch.randn(10, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    u_in, core, u_out = tucker2_factors(w, (6, 10))
    torch.testing.assert_close(u_in[0].T @ u_in[0], torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(tucker2_weight(u_in, core, u_out), w.double())


def test_plain_function_takes_fractions():
    layer = _seeded(nn.Conv2d(8, 12, 3))
    assert decompose_conv(layer, 0.5).rank == (4, 6)
    with pytest.raises(UserInputError, match="nn.Conv2d"):
        decompose_conv(nn.Linear(3, 3), 1)  # type: ignore[arg-type]


def test_refusals_and_bad_options_are_clear():
    assert "depthwise" in METHOD.supports(nn.Conv2d(4, 4, 3, groups=4))
    assert "use svd" in METHOD.supports(nn.Linear(4, 4))
    layer = _seeded(nn.Conv2d(4, 6, 3))
    with pytest.raises(UserInputError, match="hooi_iters must be an int >= 0"):
        METHOD.decompose(layer, (2, 2), hooi_iters=-1)
    with pytest.raises(UserInputError, match="no option 'seed'"):
        METHOD.decompose(layer, (2, 2), seed=0)


@pytest.mark.parametrize("rank", [(0, 2), (2, 7), (5, 2), (2,), (-1, -1)])
def test_bad_ranks_name_the_layer_shape(rank):
    layer = _seeded(nn.Conv2d(4, 6, 3))
    with pytest.raises(UserInputError, match=r"weight shape \(6, 4, 3, 3\)"):
        METHOD.decompose(layer, rank)


@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Conv2d(6, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (1, 6, 10, 12)),
    (lambda: nn.Conv2d(6, 9, 3, stride=2, padding=1, groups=3, bias=False), (1, 6, 9, 9)),
])
def test_onnx_round_trip_matches_torch(layer, shape, tmp_path):
    layer = _seeded(layer())
    _onnx_matches(METHOD.decompose(layer, (2, 3)).module, shape, tmp_path)
