"""Line-spread function: Gaussian broadening of the observed ln λ lattice."""

import dataclasses
import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc
from jaxtyping import Array, Bool, Float, Int

from .._checks import concrete
from .._rebin import pixel_edges
from .._spectral_grid import lattice_geometry, SpectralGrid
from .._units import FWHM_PER_SIGMA
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._protocol import AbstractCubeStage, CubeState, Scene


_BIN_VARIANCE = 1.0 / 12.0  # variance (pixel²) of a uniform distribution over one bin
_MIN_S2 = 1e-6  # pixel²; below this the Gaussian part is an exact identity
_MIN_WIDE = 1e-3  # pixel²; below this the kernel gets no wide component
# Excess fourth cumulants (pixel⁴) the numerics give a line, with the opposite sign:
CUBIC_FOURTH_CUMULANT = 0.3  # Keys cubic kernel, once onto and once off the lattice
HAT_FOURTH_CUMULANT = 1.0 / 60.0  # linear Doppler interpolation (triangle, mean over t)
BIN_FOURTH_CUMULANT = 1.0 / 120.0  # the kernel's own integration over a lattice bin


class ResolutionError(ValueError):
    """The telescope's line-spread function is sharper than the SSP templates'."""


class LSF(AbstractCubeStage):
    """Cube stage (lattice): Gaussian line-spread function on the observed ln λ lattice.

    Applied to `work`, the (n_spaxels, n_work) integrated flux per bin on the observed
    lattice of a [`rubix_eqx.SpectralGrid`][], before the rebinning onto the telescope
    pixels. Since every later step is linear, this is the LSF of the final cube (no
    approximation on templates or per particle).

    **Target.** The telescope's `lsf_fwhm` is the *total* line spread as measured on the
    cube's pixels (a Gaussian fit to pixel values, pixel integration included), as
    instrument teams quote it. Everything between the templates and the pixels
    broadens, and this stage adds exactly what is missing, in the observed frame at
    redshift z (variances, Å², per lattice bin at observed λ):

        σ_kernel² = σ_tel² − σ_floor²,
        σ_floor² = (σ_ssp(λ/(1+z))·(1+z))²          templates' own resolution
                 + (w_ssp(λ/(1+z))·(1+z))² / 12       native pixels, piecewise constant
                 + δ_tel(λ)² / 12                     integration over the telescope pixel
                 + (1/6) · (λΔ)²                      Doppler interpolation on the lattice

    with σ = FWHM / 2.35482, w_ssp the templates' native pixel width, δ_tel the
    telescope pixel width (Å) and Δ the lattice step (ln λ). The cubic resamplings onto
    and off the lattice add no variance (`rubix_eqx._rebin`). The linear interpolation of
    a sub-pixel Doppler shift t broadens by t(1−t) pixel², whose mean over particles is
    1/6 (exact for a population whose velocities spread over half a lattice pixel or more,
    ~20 km/s at MUSE sampling; a single particle is off by t(1−t) − 1/6 ∈ [−1/6, 1/12]
    pixel²). `doppler_variance` holds that 1/6; a model that shifts spectra exactly (the
    fitter's Fourier-space LOSVD) sets it to 0. The δ_tel²/12 term (Sheppard's
    correction) makes the *second moment of the pixel values* equal σ_tel²; a Gaussian
    fitted to the pixels reads ≤ 0.35 % wider on MUSE sampling (a pixel-integrated
    Gaussian is flat-topped). Approximation: the templates' resolution is scaled by
    (1+z), not by each particle's full Doppler factor (|v|/c relative).

    Where σ_tel < σ_floor the telescope is sharper than what the templates and the
    numerics allow. If sharper by less than `tolerance` (relative, in FWHM), σ_kernel is 0
    there (identity); beyond that [`rubix_eqx.ResolutionError`][] is raised (eagerly by
    `check`, or as an `eqx.error_if` under jit) unless `allow_sharper=True`, in which case
    σ_kernel is clipped to 0 and `n_clipped(z)` counts the clipped lattice bins. Either
    way `applied_fwhm(z)` is the FWHM actually reached, max(σ_tel, σ_floor)·2.35482.

    **Kernel.** In ln λ pixels (σ_pix = σ_Å / (λ Δ)), input bin k sends its flux to bins
    k−h … k+h. The weights are a Gaussian integrated over each output bin (erf
    differences), normalised to 1 per input bin, convolved with a 3-point kernel
    [m/2, 1−m, m/2] whose m makes the variance of the discrete kernel exactly σ_pix²:
    the Gaussian's own σ² is σ_pix² − 1/12 (the bin-integration term, Sheppard's
    correction), clipped at 0, and m is what remains (≤ 1/12 when σ_pix² ≤ 1/12, ~0
    otherwise; it also restores the variance lost by truncating the Gaussian). So a
    line one bin wide comes out with FWHM 2.35482·σ_kernel, and a spectrum resolved on the
    lattice is broadened by σ_kernel² exactly in variance. Each column sums to 1: total
    flux is conserved exactly. Where σ_kernel = 0 the operator is the identity.

    **Band.** `half_width` h is static: the largest σ_pix over z ∈ [0, `max_redshift`]
    times `n_sigma` (default 4: at least 4σ of Gaussian), plus one bin for the 3-point
    term. A redshift needing a wider band raises (under jit, `eqx.error_if`).

    **Edges.** Flux that the kernel sends past either end of the lattice is mirrored
    back onto the edge bins (equivalently, the spectrum beyond the lattice is taken as
    the mirror image of the last h bins), so no flux leaves the lattice. This is exact
    for a locally constant continuum; the first and last h lattice bins are otherwise
    approximate. To be exact there, extend the lattice by `half_width` bins on each side.

    Differentiable in `work` and in the redshift. In a pipeline it is called as
    `lsf(cube, scene)` and records the FWHM reached (`lsf_fwhm`) and `n_lsf_clipped`;
    on an array, `lsf.apply(work, redshift)`.

    **Attributes:**

    - `wavelength`: lattice bin centres exp(ln λ₀ + (k+½)Δ), Å (observed).
    - `tel_sigma`: telescope σ at `wavelength`, Å.
    - `tel_pixel`: telescope pixel width at `wavelength`, Å.
    - `ssp_wavelength`, `ssp_variance`: the templates' own variance σ_ssp² + w_ssp²/12
      (Å², rest frame) at rest-frame wavelengths (Å); it scales by (1+z)².
    - `telescope_wavelength`: the telescope's pixel centres (Å), where `Cube.lsf_fwhm`
      is recorded.
    - `log_step`: Δ (natural log).
    - `doppler_variance`: pixel², the mean broadening of the Doppler interpolation (1/6).
    - `half_width`: h, bins.
    - `n_sigma`, `max_redshift`: how h was chosen.
    - `allow_sharper`, `tolerance`: see above.
    - `telescope_name`: for error messages.
    """

    wavelength: Float[Array, " n_work"]
    tel_sigma: Float[Array, " n_work"]
    tel_pixel: Float[Array, " n_work"]
    ssp_wavelength: Float[Array, " n_ssp"]
    ssp_variance: Float[Array, " n_ssp"]
    telescope_wavelength: Float[Array, " n_wave"]
    log_step: float = eqx.field(static=True)
    doppler_variance: float = eqx.field(static=True)
    fourth_cumulant: float = eqx.field(static=True)
    half_width: int = eqx.field(static=True)
    n_sigma: float = eqx.field(static=True)
    max_redshift: float = eqx.field(static=True)
    allow_sharper: bool = eqx.field(static=True)
    tolerance: float = eqx.field(static=True)
    telescope_name: str = eqx.field(static=True)

    def __check_init__(self):
        if not self.tolerance >= 0:
            raise ValueError(f"`LSF(tolerance=...)` must be >= 0; got {self.tolerance}.")
        if self.half_width < 1:
            raise ValueError(f"`LSF(half_width=...)` must be >= 1; got {self.half_width}.")
        if self.half_width >= self.wavelength.shape[0]:
            raise ValueError(
                f"`LSF(half_width={self.half_width})` must be smaller than the lattice "
                f"({self.wavelength.shape[0]} bins)."
            )

    @classmethod
    def build(
        cls,
        telescope: Telescope,
        ssp: SSPGrid,
        grid: SpectralGrid,
        allow_sharper: bool = False,
        tolerance: float = 0.02,
        max_redshift: float = 1.0,
        n_sigma: float = 4.0,
        doppler_variance: float = 1.0 / 6.0,
    ) -> "LSF":
        """The LSF stage for `telescope` and `ssp` on the lattice of `grid`.

        **Arguments:**

        - `telescope`: supplies `lsf_fwhm` (Å) at its pixels, and its name.
        - `ssp`: supplies `fwhm` (Å) at its rest-frame `wavelength`.
        - `grid`: the [`rubix_eqx.SpectralGrid`][] whose observed lattice `work` lives on.
        - `allow_sharper`: clip σ_kernel² at 0 where the telescope is sharper than the
          templates, instead of raising [`rubix_eqx.ResolutionError`][].
        - `tolerance`: relative (in FWHM) amount by which the templates may be broader
          than the telescope and still count as equal (σ_kernel = 0, no error).
        - `max_redshift`: the band h covers σ_kernel for z ∈ [0, `max_redshift`].
        - `n_sigma`: the Gaussian is truncated at no less than `n_sigma` σ.
        - `doppler_variance`: pixel² of broadening by the Doppler interpolation to make
          up for (1/6 for the pipeline's linear interpolation; 0 for exact shifts).

        **Returns:** an `LSF`.
        """
        if not max_redshift >= 0:
            raise ValueError(f"`LSF.build(max_redshift=...)` must be >= 0; got {max_redshift}.")
        if not n_sigma >= 3:
            raise ValueError(f"`LSF.build(n_sigma=...)` must be >= 3; got {n_sigma}.")
        if not 0 <= doppler_variance <= 0.25:
            raise ValueError(
                "`LSF.build(doppler_variance=...)` must lie in [0, 1/4] pixel²; "
                f"got {doppler_variance}."
            )
        dtype = grid.templates.dtype
        edges = grid.obs_log_edges
        centres = np.exp(0.5 * (edges[1:] + edges[:-1]))
        tel_wave = np.asarray(telescope.wavelength, np.float64)
        tel_sigma = (
            np.interp(centres, tel_wave, np.asarray(telescope.lsf_fwhm, np.float64))
            / FWHM_PER_SIGMA
        )
        tel_pixel = np.interp(centres, tel_wave, np.diff(pixel_edges(tel_wave)))
        ssp_wave = np.asarray(ssp.wavelength, np.float64)
        ssp_sigma = np.asarray(ssp.fwhm, np.float64) / FWHM_PER_SIGMA
        ssp_pixel = np.diff(pixel_edges(ssp_wave))
        half_width = band_half_width(
            centres, tel_sigma, ssp_wave, ssp_sigma, grid.log_step, max_redshift, n_sigma
        )
        return cls(
            wavelength=jnp.asarray(centres, dtype),
            tel_sigma=jnp.asarray(tel_sigma, dtype),
            tel_pixel=jnp.asarray(tel_pixel, dtype),
            ssp_wavelength=jnp.asarray(ssp_wave, dtype),
            ssp_variance=jnp.asarray(ssp_sigma**2 + ssp_pixel**2 * _BIN_VARIANCE, dtype),
            telescope_wavelength=jnp.asarray(tel_wave, dtype),
            log_step=float(grid.log_step),
            doppler_variance=float(doppler_variance),
            fourth_cumulant=CUBIC_FOURTH_CUMULANT * 2
            + BIN_FOURTH_CUMULANT
            + (HAT_FOURTH_CUMULANT if doppler_variance > 0 else 0.0),
            half_width=half_width,
            n_sigma=float(n_sigma),
            max_redshift=float(max_redshift),
            allow_sharper=bool(allow_sharper),
            tolerance=float(tolerance),
            telescope_name=telescope.name,
        )

    # -- σ_kernel -----------------------------------------------------------------

    def floor_variance(self, redshift, xp=jnp) -> Float[Array | np.ndarray, " n_work"]:
        """σ_floor² (Å²) at each lattice bin: the broadening the templates and the numerics
        bring before the kernel (see the class docstring), at `redshift`. `xp=np` gives
        it in NumPy float64 (for eager checks, even while tracing)."""
        if xp is np:
            wave, ssp_wave, ssp_var, tel_pixel = (
                np.asarray(a, np.float64)
                for a in (self.wavelength, self.ssp_wavelength, self.ssp_variance, self.tel_pixel)
            )
            one_plus_z = 1 + float(redshift)
        else:
            wave, ssp_wave, ssp_var, tel_pixel = (
                self.wavelength, self.ssp_wavelength, self.ssp_variance, self.tel_pixel,
            )  # fmt: skip
            one_plus_z = (1 + jnp.asarray(redshift)).astype(wave.dtype)
        templates = xp.interp(wave / one_plus_z, ssp_wave, ssp_var) * one_plus_z**2
        lattice = self.doppler_variance * (wave * self.log_step) ** 2
        return templates + tel_pixel**2 * _BIN_VARIANCE + lattice

    def sharper(self, redshift) -> Bool[Array, " n_work"]:
        """Boolean per lattice bin: σ_floor exceeds the telescope's σ by more than
        `tolerance` (in FWHM) at `redshift`."""
        return self.floor_variance(redshift) > (self.tel_sigma * (1 + self.tolerance)) ** 2

    def variance(self, redshift) -> Float[Array, " n_work"]:
        """σ_kernel² in ln λ pixels² at each lattice bin (clipped at 0)."""
        var = self.tel_sigma**2 - self.floor_variance(redshift)
        return jnp.maximum(var, 0) / (self.wavelength * self.log_step) ** 2

    def applied_fwhm(self, redshift) -> Float[Array, " n_work"]:
        """The FWHM (Å) on the cube's pixels at each lattice bin: the telescope's, or the
        floor's where that is broader."""
        floor = self.floor_variance(redshift)
        return FWHM_PER_SIGMA * jnp.sqrt(jnp.maximum(self.tel_sigma**2, floor))

    def n_clipped(self, redshift) -> Int[Array, ""]:
        """Lattice bins where σ_kernel² was clipped to 0 beyond `tolerance` (traced int)."""
        return jnp.sum(self.sharper(redshift))

    def weights(self, redshift) -> Float[Array, "n_band n_work"]:
        """Weights (2h+1, n_work): row h+d is the fraction of input bin k's flux that
        goes to output bin k+d. Columns sum to 1; column variance is σ_pix²."""
        var = self.variance(redshift)
        h = self.half_width
        s2 = jnp.maximum(var - _BIN_VARIANCE, _MIN_S2)
        # A mixture (1−p)·N(v1) + p·N(v2) of mean variance s2 has excess fourth cumulant
        # 3p(1−p)(v2−v1)²: chosen to put back what the flat-topped numerics take away
        # (equal weights while v1 ≥ 0, else a narrow core and wider wings; the wings are
        # capped to stay inside the band, the 3-point term below restores the variance).
        k4 = self.fourth_cumulant
        p = jnp.minimum(0.5, 3 * s2**2 / (k4 + 3 * s2**2))
        p = jnp.where(s2 > _MIN_WIDE, p, 0.0)  # no kernel: an exact identity
        gap = jnp.sqrt(k4 / (3 * jnp.maximum(p * (1 - p), _MIN_S2)))
        v1 = jnp.maximum(s2 - p * gap, 0.0)
        v2 = jnp.minimum(s2 + (1 - p) * gap, ((h - 1) / self.n_sigma) ** 2)
        d = jnp.abs(jnp.arange(-(h - 1), h, dtype=var.dtype))[:, None]

        def binned(v):
            inv = 1 / jnp.sqrt(2 * jnp.maximum(v, _MIN_S2))
            return 0.5 * (erfc((d - 0.5) * inv[None, :]) - erfc((d + 0.5) * inv[None, :]))

        gauss = (1 - p)[None, :] * binned(v1) + p[None, :] * binned(v2)
        gauss = gauss / jnp.sum(gauss, axis=0, keepdims=True)
        offsets = jnp.arange(-(h - 1), h, dtype=var.dtype)[:, None]
        m = var - jnp.sum(offsets**2 * gauss, axis=0)
        zero = jnp.zeros_like(var)[None, :]
        g = jnp.concatenate([zero, gauss, zero])
        left = jnp.concatenate([zero, zero, gauss])  # w_{d-1}
        right = jnp.concatenate([gauss, zero, zero])  # w_{d+1}
        return (1 - m)[None, :] * g + (0.5 * m)[None, :] * (left + right)

    # -- checks -------------------------------------------------------------------

    def _numpy_fwhm(self, redshift: float):
        """(lattice λ, telescope FWHM, floor FWHM) in Å, NumPy float64."""
        wave = np.asarray(self.wavelength, np.float64)
        tel = np.asarray(self.tel_sigma, np.float64)
        floor = self.floor_variance(redshift, xp=np)
        return wave, tel * FWHM_PER_SIGMA, np.sqrt(floor) * FWHM_PER_SIGMA

    def sharper_range(self, redshift: float) -> tuple[float, float] | None:
        """`None`, or the (λ_min, λ_max) lattice centres (Å, observed) between which the
        telescope is sharper than the templates beyond `tolerance` at `redshift`."""
        wave, tel, floor = self._numpy_fwhm(float(redshift))
        bad = floor > tel * (1 + self.tolerance)
        if not bad.any():
            return None
        return float(wave[bad].min()), float(wave[bad].max())

    def check(self, redshift: float) -> None:
        """Raise [`rubix_eqx.ResolutionError`][] if the telescope is sharper than the
        templates at `redshift` (a Python float) and `allow_sharper` is off."""
        span = self.sharper_range(redshift)
        if span is None or self.allow_sharper:
            return
        z = float(redshift)
        wave, tel, floor = self._numpy_fwhm(z)
        worst = int(np.argmax(floor / tel))
        raise ResolutionError(
            f"telescope {self.telescope_name!r} LSF FWHM {tel[worst]:.2f} Å is sharper than "
            f"the {floor[worst]:.2f} Å the SSP templates reach on its pixels at "
            f"{wave[worst]:.0f} Å "
            f"(template FWHM × (1+{z:g}) plus the pixel and lattice terms, docs/physics.md), "
            f"and sharper by more than tolerance={self.tolerance:g} over "
            f"{span[0]:.0f}–{span[1]:.0f} Å; pass allow_sharper=True to add no broadening "
            "there (the FWHM reached is recorded in Cube.lsf_fwhm and the diagnostics)"
        )

    # -- apply --------------------------------------------------------------------

    domain: ClassVar[str] = "lattice"

    def check_scene(self, scene: Scene) -> None:
        z = concrete(scene.observation.redshift)
        if z is not None:
            self.check(float(z))

    def __call__(self, cube: CubeState, scene: Scene) -> CubeState:
        z = scene.observation.redshift
        applied = jnp.interp(self.telescope_wavelength, self.wavelength, self.applied_fwhm(z))
        diagnostics = dict(cube.diagnostics, n_lsf_clipped=self.n_clipped(z))
        return dataclasses.replace(
            cube, flux=self.apply(cube.flux, z), lsf_fwhm=applied, diagnostics=diagnostics
        )

    def for_spectrum(self) -> "LSF":
        """The LSF for spectra shifted exactly (the fitter's Fourier-space LOSVD): without
        the Doppler-interpolation variance and its fourth cumulant."""
        if self.doppler_variance == 0:
            return self
        return dataclasses.replace(
            self,
            doppler_variance=0.0,
            fourth_cumulant=self.fourth_cumulant - HAT_FOURTH_CUMULANT,
        )

    def with_fwhm(self, lsf_fwhm) -> "LSF":
        """This LSF with the telescope's FWHM (Å at its pixels) replaced by `lsf_fwhm`
        (e.g. a cube's recorded one), sharper regions clipped (`allow_sharper`), the band
        widened if needed."""
        dtype = self.wavelength.dtype
        centres = np.asarray(self.wavelength, np.float64)
        tel_wave = np.asarray(self.telescope_wavelength, np.float64)
        fwhm = np.broadcast_to(np.asarray(lsf_fwhm, np.float64), tel_wave.shape)
        tel_sigma = np.interp(centres, tel_wave, fwhm) / FWHM_PER_SIGMA
        ssp_wave = np.asarray(self.ssp_wavelength, np.float64)
        ssp_sigma = np.sqrt(np.asarray(self.ssp_variance, np.float64))  # upper bound on σ_ssp
        half_width = band_half_width(
            centres, tel_sigma, ssp_wave, ssp_sigma, self.log_step, self.max_redshift,
            self.n_sigma,
        )  # fmt: skip
        return dataclasses.replace(
            self,
            tel_sigma=jnp.asarray(tel_sigma, dtype),
            half_width=max(half_width, self.half_width),
            allow_sharper=True,
        )

    def apply(self, work: Float[Array, "*batch n_work"], redshift) -> Float[Array, "*batch n_work"]:
        """Broaden `work` (integrated flux per lattice bin; any leading axes) at
        `redshift` (0-d, may be traced). Returns the same shape and dtype."""
        z = concrete(redshift)
        if z is not None and concrete(self.wavelength) is not None:  # name the range
            self.check(float(z))
        var = self.variance(redshift)
        h = self.half_width
        w = self.weights(redshift).astype(work.dtype)
        # The checks ride on the small weight array (attaching them to `work` costs a copy).
        w = eqx.error_if(
            w,
            jnp.any(self.n_sigma**2 * var > (h - 0.5) ** 2),
            f"LSF: σ_kernel at this redshift needs a wider band than the {2 * h + 1} bins "
            f"built for z <= {self.max_redshift:g}; rebuild with LSF.build(..., max_redshift=...).",
        )
        if not self.allow_sharper:
            w = eqx.error_if(
                w,
                jnp.any(self.sharper(redshift)),
                f"ResolutionError: telescope {self.telescope_name!r} LSF is sharper than the "
                "SSP templates at this redshift; call LSF.check(z) for the range, or pass "
                "allow_sharper=True to clip σ_kernel to 0 there.",
            )
        n = work.shape[-1]
        lead = [(0, 0)] * (work.ndim - 1)
        # Shifted multiply-adds with zero padding (this form fuses into one loop) …
        x = jnp.pad(work, lead + [(h, h)])
        wp = jnp.pad(w, [(0, 0), (h, h)])
        shape = (1,) * (work.ndim - 1) + (n,)
        out = jnp.zeros_like(work)
        for i in range(2 * h + 1):
            lo = 2 * h - i  # output j receives input j - (i - h)
            out = out + wp[i, lo : lo + n].reshape(shape) * x[..., lo : lo + n]
        # … then the flux sent beyond either end is mirrored back onto the edge bins.
        out = out.at[..., :h].add(work[..., :h] @ _fold(w[:, :h], h, left=True))
        return out.at[..., n - h :].add(work[..., n - h :] @ _fold(w[:, n - h :], h, left=False))


def lattice_half_width(
    telescope: Telescope, ssp: SSPGrid, oversample: int, max_redshift: float = 1.0,
    n_sigma: float = 4.0,
) -> int:  # fmt: skip
    """The LSF band half-width (bins) on the lattice of `telescope` at `oversample`, from
    the lattice geometry alone: the margin to extend the lattice by before building it."""
    log_step, u0, n_work = lattice_geometry(telescope.wavelength, oversample)
    edges = u0 + log_step * np.arange(n_work + 1)
    centres = np.exp(0.5 * (edges[1:] + edges[:-1]))
    tel_wave = np.asarray(telescope.wavelength, np.float64)
    tel_sigma = np.interp(centres, tel_wave, np.asarray(telescope.lsf_fwhm, np.float64))
    ssp_sigma = np.asarray(ssp.fwhm, np.float64) / FWHM_PER_SIGMA
    return band_half_width(
        centres, tel_sigma / FWHM_PER_SIGMA, np.asarray(ssp.wavelength, np.float64), ssp_sigma,
        log_step, max_redshift, n_sigma,
    )  # fmt: skip


def band_half_width(
    centres, tel_sigma, ssp_wave, ssp_sigma, log_step: float, max_redshift: float, n_sigma: float
) -> int:
    """The kernel's half-width h (bins): `n_sigma` × the largest σ_kernel in lattice
    pixels over z ∈ [0, `max_redshift`] (from σ_tel² − σ_ssp², an upper bound), plus one
    bin for the 3-point term. Arrays NumPy: lattice centres, telescope σ there (Å), the
    templates' wavelengths and σ (Å, rest)."""
    largest = 0.0
    for z in np.linspace(0.0, max_redshift, 65):
        sig_ssp = np.interp(centres / (1 + z), ssp_wave, ssp_sigma) * (1 + z)
        var = np.maximum(tel_sigma**2 - sig_ssp**2, 0.0)
        largest = max(largest, float(np.sqrt(np.max(var / (centres * log_step) ** 2))))
    return int(math.ceil(n_sigma * largest)) + 1


def _fold(w: Float[Array, "n_band h"], h: int, left: bool) -> Float[Array, "h h"]:
    """(h, h) matrix M[k, t]: the weight that edge input bin k sends past the lattice end,
    mirrored onto edge output bin t (local indices within the first/last h bins)."""
    k = jnp.arange(h)[None, :]
    d = jnp.arange(-h, h + 1)[:, None]
    if left:
        past = k + d  # output index; < 0 is past the start
        valid = past < 0
        target = -1 - past
    else:
        past = k + d - h  # output index minus n; >= 0 is past the end
        valid = past >= 0
        target = h - 1 - past
    target = jnp.where(valid, target, 0)
    rows = jnp.broadcast_to(k, w.shape)
    return jnp.zeros((h, h), w.dtype).at[rows, target].add(jnp.where(valid, w, 0))
