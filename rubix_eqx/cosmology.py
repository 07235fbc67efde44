"""Flat ΛCDM distances and times in JAX.

Every integral is a fixed-order Gauss–Legendre quadrature, so all functions are
jittable, vmappable and differentiable in redshift (and in the cosmological
parameters), and follow the floating dtype of their input.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, jaxtyped, Real

from ._checks import concrete
from ._custom_types import RealScalarLike
from ._typecheck import typechecker
from ._units import C_KM_S, C_M_S


_MPC_KM = 3.0856775814913673e19  # 1 Mpc in km
_GYR_S = 3.15576e16  # 1 Gyr in s (Julian years)
# Ω_γ h² per K⁴: ρ_γ = 4σT⁴/c³ over ρ_crit = 3H²/(8πG) at H = 100 km/s/Mpc, in SI
# with CODATA 2018 G and σ_SB (as astropy; Ω_γ h² = 2.4728e-5 at 2.7255 K).
_G_SI, _SIGMA_SB_SI = 6.67430e-11, 5.670374419e-8
_OMEGA_GAMMA_H2_PER_K4 = (
    (4 * _SIGMA_SB_SI / C_M_S**3) * 8 * math.pi * _G_SI / (3 * (100 / _MPC_KM) ** 2)
)
_NU_PER_GAMMA = 0.22710731766  # (7/8)(4/11)^(4/3): one massless ν per photon gas
_NU_MASS_EV = 93.14  # Ω_ν h² = Σm_ν / (93.14 eV) for non-relativistic neutrinos
_P_NU = 1.83  # Komatsu et al. 2011 (ApJS 192, 18) eq. 26, as astropy
_N_GL = 32
_GL_X, _GL_W = (tuple(map(float, v)) for v in np.polynomial.legendre.leggauss(_N_GL))


@jaxtyped(typechecker=typechecker)
class Cosmology(eqx.Module):
    """A spatially flat ΛCDM cosmology with photons and neutrinos.

    **Attributes:**

    - `h0`: Hubble constant today, km/s/Mpc.
    - `omega_m`: non-relativistic matter density today (baryons + cold dark matter,
        excluding massive neutrinos) over the critical density; astropy's `Om0`.
    - `t_cmb`: CMB temperature today, K (0 switches radiation off).
    - `n_eff`: effective number of neutrino species.
    - `m_nu`: sum of neutrino masses, eV, carried by one massive species; the other
        two species are massless radiation.

    Radiation is photons (Ω_γ from `t_cmb`) plus neutrinos, each species carrying
    Ω_ν1 = 0.2271 (`n_eff`/3) Ω_γ while relativistic. The massive species has
    Ω = `m_nu`/(93.14 eV h²) once non-relativistic (all z ≲ 100 for 0.06 eV); its
    density is interpolated between both limits as (ρ_rel^p + ρ_nr^p)^(1/p), p = 1.83
    (Komatsu et al. 2011, eq. 26). Flatness sets Ω_Λ.
    """

    h0: RealScalarLike
    omega_m: RealScalarLike
    t_cmb: RealScalarLike
    n_eff: RealScalarLike
    m_nu: RealScalarLike

    def __check_init__(self):
        checks = (
            ("h0", lambda v: v > 0, "must be positive"),
            ("omega_m", lambda v: 0 < v < 1, "must lie in (0, 1)"),
            ("t_cmb", lambda v: v >= 0, "must be non-negative"),
            ("n_eff", lambda v: v >= 0, "must be non-negative"),
            ("m_nu", lambda v: v >= 0, "must be non-negative"),
        )
        for name, ok, problem in checks:
            value = concrete(getattr(self, name))
            if value is not None and not ok(value):
                raise ValueError(f"`Cosmology({name}=...)` {problem}; got {value}.")

    def _omegas(self, dtype) -> tuple[Array, Array, Array, Array, Array]:
        """Today's Ω of: massless radiation, cold matter, the massive ν in its
        relativistic and non-relativistic limits, and Λ; as `dtype` scalars."""
        h0, omega_m, t_cmb, n_eff, m_nu = (
            jnp.asarray(x, dtype)
            for x in (self.h0, self.omega_m, self.t_cmb, self.n_eff, self.m_nu)
        )
        h2 = (h0 / 100) ** 2
        omega_gamma = _OMEGA_GAMMA_H2_PER_K4 * t_cmb**4 / h2
        omega_nu_1 = omega_gamma * _NU_PER_GAMMA * n_eff / 3  # one relativistic ν
        omega_r = omega_gamma + 2 * omega_nu_1  # photons and two massless ν
        omega_nu_nr = m_nu / (_NU_MASS_EV * h2)
        omega_l = 1 - omega_m - omega_r - _pnorm(omega_nu_1, omega_nu_nr)
        return omega_r, omega_m, omega_nu_1, omega_nu_nr, omega_l

    def _a4_e2(self, a: Array) -> Array:
        """a⁴ E(a)², finite as a → 0."""
        omega_r, omega_m, omega_nu_1, omega_nu_nr, omega_l = self._omegas(a.dtype)
        nu = _pnorm(omega_nu_1, omega_nu_nr * a)
        return omega_r + nu + a * (omega_m + omega_l * a**3)

    def efunc(self, z: Real[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """E(z) = H(z)/H0 (dimensionless)."""
        z = _as_float(z)
        return (1 + z) ** 2 * jnp.sqrt(self._a4_e2(1 / (1 + z)))


PLANCK18 = Cosmology(h0=67.66, omega_m=0.30966, t_cmb=2.7255, n_eff=3.046, m_nu=0.06)
"""Planck 2018 (paper VI, Table 2, TT,TE,EE+lowE+lensing+BAO); astropy's `Planck18`."""


def _pnorm(x: Array, y: Array) -> Array:
    """(x^p + y^p)^(1/p) for x, y ≥ 0, p = 1.83; finite gradients at x = y = 0."""
    s = jnp.maximum(x, y)
    safe = jnp.where(s > 0, s, 1)
    inner = jnp.where(s > 0, (x / safe) ** _P_NU + (y / safe) ** _P_NU, 1)
    return s * inner ** (1 / _P_NU)


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _integrate(f, upper: Array) -> Array:
    """∫₀^upper f(x) dx, elementwise in `upper`, by Gauss–Legendre quadrature."""
    x, w = (jnp.asarray(v, upper.dtype) for v in (_GL_X, _GL_W))
    half = 0.5 * upper.reshape(-1, 1)
    values = f(half * (x[None, :] + 1)) * w[None, :]
    return (half[:, 0] * jnp.sum(values, axis=1)).reshape(upper.shape)


@jax.jit
def comoving_distance(
    z: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Line-of-sight comoving distance, Mpc (= transverse: the universe is flat).

    **Arguments:**

    - `z`: redshift, scalar or array.
    - `cosmology`: a [`rubix_eqx.cosmology.Cosmology`][], default `PLANCK18`.

    **Returns:** the distance in Mpc, with the shape and float dtype of `z`.
    """
    z = _as_float(z)
    hubble_distance = C_KM_S / jnp.asarray(cosmology.h0, z.dtype)
    return hubble_distance * _integrate(lambda x: 1 / cosmology.efunc(x), z)


@jax.jit
def luminosity_distance(
    z: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Luminosity distance d_L = (1+z) D_C, Mpc. Arguments as
    [`rubix_eqx.cosmology.comoving_distance`][]."""
    z = _as_float(z)
    return (1 + z) * comoving_distance(z, cosmology)


@jax.jit
def angular_diameter_distance(
    z: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Angular-diameter distance d_A = D_C/(1+z) = d_L/(1+z)², Mpc. Arguments as
    [`rubix_eqx.cosmology.comoving_distance`][]."""
    z = _as_float(z)
    return comoving_distance(z, cosmology) / (1 + z)


def _hubble_time(cosmology: Cosmology, dtype) -> Array:
    return _MPC_KM / _GYR_S / jnp.asarray(cosmology.h0, dtype)  # Gyr


@jax.jit
def lookback_time(
    z: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Time elapsed since redshift `z`, Gyr. Arguments as
    [`rubix_eqx.cosmology.comoving_distance`][]."""
    z = _as_float(z)
    integral = _integrate(lambda x: 1 / ((1 + x) * cosmology.efunc(x)), z)
    return _hubble_time(cosmology, z.dtype) * integral


@jax.jit
def scale_factor_to_cosmic_time(
    a: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Age of the universe at scale factor `a` (e.g. a star's formation time), Gyr.

    **Arguments:**

    - `a`: scale factor 1/(1+z), in [0, 1], scalar or array.
    - `cosmology`: a [`rubix_eqx.cosmology.Cosmology`][], default `PLANCK18`.

    **Returns:** t(a) = ∫₀^a da'/(a' H(a')) in Gyr, with the shape and dtype of `a`.
    """
    a = _as_float(a)

    def integrand(u):  # a = u²: smooth as u → 0, with or without radiation
        root = jnp.sqrt(cosmology._a4_e2(u * u))
        return 2 * u**3 / jnp.where(root > 0, root, 1)

    return _hubble_time(cosmology, a.dtype) * _integrate(integrand, jnp.sqrt(a))


@jax.jit
def cosmic_time(
    z: Real[ArrayLike, "*shape"], cosmology: Cosmology = PLANCK18
) -> Float[Array, "*shape"]:
    """Age of the universe at redshift `z`, Gyr. Arguments as
    [`rubix_eqx.cosmology.comoving_distance`][]."""
    z = _as_float(z)
    return scale_factor_to_cosmic_time(1 / (1 + z), cosmology)
