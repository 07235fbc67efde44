"""A low-rank expansion of dust transmission, so that the histogram engine can carry dust.

The transmission of a particle behind A_V = τ mag at a lattice bin whose curve value is
C = A(λ)/A_V is t = exp(−κ τ C), κ = 0.4 ln 10. It depends on τ and λ only through
the product τ·C(λ), the attenuation A_λ in mag. With the static bound A_λ ≤ `a_max`
(every particle, every lattice bin) and C_hi = max_λ C(λ), the variables

    u = τ · C_hi / a_max ∈ [0, 1],    v = C(λ) / C_hi ∈ [0, 1]

give t = g(u, v) = exp(−κ a_max u v) on the unit square, whatever the curve. We sample
g on K × K Chebyshev points, take its SVD, keep R terms and interpolate each singular
vector by a Chebyshev series of degree K − 1:

    t ≈ Σ_r c_r(u) φ_r(v),   c_r(u) = Σ_k a[k, r] T_k(2u − 1),   φ_r(v) = Σ_k b[k, r] T_k(2v − 1)

(the φ_r are orthonormal at the Chebyshev points in v). R (and K) are the smallest whose
maximum error |t̃ − t|, measured on a 1001 × 1001 grid of the square, is ≤ `rtol`. The
table depends only on (`rtol`, `a_max`), so it is built once, in NumPy, at trace time.

Why this form: the coefficients c_r are polynomials in u, so per particle they cost
K·R flops (no projection over the n_work bins) with exact derivatives in τ; the φ_r are
polynomials in C(λ), so the cube stays differentiable in the curve's parameters (R_V,
the birth-cloud slope, the redshift that places the curve on the lattice) without
differentiating an SVD; and the bound is uniform in (τ, λ), for any curve with
0 ≤ C(λ) and any A_V ≤ a_max / C_hi.
"""

import functools as ft
import math

import jax.numpy as jnp
import numpy as np
from numpy.polynomial import chebyshev


KAPPA = 0.4 * math.log(10.0)
_DEGREES = (12, 16, 24, 32, 48, 64)
_CHECK_POINTS = 1001


def _chebyshev_points(k: int) -> np.ndarray:
    """k Chebyshev points of the first kind on [0, 1]."""
    return 0.5 * (1.0 + np.cos(np.pi * (np.arange(k) + 0.5) / k))


@ft.lru_cache(maxsize=32)
def dust_basis(rtol: float, a_max: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The Chebyshev coefficients `a` (K, R) of c_r(u), `b` (K, R) of φ_r(v), and the
    largest error |Σ_r c_r φ_r − exp(−κ a_max u v)| on the check grid (≤ `rtol`).

    **Arguments:**

    - `rtol`: largest absolute error of the transmission (which is ≤ 1), so the cube's
      error is ≤ `rtol` × the unattenuated cube, bin by bin.
    - `a_max`: mag, the largest A_λ = A_V · A(λ)/A_V the table covers.
    """
    if not (np.isfinite(rtol) and 0 < rtol < 1):
        raise ValueError(f"`dust_rtol` must lie in (0, 1); got {rtol}.")
    if not (np.isfinite(a_max) and 0 < a_max <= 60):
        raise ValueError(f"`dust_max_attenuation` must lie in (0, 60] mag; got {a_max}.")
    grid = np.linspace(0.0, 1.0, _CHECK_POINTS)
    exact = np.exp(-KAPPA * a_max * np.outer(grid, grid))
    for k in _DEGREES:
        nodes = _chebyshev_points(k)
        u, s, vt = np.linalg.svd(np.exp(-KAPPA * a_max * np.outer(nodes, nodes)))
        a_all = chebyshev.chebfit(2 * nodes - 1, u * s, k - 1)  # (K, K)
        b_all = chebyshev.chebfit(2 * nodes - 1, vt.T, k - 1)
        c_grid = chebyshev.chebval(2 * grid - 1, a_all)  # (K, n_check): c_r(u)
        phi_grid = chebyshev.chebval(2 * grid - 1, b_all)
        approx = np.zeros_like(exact)
        for r in range(k):
            approx += np.outer(c_grid[r], phi_grid[r])
            error = float(np.max(np.abs(approx - exact)))
            if error <= rtol:
                return a_all[:, : r + 1].copy(), b_all[:, : r + 1].copy(), error
    raise ValueError(
        f"No dust basis of degree ≤ {_DEGREES[-1]} reaches `dust_rtol={rtol}` at "
        f"`dust_max_attenuation={a_max}` mag: loosen either, or use engine='direct'."
    )


def dust_rank(rtol: float, a_max: float) -> int:
    """R, the number of terms (histograms) the expansion needs."""
    return dust_basis(rtol, a_max)[0].shape[1]


def chebyshev_series(x, coefficients):
    """Σ_k coefficients[k, r] T_k(2x − 1) at x (n,) → (n, R), by the three-term
    recurrence (stable; differentiable in x)."""
    coefficients = jnp.asarray(coefficients, x.dtype)
    y = 2 * x - 1
    previous, current = jnp.ones_like(y), y
    total = previous[:, None] * coefficients[0][None, :]
    if coefficients.shape[0] > 1:
        total = total + current[:, None] * coefficients[1][None, :]
    for k in range(2, coefficients.shape[0]):
        previous, current = current, 2 * y * current - previous
        total = total + current[:, None] * coefficients[k][None, :]
    return total
