"""Maps of light- or mass-weighted particle properties, deposited like the cube."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._checks import concrete
from ._compile import jit
from ._observation import Observation
from ._stages._deposit import AbstractDeposit, DEPOSITS
from ._stages._orient import Orient
from ._stages._protocol import Particles, Scene
from ._units import dimming_constant, SOLAR_METALLICITY
from .galaxy import Galaxy
from .ssp import ssp_weights, SSPGrid
from .ssp._interpolate import safe_log10
from .telescope import Telescope


logger = logging.getLogger("rubix_eqx")


class Maps(eqx.Module):
    """Per-spaxel maps, each (n_x, n_y).

    **Attributes:**

    - `log_age`: log10(age / yr).
    - `metallicity`: [M/H] = log10(Z / Z☉), Z☉ = 0.019.
    - `velocity`: mean line-of-sight velocity, km/s (positive = receding).
    - `dispersion`: line-of-sight velocity dispersion, km/s.
    - `h3`, `h4`: Gauss–Hermite moments from the LOSVD's skewness and excess kurtosis in
      the small-deviation approximation h3 ≈ skew/(4√3), h4 ≈ kurt/(8√6)
      (van der Marel & Franx 1993).
    - `flux`: weight per spaxel: for `weighting="light"` the flux integrated over the
      telescope's wavelength range in `flux_unit` erg s⁻¹ cm⁻²; for `"mass"`, M☉.
    - `mask`: spaxels with any weight (elsewhere the other maps are 0).
    - `weighting`: `"light"` or `"mass"` (`"fit"` for maps fitted to a cube).
    - `n_clipped`, `clipped_mass_fraction`: particles whose age or Z lay outside the SSP
      grid, averaged at the grid edge as in the cube (as `Cube.diagnostics`), and their
      share of the mass; `None` for fitted maps.
    """

    log_age: Float[Array, "n_x n_y"]
    metallicity: Float[Array, "n_x n_y"]
    velocity: Float[Array, "n_x n_y"]
    dispersion: Float[Array, "n_x n_y"]
    h3: Float[Array, "n_x n_y"]
    h4: Float[Array, "n_x n_y"]
    flux: Float[Array, "n_x n_y"]
    mask: Bool[Array, "n_x n_y"]
    weighting: str = eqx.field(static=True)
    n_clipped: Int[Array, ""] | None = None
    clipped_mass_fraction: Float[Array, ""] | None = None


def band_luminosity(ssp: SSPGrid, rest_low, rest_high) -> Float[Array, " n_template"]:
    """∫ S dλ (L☉ per M☉) of every template over rest wavelengths [low, high] Å."""
    wave = ssp.wavelength
    mid = 0.5 * (wave[1:] + wave[:-1])
    edges = jnp.concatenate(
        [wave[:1] - (mid[:1] - wave[:1]), mid, wave[-1:] + (wave[-1:] - mid[-1:])]
    )
    flux = ssp.flux.reshape(ssp.n_templates, -1) * jnp.diff(edges)[None, :]
    zero = jnp.zeros((flux.shape[0], 1), flux.dtype)
    cumulative = jnp.concatenate([zero, jnp.cumsum(flux, axis=1)], axis=1)
    at = jax.vmap(lambda c, x: jnp.interp(x, edges, c), in_axes=(0, None))
    return at(cumulative, rest_high) - at(cumulative, rest_low)


def truth_maps(
    galaxy: Galaxy,
    observation: Observation,
    telescope: Telescope,
    ssp: SSPGrid,
    weighting: str = "light",
    deposit: AbstractDeposit | str = "cic",
    flux_unit: float = 1e-20,
) -> Maps:
    """Light- (or mass-) weighted maps of the particles, on the cube's spaxels with the
    same orientation and deposit as [`rubix_eqx.Pipeline`][]: what fits of a cube are
    scored against. Light weights are each particle's flux over the telescope's
    wavelength range (rest range at the observation's redshift, interpolated SSP).

    Ages and metallicities outside the SSP grid (e.g. the age-0 stars of simulation
    snapshots, whose log age would be −∞) enter the age and [M/H] maps at the grid's
    edge, exactly as the cube clips them; their number and mass fraction are returned in
    `Maps.n_clipped` and `Maps.clipped_mass_fraction` and logged as a warning."""
    if weighting not in ("light", "mass"):
        raise ValueError(
            f"`truth_maps(weighting=...)` must be 'light' or 'mass'; got {weighting!r}."
        )
    maps = _truth_maps(galaxy, observation, telescope, ssp, weighting, deposit, flux_unit)
    _report(maps)
    return maps


def _report(maps: Maps) -> None:
    """Log the clipping (eager calls only), as the cube does."""
    n_clipped, fraction = concrete(maps.n_clipped), concrete(maps.clipped_mass_fraction)
    if n_clipped is None or fraction is None or not n_clipped > 0:
        return
    logger.warning(
        "truth_maps: %d particles (%.3g%% of the mass) lie outside the SSP grid in age or "
        "metallicity; their age and [M/H] enter the maps at the grid edge (as in the cube).",
        int(n_clipped), 100 * float(fraction),
    )  # fmt: skip


def particle_weights(galaxy, observation, telescope, ssp, weighting, deposit, flux_unit):
    """The particles' spaxel indices and spatial weights `(n, k)`, their light (or mass)
    weights `(n,)` and line-of-sight velocities (km/s), as `truth_maps` deposits them."""
    deposit = DEPOSITS[deposit]() if isinstance(deposit, str) else deposit
    scene = Scene(observation, telescope, None, flux_unit)
    particles = deposit(Orient()(Particles(galaxy), scene), scene)
    dtype = particles.position.dtype
    if weighting == "light":
        sw = ssp_weights(ssp, galaxy.age, galaxy.metallicity)
        z = observation.redshift.astype(dtype)
        wave = telescope.wavelength.astype(dtype)
        first, last = wave[0] - (wave[1] - wave[0]) / 2, wave[-1] + (wave[-1] - wave[-2]) / 2
        band = band_luminosity(ssp, first / (1 + z), last / (1 + z))
        d_l = observation.luminosity_distance().astype(dtype)
        weight = (
            galaxy.mass
            * jnp.sum(sw.weight * band[sw.index], 1)
            * dimming_constant(flux_unit)
            / d_l**2
        )
    else:
        weight = galaxy.mass
    return particles.spaxel_index, particles.spaxel_weight, weight, particles.v_los


@jit
def _truth_maps(
    galaxy: Galaxy,
    observation: Observation,
    telescope: Telescope,
    ssp: SSPGrid,
    weighting: str,
    deposit: AbstractDeposit | str,
    flux_unit: float,
) -> Maps:
    index, spatial, weight, v_los = particle_weights(
        galaxy, observation, telescope, ssp, weighting, deposit, flux_unit
    )
    sw = ssp_weights(ssp, galaxy.age, galaxy.metallicity)
    n_spaxels = telescope.n_x * telescope.n_y
    w = (spatial * weight[:, None]).reshape(-1)
    flat = index.reshape(-1)

    def spaxel_sum(x):
        return jax.ops.segment_sum(w * jnp.repeat(x, index.shape[1]), flat, num_segments=n_spaxels)

    total = jax.ops.segment_sum(w, flat, num_segments=n_spaxels)
    has = total > 0
    safe = jnp.where(has, total, 1)

    def mean(x):
        return jnp.where(has, spaxel_sum(x) / safe, 0)

    # Outside the grid, the cube uses the edge population: so do the maps (age 0 → the
    # youngest node, not log 0 = −inf).
    log_age_grid = jnp.log10(ssp.age).astype(galaxy.age.dtype)
    log_z_grid = jnp.log10(ssp.metallicity).astype(galaxy.metallicity.dtype)
    log_age_used = jnp.clip(safe_log10(galaxy.age), log_age_grid[0], log_age_grid[-1])
    log_z_used = jnp.clip(safe_log10(galaxy.metallicity), log_z_grid[0], log_z_grid[-1])
    log_age = mean(log_age_used + 9)
    metal = mean(log_z_used - jnp.log10(SOLAR_METALLICITY))
    total_mass = jnp.sum(galaxy.mass)
    clipped_mass = jnp.sum(jnp.where(sw.clipped, galaxy.mass, 0))
    v_mean = mean(v_los)
    centred = v_los[:, None] - v_mean[index]  # (n, k): deviation from each spaxel's mean

    def central(power):
        values = jax.ops.segment_sum(w * (centred**power).reshape(-1), flat, num_segments=n_spaxels)
        return jnp.where(has, values / safe, 0)

    var = central(2)
    sigma = jnp.sqrt(jnp.maximum(var, 0))
    safe_var = jnp.where(var > 0, var, 1)
    skew = jnp.where(var > 0, central(3) / safe_var**1.5, 0)
    kurt = jnp.where(var > 0, central(4) / safe_var**2 - 3, 0)
    shape = (telescope.n_x, telescope.n_y)
    return Maps(
        log_age=log_age.reshape(shape),
        metallicity=metal.reshape(shape),
        velocity=v_mean.reshape(shape),
        dispersion=sigma.reshape(shape),
        h3=(skew / (4 * jnp.sqrt(3.0))).reshape(shape),
        h4=(kurt / (8 * jnp.sqrt(6.0))).reshape(shape),
        flux=total.reshape(shape),
        mask=has.reshape(shape),
        weighting=weighting,
        n_clipped=jnp.sum(sw.clipped).astype(jnp.int32),
        clipped_mass_fraction=clipped_mass / jnp.where(total_mass > 0, total_mass, 1),
    )
