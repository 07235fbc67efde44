"""A smooth single-population spectrum model for fitting: one SSP (bilinear in log age,
log Z) with a Gaussian line-of-sight velocity distribution applied analytically in
Fourier space on the ln λ lattice (as pPXF does, Cappellari 2017), then the pipeline's
own cube stages (LSF, rebinning, any stage added) as they act on one spectrum.

The LOSVD is Gauss–Hermite (van der Marel & Franx 1993):
L(v) = exp(−y²/2)/(σ√2π) [1 + h3 H3(y) + h4 H4(y)], y = (v − V)/σ, with the normalised
Hermite polynomials H3(y) = (2√2 y³ − 3√2 y)/√6 and H4(y) = (4y⁴ − 12y² + 3)/√24
(H_n = physicists' Hermite / √(2ⁿ n!)). Since exp(−y²/2) H_n(y) is an eigenfunction of the
Fourier transform with eigenvalue (−i)ⁿ (for ∫ e^{−iωy} ... dy), the transform of L on the
lattice is exp(−iωs − ω²σ²/2) [1 + i h3 H3(ωσ) + h4 H4(ωσ)] (s, σ in lattice bins,
ω = 2πν): the h3 term is imaginary and odd in ω, the h4 term real and even. With
h3 = h4 = 0 it is the Gaussian's transform."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

from .._compile import jit
from .._observation import Observation
from .._pipeline import Pipeline
from .._stages._lsf import LSF
from .._stages._protocol import AbstractCubeStage, CubeState, FitModelError, Scene
from .._units import C_KM_S, dimming_constant
from ..ssp import cubic_weights, ssp_weights, SSPGrid


def losvd_transform(nu, shift, sigma, h3=0.0, h4=0.0):
    """The Fourier transform of the Gauss–Hermite LOSVD at frequencies `nu` (cycles per
    lattice bin; numpy's rfft convention e^{−2πiνk}), centre `shift` and dispersion
    `sigma` in lattice bins (see the module docstring)."""
    w = 2 * jnp.pi * nu * sigma
    gauss = jnp.exp(-2j * jnp.pi * nu * shift - 0.5 * w**2)
    w2 = w * w
    herm3 = (2 * w2 - 3) * w * (math.sqrt(2.0) / math.sqrt(6.0))
    herm4 = (4 * w2 * w2 - 12 * w2 + 3) / math.sqrt(24.0)
    return gauss * (1 + 1j * h3 * herm3 + h4 * herm4)


class SpectrumModel(eqx.Module):
    """`model(log_age, log_z, velocity, dispersion, h3=0, h4=0)` → flux per M☉ formed (in the
    cube's `flux_unit` erg s⁻¹ cm⁻² Å⁻¹) on the telescope grid, for a population at the
    observation's redshift and distance.

    Arguments of the call: `log_age` = log10(age / Gyr), `log_z` = log10 Z, `velocity`
    (km/s, line of sight, relative to the systemic redshift), `dispersion` (km/s,
    σ of the LOSVD), `h3`, `h4` (its Gauss–Hermite moments, as pPXF's; 0: Gaussian). Ages
    and Z are clipped to the grid (as in the pipeline). `model.templates(velocity,
    dispersion, h3, h4)` gives every template of the grid through the same LOSVD and
    stages, `(n_age·n_Z, n_wave)` in the grid's (age, Z) row-major order.

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
    response: Float[Array, "n_wave n_band"] | None  # the stages as a banded matrix
    response_start: Int[Array, " n_wave"] | None  # lattice bin of response[:, 0]
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
        self.response, self.response_start = stage_response(
            self.stages, self._scene(), grid.n_work, dtype
        )

    def _mixed_ft(self, log_age, log_z):
        age, metallicity = jnp.reshape(10.0**log_age, (1,)), jnp.reshape(10.0**log_z, (1,))
        if self.interpolation == "cubic":
            weights, _ = cubic_weights(self.ssp, age, metallicity)
            return weights[0].astype(self.template_ft.dtype) @ self.template_ft
        w = ssp_weights(self.ssp, age, metallicity)
        return jnp.einsum(
            "k,kf->f", w.weight[0].astype(self.template_ft.dtype), self.template_ft[w.index[0]]
        )

    def mixing_weights(self, log_age, log_z) -> Float[Array, "n n_template"]:
        """The weights of every template (flat (age, Z) order) in the model's
        interpolation at `log_age` = log10(age/Gyr), `log_z` = log10 Z, shape (n,): the
        model at (log_age, log_z) is `mixing_weights @ templates(...)` (the LOSVD and the
        stages are linear)."""
        age, metallicity = 10.0**log_age, 10.0**log_z
        if self.interpolation == "cubic":
            return cubic_weights(self.ssp, age, metallicity)[0]
        w = ssp_weights(self.ssp, age, metallicity)
        n = age.shape[0]
        dense = jnp.zeros((n, self.template_ft.shape[0]), w.weight.dtype)
        return dense.at[jnp.arange(n)[:, None], w.index].add(w.weight)

    def _broaden(self, mixed, velocity, dispersion, h3, h4) -> Float[Array, " n_work"]:
        grid = self.pipeline.grid
        dtype = grid.templates.dtype
        nu = jnp.arange(self.template_ft.shape[1], dtype=dtype) / self.length
        shift = self.fraction + jnp.arctanh(velocity / C_KM_S) / grid.log_step
        sigma = dispersion / C_KM_S / grid.log_step
        losvd = losvd_transform(nu, shift, sigma, h3, h4)
        spectrum = jnp.fft.irfft(mixed * losvd, n=self.length)
        return spectrum[self.pad : self.pad + grid.n_work].astype(dtype)

    def _scene(self) -> Scene:
        return Scene(self.observation, self.pipeline.telescope, None, self.pipeline.flux_unit)

    def _observe(self, work) -> Float[Array, " n_wave"]:
        if self.response is None:
            return apply_stages(self.stages, self._scene(), work) * self.scale
        # one gather of n_wave lattice bins per band column: no (n_wave, n_band) window is
        # materialised (under vmap over templates and spaxels it would be GBs)
        out = self.response[:, 0] * work[self.response_start]
        for k in range(1, self.response.shape[1]):
            out = out + self.response[:, k] * work[self.response_start + k]
        return out * self.scale

    def lattice(
        self, log_age, log_z, velocity, dispersion, h3=0.0, h4=0.0
    ) -> Float[Array, " n_work"]:
        """The broadened, shifted spectrum on the observed lattice (before the LSF)."""
        return self._broaden(self._mixed_ft(log_age, log_z), velocity, dispersion, h3, h4)

    def __call__(
        self, log_age, log_z, velocity, dispersion, h3=0.0, h4=0.0
    ) -> Float[Array, " n_wave"]:
        return self._observe(self.lattice(log_age, log_z, velocity, dispersion, h3, h4))

    def templates(self, velocity, dispersion, h3=0.0, h4=0.0) -> Float[Array, "n_template n_wave"]:
        """Every template of the grid (rows in (age, Z) row-major order, as
        `SSPGrid.flux.reshape(-1, n_wave)`) through the LOSVD and the stages, per M☉
        formed."""
        one = lambda ft: self._observe(self._broaden(ft, velocity, dispersion, h3, h4))
        return jax.vmap(one)(self.template_ft)


def apply_stages(stages, scene, work) -> Float[Array, " n_wave"]:
    """`stages` acting on one lattice spectrum `work` → the spectrum on the pixels."""
    cube = CubeState(
        flux=work[None, :],
        variance=jnp.zeros((), work.dtype),
        mask=jnp.ones((1, 1), bool),
        lsf_fwhm=None,
        diagnostics={},
        on_lattice=True,
    )
    for stage in stages:
        cube = stage(cube, scene)
    return cube.flux[0, 0]


@jit
def _responses(stages, scene, offset, n_work, probe, block: int):
    """The stages' response to unit spectra at lattice bins offset … offset + block − 1
    (rows past n_work get `probe`): one compilation for every block."""

    def one(i):
        unit = jax.nn.one_hot(i, n_work, dtype=probe.dtype)
        return apply_stages(stages, scene, jnp.where(i < n_work, unit, probe))

    return jax.vmap(one)(offset + jnp.arange(block))


def stage_response(stages, scene, n_work: int, dtype, block: int = 256):
    """The stages as a banded matrix (`response[j, k]` = pixel j's weight of lattice bin
    `start[j] + k`), from their response to every unit spectrum (vmapped in blocks), when
    they are linear (as the LSF and the rebinning are; checked on a random spectrum): the
    model then applies one small gather-and-sum instead of the stages, so a solver that
    traces the model many times compiles quickly. `(None, None)` for stages that are not
    linear."""
    probe = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, n_work), dtype)
    blocks = [
        np.asarray(_responses(stages, scene, jnp.asarray(offset), n_work, probe, block), np.float64)
        for offset in range(0, n_work + 1, block)  # the last block holds ≥ 1 probe row
    ]
    rows = np.concatenate(blocks)
    columns, direct = rows[:n_work], rows[n_work]  # (n_work, n_wave), (n_wave,)
    nonzero = columns != 0
    if not nonzero.any(axis=0).all() or not np.all(np.isfinite(rows)):
        return None, None
    lo = np.argmax(nonzero, axis=0)
    hi = n_work - 1 - np.argmax(nonzero[::-1], axis=0)
    width = int(np.max(hi - lo + 1))
    start = np.clip(lo, 0, n_work - width)
    index = start[:, None] + np.arange(width)
    response = np.take_along_axis(columns.T, index, axis=1)
    banded = np.sum(response * np.asarray(probe, np.float64)[index], axis=1)
    tol = 1e-9 if dtype == jnp.float64 else 1e-4
    if not np.allclose(banded, direct, rtol=tol, atol=tol * np.max(np.abs(direct))):
        return None, None
    return jnp.asarray(response, dtype), jnp.asarray(start, jnp.int32)


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
