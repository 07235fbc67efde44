"""Dust attenuation and extinction curves A(λ)/A_V, the dust column → A_V conversion and the
Charlot & Fall (2000) birth-cloud attenuation, in JAX (differentiable in λ and R_V).

Wavelengths are in Å (any medium: the curves are smooth on the 0.03 % air-vacuum scale).
Out-of-range wavelengths raise a `ValueError` when the values are concrete (eager); under
`jit` they are not checked and the formula is evaluated as written (extrapolated).
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import concrete


CURVES = ("ccm89", "calzetti00", "f99")
# Valid ranges in x = 1/λ [µm⁻¹] (the papers'; also those of the dust-extinction package).
X_RANGE = {"ccm89": (0.3, 10.0), "calzetti00": (1 / 2.2, 1 / 0.12), "f99": (0.3, 10.0)}
R_V_RANGE = {"ccm89": (2.0, 6.0), "calzetti00": (2.0, 6.0), "f99": (2.0, 6.0)}


def _check(name: str, x, r_v) -> None:
    lo, hi = X_RANGE[name]
    xs = concrete(x)
    if xs is not None and xs.size and (xs.min() < lo * (1 - 1e-12) or xs.max() > hi * (1 + 1e-12)):
        bad = xs[(xs < lo) | (xs > hi)][0]
        raise ValueError(
            f"`{name}`: wavelength {1e4 / bad:.6g} Å is outside the curve's range "
            f"{1e4 / hi:.6g}–{1e4 / lo:.6g} Å."
        )
    rs = concrete(r_v)
    rlo, rhi = R_V_RANGE[name]
    if rs is not None and rs.size and (rs.min() < rlo or rs.max() > rhi):
        raise ValueError(f"`{name}(r_v=...)` must lie in [{rlo}, {rhi}]; got {rs.ravel()[0]}.")


def _poly(coefficients, y):
    return sum(c * y**n for n, c in enumerate(coefficients))


def ccm89(
    wavelength: Float[ArrayLike, "*n"], r_v: Float[ArrayLike, ""] = 3.1
) -> Float[Array, "*n"]:
    """A(λ)/A_V of Cardelli, Clayton & Mathis (1989, ApJ 345, 245), eqs. 2–5: a(x) + b(x)/R_V,
    x = 1/λ [µm⁻¹] in 0.3–10 µm⁻¹ (1000 Å–3.33 µm). Milky-Way extinction, 2 ≤ R_V ≤ 6."""
    x = 1e4 / jnp.asarray(wavelength)
    _check("ccm89", x, r_v)
    # infrared, 0.3 ≤ x < 1.1
    a_ir, b_ir = 0.574 * x**1.61, -0.527 * x**1.61
    # optical / NIR, 1.1 ≤ x < 3.3
    y = x - 1.82
    a_op = _poly((1.0, 0.17699, -0.50447, -0.02427, 0.72085, 0.01979, -0.77530, 0.32999), y)
    b_op = _poly((0.0, 1.41338, 2.28305, 1.07233, -5.38434, -0.62251, 5.30260, -2.09002), y)
    # ultraviolet, 3.3 ≤ x < 8
    d = jnp.maximum(x - 5.9, 0.0)
    a_uv = 1.752 - 0.316 * x - 0.104 / ((x - 4.67) ** 2 + 0.341) - 0.04473 * d**2 - 0.009779 * d**3
    b_uv = -3.090 + 1.825 * x + 1.206 / ((x - 4.62) ** 2 + 0.263) + 0.2130 * d**2 + 0.1207 * d**3
    # far ultraviolet, 8 ≤ x ≤ 10
    f = x - 8.0
    a_fuv = _poly((-1.073, -0.628, 0.137, -0.070), f)
    b_fuv = _poly((13.670, 4.257, -0.420, 0.374), f)
    a = jnp.where(x < 1.1, a_ir, jnp.where(x < 3.3, a_op, jnp.where(x < 8.0, a_uv, a_fuv)))
    b = jnp.where(x < 1.1, b_ir, jnp.where(x < 3.3, b_op, jnp.where(x < 8.0, b_uv, b_fuv)))
    return a + b / r_v


def calzetti00(
    wavelength: Float[ArrayLike, "*n"], r_v: Float[ArrayLike, ""] = 4.05
) -> Float[Array, "*n"]:
    """A(λ)/A_V = k(λ)/R_V of the starburst attenuation curve of Calzetti et al. (2000, ApJ
    533, 682), eq. 4, for 0.12–2.2 µm; R_V = 4.05 ± 0.80 in the paper."""
    x = 1e4 / jnp.asarray(wavelength)
    _check("calzetti00", x, r_v)
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + r_v
    red = 2.659 * (-1.857 + 1.040 * x) + r_v
    return jnp.where(x > 1 / 0.63, blue, red) / r_v


def _natural_cubic_spline(knots_x, knots_y, x):
    """The natural cubic spline through (knots_x, knots_y) at x (second derivative zero at
    the ends): second derivatives from the tridiagonal system, solved densely (few knots)."""
    h = jnp.diff(knots_x)
    n = knots_x.shape[0]
    slope = jnp.diff(knots_y) / h
    rhs = 6 * (slope[1:] - slope[:-1])
    inner = jnp.diag(2 * (h[:-1] + h[1:])) + jnp.diag(h[1:-1], 1) + jnp.diag(h[1:-1], -1)
    m = jnp.concatenate(
        [jnp.zeros(1, h.dtype), jnp.linalg.solve(inner, rhs), jnp.zeros(1, h.dtype)]
    )
    i = jnp.clip(jnp.searchsorted(knots_x, x, side="right") - 1, 0, n - 2)
    x0, x1, hi = knots_x[i], knots_x[i + 1], h[i]
    t0, t1 = x1 - x, x - x0
    return (
        m[i] * t0**3 / (6 * hi)
        + m[i + 1] * t1**3 / (6 * hi)
        + (knots_y[i] / hi - m[i] * hi / 6) * t0
        + (knots_y[i + 1] / hi - m[i + 1] * hi / 6) * t1
    )


def _fm90(x, c1, c2, c3, c4, x0, gamma):
    """E(λ−V)/E(B−V) of Fitzpatrick & Massa (1990)."""
    drude = x**2 / ((x**2 - x0**2) ** 2 + (x * gamma) ** 2)
    d = jnp.maximum(x - 5.9, 0.0)
    return c1 + c2 * x + c3 * drude + c4 * (0.5392 * d**2 + 0.05644 * d**3)


def f99(wavelength: Float[ArrayLike, "*n"], r_v: Float[ArrayLike, ""] = 3.1) -> Float[Array, "*n"]:
    """A(λ)/A_V of Fitzpatrick (1999, PASP 111, 63), the R_V-dependent Milky-Way curve:
    UV (λ ≤ 2700 Å) the FM90 form with c2 = −0.824 + 4.717/R_V, c1 = 2.030 − 3.007 c2,
    x0 = 4.596, γ = 0.99, c3 = 3.23, c4 = 0.41 (his Table 3 / §3); optical–IR a natural cubic
    spline through A(λ)/E(B−V) at x = 0 and at 26500, 12200, 6000, 5470, 4670, 4110 Å (his
    Table 4) and the FM90 values at 2700 and 2600 Å. 0.3–10 µm⁻¹."""
    x = 1e4 / jnp.asarray(wavelength)
    _check("f99", x, r_v)
    r_v = jnp.asarray(r_v, x.dtype)
    c2 = -0.824 + 4.717 / r_v
    c1 = 2.030 - 3.007 * c2
    uv = _fm90(x, c1, c2, 3.23, 0.41, 4.596, 0.99) / r_v + 1.0
    anchors_uv_x = 1e4 / jnp.asarray([2700.0, 2600.0], x.dtype)
    anchors_uv_y = _fm90(anchors_uv_x, c1, c2, 3.23, 0.41, 4.596, 0.99) / r_v + 1.0
    opt_x = 1e4 / jnp.asarray([26500.0, 12200.0, 6000.0, 5470.0, 4670.0, 4110.0], x.dtype)
    opt_ebv = jnp.stack([
        0.265 * r_v / 3.1,
        0.829 * r_v / 3.1,
        -0.426 + 1.0044 * r_v,
        -0.050 + 1.0016 * r_v,
        0.701 + 1.0016 * r_v,
        1.208 + 1.0032 * r_v - 0.00033 * r_v**2,
    ])  # fmt: skip
    knots_x = jnp.concatenate([jnp.zeros(1, x.dtype), opt_x, anchors_uv_x])
    knots_y = jnp.concatenate([jnp.zeros(1, x.dtype), opt_ebv / r_v, anchors_uv_y])
    optical = _natural_cubic_spline(knots_x, knots_y, x)
    return jnp.where(x >= anchors_uv_x[0], uv, optical)


def attenuation_curve(name: str):
    """The curve function named `name`: `"ccm89"`, `"calzetti00"` or `"f99"`."""
    curves = {"ccm89": ccm89, "calzetti00": calzetti00, "f99": f99}
    if name not in curves:
        raise ValueError(f"Unknown attenuation curve {name!r}; known: {', '.join(CURVES)}.")
    return curves[name]


# --- dust column → A_V -----------------------------------------------------------------

# Güver & Özel (2009, MNRAS 400, 2050): N_H = (2.21 ± 0.09) × 10²¹ cm⁻² A_V in the Milky Way.
NH_PER_AV = 2.21e21
# Dust-to-metal mass ratio of the Milky Way ISM, ≈ 0.4 (Dwek 1998, ApJ 501, 643).
DUST_TO_METAL_MW = 0.4
# Present-day solar composition (Asplund et al. 2009): X = 0.7381, Z = 0.0134.
SOLAR_X, SOLAR_Z = 0.7381, 0.0134
_M_H_G = 1.6735575e-24  # mass of a hydrogen atom, g
_MSUN_G = 1.98841e33  # IAU 2015 nominal (G M☉)/G, g
_KPC_CM = 3.0856775814913673e21


def metal_column_to_av(
    metal_column: Float[ArrayLike, "*n"], dust_to_metal: Float[ArrayLike, ""] = DUST_TO_METAL_MW
) -> Float[Array, "*n"]:
    """A_V (mag) of a column of gas metals Σ_Z (M☉/kpc²) with dust-to-metal mass ratio
    `dust_to_metal`, scaled from the Milky Way: there a hydrogen column N_H gives
    A_V = N_H / 2.21e21 cm⁻² (Güver & Özel 2009) with solar metals (X = 0.7381, Z = 0.0134,
    Asplund et al. 2009) of which a fraction 0.4 is in dust (Dwek 1998). So

        A_V = Σ_Z · (X☉/Z☉) / m_H / 2.21e21 cm⁻² · (dust_to_metal / 0.4),

    1 mag per 3.2 × 10⁵ M☉ kpc⁻² of metals (≈ 24 M☉ pc⁻² of solar-metallicity gas)."""
    sigma_z = jnp.asarray(metal_column) * (_MSUN_G / _KPC_CM**2)  # g/cm²
    n_h_equivalent = sigma_z * (SOLAR_X / SOLAR_Z) / _M_H_G
    return n_h_equivalent / NH_PER_AV * (jnp.asarray(dust_to_metal) / DUST_TO_METAL_MW)


def charlot_fall_optical_depth(
    wavelength: Float[ArrayLike, " n_wave"],
    age: Float[ArrayLike, " n"],
    tau_v_ism: Float[ArrayLike, ""] = 0.3,
    tau_v_birth_cloud: Float[ArrayLike, ""] = 0.7,
    age_birth_cloud: float = 0.01,
    slope: float = -0.7,
) -> Float[Array, "n n_wave"]:
    """Effective optical depth τ_λ of Charlot & Fall (2000, ApJ 539, 718), eq. 4 and §4:
    τ_λ = (τ_V^ISM + τ_V^BC [age < `age_birth_cloud`]) (λ / 5500 Å)^`slope`, with ages in
    Gyr (10 Myr, the birth-cloud lifetime), their τ_V = 1.0 and μ = τ_V^ISM / τ_V = 0.3 as
    defaults. Transmission exp(−τ_λ). The birth-cloud switch is a step in age (zero
    derivative in age)."""
    scale = (jnp.asarray(wavelength) / 5500.0) ** slope
    young = (jnp.asarray(age) < age_birth_cloud).astype(scale.dtype)
    tau_v = jnp.asarray(tau_v_ism) + jnp.asarray(tau_v_birth_cloud) * young
    return tau_v[:, None] * scale[None, :]


def transmission(
    a_v: Float[ArrayLike, " n"], curve: Float[ArrayLike, " n_wave"]
) -> Float[Array, "n n_wave"]:
    """10^(−0.4 A_V · A(λ)/A_V): the fraction of light transmitted by a screen of `a_v`
    (mag) with the curve values `curve` (A(λ)/A_V)."""
    return 10.0 ** (-0.4 * jnp.asarray(a_v)[:, None] * jnp.asarray(curve)[None, :])
