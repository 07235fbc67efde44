"""`Pipeline`: star particles → IFU cube, one jitted, differentiable call."""

import dataclasses
import logging
import math
import warnings
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ._checks import concrete
from ._compile import jit
from ._cube import Cube, Diagnostics
from ._engine import AbstractEngine, chunked, ENGINES, line_cube
from ._observation import Observation
from ._rebin import pixel_edges
from ._spectral_grid import SpectralGrid
from ._stages._build import telescope_stages
from ._stages._dust import AbstractDust
from ._stages._orient import rotation_matrix
from ._stages._protocol import (
    AbstractCubeStage,
    AbstractLineStage,
    AbstractParticleStage,
    AbstractSpectraStage,
    AbstractStage,
    CubeState,
    Particles,
    Scene,
)
from ._stages._spectra import CoverageError, ssp_in_medium
from ._units import C_KM_S
from .galaxy import Galaxy, Gas
from .sharding import sum_over_particles
from .ssp import SSPGrid
from .telescope import Telescope


logger = logging.getLogger("rubix_eqx")


class FieldWarning(UserWarning):
    """No particle of the galaxy falls inside the field of view."""


_DOMAIN_ORDER = {"lattice": 0, "rebin": 1, "pixels": 2}


class Pipeline(eqx.Module):
    """Turns a [`rubix_eqx.Galaxy`][] and an [`rubix_eqx.Observation`][] into a
    [`rubix_eqx.Cube`][]: an ordered tuple of stages plus an engine
    (docs/architecture.md).

    Default stages, in order: [`rubix_eqx.Orient`][] (inclination, position angle), a
    deposit ([`rubix_eqx.CICDeposit`][]: projection with d_A, bilinear weights), the
    spectra stage [`rubix_eqx.Spectra`][] (SSP interpolation, Doppler shift, d_L
    dimming, on the ln λ lattice of a [`rubix_eqx.SpectralGrid`][]); then the engine's
    sum over particles; then [`rubix_eqx.LSF`][] (on the lattice), [`rubix_eqx.Rebin`][]
    (onto the telescope pixels), [`rubix_eqx.PSFConvolution`][] (every λ slice), noise
    (with the variance it used) and [`rubix_eqx.Aperture`][] (fibre-bundle footprint).
    Call it as `pipeline(galaxy, observation, key=key)`.

    **Attributes:** `telescope`, `ssp`, `stages` (the tuple), `engine` (an
    [`rubix_eqx.AbstractEngine`][]), `flux_unit`.
    """

    telescope: Telescope
    ssp: SSPGrid
    stages: tuple[AbstractStage, ...]
    engine: AbstractEngine
    flux_unit: float = eqx.field(static=True)

    def __init__(
        self,
        telescope: Telescope,
        ssp: SSPGrid,
        *,
        stages: Sequence | None = None,
        engine: AbstractEngine | str = "auto",
        chunk_size: int | None = None,
        flux_unit: float = 1e-20,
        **switches,
    ):
        """**Arguments:**

        - `telescope`, `ssp`: the instrument and the SSP grid.
        - `stages`: the stages, in order (particle stages, one spectra stage, cube
          stages with the lattice ones before [`rubix_eqx.Rebin`][] and the pixel ones
          after); default: the telescope's, from the switches below. To add a stage to
          the defaults: `Pipeline(tel, ssp, stages=rx.telescope_stages(tel, ssp) + (...))`
          or `pipeline.with_stage(stage, after=rx.LSF)`.
        - `engine`: an engine, or `"direct"`, `"histogram"`, `"sparse"`, `"auto"` (default:
          the fastest for the sizes, by a cost model measured on CPU; see
          `rubix_eqx._engine`). All are exact, except the histogram engine's dust (≤ 1e-5 of the
          unattenuated cube, `HistogramEngine(dust_rtol=...)`).
        - `chunk_size`: particles per scan step of a named engine (default: chosen from
          the sizes).
        - `flux_unit`: the cube's unit in erg s⁻¹ cm⁻² Å⁻¹ (default 1e-20).

        Switches of the default stages ([`rubix_eqx.telescope_stages`][]; not with
        `stages=`):

        - `deposit`: `"cic"` (bilinear, default), `"nearest"`, `"smoothed"`
          ([`rubix_eqx.SmoothedDeposit`][]`()`: projected cubic-spline kernel of the
          galaxy's `smoothing_length`, 5 × 5 pixels), or a deposit stage.
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
        - `oversample`: working ln λ lattice finer than the finest telescope pixel by
          this factor; default (`None`): the smallest factor making a lattice pixel
          ≤ 45 km/s (MUSE: 1, MaNGA's 69 km/s pixels: 2), which keeps line shapes within
          1 % of the exact reference (docs/physics.md).
        - `velocity_margin`: km/s; the largest line-of-sight speed expected. Used to check
          that the SSP grid covers the telescope range, and as the upper bound of the
          histogram engine's velocity axis (an error for faster particles; with concrete
          velocities the axis is sized from the galaxy itself, see `speed_bound`).
        - `emission_lines`: `False` (default) or `True` for [`rubix_eqx.EmissionLines`][]
          with its defaults (or an `EmissionLines`): the nebular lines of the `gas` passed
          when called.
        - `dust`: `None` (default), `"gas"` for [`rubix_eqx.GasScreen`][] with its
          defaults (the gas metal column in front of each star and gas element, CCM89), or
          a dust stage (e.g. [`rubix_eqx.UniformScreen`][]). Needs `gas=` when called
          (`GasScreen`). One dust component runs on either engine (the histogram one
          through a low-rank expansion of the transmission, error ≤ 1e-5 of the
          unattenuated cube); with `birth_clouds` too, the direct engine.
        - `birth_clouds`: `False` (default), `True` for [`rubix_eqx.BirthCloud`][] with
          its defaults (Charlot & Fall 2000: 0.76 mag more for stars younger than 10 Myr
          and for star-forming gas, τ ∝ λ^−0.7), or a `BirthCloud`; adds to `dust`.
        - `dtype`: float dtype of the templates and the cube (float64 needs x64 enabled).
        """
        if not flux_unit > 0:
            raise ValueError(f"`Pipeline(flux_unit=...)` must be > 0; got {flux_unit}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"`Pipeline(chunk_size=...)` must be >= 1; got {chunk_size}.")
        if stages is None:
            stages = telescope_stages(telescope, ssp, flux_unit=flux_unit, **switches)
        elif switches:
            raise ValueError(
                f"`Pipeline(stages=...)` takes no switches of the default stages; got "
                f"{sorted(switches)}."
            )
        if isinstance(engine, str):
            if engine not in ENGINES:
                raise ValueError(
                    "`Pipeline(engine=...)` must be 'auto', 'direct', 'histogram' or 'sparse'; "
                    f"got {engine!r} (or pass an engine, e.g. rx.DirectEngine())."
                )
            engine = ENGINES[engine](chunk_size)
        self.telescope = telescope
        self.ssp = ssp
        self.stages = _ordered(tuple(stages))
        self.engine = engine
        self.flux_unit = float(flux_unit)

    # -- the stages -------------------------------------------------------------------

    @property
    def spectra(self) -> AbstractSpectraStage:
        """The spectra stage."""
        return next(s for s in self.stages if isinstance(s, AbstractSpectraStage))

    @property
    def grid(self) -> SpectralGrid:
        """The spectra stage's lattice."""
        return self.spectra.grid  # type: ignore[attr-defined]

    @property
    def velocity_margin(self) -> float:
        """km/s: the largest line-of-sight speed the spectra stage covers."""
        return self.spectra.velocity_margin  # type: ignore[attr-defined]

    def stage(self, kind: type) -> AbstractStage | None:
        """The first stage that is an instance of `kind` (e.g. `rx.LSF`), or `None`."""
        return next((s for s in self.stages if isinstance(s, kind)), None)

    def with_stage(
        self, stage: AbstractStage, *, after: type | None = None, before: type | None = None
    ) -> "Pipeline":
        """This pipeline with `stage` inserted after the first stage of kind `after`, or
        before the first of kind `before`; default: last among the stages of its kind
        (a particle stage just before the spectra stage, a cube stage after the last
        cube stage of its `domain` or an earlier one)."""
        stages = list(self.stages)
        anchor = after if after is not None else before
        if anchor is not None:
            found = [i for i, s in enumerate(stages) if isinstance(s, anchor)]
            if not found:
                names = [type(s).__name__ for s in stages]
                raise ValueError(
                    f"`Pipeline.with_stage`: no stage of kind {anchor.__name__} in {names}."
                )
            where = found[0] + (after is not None)
        elif isinstance(stage, AbstractParticleStage):
            where = next(i for i, s in enumerate(stages) if isinstance(s, AbstractSpectraStage))
        else:
            rank = _rank(stage)
            where = max(i + 1 for i, s in enumerate(stages) if _rank(s) <= rank)
        stages.insert(where, stage)
        return dataclasses.replace(self, stages=tuple(stages))

    def without(self, kind: type) -> "Pipeline":
        """This pipeline without its stages of kind `kind` (e.g. `rx.AbstractNoise`)."""
        return dataclasses.replace(
            self, stages=tuple(s for s in self.stages if not isinstance(s, kind))
        )

    # -- eager checks -----------------------------------------------------------------

    def engine_for(self, n_particles: int, speed_bound: float | None = None) -> str:
        """The name of the engine that runs for a galaxy of `n_particles` whose
        line-of-sight speeds are below `speed_bound` km/s (default `velocity_margin`),
        with this pipeline's dust stages (one component each)."""
        bound = self.velocity_margin if speed_bound is None else speed_bound
        n_spaxels = self.telescope.n_x * self.telescope.n_y
        n_dust = sum(isinstance(s, AbstractDust) for s in self.stages)
        return self.engine.resolve(n_particles, n_spaxels, self.grid, bound, n_dust).name

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
        return self.spectra.covered_range(float(redshift))  # type: ignore[attr-defined]

    def check_coverage(self, redshift: float) -> None:
        """Raise [`rubix_eqx.CoverageError`][] if the telescope range is not covered."""
        self.spectra.check_coverage(self.telescope, float(redshift))  # type: ignore[attr-defined]

    @property
    def line_stage(self) -> AbstractLineStage | None:
        """The line stage (gas emission lines), or `None`."""
        return next((s for s in self.stages if isinstance(s, AbstractLineStage)), None)

    def __call__(
        self,
        galaxy: Galaxy | None,
        observation: Observation,
        *,
        gas=None,  # a Gas, or None; checked below with a named error
        key: PRNGKeyArray | None = None,
        speed_bound: float | None = None,
    ) -> Cube:
        """The cube of `galaxy` (star particles; `None` for none) and `gas` (its gas
        elements, drawn by the line stage, e.g. `Pipeline(..., emission_lines=True)`) seen
        as `observation` (jitted; differentiable in every floating field). `key` feeds the
        stochastic stages (noise), if any. `speed_bound` (km/s): the histogram engine's
        velocity axis; default from the galaxy (see `speed_bound`); pass
        `velocity_margin` to share one compilation among galaxies."""
        readers = [type(s).__name__ for s in self.stages if s.reads_gas]
        if gas is not None and not readers:
            raise ValueError(
                "`Pipeline(...)(galaxy, observation, gas=...)`: this pipeline has no line "
                "stage to draw gas with and no stage that reads gas; build it with "
                "`emission_lines=True` (or add `rx.EmissionLines`, `rx.GasScreen`)."
            )
        if gas is not None and not isinstance(gas, Gas):
            raise TypeError(f"`gas` must be a `rubix_eqx.galaxy.Gas`; got {type(gas).__name__}.")
        if gas is None and readers:
            raise ValueError(
                f"`Pipeline(...)(..., gas=None)`: the stages {readers} need `gas=...`."
            )
        if galaxy is None:
            galaxy = _no_stars(self.grid.templates.dtype)
        scene = Scene(observation, self.telescope, key, self.flux_unit, gas)
        for stage in self.stages:
            stage.check_scene(scene)
        if speed_bound is None:
            speed_bound = self.speed_bound(galaxy, observation)
        cube = _forward(self, galaxy, observation, key, float(speed_bound), gas)
        _report(cube.diagnostics)
        return cube


def _no_stars(dtype) -> Galaxy:
    """A galaxy of zero star particles (for a gas-only cube)."""
    return Galaxy(
        position=jnp.zeros((0, 3), dtype), velocity=jnp.zeros((0, 3), dtype),
        mass=jnp.zeros(0, dtype), age=jnp.zeros(0, dtype), metallicity=jnp.zeros(0, dtype),
    )  # fmt: skip


def _rank(stage) -> int:
    """Where a stage's kind runs: 0 particle, 1 spectra or lines, 2 lattice, 3 rebin,
    4 pixels."""
    if isinstance(stage, AbstractParticleStage):
        return 0
    if isinstance(stage, (AbstractSpectraStage, AbstractLineStage)):
        return 1
    if isinstance(stage, AbstractCubeStage):
        return 2 + _DOMAIN_ORDER[stage.domain]
    raise ValueError(
        f"`Pipeline(stages=...)`: {type(stage).__name__} is not a stage of a known kind."
    )


def _ordered(stages: tuple) -> tuple:
    """`stages`, checked for the order of their kinds (named errors)."""
    names = [type(s).__name__ for s in stages]
    ranks = [_rank(s) for s in stages]
    n_spectra = sum(isinstance(s, AbstractSpectraStage) for s in stages)
    n_lines = sum(isinstance(s, AbstractLineStage) for s in stages)
    if n_spectra != 1 or ranks.count(3) != 1 or n_lines > 1:
        raise ValueError(
            "`Pipeline(stages=...)` needs exactly one spectra stage, one rebin stage and at "
            f"most one line stage; got {names}."
        )
    if ranks != sorted(ranks):
        raise ValueError(
            "`Pipeline(stages=...)`: stages must run particle → spectra → lattice → rebin → "
            f"pixels; got {names}."
        )
    return stages


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
    """The lattice cube of these particles and the diagnostic sums (per device if the
    particles are sharded); line-of-sight speeds must stay below `speed_bound` km/s for
    the histogram engine."""
    tel = pipeline.telescope
    galaxy = galaxy.checked()
    scene = Scene(observation, tel, None, pipeline.flux_unit)
    particle_stages = [s for s in pipeline.stages if isinstance(s, AbstractParticleStage)]
    spectra = pipeline.spectra
    # Only read for an empty galaxy: one zero-mass particle of valid age and metallicity.
    zero = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), galaxy)
    fill = eqx.tree_at(lambda g: (g.age, g.metallicity), zero, (1.0, 0.019))
    if zero.smoothing_length is not None:
        fill = eqx.tree_at(lambda g: g.smoothing_length, fill, 1.0)

    def terms_fn(chunk):
        chunk_galaxy, valid = chunk
        particles = Particles(chunk_galaxy)
        for stage in particle_stages:
            particles = stage(particles, scene)
        terms, flags = spectra(particles, scene)
        # Particles a shifted last window repeats (and padding) carry no flux.
        terms = eqx.tree_at(lambda t: t.amplitude, terms, jnp.where(valid, terms.amplitude, 0))
        mass = chunk_galaxy.mass
        sums = {}
        for name, flag in flags.items():
            flag = flag & valid
            sums[f"n_{name}"] = jnp.sum(flag)
            sums[f"{name}_mass"] = jnp.sum(jnp.where(flag, mass, 0))
        v_los = jnp.zeros_like(mass) if particles.v_los is None else particles.v_los
        sums["max_speed"] = jnp.max(jnp.where(valid, jnp.abs(v_los), 0))
        return terms, sums

    dtype = pipeline.grid.templates.dtype
    systemic = jnp.log1p(observation.redshift.astype(dtype)) / pipeline.grid.log_step
    n_spaxels = tel.n_x * tel.n_y
    return pipeline.engine(galaxy, fill, terms_fn, pipeline.grid, n_spaxels, systemic, speed_bound)


def _line_sums(gas: Gas, pipeline: Pipeline, observation: Observation):
    """The lattice cube of the gas elements' emission lines and their diagnostic sums."""
    tel = pipeline.telescope
    lines = pipeline.line_stage
    scene = Scene(observation, tel, None, pipeline.flux_unit)
    particle_stages = [s for s in pipeline.stages if isinstance(s, AbstractParticleStage)]
    # Only read for an empty gas: one valid element without star formation.
    zero = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), gas)
    fill = eqx.tree_at(
        lambda g: (g.metallicity, g.temperature, g.smoothing_length), zero, (0.0134, 1e4, 1.0)
    )

    def terms_fn(chunk):
        chunk_gas, valid = chunk
        particles = Particles(chunk_gas)
        for stage in particle_stages:
            particles = stage(particles, scene)
        terms, flags = lines(particles, scene)
        terms = eqx.tree_at(lambda t: t.flux, terms, jnp.where(valid[:, None], terms.flux, 0))
        return terms, {f"n_gas_{k}": jnp.sum(v & valid) for k, v in flags.items()}

    dtype = pipeline.grid.templates.dtype
    n_lines = len(lines.rest_wavelength)
    # ~2²¹ evaluated bins per chunk (4 deposit entries assumed), between 16 and 4096
    per_element = 4 * n_lines * (2 * lines.half_window + 1)
    size = int(min(max(2 ** int(math.log2(max(2**21 // per_element, 1))), 16), 4096))
    chunks = chunked(gas, size, fill)
    n_spaxels = tel.n_x * tel.n_y
    return line_cube(chunks, terms_fn, n_spaxels, pipeline.grid.n_work, lines.half_window, dtype)


@jit
def _forward(
    pipeline: Pipeline,
    galaxy: Galaxy,
    observation: Observation,
    key: PRNGKeyArray | None,
    speed_bound: float | None = None,
    gas: Gas | None = None,
) -> Cube:
    tel = pipeline.telescope
    observation = observation.checked()
    if gas is not None:
        gas = gas.checked()
    # stages that precompute from the whole scene (e.g. a dust column map from the gas)
    whole = Scene(observation, tel, key, pipeline.flux_unit, gas)
    prepared = tuple(s.prepare(whole) for s in pipeline.stages)
    pipeline = eqx.tree_at(lambda p: p.stages, pipeline, prepared)
    # A sum over particles: on each device for its own particles when they are sharded
    # (rubix_eqx.sharding), then one all-reduce of the work cube and the diagnostic sums.
    bound = pipeline.velocity_margin if speed_bound is None else speed_bound
    work, sums = sum_over_particles(_particle_sums, galaxy, pipeline, observation, bound)
    if gas is not None and pipeline.line_stage is not None:
        line_work, _ = _line_sums(gas, pipeline, observation)
        work = work + line_work
    scene = Scene(observation, tel, key, pipeline.flux_unit)
    cube = CubeState(
        flux=work,
        variance=jnp.zeros((), work.dtype),
        mask=jnp.ones((tel.n_x, tel.n_y), bool),
        lsf_fwhm=None,
        diagnostics={"n_lsf_clipped": jnp.asarray(0)},
        on_lattice=True,
    )
    for stage in pipeline.stages:
        if isinstance(stage, AbstractCubeStage):
            cube = stage(cube, scene)
    return Cube(
        flux=cube.flux,
        variance=jnp.broadcast_to(cube.variance, cube.flux.shape),
        wavelength=tel.wavelength,
        mask=cube.mask,
        diagnostics=diagnostics(galaxy, sums, cube.diagnostics["n_lsf_clipped"]),
        redshift=observation.redshift,
        spaxel_size=tel.spaxel_size,
        ra=observation.ra,
        dec=observation.dec,
        flux_unit=pipeline.flux_unit,
        wavelength_sampling=tel.sampling,
        telescope=tel.name,
        lsf_fwhm=cube.lsf_fwhm,
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
