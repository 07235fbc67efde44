"""The emission-line stage: nebular lines of star-forming gas on the ln λ lattice."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._rebin import pixel_edges
from .._spectral_grid import SpectralGrid
from .._units import C_KM_S, dimming_constant, FWHM_PER_SIGMA, L_SUN_ERG_S
from ..physics._emission_lines import (
    line_index,
    line_luminosities,
    LINE_NAMES,
    line_wavelengths,
    line_widths,
    LOG_OI_HALPHA,
)
from ..ssp import SSPGrid
from ._protocol import AbstractLineStage, LineTerms, Particles, Scene
from ._spectra import log_doppler, ssp_in_medium


N_SIGMA = 6.0  # half-width of each line's window, in σ (flux beyond: < 2e-9)
DOPPLER_VARIANCE = 1.0 / 6.0  # pixel², as the stars' lattice interpolation (see rx.LSF)


class EmissionLines(AbstractLineStage):
    """Line stage: the nebular emission lines of star-forming gas, as Gaussians
    integrated over the bins of the observed ln λ lattice the stars are summed on.

    Per gas element (after the same particle stages as the stars: orientation and the
    spatial deposit), the luminosities of [`rubix_eqx.physics.line_luminosities`][]
    (Hα ∝ SFR, Kennicutt & Evans 2012; case-B Balmer ratios; Curti et al. 2020 strong-line
    ratios of the gas O/H; fixed doublet ratios; see docs/physics.md), dimmed by
    1/(4π d_L²), centred at the rest wavelength (in the telescope's medium) times the
    element's total Doppler factor (1+z)·sqrt((1+β)/(1−β)), with the line-of-sight
    dispersion σ² = k T / m_ion + σ_turb² (`line_widths`) as a Gaussian in ln λ
    (σ_ln = σ/c). After a dust stage, each line is dimmed by 10^(−0.4 A_V · A(λ)/A_V) at its
    centre.

    **Resolution.** The lattice holds the stars at the SSP templates' resolution, and
    [`rubix_eqx.LSF`][] adds what is missing to reach the telescope's. So that the
    lines end at σ² = σ_gas² + σ_LSF², each line gets, in quadrature, the templates'
    variance at its rest wavelength (FWHM and native pixel, as the LSF's floor) and the
    stars' Doppler-interpolation variance (`doppler_variance`, 1/6 lattice pixel², as the
    LSF's), minus the 1/12 pixel² its own bin integration adds. Without an LSF stage the
    lines are at the templates' resolution, like the stars.

    **Window.** Each line is evaluated on a static window of ±`half_window` lattice bins
    around its centre, sized for σ_gas ≤ `max_sigma` km/s at 6σ; an emitting element
    with a broader line is an error. Flux falling off the lattice is lost (as for
    stars beyond the telescope range).

    **Attributes:**

    - `lines`: names of the lines drawn (default all of [`rubix_eqx.physics.LINES`][]).
    - `rest_wavelength`: (n_lines,) Å, in the telescope's medium.
    - `floor_variance`: (n_lines,) ln-λ variance added in quadrature (see above).
    - `log_step`, `obs_log_start`, `n_work`: the lattice (of the spectra stage's grid).
    - `turbulent_sigma`: σ_turb, km/s (differentiable).
    - `electron_density`: cm⁻³, for the [OII] and [SII] doublet ratios (0 = low density).
    - `log_oi_halpha`: log [OI]6300/Hα.
    - `max_sigma`: km/s, the broadest σ_gas the window allows.
    - `half_window`: lattice bins each side of a line centre.
    """

    lines: tuple[str, ...] = eqx.field(static=True)
    rest_wavelength: Float[Array, " n_lines"]
    floor_variance: Float[Array, " n_lines"]
    log_step: float = eqx.field(static=True)
    obs_log_start: float = eqx.field(static=True)
    n_work: int = eqx.field(static=True)
    turbulent_sigma: Float[Array, ""]
    electron_density: Float[Array, ""]
    log_oi_halpha: Float[Array, ""]
    max_sigma: float = eqx.field(static=True)
    half_window: int = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        grid: SpectralGrid,
        ssp: SSPGrid,
        medium: str,
        *,
        lines: tuple[str, ...] | None = None,
        turbulent_sigma: float = 10.0,
        electron_density: float = 100.0,
        log_oi_halpha: float = LOG_OI_HALPHA,
        max_sigma: float = 100.0,
        doppler_variance: float = DOPPLER_VARIANCE,
    ) -> "EmissionLines":
        """The stage for the spectra stage's `grid`, the `ssp` grid (its resolution) and
        the telescope's `medium` ("air" or "vacuum"). Defaults: all lines, σ_turb = 10
        km/s, n_e = 100 cm⁻³ (the case-B density of the Balmer ratios)."""
        lines = LINE_NAMES if lines is None else tuple(lines)
        if not lines:
            raise ValueError("`EmissionLines(lines=...)` must name at least one line.")
        columns = [line_index(name) for name in lines]  # named error for unknown lines
        if len(set(lines)) != len(lines):
            raise ValueError(f"`EmissionLines(lines=...)` names a line twice: {lines}.")
        for name, value, low in (
            ("turbulent_sigma", turbulent_sigma, 0.0),
            ("electron_density", electron_density, 0.0),
        ):
            if not (np.isfinite(value) and value >= low):
                raise ValueError(
                    f"`EmissionLines({name}=...)` must be finite and >= 0; got {value}."
                )
        if not (np.isfinite(max_sigma) and max_sigma > 0):
            raise ValueError(f"`EmissionLines(max_sigma=...)` must be > 0 km/s; got {max_sigma}.")
        if not np.isfinite(log_oi_halpha):
            raise ValueError(
                f"`EmissionLines(log_oi_halpha=...)` must be finite; got {log_oi_halpha}."
            )
        rest = np.asarray(line_wavelengths(medium), np.float64)[columns]
        medium_ssp = ssp_in_medium(ssp, medium)
        ssp_wave = np.asarray(medium_ssp.wavelength, np.float64)
        ssp_pixel = np.diff(pixel_edges(ssp_wave))
        ssp_var = (
            np.asarray(medium_ssp.fwhm, np.float64) / FWHM_PER_SIGMA
        ) ** 2 + ssp_pixel**2 / 12
        floor = np.interp(rest, ssp_wave, ssp_var) / rest**2
        floor = floor + (doppler_variance - 1.0 / 12.0) * grid.log_step**2
        widest = math.sqrt((max_sigma / C_KM_S) ** 2 + float(np.max(floor)))
        half_window = int(math.ceil(N_SIGMA * widest / grid.log_step)) + 1
        dtype = jnp.result_type(float)
        return cls(
            lines=lines,
            rest_wavelength=jnp.asarray(rest, dtype),
            floor_variance=jnp.asarray(floor, dtype),
            log_step=float(grid.log_step),
            obs_log_start=float(grid.obs_log_start),
            n_work=int(grid.n_work),
            turbulent_sigma=jnp.asarray(turbulent_sigma, dtype),
            electron_density=jnp.asarray(electron_density, dtype),
            log_oi_halpha=jnp.asarray(log_oi_halpha, dtype),
            max_sigma=float(max_sigma),
            half_window=half_window,
        )

    def check_scene(self, scene: Scene) -> None:
        pass

    def __call__(
        self, particles: Particles, scene: Scene
    ) -> tuple[LineTerms, dict[str, Bool[Array, " n"]]]:
        gas, v_los = particles.galaxy, particles.v_los
        if v_los is None or particles.spaxel_index is None or particles.spaxel_weight is None:
            raise ValueError(
                "The emission-line stage needs oriented, deposited gas: put `Orient()` and a "
                "deposit stage before it."
            )
        columns = jnp.asarray([line_index(name) for name in self.lines])
        luminosity = line_luminosities(
            gas.sfr,
            gas.metallicity,
            electron_density=self.electron_density,
            log_oi_halpha=self.log_oi_halpha,
            unit=L_SUN_ERG_S,  # 1e41 erg/s would overflow float32
        )[:, columns]  # L☉
        sigma = line_widths(gas.temperature, self.turbulent_sigma)[:, columns]  # km/s
        emitting = gas.sfr > 0
        too_broad = emitting & jnp.any(sigma > self.max_sigma, axis=1)
        sigma = eqx.error_if(
            sigma,
            too_broad,
            f"A star-forming gas element's line is broader than EmissionLines(max_sigma="
            f"{self.max_sigma:g}) km/s (hot star-forming gas, or a large turbulent_sigma): "
            "raise max_sigma.",
        )
        dtype = gas.mass.dtype
        log_d = log_doppler(scene.observation.redshift.astype(dtype), v_los)
        centre = jnp.log(self.rest_wavelength)[None, :] + log_d[:, None] - self.obs_log_start
        width = jnp.sqrt((sigma / C_KM_S) ** 2 + self.floor_variance[None, :])
        d_l = scene.observation.luminosity_distance().astype(dtype)
        flux = luminosity * (dimming_constant(scene.flux_unit) / d_l**2)
        if particles.attenuation is not None:  # dust: A(λ)/A_V of each component at each centre
            bins = jnp.arange(self.n_work, dtype=dtype) + 0.5
            at_centre = jax.vmap(lambda curve: jnp.interp(centre / self.log_step, bins, curve))
            ratio = at_centre(particles.attenuation_curve.astype(dtype))  # (n_dust, n, n_lines)
            a_line = jnp.einsum("nc,cnl->nl", particles.attenuation.astype(dtype), ratio)
            flux = flux * 10.0 ** (-0.4 * a_line)
        terms = LineTerms(
            spaxel_index=particles.spaxel_index,
            spaxel_weight=particles.spaxel_weight,
            centre=centre / self.log_step,
            width=width / self.log_step,
            flux=flux,
        )
        return terms, dict(particles.flags, emitting=emitting)
