"""Working wavelength grids on which the Doppler shift is an index shift.

The SSP templates (piecewise constant on their native pixels) are projected once
(float64) onto a rest-frame lattice uniform in ln λ with step Δ through the Keys cubic
kernel (`rubix_eqx._rebin`): flux is conserved exactly and a line keeps its variance
(plus the native pixel's w²/12), whatever its position relative to the lattice. The
cube is accumulated on an observed-frame grid of the same step, on the same lattice, so
a particle whose total Doppler factor is D = (1+z)·sqrt((1+β)/(1-β)) is the template
translated by s = ln D / Δ pixels: integer part by index, fractional part t by linear
interpolation of the two neighbouring template rows (broadening t(1−t) pixel², 1/6 on
average over particles, which the LSF stage makes up). The finished cube is
interpolated (cubic) and integrated exactly over the telescope pixels, flux-conserving.

The lattice adds no other broadening; the shape differences to rebinning every particle
directly onto the telescope pixels are measured in `tests/test_forward.py` and
`tests/test_lsf_fidelity.py` and reported in docs/physics.md.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._rebin import cubic_projection, cubic_rebin_matrix, pixel_edges
from .ssp import SSPGrid


PAD = 2  # zero bins before the rest templates (and n_work + PAD after: reads never clamp)
KERNEL_MARGIN = 2  # observed-lattice bins beyond the telescope range: the cubic kernel's reach


def lattice_geometry(telescope_wavelength, oversample: int = 1, margin: int = 0):
    """(Δ, ln λ of the first edge, number of bins) of the observed lattice for a
    telescope grid (Å): Δ = the finest telescope pixel in ln λ / `oversample`, extended
    by max(`margin`, 2) bins beyond both ends."""
    tel_edges = pixel_edges(np.asarray(telescope_wavelength, np.float64))
    margin = max(margin, KERNEL_MARGIN)
    log_step = float(np.min(np.diff(np.log(tel_edges)))) / oversample
    u0 = float(np.log(tel_edges[0])) - margin * log_step
    n_work = int(math.ceil(np.log(tel_edges[-1] / tel_edges[0]) / log_step - 1e-9)) + 2 * margin
    return log_step, u0, n_work


class SpectralGrid(eqx.Module):
    """Templates on the ln λ lattice and the rebin operator onto the telescope grid.

    **Attributes:**

    - `templates`: per-bin integrated luminosity (L☉ per M☉ formed) of every template
      (flat index `i_age * n_Z + i_Z`) on the rest lattice, zero-padded.
    - `rebin_start`, `rebin_weight`: ELL operator from observed-lattice integrated flux
      to telescope flux density (divides by the telescope pixel width, Å).
    - `log_step`: Δ, natural log.
    - `obs_log_start`: ln λ of the first observed-lattice edge.
    - `n_work`: number of observed-lattice bins.
    - `template_offset`: lattice index of `templates[:, 0]`.
    - `rest_range`: the SSP grid's rest wavelength range (Å) covered by templates.
    """

    templates: Float[Array, "n_template n_rest"]
    rebin_start: Int[Array, " n_wave"]
    rebin_weight: Float[Array, "n_wave n_overlap"]
    log_step: float = eqx.field(static=True)
    obs_log_start: float = eqx.field(static=True)
    n_work: int = eqx.field(static=True)
    template_offset: int = eqx.field(static=True)
    rest_range: tuple[float, float] = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        ssp: SSPGrid,
        telescope_wavelength,
        oversample: int = 1,
        margin: int = 0,
        dtype=jnp.float32,
    ) -> "SpectralGrid":
        """Resample `ssp` onto the lattice matching `telescope_wavelength` (Å), extended
        by `margin` bins beyond both ends (room for the LSF to spread flux into the
        range from outside it; at least the cubic kernel's 2 bins)."""
        if oversample < 1 or margin < 0:
            raise ValueError(
                "`SpectralGrid.build`: need oversample >= 1 and margin >= 0; "
                f"got {oversample}, {margin}."
            )
        tel_edges = pixel_edges(np.asarray(telescope_wavelength, np.float64))
        log_step, u0, n_work = lattice_geometry(telescope_wavelength, oversample, margin)
        ssp_edges = pixel_edges(np.asarray(ssp.wavelength, np.float64))
        ssp_u = (np.log(ssp_edges) - u0) / log_step  # native edges in lattice bins
        # Rest bins whose whole kernel (±2 bins) lies on the templates.
        m_lo = int(math.ceil(ssp_u[0] - 1e-9)) + 2
        m_hi = int(math.floor(ssp_u[-1] + 1e-9)) - 2
        if m_hi - m_lo < 2:
            raise ValueError("The SSP grid is too short for the telescope's wavelength sampling.")
        rest_edges = np.exp(u0 + log_step * np.arange(m_lo, m_hi + 1))
        flux = np.asarray(ssp.flux, np.float64).reshape(ssp.n_templates, -1)
        integrated = cubic_projection(ssp_u - m_lo, flux * np.diff(ssp_edges), m_hi - m_lo)
        templates = np.pad(integrated, ((0, 0), (PAD, n_work + PAD)))
        tel_u = (np.log(tel_edges) - u0) / log_step
        start, fraction = cubic_rebin_matrix(tel_u, n_work)
        weight = fraction / np.diff(tel_edges)[:, None]
        return cls(
            templates=jnp.asarray(templates, dtype),
            rebin_start=jnp.asarray(start, jnp.int32),
            rebin_weight=jnp.asarray(weight, dtype),
            log_step=log_step,
            obs_log_start=u0,
            n_work=n_work,
            template_offset=m_lo - PAD,
            rest_range=(float(rest_edges[0]), float(rest_edges[-1])),
        )

    @property
    def obs_log_edges(self) -> np.ndarray:
        """ln λ edges of the observed lattice (n_work + 1,)."""
        return self.obs_log_start + self.log_step * np.arange(self.n_work + 1)

    @property
    def _rest_lattice(self) -> tuple[int, int]:
        """(first lattice index, number of bins) of the rest bins holding SSP data."""
        return self.template_offset + PAD, self.templates.shape[1] - 2 * PAD - self.n_work

    @property
    def rest_log_edges(self) -> np.ndarray:
        """ln λ edges of the rest lattice covered by the SSP grid."""
        first, n_rest = self._rest_lattice
        return self.obs_log_start + self.log_step * np.arange(first, first + n_rest + 1)

    def shift_range(self) -> tuple[float, float]:
        """The range of ln D (total Doppler factor) for which every observed bin reads
        inside the templates: ln D ∈ [low, high)."""
        first, n_rest = self._rest_lattice
        return (self.n_work - first - n_rest) * self.log_step, -first * self.log_step

    def shift(self, log_doppler: Float[Array, " n"]) -> tuple[Int[Array, " n"], Float[Array, " n"]]:
        """Integer and fractional parts of the shift ln D / Δ in lattice pixels."""
        s = log_doppler / self.log_step
        j = jnp.floor(s)
        return j.astype(jnp.int32), s - j

    def read_offset(self, shift: Int[Array, "*n"]) -> Int[Array, "*n"]:
        """Column of `templates` where the (n_work + 1)-bin window read for an integer
        shift starts: window[r] holds rest lattice bin r - shift - 1."""
        return -shift - 1 - self.template_offset

    def spectra(
        self,
        template_index: Int[Array, "n 4"],
        template_weight: Float[Array, "n 4"],
        shift: Int[Array, " n"],
        fraction: Float[Array, " n"],
    ) -> Float[Array, "n n_work"]:
        """Observed-lattice integrated spectra (L☉ per M☉ per bin) of `n` particles:
        bin k = (1 - t)·R[k - j] + t·R[k - j - 1] for shift j + t."""
        width = self.n_work + 1

        def one(index, weight, start, t):
            rows = jnp.stack(
                [
                    jax.lax.dynamic_slice(self.templates, (index[k], start), (1, width))[0]
                    for k in range(4)
                ]
            )
            window = weight @ rows
            return (1 - t) * window[1:] + t * window[:-1]

        return jax.vmap(one)(template_index, template_weight, self.read_offset(shift), fraction)

    def to_telescope(self, integrated: Float[Array, "... n_work"]) -> Float[Array, "... n_wave"]:
        """Flux density on the telescope grid (per Å) from observed-lattice integrated flux."""
        return rebin_to_pixels(integrated, self.rebin_start, self.rebin_weight)


def rebin_to_pixels(
    integrated: Float[Array, "... n_work"],
    start: Int[Array, " n_wave"],
    weight: Float[Array, "n_wave n_tap"],
) -> Float[Array, "... n_wave"]:
    """Σ_k integrated[..., start + k] · weight[:, k]: one gather and multiply-add per tap
    (no (…, n_wave, n_tap) temporary)."""
    n_wave, n_tap = weight.shape
    padded = jnp.pad(integrated, [(0, 0)] * (integrated.ndim - 1) + [(0, n_tap)])
    out = jnp.zeros(integrated.shape[:-1] + (n_wave,), integrated.dtype)
    lead = (1,) * (integrated.ndim - 1)
    for k in range(n_tap):
        out = out + padded[..., start + k] * weight[:, k].reshape(lead + (n_wave,))
    return out
