"""A synthetic star-forming gas disk with known truth."""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ._gas import Gas
from ._synthetic import rotation_curve, SOLAR_METALLICITY


def synthetic_gas_disk(
    key: PRNGKeyArray,
    n_gas: int = 5_000,
    *,
    total_mass: float = 5e9,
    scale_length: float = 4.0,
    scale_height: float = 0.15,
    v_flat: float = 200.0,
    r_turn: float = 2.0,
    dispersion: float = 10.0,
    total_sfr: float = 2.0,
    sf_radius: float = 12.0,
    metallicity_centre: float = 0.1,
    metallicity_gradient: float = -0.03,
    temperature: float = 1e4,
    n_neighbours: int = 32,
    dtype=None,
) -> Gas:
    """An exponential gas disk with known parameters, as a [`rubix_eqx.galaxy.Gas`][].

    Surface density ∝ exp(−R/`scale_length`), vertical ∝ exp(−|z|/`scale_height`),
    equal-mass elements summing to `total_mass` (M☉); rotation v_c(R) = `v_flat`
    tanh(R/`r_turn`) (as [`rubix_eqx.galaxy.rotation_curve`][]) plus an isotropic Gaussian
    `dispersion` (km/s). Star formation ∝ mass inside R < `sf_radius` (the star-forming
    disk; outside SFR = 0), normalised so that Σ SFR = `total_sfr` (M☉/yr) exactly.
    [M/H] = `metallicity_centre` + `metallicity_gradient` · R (dex, dex/kpc), Z = 0.019 ·
    10^[M/H] as the stellar disk; T = `temperature` (K) everywhere. Smoothing length:
    h = (3 N m / (4π ρ))^(1/3) with the disk's analytic mid-plane density at the element's
    radius, ρ = Σ(R)/(2 z_h), and N = `n_neighbours`. Deterministic for a given `key`.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    for name, value in (
        ("total_mass", total_mass), ("scale_length", scale_length), ("scale_height", scale_height),
        ("r_turn", r_turn), ("sf_radius", sf_radius), ("temperature", temperature),
    ):  # fmt: skip
        if not value > 0:
            raise ValueError(f"`synthetic_gas_disk({name}=...)` must be > 0; got {value}.")
    if not total_sfr >= 0:
        raise ValueError(f"`synthetic_gas_disk(total_sfr=...)` must be ≥ 0; got {total_sfr}.")
    if n_gas < 1:
        raise ValueError(f"`synthetic_gas_disk(n_gas=...)` must be ≥ 1; got {n_gas}.")
    keys = jr.split(key, 4)
    # Γ(2) radii (an exponential surface density) as the sum of two exponential draws
    # (cheaper to compile than jr.gamma).
    radius = scale_length * jnp.sum(jr.exponential(keys[0], (2, n_gas), dtype), axis=0)
    height = scale_height * jr.laplace(keys[1], (n_gas,), dtype)
    phi = jr.uniform(keys[2], (n_gas,), dtype, maxval=2 * jnp.pi)
    cos, sin = jnp.cos(phi), jnp.sin(phi)
    position = jnp.stack([radius * cos, radius * sin, height], 1)
    v_c = rotation_curve(radius, v_flat, r_turn)
    velocity = jnp.stack([-v_c * sin, v_c * cos, jnp.zeros_like(v_c)], 1)
    velocity = velocity + dispersion * jr.normal(keys[3], (n_gas, 3), dtype)
    mass = jnp.full((n_gas,), total_mass / n_gas, dtype)
    star_forming = (radius < sf_radius).astype(dtype)
    sf_mass = jnp.sum(mass * star_forming)
    sfr = jnp.where(
        sf_mass > 0, total_sfr * mass * star_forming / jnp.maximum(sf_mass, 1e-300), 0.0
    )
    metallicity = SOLAR_METALLICITY * 10.0 ** (metallicity_centre + metallicity_gradient * radius)
    surface = total_mass / (2 * jnp.pi * scale_length**2) * jnp.exp(-radius / scale_length)
    density = surface / (2 * scale_height)  # M☉/kpc³ in the mid-plane
    smoothing = (3 * n_neighbours * mass / (4 * jnp.pi * density)) ** (1 / 3)
    return Gas(
        position=position,
        velocity=velocity,
        mass=mass,
        metallicity=metallicity,
        sfr=sfr,
        temperature=jnp.full((n_gas,), temperature, dtype),
        smoothing_length=smoothing,
    )
