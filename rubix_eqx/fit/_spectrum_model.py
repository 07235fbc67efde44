"""A smooth single-population spectrum model for fitting: one SSP (bilinear in log age,
log Z) with a Gaussian line-of-sight velocity distribution applied analytically in
Fourier space on the ln λ lattice (as pPXF does, Cappellari 2017), then the pipeline's
own cube stages (LSF, rebinning, any stage added) as they act on one spectrum."""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from .._observation import Observation
from .._pipeline import Pipeline
from .._stages._lsf import LSF
from .._stages._protocol import AbstractCubeStage, CubeState, FitModelError, Scene
from .._units import C_KM_S, dimming_constant
from ..ssp import cubic_weights, ssp_weights, SSPGrid


class SpectrumModel(eqx.Module):
    """`model(log_age, log_z, velocity, dispersion)` → flux per M☉ formed (in the
    cube's `flux_unit` erg s⁻¹ cm⁻² Å⁻¹) on the telescope grid, for a population at the
    observation's redshift and distance.

    Arguments of the call: `log_age` = log10(age / Gyr), `log_z` = log10 Z, `velocity`
    (km/s, line of sight, relative to the systemic redshift), `dispersion` (km/s,
    Gaussian σ of the LOSVD). Ages and Z are clipped to the grid (as in the pipeline).

    After the LOSVD, the model applies the pipeline's cube stages as each acts on one
    spectrum (`stage.for_spectrum()`, [`rubix_eqx.AbstractCubeStage`][]): the LSF
    without its Doppler-interpolation term (the Fourier-space shift is exact), the
    rebinning onto the pixels, and any stage a user added; spatial stages and noise
    drop out; a stage that cannot act on one spectrum raises
    [`rubix_eqx.FitModelError`][]. The line spread is the telescope's declared
    `lsf_fwhm` (the total on the pixels), so the model has the declared resolution
    whatever made the cube; nothing is tuned to our own cubes.
    """

    ssp: SSPGrid
    pipeline: Pipeline
    stages: tuple[AbstractCubeStage, ...]
    observation: Observation
    template_ft: Complex[Array, "n_template n_freq"]
    redshift: Float[Array, ""]
    scale: Float[Array, ""]  # dimming: flux_unit erg/s/cm² per (L☉ per M☉)
    fraction: Float[Array, ""]  # fractional part of the systemic shift, pixels
    pad: int = eqx.field(static=True)
    length: int = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)

    def __init__(
        self,
        pipeline: Pipeline,
        observation: Observation,
        max_velocity: float = 1500.0,
        lsf_fwhm=None,
        interpolation: str = "bilinear",
    ):
        """**Arguments:** `pipeline` (its grid, LSF and rebinning), `observation` (redshift,
        distance), `max_velocity` (km/s, the largest |V| the model must represent), and
        `lsf_fwhm` (Å at the telescope's pixels, e.g. a cube's recorded `lsf_fwhm`: the
        line spread to model instead of the telescope's declared one), `interpolation`
        in (log age, log Z): `"bilinear"` (default; the pipeline's own, exact on the
        grid's cells) or `"cubic"` (C¹, smooth gradients across nodes; interpax, see
        [`rubix_eqx.ssp.cubic_weights`][])."""
        if interpolation not in ("bilinear", "cubic"):
            raise ValueError(
                "`SpectrumModel(interpolation=...)` must be 'bilinear' or 'cubic'; got "
                f"{interpolation!r}."
            )
        self.interpolation = interpolation
        grid = pipeline.grid
        z = float(observation.redshift)
        s_sys = math.log1p(z) / grid.log_step
        j_sys = math.floor(s_sys)
        self.pad = int(math.ceil(math.atanh(max_velocity / C_KM_S) / grid.log_step)) + 8
        n = grid.n_work + 2 * self.pad
        self.length = int(64 * math.ceil(n / 64))
        # window[q] = rest lattice bin q - pad - j_sys (zero outside the templates)
        templates = np.asarray(grid.templates, np.float64)
        cols = np.arange(self.length) - self.pad - j_sys - grid.template_offset
        inside = (cols >= 0) & (cols < templates.shape[1])
        window = np.where(
            inside[None, :], templates[:, np.clip(cols, 0, templates.shape[1] - 1)], 0.0
        )
        dtype = grid.templates.dtype
        complex_dtype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
        self.template_ft = jnp.asarray(np.fft.rfft(window, axis=1), complex_dtype)
        self.ssp = pipeline.ssp
        self.stages = spectrum_stages(pipeline, lsf_fwhm)
        self.observation = observation
        self.pipeline = pipeline
        self.redshift = jnp.asarray(z, dtype)
        d_l = float(observation.luminosity_distance())
        self.scale = jnp.asarray(dimming_constant(pipeline.flux_unit) / d_l**2, dtype)
        self.fraction = jnp.asarray(s_sys - j_sys, dtype)

    def lattice(self, log_age, log_z, velocity, dispersion) -> Float[Array, " n_work"]:
        """The broadened, shifted spectrum on the observed lattice (before the LSF)."""
        grid = self.pipeline.grid
        dtype = grid.templates.dtype
        age, metallicity = jnp.reshape(10.0**log_age, (1,)), jnp.reshape(10.0**log_z, (1,))
        if self.interpolation == "cubic":
            weights, _ = cubic_weights(self.ssp, age, metallicity)
            mixed = weights[0].astype(self.template_ft.dtype) @ self.template_ft
        else:
            w = ssp_weights(self.ssp, age, metallicity)
            mixed = jnp.einsum(
                "k,kf->f", w.weight[0].astype(self.template_ft.dtype), self.template_ft[w.index[0]]
            )
        nu = jnp.arange(self.template_ft.shape[1], dtype=dtype) / self.length
        shift = self.fraction + jnp.arctanh(velocity / C_KM_S) / grid.log_step
        sigma = dispersion / C_KM_S / grid.log_step
        losvd = jnp.exp(-2j * jnp.pi * nu * shift - 2 * (jnp.pi * nu) ** 2 * sigma**2)
        spectrum = jnp.fft.irfft(mixed * losvd, n=self.length)
        return spectrum[self.pad : self.pad + grid.n_work].astype(dtype)

    def __call__(self, log_age, log_z, velocity, dispersion) -> Float[Array, " n_wave"]:
        work = self.lattice(log_age, log_z, velocity, dispersion)
        scene = Scene(self.observation, self.pipeline.telescope, None, self.pipeline.flux_unit)
        cube = CubeState(
            flux=work[None, :],
            variance=jnp.zeros((), work.dtype),
            mask=jnp.ones((1, 1), bool),
            lsf_fwhm=None,
            diagnostics={},
            on_lattice=True,
        )
        for stage in self.stages:
            cube = stage(cube, scene)
        return cube.flux[0, 0] * self.scale


def spectrum_stages(pipeline: Pipeline, lsf_fwhm=None) -> tuple[AbstractCubeStage, ...]:
    """The pipeline's cube stages as they act on one exactly shifted spectrum; with
    `lsf_fwhm` (Å at the telescope pixels), the LSF set to it."""
    stages = []
    for stage in pipeline.stages:
        if not isinstance(stage, AbstractCubeStage):
            continue
        one = stage.for_spectrum()
        if one is None:
            continue
        if not isinstance(one, AbstractCubeStage):
            raise FitModelError(
                f"{type(stage).__name__}.for_spectrum() must return a cube stage or None; "
                f"got {type(one).__name__}."
            )
        if isinstance(one, LSF) and lsf_fwhm is not None:
            one = one.with_fwhm(lsf_fwhm)
        stages.append(one)
    return tuple(stages)
