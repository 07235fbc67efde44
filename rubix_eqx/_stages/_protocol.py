"""The stage protocol: three kinds of stage, one call signature each.

A [`rubix_eqx.Pipeline`][] is an ordered tuple of stages plus an engine:

    particle stages:  Particles  -> Particles       (orient, deposit, ...)
    spectra stage:    Particles  -> SpectralTerms   (SSP weights, Doppler, dimming)
    line stage:       Particles  -> LineTerms       (gas emission lines; optional)
    engine:           SpectralTerms of all particles -> lattice cube (a sum over particles),
                      plus the LineTerms of all gas elements
    cube stages:      CubeState  -> CubeState       (LSF, rebin, PSF, noise, aperture)

Every stage is called as `stage(x, scene)`; the [`rubix_eqx.Scene`][] carries the
observation, the telescope and the PRNG key. Each stage owns its build, its eager checks
(`check_scene(scene)`, run before the jitted call when the values are concrete) and its
diagnostics (it writes them into the data it returns). The pipeline reads no stage's
internals. docs/architecture.md shows how to add a stage.
"""

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._observation import Observation
from ..galaxy import Galaxy, Gas
from ..telescope import Telescope


class Scene(eqx.Module):
    """What every stage may read besides its input.

    **Attributes:**

    - `observation`: the [`rubix_eqx.Observation`][] (redshift, distances, angles).
    - `telescope`: the [`rubix_eqx.Telescope`][].
    - `key`: PRNG key for stochastic stages, or `None`. A stochastic stage draws with
      `key` itself; a second one in the same pipeline must `jax.random.fold_in` a tag.
    - `flux_unit`: the cube's unit, erg s⁻¹ cm⁻² Å⁻¹.
    - `gas`: the [`rubix_eqx.galaxy.Gas`][] of the call, or `None` (read by stages that
      need the whole gas, e.g. a dust screen, in `prepare`).
    """

    observation: Observation
    telescope: Telescope
    key: PRNGKeyArray | None
    flux_unit: float = eqx.field(static=True)
    gas: Gas | None = None


class Particles(eqx.Module):
    """Per-particle data flowing through the particle stages (leading axis n, one chunk).

    **Attributes:**

    - `galaxy`: the [`rubix_eqx.Galaxy`][] star particles, or the
      [`rubix_eqx.galaxy.Gas`][] elements (galaxy frame, as given): the particle stages
      read only what both have (position, velocity, mass).
    - `position`: sky-frame positions (kpc; x West, y North, z away), or `None` before
      orientation.
    - `v_los`: line-of-sight velocity (km/s, positive receding), or `None`.
    - `spaxel_index`, `spaxel_weight`: flat spaxel indices `ix·n_y + iy` and weights of
      each particle's spatial deposit (k entries per particle), or `None`.
    - `luminosity_factor`: per-particle factor on the light (1 = as the SSP says).
    - `attenuation`: (n, n_dust) A_V (mag) of each dust component (one per dust stage,
      e.g. a diffuse screen and birth clouds), or `None` without dust.
    - `attenuation_curve`: (n_dust, n_work) each component's A(λ)/A_V on the observed
      lattice bins, shared by all particles (the dust's frame: the systemic redshift), or
      `None`. The light is × 10^(−0.4 Σ_c `attenuation[:, c]` `attenuation_curve[c]`).
    - `flags`: per-particle booleans reported in the diagnostics (e.g. `"outside"`).
    """

    galaxy: Galaxy | Gas
    position: Float[Array, "n 3"] | None = None
    v_los: Float[Array, " n"] | None = None
    spaxel_index: Int[Array, "n k"] | None = None
    spaxel_weight: Float[Array, "n k"] | None = None
    luminosity_factor: Float[Array, " n"] | None = None
    attenuation: Float[Array, "n n_dust"] | None = None
    attenuation_curve: Float[Array, "n_dust n_work"] | None = None
    flags: dict[str, Bool[Array, " n"]] = eqx.field(default_factory=dict)


class CubeState(eqx.Module):
    """The cube flowing through the cube stages.

    **Attributes:**

    - `flux`: integrated flux per lattice bin, (n_spaxels, n_work), while `on_lattice`;
      then flux density on the telescope pixels, (n_x, n_y, n_wave), in `flux_unit`.
    - `variance`: variance of `flux` (zeros for a noiseless cube).
    - `mask`: (n_x, n_y), `True` for spaxels inside the instrument's footprint.
    - `lsf_fwhm`: the line-spread FWHM (Å) on the telescope pixels, or `None`.
    - `diagnostics`: 0-d counters stages report (e.g. `"n_lsf_clipped"`).
    - `on_lattice`: whether `flux` is still on the ln λ lattice.
    """

    flux: Float[Array, "..."]
    variance: Float[Array, "..."]
    mask: Bool[Array, "n_x n_y"]
    lsf_fwhm: Float[Array, " n_wave"] | None
    diagnostics: dict[str, Int[Array, ""]]
    on_lattice: bool = eqx.field(static=True)


class AbstractStage(eqx.Module):
    """Any stage: `stage(x, scene)`, plus `check_scene(scene)` for eager checks.
    `reads_gas` says whether the stage uses the gas of the call (`scene.gas`)."""

    reads_gas: ClassVar[bool] = False

    @abc.abstractmethod
    def check_scene(self, scene: Scene) -> None:
        """Raise a named error if the stage cannot serve this scene (concrete values;
        called by the pipeline before the jitted call). Most stages have nothing to do."""

    def prepare(self, scene: Scene) -> "AbstractStage":
        """This stage with whatever it precomputes once per call from the whole scene
        (e.g. a dust column map from the gas), before the chunked sums; traced. Default:
        the stage itself."""
        return self


class AbstractParticleStage(AbstractStage):
    """A particle stage: `stage(particles, scene) -> particles`."""

    @abc.abstractmethod
    def __call__(self, particles: Particles, scene: Scene) -> Particles:
        """The particles with this stage's fields set or changed."""


class SpectralTerms(eqx.Module):
    """What the engine sums, per particle (leading axis n): the particle's light is
    Σ_k `template_weight[k]`·template[`template_index[k]`], shifted by `shift +
    fraction` lattice pixels, times `amplitude`, deposited on `spaxel_index` with
    `spaxel_weight` (k entries per particle: 4 for CIC, stencil² for
    [`rubix_eqx.SmoothedDeposit`][]); with dust stages, times 10^(−0.4 `attenuation` @
    `attenuation_curve`) per observed lattice bin."""

    spaxel_index: Int[Array, "n k"]
    spaxel_weight: Float[Array, "n k"]
    template_index: Int[Array, "n 4"]
    template_weight: Float[Array, "n 4"]
    shift: Int[Array, " n"]  # integer part of ln D / Δ (lattice pixels)
    fraction: Float[Array, " n"]  # fractional part
    amplitude: Float[Array, " n"]  # flux_unit · bin per (L☉ per M☉ per bin)
    attenuation: Float[Array, "n n_dust"] | None = None  # A_V per dust component, mag
    attenuation_curve: Float[Array, "n_dust n_work"] | None = None  # A(λ)/A_V per bin


class AbstractSpectraStage(AbstractStage):
    """The spectra stage: `stage(particles, scene) -> (terms, flags)`; owns the ln λ
    lattice (`grid`) the engine sums on."""

    @abc.abstractmethod
    def __call__(
        self, particles: Particles, scene: Scene
    ) -> tuple[SpectralTerms, dict[str, Bool[Array, " n"]]]:
        """Per-particle spectral terms and per-particle flags for the diagnostics."""


class LineTerms(eqx.Module):
    """What the line sum adds, per gas element (leading axis n) and line (axis L): a
    Gaussian of centre `centre` and standard deviation `width` (both in observed-lattice
    bins, bin j spanning [j, j + 1)), integrated over the lattice bins, times `flux`
    (integrated, in flux_unit · Å), deposited on `spaxel_index` with `spaxel_weight`."""

    spaxel_index: Int[Array, "n k"]
    spaxel_weight: Float[Array, "n k"]
    centre: Float[Array, "n L"]
    width: Float[Array, "n L"]
    flux: Float[Array, "n L"]


class AbstractLineStage(AbstractStage):
    """A line stage: `stage(particles, scene) -> (terms, flags)` for gas elements that
    went through the same particle stages as the stars; its lines are added to the stars'
    lattice cube before the cube stages. `half_window` (static) is the number of lattice
    bins each side of a line centre that the sum evaluates."""

    reads_gas: ClassVar[bool] = True
    half_window: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, particles: Particles, scene: Scene
    ) -> tuple[LineTerms, dict[str, Bool[Array, " n"]]]:
        """Per-element line terms and per-element flags."""


class AbstractCubeStage(AbstractStage):
    """A cube stage: `stage(cube, scene) -> cube`.

    `domain` says where it acts: `"lattice"` (before rebinning), `"pixels"` (after), or
    `"rebin"` (the one stage that takes the lattice to the pixels). `for_spectrum()`
    says how the stage enters a single-spectrum model (the fitter's,
    [`rubix_eqx.fit.SpectrumModel`][]): the stage to apply to a spectrum (itself, or a
    variant), `None` if it does not change a spectrum's shape (spatial stages, noise),
    or it raises [`rubix_eqx.FitModelError`][] if it cannot be represented.
    """

    domain: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, cube: CubeState, scene: Scene) -> CubeState:
        """The cube after this stage."""

    @abc.abstractmethod
    def for_spectrum(self) -> "AbstractCubeStage | None":
        """This stage as it acts on one spectrum of exactly shifted populations."""


class FitModelError(ValueError):
    """A pipeline stage cannot be represented in a single-spectrum fit model."""
