"""EVBMF (Nakajima et al. 2013): planted-rank recovery, noise estimate, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latbench.compress.evbmf import _tau_bar, evbmf, evbmf_rank
from latbench.exceptions import UserInputError


def _planted(m: int, n: int, r: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) + sigma * rng.standard_normal((m, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m, n, r, sigma", [(60, 120, 5, 0.1), (120, 60, 7, 0.5), (64, 576, 10, 0.05),
                                            (40, 40, 3, 0.3)])
def test_recovers_planted_rank_and_noise_variance(seed, m, n, r, sigma):
    res = evbmf(_planted(m, n, r, sigma, seed))
    assert res.rank == r
    assert res.sigma2 == pytest.approx(sigma ** 2, rel=0.2)
    s = res.singular_values
    assert s[r - 1] > res.threshold > s[r]


def test_pure_noise_has_rank_zero():
    rng = np.random.default_rng(0)
    assert evbmf(rng.standard_normal((50, 80))).rank == 0


def test_tau_bar_solves_its_equation_and_matches_the_papers_approximation():
    for alpha in (0.1, 0.5, 1.0):
        t = _tau_bar(alpha)
        assert math.log1p(t) + alpha * math.log1p(t / alpha) == pytest.approx(t, abs=1e-10)
    assert _tau_bar(1.0) == pytest.approx(2.5129, abs=1e-3)


def test_known_noise_variance_sets_the_threshold():
    y = _planted(30, 50, 4, 0.2, 0)
    res = evbmf(y, sigma2=0.04)
    t = _tau_bar(30 / 50)
    assert res.threshold == pytest.approx(math.sqrt(50 * 0.04 * (1 + t) * (1 + 30 / 50 / t)))
    assert res.rank == 4
    assert evbmf(y, sigma2=1e6).rank == 0  # enormous noise drowns everything


def test_torch_input_stacks_and_zero_matrix():
    y = torch.from_numpy(_planted(20, 30, 3, 0.05, 1))
    z = torch.from_numpy(_planted(20, 30, 5, 0.05, 2))
    assert evbmf_rank(y) == 3
    assert evbmf_rank(torch.stack([y, z])) == 5  # a stack gives the largest rank
    assert evbmf(np.zeros((5, 7))).rank == 0


@pytest.mark.parametrize("bad, match", [(np.ones(5), "2-D"), (np.zeros((0, 3)), "2-D"),
                                        (np.array([[1.0, np.nan]]), "finite")])
def test_bad_inputs_are_user_errors(bad, match):
    with pytest.raises(UserInputError, match=match):
        evbmf(bad)
    with pytest.raises(UserInputError, match="> 0"):
        evbmf(np.ones((3, 3)), sigma2=0.0)
