"""Global analytic empirical variational Bayesian matrix factorisation (EVBMF).

Nakajima, Sugiyama, Babacan & Tomioka (2013), "Global analytic solution of fully-observed
variational Bayesian matrix factorization", JMLR 14. For an ``L × M`` matrix ``Y``
(``L <= M``; transpose otherwise) observed as low rank plus i.i.d. Gaussian noise of
variance ``σ²``, the EVB estimator keeps exactly the singular components with

    γ_h > γ_EVB = σ √(M x̲),   x̲ = (1 + τ̲)(1 + α / τ̲),   α = L / M,

where ``τ̲`` is the positive root of ``log(τ + 1) + α log(τ/α + 1) = τ`` (≈ 2.5129 √α;
we solve it exactly). When ``σ²`` is unknown it is the minimiser of the negative log
marginal likelihood, which in terms of ``x_h = γ_h² / (M σ²)`` is, up to constants,

    Ω(σ²) = Σ_h x_h + L log σ² + Σ_{h: x_h > x̲} [log(τ_h + 1) + α log(τ_h/α + 1) − τ_h],
    τ_h = ½ (x_h − 1 − α + √((x_h − 1 − α)² − 4α)),

restricted to ``[σ̲², σ̄²]`` with ``σ̄² = ‖Y‖²_F / (L M)`` and
``σ̲² = max(γ_{H̄+1}² / (M x̲), mean_{h > H̄} γ_h² / M)``, ``H̄ = ⌈L / (1 + α)⌉ − 1``
(the EVB rank never exceeds ``H̄``). ``Ω`` is not convex, so it is minimised on a
log-spaced grid and refined with a bounded scalar search around the best grid point.

The rank is what :mod:`latbench.compress.ranks` uses for ``evbmf`` rank specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from latbench.exceptions import UserInputError

__all__ = ["EVBMFResult", "evbmf", "evbmf_rank"]

_GRID = 256


@dataclass(frozen=True)
class EVBMFResult:
    """Outcome of :func:`evbmf`.

    Attributes
    ----------
    rank : int
        Number of singular components EVB keeps (may be 0: "all noise").
    sigma2 : float
        Noise variance, estimated or as given (units of the matrix entries, squared).
    threshold : float
        ``γ_EVB``: singular values above it are kept.
    singular_values : numpy.ndarray
        All singular values of the matrix, descending.
    """

    rank: int
    sigma2: float
    threshold: float
    singular_values: np.ndarray


def _tau_bar(alpha: float) -> float:
    """Positive root of ``log(τ+1) + α log(τ/α+1) − τ`` (positive below it, negative above)."""
    from scipy.optimize import brentq

    def f(t: float) -> float:
        return math.log1p(t) + alpha * math.log1p(t / alpha) - t

    hi = 4.0 * math.sqrt(alpha) + 4.0
    while f(hi) > 0:
        hi *= 2.0
    return float(brentq(f, 1e-9 * math.sqrt(alpha), hi, xtol=1e-14, rtol=1e-14))


def _objective(sigma2: float, s2: np.ndarray, L: int, M: int, alpha: float, x_bar: float) -> float:
    x = s2 / (M * sigma2)
    obj = float(x.sum()) + L * math.log(sigma2)
    big = x[x > x_bar]
    if big.size:
        d = big - 1.0 - alpha
        tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4.0 * alpha, 0.0)))
        obj += float(np.sum(np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau))
    return obj


def evbmf(matrix: torch.Tensor | np.ndarray, sigma2: float | None = None) -> EVBMFResult:
    """Run EVBMF on ``matrix`` and return the estimated rank and noise variance.

    Parameters
    ----------
    matrix : Tensor or ndarray, shape (m, n)
        The observed matrix (computed in float64).
    sigma2 : float, optional
        Known noise variance; estimated from the data when omitted.

    Returns
    -------
    EVBMFResult

    Raises
    ------
    UserInputError
        If ``matrix`` is not 2-D, is empty, or has non-finite entries, or ``sigma2 <= 0``.
    """
    if isinstance(matrix, torch.Tensor):
        y = matrix.detach().to("cpu", torch.float64).numpy()
    else:
        y = np.asarray(matrix, dtype=np.float64)
    if y.ndim != 2 or y.size == 0:
        raise UserInputError(f"EVBMF needs a non-empty 2-D matrix, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise UserInputError("EVBMF needs a finite matrix; this one has NaN or inf entries")
    if sigma2 is not None and not sigma2 > 0:
        raise UserInputError(f"EVBMF noise variance must be > 0, got {sigma2}")
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    # Singular values from the L×L Gram: only their squares enter the estimator.
    s2 = np.clip(np.linalg.eigvalsh(y @ y.T)[::-1], 0.0, None)
    s = np.sqrt(s2)
    alpha = L / M
    tau_bar = _tau_bar(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)
    total = float(s2.sum())
    if total == 0.0:
        return EVBMFResult(0, 0.0 if sigma2 is None else float(sigma2), 0.0, s)

    if sigma2 is None:
        h_bar = min(math.ceil(L / (1.0 + alpha)) - 1, L - 1)
        upper = total / (L * M)
        lower = max(s2[h_bar] / (M * x_bar), float(s2[h_bar:].mean()) / M)
        lower = min(max(lower, upper * 1e-12), upper)  # guard against σ̲² = 0 and σ̲² > σ̄²
        if lower >= upper:
            sigma2 = upper
        else:
            sigma2 = _minimise(s2, L, M, alpha, x_bar, lower, upper)
    threshold = math.sqrt(M * sigma2 * x_bar)
    rank = int(np.sum(s > threshold))
    return EVBMFResult(rank, float(sigma2), threshold, s)


def _minimise(s2: np.ndarray, L: int, M: int, alpha: float, x_bar: float,
              lower: float, upper: float) -> float:
    from scipy.optimize import minimize_scalar

    grid = np.geomspace(lower, upper, _GRID)
    values = np.array([_objective(g, s2, L, M, alpha, x_bar) for g in grid])
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, _GRID - 1)]
    best, best_val = float(grid[i]), float(values[i])
    if hi > lo:
        res = minimize_scalar(_objective, bounds=(lo, hi), method="bounded",
                              args=(s2, L, M, alpha, x_bar), options={"xatol": lo * 1e-10})
        if res.success and float(res.fun) <= best_val:
            best = float(res.x)
    return best


def evbmf_rank(matrix: torch.Tensor | np.ndarray) -> int:
    """EVBMF rank of ``matrix``; a 3-D input is a stack of matrices and gives the max rank.

    Raises
    ------
    UserInputError
        If the input is not 2-D or 3-D, or is empty or non-finite.
    """
    if matrix.ndim == 3:
        return max((evbmf(m).rank for m in matrix), default=0)
    return evbmf(matrix).rank
