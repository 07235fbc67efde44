"""`Pipeline`: star particles → IFU cube, one jitted, differentiable call."""

import logging
import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ._checks import concrete
from ._cube import Cube, Diagnostics
from ._engine import (
    auto_chunk_size,
    choose_engine,
    chunked,
    direct_cube,
    histogram_cube,
    n_shift_bins,
    ParticleTerms,
)
from ._medium import convert as convert_medium
from ._observation import Observation
from ._rebin import pixel_edges
from ._spectral_grid import SpectralGrid
from ._stages._aperture import Aperture
from ._stages._deposit import Deposit, sky_pixels
from ._stages._lsf import LSF
from ._stages._noise import AbstractNoise, telescope_noise
from ._stages._orient import Orient, rotation_matrix
from ._stages._psf import PSFConvolution
from ._units import C_KM_S, dimming_constant
from .galaxy import Galaxy
from .sharding import sum_over_particles
from .ssp import ssp_weights, SSPGrid
from .telescope import Telescope


logger = logging.getLogger("rubix_eqx")


class CoverageError(ValueError):
    """The telescope's wavelength range, de-redshifted, leaves the SSP grid."""


class FieldWarning(UserWarning):
    """No particle of the galaxy falls inside the field of view."""


def log_doppler(redshift, v_los):
    """ln of the total Doppler factor (1+z)·sqrt((1+β)/(1-β)) (relativistic)."""
    return jnp.log1p(redshift) + jnp.arctanh(v_los / C_KM_S)


class Pipeline(eqx.Module):
    """Composes the stages that turn a [`rubix_eqx.Galaxy`][] and an
    [`rubix_eqx.Observation`][] into a [`rubix_eqx.Cube`][].

    Stages, in order: `orient` (inclination, position angle), `deposit` (projection
    with d_A and CIC or nearest deposit), spectra (SSP interpolation, Doppler shift,
    d_L dimming, on the ln λ lattice of [`rubix_eqx.SpectralGrid`][]), `lsf`
    (broadening to the telescope's resolution, on the lattice), rebinning onto the
    telescope grid, `psf` (every λ slice), `noise` (with the variance it used) and
    `aperture` (fibre-bundle footprint). Any of `lsf`, `psf`, `noise`, `aperture` may be
    `None`. Call it as `pipeline(galaxy, observation, key=key)`.
    """

    telescope: Telescope
    ssp: SSPGrid
    grid: SpectralGrid
    orient: Orient
    deposit: Deposit
    lsf: LSF | None
    psf: PSFConvolution | None
    noise: AbstractNoise | None
    aperture: Aperture | None
    flux_unit: float = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    velocity_margin: float = eqx.field(static=True)
    engine: str = eqx.field(static=True)

    def __init__(
        self,
        telescope: Telescope,
        ssp: SSPGrid,
        *,
        deposit: Deposit | str = "cic",
        orient: Orient | None = None,
        lsf: LSF | bool = True,
        allow_sharper_lsf: bool = False,
        psf: PSFConvolution | bool = True,
        noise: AbstractNoise | str | None = None,
        aperture: Aperture | bool = True,
        flux_unit: float = 1e-20,
        chunk_size: int | None = None,
        oversample: int | None = None,
        velocity_margin: float = 1000.0,
        engine: str = "auto",
        dtype=jnp.float32,
    ):
        """**Arguments:**

        - `telescope`, `ssp`: the instrument and the SSP grid.
        - `deposit`: `"cic"` (bilinear, default), `"nearest"`, or a `Deposit`.
        - `orient`: the orientation stage (default `Orient()`).
        - `lsf`: `True` (default) broadens to the telescope's `lsf_fwhm` (an error where
          the telescope is sharper than the templates, unless `allow_sharper_lsf=True`,
          which clips the extra broadening to 0 there and counts the bins in the
          diagnostics); `False` for none; or an `LSF`.
        - `psf`: `True` (default) convolves with the telescope's PSF if it has one;
          `False` for none; or a `PSFConvolution` (e.g. wavelength-dependent).
        - `noise`: `None` (default: noiseless), a noise stage ([`rubix_eqx.ExposureNoise`][],
          physical; [`rubix_eqx.Noise`][], constant S/N or given σ), or `"telescope"` for
          the telescope's default: physical from its `detector` and `exposure` if it has
          them, else its constant S/N. Needs `key=` when called.
        - `aperture`: `True` (default) masks spaxels outside a hexagonal or circular
          bundle footprint; `False` for none; or an `Aperture`.
        - `flux_unit`: the cube's unit in erg s⁻¹ cm⁻² Å⁻¹ (default 1e-20).
        - `chunk_size`: particles per scan step (default: chosen from the sizes).
        - `oversample`: working ln λ lattice finer than the finest telescope pixel by
          this factor; default (`None`): the smallest factor making a lattice pixel
          ≤ 45 km/s (MUSE: 1, MaNGA's 69 km/s pixels: 2), which keeps line shapes within
          1 % of the exact reference (docs/physics.md).
        - `velocity_margin`: km/s; the largest line-of-sight speed expected. Used to check
          that the SSP grid covers the telescope range, and as the upper bound of the
          histogram engine's velocity axis (an error for faster particles; with concrete
          velocities the axis is sized from the galaxy itself, see `speed_bound`).
        - `engine`: `"direct"`, `"histogram"` or `"auto"` (the faster for the sizes, by a
          cost model measured on CPU; see `rubix_eqx._engine`). Both are exact.
        - `dtype`: float dtype of the templates and the cube (float64 needs x64 enabled).
        """
        if not flux_unit > 0:
            raise ValueError(f"`Pipeline(flux_unit=...)` must be > 0; got {flux_unit}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"`Pipeline(chunk_size=...)` must be >= 1; got {chunk_size}.")
        if not 0 <= velocity_margin < C_KM_S:
            raise ValueError(
                f"`Pipeline(velocity_margin=...)` must lie in [0, c); got {velocity_margin}."
            )
        self.telescope = telescope
        self.ssp = ssp
        ssp = ssp_in_medium(ssp, telescope.medium)  # templates in the telescope's medium
        if oversample is None:
            oversample = default_oversample(telescope.wavelength)
        if not (isinstance(oversample, int) and oversample >= 1):
            raise ValueError(
                f"`Pipeline(oversample=...)` must be an integer >= 1; got {oversample!r}."
            )
        grid = SpectralGrid.build(ssp, telescope.wavelength, oversample=oversample, dtype=dtype)
        if lsf is True:
            # Extend the lattice by the LSF's half-width so flux spreads in from outside.
            margin = LSF.build(telescope, ssp, grid, allow_sharper=allow_sharper_lsf).half_width
            grid = SpectralGrid.build(ssp, telescope.wavelength, oversample, margin, dtype)
            lsf = LSF.build(telescope, ssp, grid, allow_sharper=allow_sharper_lsf)
        self.grid = grid
        self.lsf = lsf if isinstance(lsf, LSF) else None
        if psf is True:
            psf = PSFConvolution.build(telescope) if telescope.psf is not None else None
        self.psf = psf if isinstance(psf, PSFConvolution) else None
        if isinstance(noise, str):
            if noise != "telescope":
                raise ValueError(
                    f"`Pipeline(noise=...)` must be a Noise, 'telescope' or None; got {noise!r}."
                )
            noise = telescope_noise(telescope, flux_unit)
        if noise is not None:
            noise = noise.for_pipeline(telescope, flux_unit)
        self.noise = noise
        if aperture is True:
            aperture = Aperture.build(telescope) if telescope.aperture != "square" else None
        self.aperture = aperture if isinstance(aperture, Aperture) else None
        self.orient = Orient() if orient is None else orient
        self.deposit = Deposit(deposit) if isinstance(deposit, str) else deposit
        self.flux_unit = float(flux_unit)
        self.chunk_size = chunk_size
        self.velocity_margin = float(velocity_margin)
        if engine not in ("auto", "direct", "histogram"):
            raise ValueError(
                f"`Pipeline(engine=...)` must be 'auto', 'direct' or 'histogram'; got {engine!r}."
            )
        self.engine = engine

    def engine_for(self, n_particles: int, speed_bound: float | None = None) -> str:
        """The engine used for a galaxy of `n_particles` whose line-of-sight speeds are
        below `speed_bound` km/s (default `velocity_margin`)."""
        if self.engine != "auto":
            return self.engine
        tel = self.telescope
        bound = self.velocity_margin if speed_bound is None else speed_bound
        return choose_engine(
            n_particles, tel.n_x * tel.n_y, self.grid.templates.shape[0],
            n_shift_bins(self.grid, bound), self.grid.n_work,
        )  # fmt: skip

    def speed_bound(self, galaxy: Galaxy, observation: Observation) -> float:
        """The line-of-sight speed (km/s) the histogram engine's velocity axis must cover:
        the galaxy's largest |v_los| rounded up to 100 km/s when the values are concrete
        (fewer shift bins, a smaller matrix product), else `velocity_margin`. Calls with
        the same bound share one compilation."""
        try:
            velocity = np.asarray(galaxy.velocity, np.float64)
            angles = np.asarray([observation.inclination, observation.position_angle], np.float64)
        except Exception:  # traced, or not addressable from this process
            return self.velocity_margin
        if velocity.size == 0:
            return min(self.velocity_margin, 100.0)
        rot = np.asarray(rotation_matrix(*angles), np.float64)
        fastest = float(np.max(np.abs(velocity @ rot[2])))
        return min(self.velocity_margin, 100.0 * math.ceil((fastest + 1.0) / 100.0))

    def covered_range(self, redshift: float) -> tuple[float, float]:
        """The observed wavelength range (Å) whose lattice the SSP grid covers at
        `redshift` for every line-of-sight speed within ±`velocity_margin`."""
        low, high = self.grid.shift_range()
        a = math.atanh(self.velocity_margin / C_KM_S)
        first, last = self.grid.obs_log_edges[[0, -1]]
        # observed edge u is covered if ln D ∈ [low, high) for all |v| ≤ margin, i.e.
        # the range shrinks by the excess of ln(1+z) ± a over [low, high).
        lo_excess = max(0.0, math.log1p(redshift) + a - high)
        hi_excess = max(0.0, low - (math.log1p(redshift) - a))
        margin = self.lsf.half_width * self.grid.log_step if self.lsf is not None else 0.0
        return math.exp(first + margin + lo_excess), math.exp(last - margin - hi_excess)

    def check_coverage(self, redshift: float) -> None:
        """Raise [`rubix_eqx.CoverageError`][] if the telescope range is not covered."""
        low, high = self.grid.shift_range()
        a = math.atanh(self.velocity_margin / C_KM_S)
        if low <= math.log1p(redshift) - a and math.log1p(redshift) + a < high:
            return
        lo, hi = self.covered_range(redshift)
        wave = np.asarray(self.telescope.wavelength)
        z_lo, z_hi = math.expm1(low + a), math.expm1(high - a)
        raise CoverageError(
            f"Telescope {self.telescope.name!r} spans {wave[0]:.1f}-{wave[-1]:.1f} Å (observed) "
            f"but at redshift {redshift:g} the SSP grid {self.ssp.name!r} "
            f"({self.grid.rest_range[0]:.1f}-{self.grid.rest_range[1]:.1f} Å rest) covers "
            f"only {lo:.1f}-{hi:.1f} Å observed with a ±{self.velocity_margin:g} km/s velocity "
            f"margin (the whole range is covered for {max(z_lo, 0):.4f} <= z < {z_hi:.4f}). Crop "
            "the telescope with `rubix_eqx.crop_to_coverage(...)`, or change the redshift."
        )

    def __call__(
        self,
        galaxy: Galaxy,
        observation: Observation,
        *,
        key: PRNGKeyArray | None = None,
        speed_bound: float | None = None,
    ) -> Cube:
        """The cube of `galaxy` seen as `observation` (jitted; differentiable in every
        floating field of both). `key` feeds the noise stage, if any. `speed_bound`
        (km/s): the histogram engine's velocity axis; default from the galaxy (see
        `speed_bound`); pass `velocity_margin` to share one compilation among galaxies."""
        redshift = concrete(observation.redshift)
        if redshift is not None:
            if not np.isfinite(redshift):
                raise ValueError(f"`Observation.redshift` must be finite; got {float(redshift)}.")
            self.check_coverage(float(redshift))
            if self.lsf is not None:
                self.lsf.check(float(redshift))
        if self.noise is not None and key is None:
            raise ValueError("This pipeline has a noise stage: pass `key=jax.random.key(...)`.")
        if speed_bound is None:
            speed_bound = self.speed_bound(galaxy, observation)
        cube = _forward(self, galaxy, observation, key, float(speed_bound))
        _report(cube.diagnostics)
        return cube

    def particle_terms(
        self, galaxy: Galaxy, observation: Observation
    ) -> tuple[ParticleTerms, dict]:
        """Per-particle deposit, template and Doppler terms, plus diagnostics arrays."""
        tel = self.telescope
        position, v_los = self.orient(galaxy, observation)
        d_a = observation.angular_diameter_distance().astype(position.dtype)
        d_l = observation.luminosity_distance().astype(position.dtype)
        px, py = sky_pixels(position, d_a, tel.spaxel_size, tel.n_x, tel.n_y)
        spaxel_index, spaxel_weight, outside = self.deposit(px, py, tel.n_x, tel.n_y)
        weights = ssp_weights(self.ssp, galaxy.age, galaxy.metallicity)
        log_d = log_doppler(observation.redshift.astype(v_los.dtype), v_los)
        low, high = self.grid.shift_range()
        log_d = eqx.error_if(
            log_d,
            (log_d < low) | (log_d >= high),
            "The Doppler shift of some particles (redshift plus line-of-sight velocity) "
            "moves the telescope range outside the SSP grid; see Pipeline.covered_range.",
        )
        shift, fraction = self.grid.shift(log_d)
        amplitude = galaxy.mass * (dimming_constant(self.flux_unit) / d_l**2)
        terms = ParticleTerms(
            spaxel_index=spaxel_index,
            spaxel_weight=spaxel_weight.astype(self.grid.templates.dtype),
            template_index=weights.index,
            template_weight=weights.weight.astype(self.grid.templates.dtype),
            shift=shift,
            fraction=fraction.astype(self.grid.templates.dtype),
            amplitude=amplitude.astype(self.grid.templates.dtype),
        )
        return terms, {"clipped": weights.clipped, "outside": outside, "v_los": v_los}


LATTICE_PIXEL_KM_S = 45.0  # the coarsest default lattice pixel


def default_oversample(wavelength) -> int:
    """The smallest lattice oversampling making the lattice pixel ≤ 45 km/s for a
    telescope grid `wavelength` (Å)."""
    edges = np.log(pixel_edges(np.asarray(wavelength, np.float64)))
    pixel = float(np.min(np.diff(edges))) * C_KM_S
    return max(1, math.ceil(pixel / LATTICE_PIXEL_KM_S - 1e-9))


def ssp_in_medium(ssp: SSPGrid, medium: str) -> SSPGrid:
    """`ssp` (air wavelengths, as E-MILES) with its wavelengths and FWHM converted to
    `medium` ("air": unchanged; "vacuum": Morton 2000, see `rubix_eqx._medium`). A
    vacuum telescope then sees rest vacuum wavelengths × (1+z), which is exact; an air
    telescope sees rest air × (1+z), off by the dispersion of air over the redshift
    (< 0.5 km/s for z ≤ 0.1), as every fitter that works in air assumes."""
    if medium == "air":
        return ssp
    air = np.asarray(ssp.wavelength, np.float64)
    target = convert_medium(air, "air", medium)
    fwhm = np.asarray(ssp.fwhm, np.float64) * target / air
    return eqx.tree_at(
        lambda g: (g.wavelength, g.fwhm),
        ssp,
        (jnp.asarray(target, ssp.wavelength.dtype), jnp.asarray(fwhm, ssp.fwhm.dtype)),
    )


def crop_to_coverage(
    telescope: Telescope,
    ssp: SSPGrid,
    redshift: float,
    velocity_margin: float = 1000.0,
    *,
    lsf: bool = True,
    oversample: int | None = None,
) -> Telescope:
    """`telescope` with its wavelength grid cut to the pixels that `ssp` covers at
    `redshift` for line-of-sight speeds up to ±`velocity_margin` km/s (whole pixels,
    edges included) — with `lsf=True` (default) also leaving room for the LSF kernel to
    spread flux in from outside the range, so that `Pipeline(cropped, ssp, lsf=True,
    oversample=oversample, velocity_margin=velocity_margin)` accepts it. Raises
    [`rubix_eqx.CoverageError`][] if fewer than 2 pixels are left."""
    beta = velocity_margin / C_KM_S
    d_plus = math.sqrt((1 + beta) / (1 - beta))
    medium_ssp = ssp_in_medium(ssp, telescope.medium)
    ssp_edges = pixel_edges(np.asarray(medium_ssp.wavelength, np.float64))
    lo, hi = ssp_edges[0] * (1 + redshift) * d_plus, ssp_edges[-1] * (1 + redshift) / d_plus
    for _ in range(8):  # the lattice (and its LSF margin) follows the cropped grid
        edges = pixel_edges(np.asarray(telescope.wavelength, np.float64))
        keep = (edges[:-1] >= lo) & (edges[1:] <= hi)
        if keep.sum() < 2:
            raise CoverageError(
                f"At redshift {redshift:g} the SSP grid covers {lo:.1f}-{hi:.1f} Å observed "
                f"(with the velocity{' and LSF' if lsf else ''} margin), which leaves fewer "
                f"than 2 pixels of telescope {telescope.name!r}."
            )
        if not keep.all():
            keep_j = jnp.asarray(np.nonzero(keep)[0])
            telescope = telescope.replace(
                wavelength=telescope.wavelength[keep_j], lsf_fwhm=telescope.lsf_fwhm[keep_j]
            )
        if not lsf:
            return telescope
        pipe = Pipeline(
            telescope, ssp, allow_sharper_lsf=True, psf=False, aperture=False,
            oversample=oversample, velocity_margin=velocity_margin,
        )  # fmt: skip
        try:
            pipe.check_coverage(float(redshift))
            return telescope
        except CoverageError:
            covered = pipe.covered_range(float(redshift))
            lo, hi = max(lo, covered[0]), min(hi, covered[1])
    raise CoverageError(f"crop_to_coverage: no stable crop of telescope {telescope.name!r}.")


def _particle_sums(
    galaxy: Galaxy, pipeline: Pipeline, observation: Observation, speed_bound: float
) -> tuple[Array, dict[str, Array]]:
    """The work cube of these particles and the diagnostic sums (per device if the
    particles are sharded); line-of-sight speeds must stay below `speed_bound` km/s for
    the histogram engine."""
    tel = pipeline.telescope
    galaxy = galaxy.checked()
    n_spaxels = tel.n_x * tel.n_y
    grid = pipeline.grid
    engine = pipeline.engine_for(galaxy.n_particles, speed_bound)
    if engine == "histogram":
        chunk = pipeline.chunk_size or 4096
    else:
        chunk = pipeline.chunk_size or auto_chunk_size(galaxy.n_particles, grid.n_work)
    # Only read for an empty galaxy: one zero-mass particle of valid age and metallicity.
    zero = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), galaxy)
    fill = eqx.tree_at(lambda g: (g.age, g.metallicity), zero, (1.0, 0.019))
    chunks = chunked(galaxy, chunk, fill)

    def terms_fn(chunk):
        chunk_galaxy, valid = chunk
        terms, flags = pipeline.particle_terms(chunk_galaxy, observation)
        # Particles a shifted last window repeats (and padding) carry no flux.
        terms = eqx.tree_at(lambda t: t.amplitude, terms, jnp.where(valid, terms.amplitude, 0))
        mass = chunk_galaxy.mass
        clipped, outside = flags["clipped"] & valid, flags["outside"] & valid
        return terms, {
            "n_clipped": jnp.sum(clipped),
            "clipped_mass": jnp.sum(jnp.where(clipped, mass, 0)),
            "n_outside": jnp.sum(outside),
            "outside_mass": jnp.sum(jnp.where(outside, mass, 0)),
            "max_speed": jnp.max(jnp.where(valid, jnp.abs(flags["v_los"]), 0)),
        }

    if engine == "histogram":
        systemic = jnp.log1p(observation.redshift.astype(grid.templates.dtype)) / grid.log_step
        n_shift = n_shift_bins(grid, speed_bound)
        work, sums = histogram_cube(chunks, terms_fn, grid, n_spaxels, systemic, n_shift)
        work = eqx.error_if(
            work,
            sums["max_speed"] > speed_bound,
            "A particle's line-of-sight speed exceeds Pipeline(velocity_margin=...): "
            "raise the margin, or use engine='direct'.",
        )
    else:
        work, sums = direct_cube(chunks, terms_fn, grid, n_spaxels)
    # `max_` entries are checked above, not summed over devices.
    return work, {k: v for k, v in sums.items() if not k.startswith("max_")}


@eqx.filter_jit
def _forward(
    pipeline: Pipeline,
    galaxy: Galaxy,
    observation: Observation,
    key: PRNGKeyArray | None,
    speed_bound: float | None = None,
) -> Cube:
    tel = pipeline.telescope
    observation = observation.checked()
    grid = pipeline.grid
    # A sum over particles: on each device for its own particles when they are sharded
    # (rubix_eqx.sharding), then one all-reduce of the work cube and the diagnostic sums.
    bound = pipeline.velocity_margin if speed_bound is None else speed_bound
    work, sums = sum_over_particles(_particle_sums, galaxy, pipeline, observation, bound)
    n_lsf_clipped = jnp.asarray(0)
    lsf_fwhm = None
    if pipeline.lsf is not None:
        work = pipeline.lsf(work, observation.redshift)
        n_lsf_clipped = pipeline.lsf.n_clipped(observation.redshift)
        applied = pipeline.lsf.applied_fwhm(observation.redshift)
        lsf_fwhm = jnp.interp(tel.wavelength, pipeline.lsf.wavelength, applied)
    flux = grid.to_telescope(work).reshape(tel.n_x, tel.n_y, tel.n_wave)
    if pipeline.psf is not None:
        flux = pipeline.psf(flux)
    variance = jnp.zeros_like(flux)
    if pipeline.noise is not None:
        if key is None:
            raise ValueError("This pipeline has a noise stage: pass `key=jax.random.key(...)`.")
        flux, variance = pipeline.noise(flux, tel.wavelength, key)
    mask = jnp.ones((tel.n_x, tel.n_y), bool)
    if pipeline.aperture is not None:
        flux, variance = pipeline.aperture(flux, variance)
        mask = pipeline.aperture.mask
    diag = diagnostics(galaxy, sums, n_lsf_clipped)
    return Cube(
        flux=flux,
        variance=variance,
        wavelength=tel.wavelength,
        mask=mask,
        diagnostics=diag,
        redshift=observation.redshift,
        spaxel_size=tel.spaxel_size,
        ra=observation.ra,
        dec=observation.dec,
        flux_unit=pipeline.flux_unit,
        wavelength_sampling=tel.sampling,
        telescope=tel.name,
        lsf_fwhm=lsf_fwhm,
        medium=tel.medium,
    )


def diagnostics(galaxy: Galaxy, sums: dict[str, Array], n_lsf_clipped) -> Diagnostics:
    total = jnp.sum(galaxy.mass)
    safe = jnp.where(total > 0, total, 1)
    return Diagnostics(
        n_particles=jnp.asarray(galaxy.n_particles),
        n_clipped=sums["n_clipped"],
        clipped_mass_fraction=sums["clipped_mass"] / safe,
        n_outside=sums["n_outside"],
        outside_mass_fraction=sums["outside_mass"] / safe,
        n_lsf_clipped=n_lsf_clipped,
    )


def _report(diag: Diagnostics) -> None:
    """Log clipping, and warn when nothing falls in the field (eager calls only)."""
    values = [
        concrete(x)
        for x in (diag.n_particles, diag.n_clipped, diag.clipped_mass_fraction, diag.n_outside)
    ]
    if any(v is None for v in values):
        return
    n, n_clipped, clipped_fraction, n_outside = values
    if n_clipped > 0:
        logger.warning(
            "%d of %d particles (%.3g%% of the mass) lie outside the SSP grid in age or "
            "metallicity and were clipped to its edge (by design).",
            n_clipped, n, 100 * clipped_fraction,
        )  # fmt: skip
    n_lsf = concrete(diag.n_lsf_clipped)
    if n_lsf is not None and n_lsf > 0:
        logger.warning(
            "The telescope's LSF is sharper than the SSP templates over %d lattice bins; "
            "the extra broadening was clipped to 0 there (allow_sharper_lsf=True).",
            n_lsf,
        )
    if n > 0 and n_outside == n:
        warnings.warn(
            f"All {int(n)} particles lie outside the field of view: the cube is zero.",
            FieldWarning,
            stacklevel=3,
        )
