"""The spectra stage: each particle's light as a mixture of shifted SSP templates."""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._checks import concrete
from .._medium import convert as convert_medium
from .._spectral_grid import SpectralGrid
from .._units import C_KM_S, dimming_constant
from ..ssp import ssp_weights, SSPGrid
from ..telescope import Telescope
from ._protocol import AbstractSpectraStage, Particles, Scene, SpectralTerms


class CoverageError(ValueError):
    """The telescope's wavelength range, de-redshifted, leaves the SSP grid."""


def log_doppler(redshift, v_los):
    """ln of the total Doppler factor (1+z)·sqrt((1+β)/(1-β)) (relativistic)."""
    return jnp.log1p(redshift) + jnp.arctanh(v_los / C_KM_S)


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


def _cast(x, dtype):
    return None if x is None else x.astype(dtype)


class Spectra(AbstractSpectraStage):
    """Spectra stage: SSP weights (bilinear in log age, log Z; clipped at the grid's
    edges by design, flag `"clipped"`), the relativistic Doppler shift by the systemic
    redshift and the line-of-sight velocity as a shift on the ln λ lattice of `grid`,
    and the dimming by the luminosity distance, mass × 1/(4π d_L²) in the cube's unit
    (times the particles' `luminosity_factor`, if a stage set one).

    **Attributes:**

    - `ssp`: the SSP grid (ages and metallicities of the templates).
    - `grid`: the [`rubix_eqx.SpectralGrid`][] (templates on the lattice).
    - `velocity_margin`: km/s, the largest line-of-sight speed the coverage check
      allows for.
    - `edge_bins`: lattice bins at each end reserved for a lattice stage's kernel (the
      LSF's half-width); the covered range excludes them.
    """

    ssp: SSPGrid
    grid: SpectralGrid
    velocity_margin: float = eqx.field(static=True)
    edge_bins: int = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        telescope: Telescope,
        ssp: SSPGrid,
        *,
        oversample: int,
        margin: int = 0,
        velocity_margin: float = 1000.0,
        dtype=jnp.float32,
    ) -> "Spectra":
        """The stage for `telescope`: `ssp` converted to its medium, on a lattice
        `oversample` times finer than its finest pixel, extended by `margin` bins."""
        if not 0 <= velocity_margin < C_KM_S:
            raise ValueError(
                f"`Pipeline(velocity_margin=...)` must lie in [0, c); got {velocity_margin}."
            )
        medium_ssp = ssp_in_medium(ssp, telescope.medium)
        grid = SpectralGrid.build(medium_ssp, telescope.wavelength, oversample, margin, dtype)
        return cls(ssp=ssp, grid=grid, velocity_margin=float(velocity_margin), edge_bins=margin)

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
        margin = self.edge_bins * self.grid.log_step
        return math.exp(first + margin + lo_excess), math.exp(last - margin - hi_excess)

    def check_coverage(self, telescope: Telescope, redshift: float) -> None:
        """Raise [`rubix_eqx.CoverageError`][] if `telescope`'s range is not covered."""
        low, high = self.grid.shift_range()
        a = math.atanh(self.velocity_margin / C_KM_S)
        if low <= math.log1p(redshift) - a and math.log1p(redshift) + a < high:
            return
        lo, hi = self.covered_range(redshift)
        wave = np.asarray(telescope.wavelength)
        z_lo, z_hi = math.expm1(low + a), math.expm1(high - a)
        raise CoverageError(
            f"Telescope {telescope.name!r} spans {wave[0]:.1f}-{wave[-1]:.1f} Å (observed) "
            f"but at redshift {redshift:g} the SSP grid {self.ssp.name!r} "
            f"({self.grid.rest_range[0]:.1f}-{self.grid.rest_range[1]:.1f} Å rest) covers "
            f"only {lo:.1f}-{hi:.1f} Å observed with a ±{self.velocity_margin:g} km/s velocity "
            f"margin (the whole range is covered for {max(z_lo, 0):.4f} <= z < {z_hi:.4f}). Crop "
            "the telescope with `rubix_eqx.crop_to_coverage(...)`, or change the redshift."
        )

    def check_scene(self, scene: Scene) -> None:
        z = concrete(scene.observation.redshift)
        if z is None:  # traced: checked under jit instead
            return
        redshift = float(z)
        if not np.isfinite(redshift):
            raise ValueError(f"`Observation.redshift` must be finite; got {redshift}.")
        self.check_coverage(scene.telescope, redshift)

    def __call__(
        self, particles: Particles, scene: Scene
    ) -> tuple[SpectralTerms, dict[str, Bool[Array, " n"]]]:
        galaxy, v_los = particles.galaxy, particles.v_los
        if v_los is None or particles.spaxel_index is None or particles.spaxel_weight is None:
            raise ValueError(
                "The spectra stage needs oriented, deposited particles: put `Orient()` and a "
                "deposit stage before it."
            )
        dtype = self.grid.templates.dtype
        weights = ssp_weights(self.ssp, galaxy.age, galaxy.metallicity)
        log_d = log_doppler(scene.observation.redshift.astype(v_los.dtype), v_los)
        low, high = self.grid.shift_range()
        log_d = eqx.error_if(
            log_d,
            (log_d < low) | (log_d >= high),
            "The Doppler shift of some particles (redshift plus line-of-sight velocity) "
            "moves the telescope range outside the SSP grid; see Pipeline.covered_range.",
        )
        shift, fraction = self.grid.shift(log_d)
        d_l = scene.observation.luminosity_distance().astype(galaxy.mass.dtype)
        amplitude: Float[Array, " n"] = galaxy.mass * (dimming_constant(scene.flux_unit) / d_l**2)
        if particles.luminosity_factor is not None:
            amplitude = amplitude * particles.luminosity_factor
        terms = SpectralTerms(
            spaxel_index=particles.spaxel_index,
            spaxel_weight=particles.spaxel_weight.astype(dtype),
            template_index=weights.index,
            template_weight=weights.weight.astype(dtype),
            shift=shift,
            fraction=fraction.astype(dtype),
            amplitude=amplitude.astype(dtype),
            attenuation=_cast(particles.attenuation, dtype),
            attenuation_curve=_cast(particles.attenuation_curve, dtype),
        )
        return terms, dict(particles.flags, clipped=weights.clipped)

