"""The Fourier transform of a Gauss–Hermite line-of-sight velocity distribution.

The LOSVD (van der Marel & Franx 1993; Gerhard 1993; the parametrisation of pPXF,
Cappellari 2017) in a velocity-like coordinate u, with y = (u − V)/σ:

    L(u) = exp(−y²/2) / (σ √(2π)) · [1 + h3 H3(y) + h4 H4(y)],
    H3(y) = (2y³ − 3y)/√3,   H4(y) = (4y⁴ − 12y² + 3)/√24

(H_m = the physicists' Hermite polynomial of order m at y, over √(2^m m!)). With
L̂(k) = ∫ L(u) e^{−iku} du and ω = kσ, the moments of the Gaussian give
∫ y^m e^{−y²/2} e^{−iωy} dy = (i d/dω)^m √(2π) e^{−ω²/2}, and from them
e^{−y²/2} H_m(y) ↦ (−i)^m H_m(ω) √(2π) e^{−ω²/2}: the functions are eigenfunctions of
the transform. Hence

    L̂(k) = e^{−ikV − ω²/2} [1 + i h3 H3(ω) + h4 H4(ω)],   ω = kσ,

exact, with no sampling of L (derived here; it is eq. 38 of Cappellari 2017 up to the
sign convention of the transform).

L integrates to L̂(0) = 1 + h4 H4(0) = 1 + h4 √6/4, not 1; we divide by it, so that the
fitted amplitude (mass) is that of the population whatever h4 (pPXF leaves it in its
weights). The fitted h3, h4 are the same either way.
"""

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float


H4_AT_ZERO = 3.0 / math.sqrt(24.0)  # H4(0) = √6/4: ∫L du = 1 + h4 H4(0)


def hermite3(y):
    """H3(y) = (2y³ − 3y)/√3 (van der Marel & Franx 1993)."""
    return (2.0 * y**3 - 3.0 * y) / math.sqrt(3.0)


def hermite4(y):
    """H4(y) = (4y⁴ − 12y² + 3)/√24 (van der Marel & Franx 1993)."""
    return (4.0 * y**4 - 12.0 * y**2 + 3.0) / math.sqrt(24.0)


def gauss_hermite_ft(
    omega: Float[ArrayLike, " n_freq"],
    shift: Float[ArrayLike, ""],
    sigma: Float[ArrayLike, ""],
    h3: Float[ArrayLike, ""] | None = None,
    h4: Float[ArrayLike, ""] | None = None,
) -> Complex[Array, " n_freq"]:
    """L̂(ω) = ∫ L(u) e^{−iωu} du of the (unit-integral) Gauss–Hermite LOSVD.

    **Arguments:** `omega` (angular frequency, radians per unit of u: 2π × cycles per
    lattice pixel when u is in pixels), `shift` = V and `sigma` = σ in the units of u,
    `h3`, `h4` (dimensionless; `None` = 0: the Gaussian, with no polynomial factor, as
    `moments=2`).
    """
    omega = jnp.asarray(omega)
    w = omega * sigma
    gauss = jnp.exp(-1j * omega * shift - 0.5 * w**2)
    if h3 is None and h4 is None:
        return gauss
    h3 = 0.0 if h3 is None else h3
    h4 = 0.0 if h4 is None else h4
    poly = (1.0 + h4 * hermite4(w) + 1j * h3 * hermite3(w)) / (1.0 + h4 * H4_AT_ZERO)
    return gauss * poly


def gauss_hermite(u: Float[ArrayLike, " n"], velocity, sigma, h3=0.0, h4=0.0) -> Float[Array, " n"]:
    """L(u) itself (unit integral), for plots and checks; u, V, σ in one unit."""
    y = (jnp.asarray(u) - velocity) / sigma
    gauss = jnp.exp(-0.5 * y**2) / (sigma * math.sqrt(2 * math.pi))
    return gauss * (1.0 + h3 * hermite3(y) + h4 * hermite4(y)) / (1.0 + h4 * H4_AT_ZERO)
