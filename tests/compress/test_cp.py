"""Tests of the ``cp`` and ``cp3`` decompositions and of the torch CP-ALS behind them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress import _cp_als
from latbench.compress._base import METHODS, DecompositionMethod
from latbench.compress._cp_als import cp_als, cp_exact, cp_to_tensor, cp_trivial_rank
from latbench.compress.cp import CP3, CP4, cp_decompose_conv, cp_module_weight
from latbench.exceptions import UserInputError

METHOD_OBJS = [CP4, CP3]
FAST = dict(n_iter_max=5)  # geometry tests need a decomposition, not a converged one


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: a second BLAS thread only adds waiting on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# (in, out, kernel, conv kwargs): stride-2, padded, dilated, non-square, grouped, no bias.
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


def _layer(cin: int, cout: int, k: tuple[int, int], kw: dict, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    layer = nn.Conv2d(cin, cout, k, **kw)
    if layer.bias is not None:
        nn.init.normal_(layer.bias)  # a visible bias, so dropping it would fail the test
    return layer


def _planted(shape: tuple[int, ...], rank: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    factors = [torch.randn(d, rank, generator=gen, dtype=torch.float64) for d in shape]
    x = cp_to_tensor(factors)
    n = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x + noise * n * x.norm() / n.norm()


def test_methods_are_registered_and_follow_the_protocol() -> None:
    import latbench.compress  # noqa: F401

    assert METHODS.get("cp") is CP4 and METHODS.get("cp3") is CP3
    assert isinstance(CP4, DecompositionMethod) and isinstance(CP3, DecompositionMethod)


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"{g[2]}-{g[3]}")
def test_full_rank_reproduces_the_layer(method, geom) -> None:
    layer = _layer(*geom)
    rank = method.max_rank(layer)
    dec = method.decompose(layer, rank)
    x = torch.randn(2, layer.in_channels, 11, 13, generator=torch.Generator().manual_seed(1))
    assert dec.rel_error < 1e-6
    torch.testing.assert_close(dec.module(x), layer(x), rtol=1e-4, atol=1e-5)
    assert dec.rank == rank and dec.module.rank == rank and dec.method == method.name


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"{g[2]}-{g[3]}")
def test_low_rank_module_computes_its_effective_weight(method, geom) -> None:
    # Proves the stride/padding/dilation split: the factor layers must act exactly as one
    # conv with the reconstructed kernel and the original placement.
    layer = _layer(*geom)
    dec = method.decompose(layer, (3,), **FAST)
    ref = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                    stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                    groups=layer.groups, bias=layer.bias is not None,
                    padding_mode=layer.padding_mode)
    with torch.no_grad():
        ref.weight.copy_(cp_module_weight(dec.module))
        if layer.bias is not None:
            ref.bias.copy_(layer.bias)
    x = torch.randn(2, layer.in_channels, 12, 9, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dec.module(x), ref(x), rtol=1e-4, atol=1e-5)
    w_hat = cp_module_weight(dec.module)
    w = layer.weight.detach().double()
    expect = float((w - w_hat).norm() / w.norm())
    assert dec.rel_error == pytest.approx(expect, rel=1e-9)
    assert 0 < dec.rel_error < 1


def test_layer_structure_matches_lebedev() -> None:
    layer = _layer(8, 6, (3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(3, 1)))
    mod = CP4.decompose(layer, (4,), **FAST).module
    first, vert, horiz, last = mod
    assert (first.kernel_size, first.out_channels, first.bias) == ((1, 1), 4, None)
    assert (vert.kernel_size, vert.groups, vert.stride, vert.padding, vert.dilation) == (
        (3, 1), 4, (2, 1), (1, 0), (3, 1))
    assert (horiz.kernel_size, horiz.groups, horiz.stride, horiz.padding, horiz.dilation) == (
        (1, 5), 4, (1, 1), (0, 2), (1, 1))
    assert last.kernel_size == (1, 1) and torch.equal(last.bias, layer.bias)
    mod3 = CP3.decompose(layer, (4,), **FAST).module
    assert len(mod3) == 3 and mod3[1].kernel_size == (3, 5) and mod3[1].groups == 4
    assert (mod3[1].stride, mod3[1].padding, mod3[1].dilation) == ((2, 1), (1, 2), (3, 1))


def test_parameter_formulas() -> None:
    layer = _layer(16, 12, (3, 5), dict())
    assert CP4.n_params(layer, (4,)) == 4 * (16 + 3 + 5 + 12) + 12
    assert CP3.n_params(layer, (4,)) == 4 * (16 + 15 + 12) + 12
    grouped = _layer(16, 12, (3, 3), dict(groups=4, bias=False))
    assert CP4.n_params(grouped, (2,)) == 4 * 2 * (4 + 3 + 3 + 3)
    for method in METHOD_OBJS:
        for lay, r in ((layer, (4,)), (grouped, (2,))):
            dec = method.decompose(lay, r, **FAST)
            assert dec.params_after == method.n_params(lay, r)
            assert dec.params_before == sum(p.numel() for p in lay.parameters())


def test_max_rank_and_fraction_base() -> None:
    layer = _layer(16, 12, (3, 5), dict())
    assert CP4.max_rank(layer) == (12 * 3 * 5,)  # all dims but the largest (Cin = 16)
    assert CP3.max_rank(layer) == (12 * 15,)
    assert CP4.fraction_base(layer) == (16,)
    grouped = _layer(16, 12, (3, 3), dict(groups=4))
    assert CP4.max_rank(grouped) == (3 * 3 * 3,) and CP3.fraction_base(grouped) == (4,)
    assert cp_decompose_conv(layer, 0.25, **FAST).rank == (4,)  # ceil(0.25 * max(Cin, Cout))


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
def test_bad_ranks_are_clear_user_errors(method) -> None:
    layer = _layer(8, 6, (3, 3), dict())
    top = method.max_rank(layer)[0]
    for bad in ((0,), (top + 1,), (2, 2)):
        with pytest.raises(UserInputError, match="rank"):
            method.decompose(layer, bad)
    with pytest.raises(UserInputError, match="n_iter_max"):
        method.decompose(layer, (2,), n_iter_max=0)
    with pytest.raises(UserInputError, match="no option"):
        method.decompose(layer, (2,), iterations=5)
    with pytest.raises(UserInputError, match="line_search"):
        method.decompose(layer, (2,), line_search="yes")


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
def test_unsupported_layers_are_refused_with_a_reason(method) -> None:
    depthwise = nn.Conv2d(8, 8, 3, groups=8)
    assert "depthwise" in method.supports(depthwise)
    assert "Linear" in method.supports(nn.Linear(4, 4))
    assert method.supports(nn.Conv1d(4, 4, 3)) is not None
    with pytest.raises(UserInputError, match="depthwise"):
        method.decompose(depthwise, (1,))
    with pytest.raises(UserInputError, match="Linear"):
        method.decompose(nn.Linear(4, 4), (1,))


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
def test_onnx_round_trip(method, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from latbench.compress.export import export_onnx

    layer = _layer(8, 6, (3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1)))
    mod = method.decompose(layer, (5,), **FAST).module.eval()
    shape = (1, 8, 14, 11)
    art = export_onnx(mod, shape, tmp_path / f"{method.name}.onnx")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = mod(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("line_search", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_als_recovers_a_planted_rank(seed, line_search) -> None:
    x = _planted((20, 16, 3, 3), 6, 0.01, seed)
    res = cp_als(x, 6, n_iter_max=300, tol=1e-9, line_search=line_search)
    assert res.rel_error < 0.013  # at the 1 % noise level
    assert res.notes == ()
    rebuilt = cp_to_tensor(res.factors)
    assert float((x - rebuilt).norm() / x.norm()) == pytest.approx(res.rel_error)


def test_planted_rank_through_the_conv_method() -> None:
    layer = nn.Conv2d(16, 20, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_planted((20, 16, 3, 3), 5, 0.01, 7))
    assert CP4.decompose(layer, (5,), n_iter_max=300, tol=1e-9).rel_error < 0.013
    three = _planted((20, 16, 9), 5, 0.01, 8)
    with torch.no_grad():
        layer.weight.copy_(three.reshape(20, 16, 3, 3))
    assert CP3.decompose(layer, (5,), n_iter_max=300, tol=1e-9).rel_error < 0.013


def test_cp_exact_puts_fibres_on_the_largest_mode() -> None:
    x = torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert cp_trivial_rank(x.shape) == 2 * 3 * 4
    factors = cp_exact(x)
    assert [tuple(f.shape) for f in factors] == [(2, 24), (3, 24), (7, 24), (4, 24)]
    torch.testing.assert_close(cp_to_tensor(factors), x)


@pytest.mark.parametrize("method", METHOD_OBJS, ids=lambda m: m.name)
def test_hard_cases_stay_finite(method) -> None:
    layer = _layer(6, 5, (3, 3), dict())
    with torch.no_grad():
        # Rank 1 asked at a high rank: the normal equations are singular without the ridge.
        u = torch.arange(1.0, 31.0)
        layer.weight.copy_((u[:5, None] * u[None, :6]).reshape(5, 6, 1, 1)
                           * torch.tensor([[1.0, 2, 3], [2, 4, 6], [3, 6, 9]]))
    dec = method.decompose(layer, (min(20, method.max_rank(layer)[0] - 1),))
    assert math.isfinite(dec.rel_error) and dec.rel_error < 1e-3
    assert all(torch.isfinite(p).all() for p in dec.module.parameters())
    with torch.no_grad():
        layer.weight.zero_()
    dec = method.decompose(layer, (3,))
    assert dec.rel_error == 0.0 and all(torch.isfinite(p).all() for p in dec.module.parameters())


def test_als_failure_falls_back_and_says_so(monkeypatch) -> None:
    x = _planted((8, 7, 3, 3), 3, 0.01, 5)
    real = _cp_als._als_attempt
    calls = []

    def flaky(*args, **kwargs):
        calls.append(kwargs["ridge"])
        if len(calls) == 1:
            raise FloatingPointError("ALS produced non-finite values")
        return real(*args, **kwargs)

    monkeypatch.setattr(_cp_als, "_als_attempt", flaky)
    res = cp_als(x, 3)
    assert calls[1] > calls[0]  # retried with a larger ridge
    assert any("attempt 1" in n for n in res.notes) and any("ridge" in n for n in res.notes)
    assert res.rel_error < 0.05

    def broken(*args, **kwargs):
        raise FloatingPointError("ALS produced non-finite values")

    monkeypatch.setattr(_cp_als, "_als_attempt", broken)
    res = cp_als(x, 3)
    assert math.isfinite(res.rel_error) and res.rel_error < 1
    assert any("exact construction" in n for n in res.notes)
    assert all(torch.isfinite(f).all() for f in res.factors)


def test_non_convergence_is_noted() -> None:
    layer = _layer(8, 6, (3, 3), dict())
    dec = CP4.decompose(layer, (6,), n_iter_max=1)
    assert any("n_iter_max" in n for n in dec.notes)


def test_dtype_training_mode_and_layer_are_kept() -> None:
    layer = _layer(8, 6, (3, 3), dict()).double().train(False)
    before = layer.weight.detach().clone()
    dec = CP3.decompose(layer, (4,), **FAST)
    assert all(p.dtype == torch.float64 for p in dec.module.parameters())
    assert not dec.module.training
    assert torch.equal(layer.weight, before)


def test_rank_unfoldings_feed_the_evbmf_resolver() -> None:
    from latbench.compress.ranks import resolve_rank

    layer = nn.Conv2d(24, 32, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_planted((32, 24, 3, 3), 4, 0.001, 9))
    (entry,) = CP4.rank_unfoldings(layer)
    assert [tuple(m.shape) for m in entry] == [(1, 32, 24 * 9), (1, 24, 32 * 9)]
    assert resolve_rank("evbmf", layer, "cp") == (4,)
