"""Tests of the Tensor-Train (``tt``) decomposition of Conv2d."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress._base import METHODS, DecompositionMethod
from latbench.compress.tt import METHOD as TT, tt_cores, tt_decompose_conv, tt_module_weight
from latbench.exceptions import UserInputError

# torch's own note on even kernels with padding="same"; the geometry is still tested.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

GEOMETRIES = [
    (8, 6, (3, 3), dict()),
    (8, 6, (3, 5), dict(stride=(2, 1), padding=(1, 2))),
    (6, 10, (3, 5), dict(stride=2, padding=2, dilation=(2, 1), bias=False)),
    (8, 6, (5, 3), dict(padding="same", dilation=2)),
    (8, 12, (3, 3), dict(groups=2, stride=(1, 2), padding=1)),
    (6, 6, (3, 5), dict(padding=(1, 2), padding_mode="reflect")),
    (8, 4, (1, 1), dict(stride=2)),
    (6, 6, (4, 2), dict(padding="same", bias=False)),
]


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: a second BLAS thread only adds waiting on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _layer(cin: int, cout: int, k: tuple[int, int], kw: dict, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    layer = nn.Conv2d(cin, cout, k, **kw)
    if layer.bias is not None:
        nn.init.normal_(layer.bias)
    return layer


def test_registered_and_follows_the_protocol() -> None:
    import latbench.compress  # noqa: F401

    assert METHODS.get("tt") is TT and isinstance(TT, DecompositionMethod)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"{g[2]}-{g[3]}")
def test_full_rank_reproduces_the_layer(geom) -> None:
    layer = _layer(*geom)
    rank = TT.max_rank(layer)
    dec = TT.decompose(layer, rank)
    x = torch.randn(2, layer.in_channels, 11, 13, generator=torch.Generator().manual_seed(1))
    assert dec.rel_error < 1e-6
    torch.testing.assert_close(dec.module(x), layer(x), rtol=1e-4, atol=1e-5)
    assert dec.rank == rank == dec.module.rank and dec.notes == ()


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"{g[2]}-{g[3]}")
def test_low_rank_module_computes_its_effective_weight(geom) -> None:
    layer = _layer(*geom)
    top = TT.max_rank(layer)
    rank = tuple(max(1, t // 2) for t in top)
    dec = TT.decompose(layer, rank)
    ref = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                    stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                    groups=layer.groups, bias=layer.bias is not None,
                    padding_mode=layer.padding_mode)
    with torch.no_grad():
        ref.weight.copy_(tt_module_weight(dec.module))
        if layer.bias is not None:
            ref.bias.copy_(layer.bias)
    x = torch.randn(2, layer.in_channels, 12, 9, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dec.module(x), ref(x), rtol=1e-4, atol=1e-5)


def test_error_falls_with_rank_and_matches_the_module() -> None:
    layer = _layer(16, 12, (3, 3), dict())
    errors = [TT.decompose(layer, r).rel_error for r in ((2, 4, 2), (4, 8, 4), (8, 16, 8), (16, 36, 12))]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-6
    dec = TT.decompose(layer, (4, 8, 4))
    w = layer.weight.detach().double()
    assert dec.rel_error == pytest.approx(float((w - tt_module_weight(dec.module)).norm() / w.norm()))


def test_cores_reconstruct_the_reordered_kernel() -> None:
    # Documents the ordering: X[i, h, w, o] = Σ G1[i,a] G2[a,h,b] G3[b,w,c] G4[c,o].
    layer = _layer(5, 4, (3, 2), dict())
    g1, g2, g3, g4 = tt_cores(layer, TT.max_rank(layer))
    x = torch.einsum("gia,gahb,gbwc,gco->gihwo", g1, g2, g3, g4)[0]
    torch.testing.assert_close(x, layer.weight.detach().double().permute(1, 2, 3, 0))


def test_layer_structure_and_placement() -> None:
    layer = _layer(8, 6, (3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(3, 1)))
    c1, c2, c3, c4 = TT.decompose(layer, (4, 6, 5)).module
    assert (c1.kernel_size, c1.out_channels, c1.bias) == ((1, 1), 4, None)
    assert (c2.kernel_size, c2.in_channels, c2.out_channels) == ((3, 1), 4, 6)
    assert (c2.stride, c2.padding, c2.dilation) == ((2, 1), (1, 0), (3, 1))
    assert (c3.kernel_size, c3.in_channels, c3.out_channels) == ((1, 5), 6, 5)
    assert (c3.stride, c3.padding, c3.dilation) == ((1, 1), (0, 2), (1, 1))
    assert c4.kernel_size == (1, 1) and torch.equal(c4.bias, layer.bias)


def test_max_rank_fraction_base_and_parameters() -> None:
    layer = _layer(16, 12, (3, 5), dict())
    assert TT.max_rank(layer) == (16, 16 * 3, 12)
    assert TT.fraction_base(layer) == TT.max_rank(layer)
    assert TT.n_params(layer, (4, 6, 5)) == 16 * 4 + 4 * 3 * 6 + 6 * 5 * 5 + 5 * 12 + 12
    grouped = _layer(16, 12, (3, 3), dict(groups=4, bias=False))
    assert TT.max_rank(grouped) == (4, 9, 3)
    assert TT.n_params(grouped, (2, 3, 2)) == 4 * (4 * 2 + 2 * 3 * 3 + 3 * 3 * 2 + 2 * 3)
    for lay, r in ((layer, (4, 6, 5)), (grouped, (2, 3, 2))):
        dec = TT.decompose(lay, r)
        assert dec.params_after == TT.n_params(lay, r)
    assert tt_decompose_conv(layer, 0.25).rank == (4, 12, 3)


def test_ranks_beyond_what_tt_svd_keeps_are_clipped_and_noted() -> None:
    layer = _layer(16, 12, (3, 5), dict())
    dec = TT.decompose(layer, (2, 40, 12))  # r2 <= r1*kh = 6, then r3 <= r2*kw = 30
    assert dec.rank == (2, 6, 12) and dec.module.rank == (2, 6, 12)
    assert any("clipped" in n for n in dec.notes)
    assert dec.params_after == TT.n_params(layer, (2, 40, 12))


def test_bad_ranks_and_layers_are_clear_user_errors() -> None:
    layer = _layer(8, 6, (3, 3), dict())
    top = TT.max_rank(layer)
    for bad in ((0, 1, 1), (top[0] + 1, 1, 1), (1, 1, top[2] + 1), (2, 2)):
        with pytest.raises(UserInputError, match="rank"):
            TT.decompose(layer, bad)
    with pytest.raises(UserInputError, match="no option"):
        TT.decompose(layer, top, n_iter_max=3)
    depthwise = nn.Conv2d(8, 8, 3, groups=8)
    assert "depthwise" in TT.supports(depthwise)
    with pytest.raises(UserInputError, match="depthwise"):
        TT.decompose(depthwise, (1, 1, 1))
    with pytest.raises(UserInputError, match="Linear"):
        TT.decompose(nn.Linear(4, 4), (1, 1, 1))


def test_onnx_round_trip(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from latbench.compress.export import export_onnx

    layer = _layer(8, 6, (3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1)))
    mod = TT.decompose(layer, (4, 6, 5)).module.eval()
    shape = (1, 8, 14, 11)
    art = export_onnx(mod, shape, tmp_path / "tt.onnx")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = mod(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_rank_unfoldings_feed_the_evbmf_resolver() -> None:
    from latbench.compress.ranks import resolve_rank

    layer = _layer(24, 32, (3, 3), dict())
    entries = TT.rank_unfoldings(layer)
    assert [tuple(m.shape) for m in entries] == [(1, 24, 9 * 32), (1, 72, 96), (1, 216, 32)]
    # A kernel of TT ranks (3, 5, 4) plus faint noise: EVBMF finds the planted ranks.
    gen = torch.Generator().manual_seed(6)
    cores = [torch.randn(s, generator=gen, dtype=torch.float64)
             for s in ((24, 3), (3, 3, 5), (5, 3, 4), (4, 32))]
    x = torch.einsum("ia,ahb,bwc,co->ohwi", *cores).permute(0, 3, 1, 2)
    with torch.no_grad():
        layer.weight.copy_(x + 1e-4 * x.std() * torch.randn(x.shape, generator=gen, dtype=torch.float64))
    assert resolve_rank("evbmf", layer, "tt") == (3, 5, 4)


def test_dtype_training_mode_and_layer_are_kept() -> None:
    layer = _layer(8, 6, (3, 3), dict()).double().train(False)
    before = layer.weight.detach().clone()
    dec = TT.decompose(layer, (3, 4, 3))
    assert all(p.dtype == torch.float64 for p in dec.module.parameters())
    assert not dec.module.training and torch.equal(layer.weight, before)
