"""CUR: exact full rank for both algorithms, determinism, row selection, ONNX, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latbench.compress._base import METHODS
from latbench.compress.cur import ALGORITHMS, METHOD, cur_factors, decompose_conv, decompose_linear
from latbench.compress.svd import METHOD as SVD
from latbench.exceptions import UserInputError


def _seeded(layer: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer.eval()


def test_registered_with_leverage_as_default():
    assert METHODS.get("cur") is METHOD and ALGORITHMS[0] == "leverage"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("m, n", [(7, 12), (12, 7), (9, 9)])
def test_full_rank_reproduces_layer(algorithm, m, n):
    layer = _seeded(nn.Linear(n, m))
    d = METHOD.decompose(layer, METHOD.max_rank(layer), algorithm=algorithm, seed=3)
    assert d.rel_error < 1e-6
    x = torch.randn(5, n)
    with torch.no_grad():
        np.testing.assert_allclose(d.module(x), layer(x), rtol=1e-5, atol=1e-5)


def test_param_formula_matches_svd():
    layer = _seeded(nn.Linear(10, 6))
    d = METHOD.decompose(layer, (3,))
    assert d.params_after == 3 * (10 + 6) + 6 == METHOD.n_params(layer, (3,)) == SVD.n_params(layer, (3,))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_layer_holds_actual_rows_or_columns_of_the_weight(algorithm):
    wide = _seeded(nn.Linear(10, 8))  # m <= n: the first layer holds rows
    first = METHOD.decompose(wide, (3,), algorithm=algorithm, seed=1).module[0]
    for row in first.weight.detach():
        assert torch.isclose(wide.weight.detach(), row).all(dim=1).any()
    tall = _seeded(nn.Linear(6, 9))  # m > n: the second layer holds columns
    second = METHOD.decompose(tall, (3,), algorithm=algorithm, seed=1).module[1]
    for col in second.weight.detach().T:
        assert torch.isclose(tall.weight.detach().T, col).all(dim=1).any()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_seed_same_layers_and_never_better_than_svd(algorithm):
    layer = _seeded(nn.Linear(20, 16))
    a = METHOD.decompose(layer, (4,), algorithm=algorithm, seed=7)
    b = METHOD.decompose(layer, (4,), algorithm=algorithm, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters()))
    assert a.rel_error >= SVD.decompose(layer, (4,)).rel_error - 1e-9
    rows = {tuple(cur_factors(layer.weight, 4, algorithm=algorithm, seed=s)[1].tolist()) for s in range(6)}
    assert len(rows) > 1  # the seed matters


def test_zero_columns_are_never_sampled_while_others_remain():
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    w[:, [1, 4]] = 0.0
    for algorithm in ALGORITHMS:
        cols = cur_factors(w, 5, algorithm=algorithm, seed=0)[0].tolist()
        assert 1 not in cols and 4 not in cols


def test_pointwise_conv_with_stride():
    layer = _seeded(nn.Conv2d(6, 8, 1, stride=2, padding=1))
    d = METHOD.decompose(layer, METHOD.max_rank(layer))
    assert d.rel_error < 1e-6 and d.module[0].stride == (2, 2)
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        np.testing.assert_allclose(d.module(x), layer(x), rtol=1e-5, atol=1e-5)
    assert decompose_conv(layer, 2)[0].out_channels == 2


def test_plain_function_and_refusals():
    assert decompose_linear(_seeded(nn.Linear(10, 8)), 0.5, algorithm="linear-time")[0].out_features == 4
    assert "1x1" in METHOD.supports(nn.Conv2d(4, 4, 3))
    assert "grouped" in METHOD.supports(nn.Conv2d(4, 4, 1, groups=2))
    with pytest.raises(UserInputError, match="unknown CUR algorithm 'qr'"):
        METHOD.decompose(_seeded(nn.Linear(4, 4)), (2,), algorithm="qr")
    with pytest.raises(UserInputError, match=r"weight shape \(4, 5\)"):
        METHOD.decompose(_seeded(nn.Linear(5, 4)), (5,))
    with pytest.raises(UserInputError, match="seed must be an int"):
        METHOD.decompose(_seeded(nn.Linear(5, 4)), (2,), seed="x")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_onnx_round_trip_matches_torch(algorithm, tmp_path):
    import onnxruntime as ort

    from latbench.compress.export import export_onnx

    module = METHOD.decompose(_seeded(nn.Linear(10, 7)), (3,), algorithm=algorithm).module
    art = export_onnx(module, (2, 10), tmp_path / "cur.onnx")
    x = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(x).numpy()
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
