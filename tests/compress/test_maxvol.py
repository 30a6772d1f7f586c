"""MaxVol (compress._linalg.maxvol) against the definition of a dominant submatrix."""

import itertools

import numpy as np
import pytest

from latbench.compress._linalg import maxvol
from latbench.exceptions import UserInputError


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n,r", [(40, 5), (200, 16), (9, 3)])
def test_selected_rows_form_a_dominant_submatrix(seed, n, r):
    a = np.random.default_rng(seed).standard_normal((n, r))
    rows = maxvol(a, tol=1.05, max_iters=1000)
    assert rows.shape == (r,) and len(set(rows.tolist())) == r
    coeff = a @ np.linalg.inv(a[rows])
    # dominance: every row of A is a combination of the chosen rows with |coefficients| <= tol
    assert np.abs(coeff).max() <= 1.05 + 1e-9
    np.testing.assert_allclose(coeff[rows], np.eye(r), atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_no_single_row_swap_grows_the_volume_by_more_than_tol(seed):
    a = np.random.default_rng(seed).standard_normal((30, 4))
    rows = maxvol(a, tol=1.01, max_iters=1000)
    vol = abs(np.linalg.det(a[rows]))
    for j, i in itertools.product(range(4), range(30)):
        swapped = rows.copy()
        swapped[j] = i
        assert abs(np.linalg.det(a[swapped])) <= 1.01 * vol + 1e-12


def test_volume_is_close_to_the_brute_force_maximum_on_a_small_matrix():
    a = np.random.default_rng(7).standard_normal((10, 3))
    best = max(abs(np.linalg.det(a[list(c)])) for c in itertools.combinations(range(10), 3))
    got = abs(np.linalg.det(a[maxvol(a, tol=1.0, max_iters=1000)]))
    # a 1-dominant r×r submatrix has at least r^(-r/2) of the maximal volume
    assert got >= best * 3 ** (-1.5) - 1e-12


def test_square_matrix_keeps_every_row_and_bad_input_is_one_clear_error():
    assert maxvol(np.eye(3)).tolist() == [0, 1, 2]
    with pytest.raises(UserInputError, match="tall"):
        maxvol(np.ones((2, 3)))
    with pytest.raises(UserInputError, match="rank-deficient"):
        maxvol(np.ones((6, 2)))
    with pytest.raises(UserInputError, match=">= 1"):
        maxvol(np.random.default_rng(0).standard_normal((6, 2)), tol=0.5)
