"""Shared linear algebra: the eigendecomposition cache used across ranks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latbench.compress import _linalg
from latbench.compress.svd import METHOD as SVD
from latbench.compress.tucker import METHOD as TUCKER


def _count_eigh(monkeypatch) -> list[int]:
    calls = [0]
    real = torch.linalg.eigh

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(torch.linalg, "eigh", counting)
    return calls


def test_reuse_subspaces_gives_identical_factors_with_one_eigh_per_matrix(monkeypatch):
    torch.manual_seed(0)
    lin, conv = nn.Linear(40, 24), nn.Conv2d(12, 16, 3)
    fresh = [SVD.decompose(lin, r).module for r in (3, 8)] + \
        [TUCKER.decompose(conv, (r, r)).module for r in (2, 5)]
    calls = _count_eigh(monkeypatch)
    with _linalg.reuse_subspaces():
        with _linalg.reuse_subspaces():  # nesting keeps the outer cache
            cached = [SVD.decompose(lin, r).module for r in (3, 8)]
        cached += [TUCKER.decompose(conv, (r, r)).module for r in (2, 5)]
    assert calls[0] == 1 + 2  # the linear's Gram once; the conv's two unfoldings once each
    for a, b in zip(fresh, cached):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    assert _linalg._CACHE is None  # the cache ends with the block


def test_different_weights_do_not_share_a_cache_entry(monkeypatch):
    a, b = nn.Linear(30, 20), nn.Linear(30, 20)
    with torch.no_grad():
        b.weight.copy_(a.weight)
        b.weight[3, 7] += 1e-3
    calls = _count_eigh(monkeypatch)
    with _linalg.reuse_subspaces():
        ea = SVD.decompose(a, 5).rel_error
        eb = SVD.decompose(b, 5).rel_error
    assert calls[0] == 2 and ea != eb


def test_cached_factors_of_tall_and_grouped_matrices_match_fresh_ones():
    torch.manual_seed(1)
    tall, grouped = nn.Linear(20, 50), nn.Conv2d(8, 12, 3, groups=2)
    ranks = (2, 7, 13)
    fresh = [SVD.decompose(tall, r) for r in ranks] + [SVD.decompose(grouped, r) for r in (1, 3)]
    with _linalg.reuse_subspaces():
        cached = [SVD.decompose(tall, r) for r in ranks] + [SVD.decompose(grouped, r) for r in (1, 3)]
    for a, b in zip(fresh, cached):
        assert a.rel_error == pytest.approx(b.rel_error, rel=1e-9, abs=1e-12)
        for pa, pb in zip(a.module.parameters(), b.module.parameters()):
            assert pa.shape == pb.shape
            assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6)


def test_content_key_is_the_content_not_the_storage():
    torch.manual_seed(0)
    w = torch.randn(6, 5)
    assert _linalg.content_key(w) == _linalg.content_key(w.clone())
    assert _linalg.content_key(w) == _linalg.content_key(w.t().contiguous().t())  # strides
    assert _linalg.content_key(w) != _linalg.content_key(w.reshape(5, 6))  # shape
    assert _linalg.content_key(w) != _linalg.content_key(w.double())  # dtype
    assert _linalg.content_key(w.bfloat16()) == _linalg.content_key(w.bfloat16())
    v = w.clone()
    v[0, 0] += 1e-6
    assert _linalg.content_key(v) != _linalg.content_key(w)


def test_an_in_place_edit_inside_the_block_is_seen():
    torch.manual_seed(0)
    lin = nn.Linear(30, 20)
    with _linalg.reuse_subspaces():
        before = SVD.decompose(lin, 4).rel_error
        with torch.no_grad():
            lin.weight.mul_(torch.linspace(0.1, 3.0, 30))  # same storage, new version
        after = SVD.decompose(lin, 4).rel_error
    assert after == pytest.approx(SVD.decompose(lin, 4).rel_error, rel=1e-9)
    assert after != pytest.approx(before, rel=1e-3)


def test_the_cache_holds_no_tensor_it_was_given():
    import gc
    import weakref

    torch.manual_seed(0)
    with _linalg.reuse_subspaces():
        lin = nn.Linear(64, 48)
        SVD.decompose(lin, 4)
        TUCKER.decompose(nn.Conv2d(8, 8, 3), (2, 2))
        weight = weakref.ref(lin.weight)
        del lin
        gc.collect()
        assert weight() is None  # nothing in the cache kept the layer's weight alive
        cache = _linalg._CACHE
        held = cache.nbytes()
        # what is held is the decompositions: eigenvectors and projections, float64
        assert 0 < held <= 8 * (48 * 48 + 48 * 64) + 8 * (2 * 8 * 8 + 8 * 8)
        assert all(entry[0].expired() for entry in cache.keys.values())
