"""The one rank resolver: every spelling, ratio search, EVBMF ranks, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latbench.compress.cur import METHOD as CUR
from latbench.compress.ranks import RankSpec, parse_rank_spec, resolve_rank, weaken_rank
from latbench.compress.svd import METHOD as SVD
from latbench.compress.tucker import METHOD as TUCKER2
from latbench.exceptions import UserInputError


def _conv(cin: int = 8, cout: int = 12, k: int = 3, **kw) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, **kw)


@pytest.mark.parametrize("text, spec", [
    ("16", RankSpec("absolute", (16,))),
    (" 16, 32 ", RankSpec("absolute", (16, 32))),
    ("(4,5)", RankSpec("absolute", (4, 5))),
    ("0.5", RankSpec("fraction", 0.5)),
    ("1.0", RankSpec("fraction", 1.0)),
    ("1", RankSpec("absolute", (1,))),
    ("ratio=3", RankSpec("ratio", 3.0)),
    ("RATIO=2.5", RankSpec("ratio", 2.5)),
    ("evbmf", RankSpec("evbmf", 1.0)),
    ("evbmf:0.6", RankSpec("evbmf", 0.6)),
])
def test_parse_rank_spec(text, spec):
    assert parse_rank_spec(text) == spec
    assert parse_rank_spec(str(spec)) == spec  # str() round-trips


@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("abc", "bad rank"), ("0", "at least 1"), ("-3", "at least 1"),
    ("1.5", r"\(0, 1\]"), ("0.0", r"\(0, 1\]"), ("ratio=1", "must be > 1"), ("ratio=0.5", "must be > 1"),
    ("ratio=x", "ratio=3"), ("evbmf:1.5", r"\[0, 1\]"), ("evbmf:x", "evbmf:W"), ("4,a", "ints separated"),
    ("4,0", "at least 1"),
])
def test_parse_errors_are_user_errors(text, match):
    with pytest.raises(UserInputError, match=match):
        parse_rank_spec(text)


def test_int_applies_to_every_dimension_and_tuples_are_taken_as_given():
    conv = _conv()
    assert resolve_rank(3, conv, TUCKER2) == (3, 3)
    assert resolve_rank((2, 5), conv, TUCKER2) == (2, 5)
    assert resolve_rank("2,5", conv, "tucker2") == (2, 5)  # method by name
    assert resolve_rank(4, conv, SVD) == (4,)


def test_fraction_is_ceil_of_base_clipped_never_below_one():
    conv = _conv(8, 12)
    assert resolve_rank(0.5, conv, TUCKER2) == (4, 6)
    assert resolve_rank(0.3, conv, TUCKER2) == (3, 4)  # ceil(2.4), ceil(3.6)
    assert resolve_rank(0.01, conv, TUCKER2) == (1, 1)
    assert resolve_rank(1.0, conv, TUCKER2) == TUCKER2.max_rank(conv)
    assert resolve_rank(RankSpec("fraction", 0.25), nn.Linear(10, 6), SVD) == (2,)


@pytest.mark.parametrize("method, layer", [
    (TUCKER2, _conv(16, 24)), (SVD, _conv(16, 24)), (SVD, nn.Linear(40, 30)),
    (TUCKER2, _conv(12, 18, groups=3)), (CUR, nn.Linear(40, 30)),
])
@pytest.mark.parametrize("x", [1.5, 3.0, 7.0])
def test_ratio_gives_the_largest_uniform_fraction_within_budget(method, layer, x):
    before = sum(p.numel() for p in layer.parameters())
    rank = resolve_rank(f"ratio={x}", layer, method)
    assert method.n_params(layer, rank) <= before / x
    # the next uniform fraction up already breaks the budget
    base, top = method.fraction_base(layer), method.max_rank(layer)
    f = max(r / b for r, b in zip(rank, base))
    nxt = min(j / b for b in base for j in range(1, b + 1) if j / b > f + 1e-12)
    bigger = tuple(min(t, max(1, math.ceil(nxt * b - 1e-9))) for b, t in zip(base, top))
    assert method.n_params(layer, bigger) > before / x


def test_unreachable_ratio_reports_the_best_reachable():
    layer = nn.Linear(3, 3)  # 12 parameters, rank 1 keeps 9
    with pytest.raises(UserInputError, match=r"best ratio 1\.33"):
        resolve_rank("ratio=2", layer, SVD)


@pytest.mark.parametrize("spec, match", [
    (0, "at least 1"), (-2, "at least 1"), (1.5, r"\(0, 1\]"), (True, "bad rank"), (None, "bad rank"),
    ((2, 2, 2), "takes 2 rank"), ("ratio=0.9", "> 1"), ([1.5, 2], "must be an int"),
])
def test_bad_specs_are_user_errors(spec, match):
    with pytest.raises(UserInputError, match=match):
        resolve_rank(spec, _conv(), TUCKER2)


def test_too_large_rank_names_layer_shape_and_allowed_range():
    with pytest.raises(UserInputError, match=r"\(12, 8, 3, 3\).*allowed 1\.\.8 and 1\.\.12"):
        resolve_rank((9, 4), _conv(8, 12), TUCKER2)
    with pytest.raises(UserInputError, match=r"weight shape \(6, 10\).*allowed 1\.\.6"):
        resolve_rank(7, nn.Linear(10, 6), SVD)


def test_unsupported_layer_is_a_user_error():
    with pytest.raises(UserInputError, match="depthwise"):
        resolve_rank(0.5, nn.Conv2d(4, 4, 3, groups=4), TUCKER2)


def test_weaken_rank_is_musco_formula_and_never_empty():
    assert weaken_rank(64, 10, 1.0) == 10
    assert weaken_rank(64, 10, 0.0) == 64
    assert weaken_rank(64, 10, 0.6) == math.ceil(64 - 0.6 * 54)
    assert weaken_rank(10, 5, 0.6) == 7  # 7.000000000000001 is not rounded up
    assert weaken_rank(16, 0, 1.0) == 1
    with pytest.raises(UserInputError):
        weaken_rank(16, 4, 1.5)


def _planted_conv(r_in: int, r_out: int, cin: int = 32, cout: int = 48, noise: float = 0.01) -> nn.Conv2d:
    g = torch.Generator().manual_seed(0)
    core = torch.randn(r_out, r_in, 3, 3, generator=g)
    u_out = torch.linalg.qr(torch.randn(cout, r_out, generator=g))[0]
    u_in = torch.linalg.qr(torch.randn(cin, r_in, generator=g))[0]
    w = torch.einsum("or,rakl,ia->oikl", u_out, core, u_in)
    conv = nn.Conv2d(cin, cout, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w + noise * torch.randn(w.shape, generator=g))
    return conv


def test_evbmf_recovers_planted_tucker2_ranks_in_method_order():
    conv = _planted_conv(r_in=5, r_out=7)
    assert resolve_rank("evbmf", conv, TUCKER2) == (5, 7)
    # weakening 0.5 keeps half of what EVBMF removes, of each unfolding's full rank
    assert resolve_rank("evbmf:0.5", conv, TUCKER2) == (math.ceil(32 - 0.5 * 27), math.ceil(48 - 0.5 * 41))
    assert resolve_rank("evbmf:0", conv, TUCKER2) == (32, 48)


def test_evbmf_for_svd_uses_the_factorised_matrix():
    conv = _planted_conv(r_in=5, r_out=7)  # the Cout × (Cin k k) matrix has rank 7
    assert resolve_rank("evbmf", conv, SVD) == (7,)
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(40, 30, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(30, 4, generator=g) @ torch.randn(4, 40, generator=g)
                         + 0.01 * torch.randn(30, 40, generator=g))
    assert resolve_rank("evbmf", lin, SVD) == (4,) == resolve_rank("evbmf", lin, CUR)


def test_evbmf_on_pure_noise_still_gives_rank_one():
    torch.manual_seed(0)
    assert resolve_rank("evbmf", nn.Linear(40, 30), SVD) == (1,)


def test_method_without_unfoldings_rejects_evbmf():
    class Plain:
        name = "plain"

        def supports(self, layer):
            return None

        def max_rank(self, layer):
            return (4,)

        def fraction_base(self, layer):
            return (4,)

        def n_params(self, layer, rank):
            return rank[0]

    with pytest.raises(UserInputError, match="plain does not support EVBMF"):
        resolve_rank("evbmf", nn.Linear(4, 4), Plain())
    assert resolve_rank(0.5, nn.Linear(4, 4), Plain()) == (2,)
