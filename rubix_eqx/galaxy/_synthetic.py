"""Synthetic galaxies with known truth, for tests, benchmarks and recovery experiments."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._units import SOLAR_METALLICITY
from ._galaxy import Galaxy


class Truth(eqx.Module):
    """The parameters a synthetic disk was drawn from.

    **Attributes:** `total_mass` (M☉, initial), `scale_length`, `scale_height`,
    `bulge_radius` (kpc), `bulge_fraction`, `v_flat` (km/s), `r_turn` (kpc),
    `dispersion` (km/s, disk), `bulge_dispersion` (km/s), `log_age_centre`
    (log10 age/Gyr at R = 0), `log_age_gradient` (dex/kpc), `metallicity_centre`
    ([M/H] at R = 0), `metallicity_gradient` (dex/kpc), `log_age_scatter`,
    `metallicity_scatter` (dex).
    """

    total_mass: Float[Array, ""]
    scale_length: Float[Array, ""]
    scale_height: Float[Array, ""]
    bulge_fraction: Float[Array, ""]
    bulge_radius: Float[Array, ""]
    v_flat: Float[Array, ""]
    r_turn: Float[Array, ""]
    dispersion: Float[Array, ""]
    bulge_dispersion: Float[Array, ""]
    log_age_centre: Float[Array, ""]
    log_age_gradient: Float[Array, ""]
    metallicity_centre: Float[Array, ""]
    metallicity_gradient: Float[Array, ""]
    log_age_scatter: Float[Array, ""]
    metallicity_scatter: Float[Array, ""]


class DiskDraws(eqx.Module):
    """The random numbers behind a synthetic disk, kept so that the same particles can be
    regenerated from new parameters (deterministic, differentiable in the parameters)."""

    radius_unit: Float[Array, " n"]  # Gamma(2) draw: R = scale_length * radius_unit
    height_unit: Float[Array, " n"]  # Laplace draw: z = scale_height * height_unit
    phi: Float[Array, " n"]
    bulge_unit: Float[Array, "n 3"]  # Plummer positions for a unit radius
    is_bulge: Float[Array, " n"]  # 1 for bulge particles, else 0
    velocity_unit: Float[Array, "n 3"]  # standard normal
    age_unit: Float[Array, " n"]  # standard normal
    metallicity_unit: Float[Array, " n"]  # standard normal


def draw_disk(key: PRNGKeyArray, n_stars: int, bulge_fraction: float, dtype) -> DiskDraws:
    """The random numbers for `n_stars` particles (see [`rubix_eqx.galaxy.disk_from_draws`][])."""
    keys = jr.split(key, 8)
    u = jr.uniform(keys[3], (n_stars,), dtype, minval=1e-6, maxval=1 - 1e-6)
    r_plummer = 1 / jnp.sqrt(u ** (-2 / 3) - 1)
    direction = jr.normal(keys[4], (n_stars, 3), dtype)
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    return DiskDraws(
        radius_unit=jr.gamma(keys[0], 2.0, (n_stars,), dtype),
        height_unit=jr.laplace(keys[1], (n_stars,), dtype),
        phi=jr.uniform(keys[2], (n_stars,), dtype, maxval=2 * jnp.pi),
        bulge_unit=jnp.minimum(r_plummer, 20.0)[:, None] * direction,
        is_bulge=(jr.uniform(keys[5], (n_stars,), dtype) < bulge_fraction).astype(dtype),
        velocity_unit=jr.normal(keys[6], (n_stars, 3), dtype),
        age_unit=jr.normal(keys[7], (n_stars,), dtype),
        metallicity_unit=jr.normal(jr.fold_in(keys[7], 1), (n_stars,), dtype),
    )


def rotation_curve(radius, v_flat, r_turn):
    """Circular speed (km/s): rises as tanh(R / r_turn) to `v_flat`."""
    return v_flat * jnp.tanh(radius / r_turn)


def disk_from_draws(truth: Truth, draws: DiskDraws) -> Galaxy:
    """Particles from parameters and fixed random draws; differentiable in `truth`."""
    n = draws.phi.shape[0]
    radius = truth.scale_length * draws.radius_unit
    cos, sin = jnp.cos(draws.phi), jnp.sin(draws.phi)
    disk_pos = jnp.stack([radius * cos, radius * sin, truth.scale_height * draws.height_unit], 1)
    bulge = draws.is_bulge[:, None]
    position = (1 - bulge) * disk_pos + bulge * truth.bulge_radius * draws.bulge_unit
    v_c = rotation_curve(radius, truth.v_flat, truth.r_turn)
    disk_vel = jnp.stack([-v_c * sin, v_c * cos, jnp.zeros_like(v_c)], 1)
    sigma = (1 - bulge) * truth.dispersion + bulge * truth.bulge_dispersion
    velocity = (1 - bulge) * disk_vel + sigma * draws.velocity_unit
    r_gradient = jnp.linalg.norm(position[:, :2], axis=1)
    log_age = (
        truth.log_age_centre
        + truth.log_age_gradient * r_gradient
        + truth.log_age_scatter * draws.age_unit
    )
    metal = (
        truth.metallicity_centre
        + truth.metallicity_gradient * r_gradient
        + truth.metallicity_scatter * draws.metallicity_unit
    )
    mass = jnp.full((n,), 1.0, position.dtype) * truth.total_mass / n
    return Galaxy(
        position=position,
        velocity=velocity,
        mass=mass,
        age=10.0**log_age,
        metallicity=SOLAR_METALLICITY * 10.0**metal,
    )


def synthetic_disk(
    key: PRNGKeyArray,
    n_stars: int = 10_000,
    *,
    total_mass: float = 1e10,
    scale_length: float = 3.0,
    scale_height: float = 0.3,
    bulge_fraction: float = 0.1,
    bulge_radius: float = 0.5,
    v_flat: float = 200.0,
    r_turn: float = 2.0,
    dispersion: float = 30.0,
    bulge_dispersion: float = 120.0,
    log_age_centre: float = 0.9,
    log_age_gradient: float = -0.03,
    metallicity_centre: float = 0.1,
    metallicity_gradient: float = -0.03,
    log_age_scatter: float = 0.05,
    metallicity_scatter: float = 0.05,
    dtype=None,
) -> tuple[Galaxy, Truth]:
    """An exponential disk (+ optional Plummer bulge) with known parameters.

    Disk: surface density ∝ exp(-R/`scale_length`), vertical profile
    ∝ exp(-|z|/`scale_height`), rotation v_c(R) = `v_flat` tanh(R/`r_turn`) plus an
    isotropic Gaussian `dispersion`. Bulge: a non-rotating Plummer sphere of radius
    `bulge_radius` with `bulge_dispersion`. Ages and metallicities follow radial
    gradients in cylindrical R: log10(age/Gyr) = `log_age_centre` + `log_age_gradient`·R
    (+ Gaussian scatter), [M/H] = `metallicity_centre` + `metallicity_gradient`·R
    (+ scatter), Z = 0.019·10^[M/H]. Equal-mass particles summing to `total_mass`
    (initial mass, M☉). Deterministic for a given `key`.

    **Returns:** `(galaxy, truth)`.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    values = dict(
        total_mass=total_mass, scale_length=scale_length, scale_height=scale_height,
        bulge_fraction=bulge_fraction, bulge_radius=bulge_radius, v_flat=v_flat,
        r_turn=r_turn, dispersion=dispersion, bulge_dispersion=bulge_dispersion,
        log_age_centre=log_age_centre, log_age_gradient=log_age_gradient,
        metallicity_centre=metallicity_centre, metallicity_gradient=metallicity_gradient,
        log_age_scatter=log_age_scatter, metallicity_scatter=metallicity_scatter,
    )  # fmt: skip
    for name in ("total_mass", "scale_length", "scale_height", "bulge_radius", "r_turn"):
        if not values[name] > 0:
            raise ValueError(f"`synthetic_disk({name}=...)` must be > 0; got {values[name]}.")
    if not 0 <= bulge_fraction <= 1:
        raise ValueError(
            f"`synthetic_disk(bulge_fraction=...)` must lie in [0, 1]; got {bulge_fraction}."
        )
    if n_stars < 1:
        raise ValueError(f"`synthetic_disk(n_stars=...)` must be >= 1; got {n_stars}.")
    truth = Truth(**{k: jnp.asarray(v, dtype) for k, v in values.items()})
    draws = draw_disk(key, n_stars, bulge_fraction, dtype)
    return disk_from_draws(truth, draws), truth


def single_population(
    n_stars: int = 1,
    *,
    age: float = 10.0,
    metallicity: float = SOLAR_METALLICITY,
    total_mass: float = 1e6,
    position=(0.0, 0.0, 0.0),
    velocity=(0.0, 0.0, 0.0),
    dispersion: float = 0.0,
    key: PRNGKeyArray | None = None,
    dtype=None,
) -> Galaxy:
    """`n_stars` equal-mass particles of one age (Gyr) and metallicity (Z) at one
    `position` (kpc), moving with `velocity` (km/s) plus an isotropic Gaussian
    `dispersion` (km/s; needs `key` if > 0). For analytic tests."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    if dispersion > 0 and key is None:
        raise ValueError("`single_population(dispersion=...)` > 0 needs a `key`.")
    vel = jnp.broadcast_to(jnp.asarray(velocity, dtype), (n_stars, 3))
    if dispersion > 0:
        assert key is not None
        vel = vel + dispersion * jax.random.normal(key, (n_stars, 3), dtype)
    return Galaxy.from_arrays(
        position=jnp.broadcast_to(jnp.asarray(position, dtype), (n_stars, 3)),
        velocity=vel,
        mass=jnp.full((n_stars,), total_mass / n_stars, dtype),
        age=jnp.full((n_stars,), age, dtype),
        metallicity=jnp.full((n_stars,), metallicity, dtype),
        dtype=dtype,
    )
