"""Truth maps as a fit sees them: the Gauss–Hermite parameters (V, σ, h3, h4) fitted to the
particles' light- (or mass-) weighted line-of-sight velocity distribution per spaxel
(as SimSpin does), optionally seen through the telescope's PSF.

The LOSVD of a spaxel is a histogram of the particles' v_los in bins of `velocity_bin`
km/s over ±`max_velocity`, each particle weighted by its light (or mass) times its
spatial deposit weight on the spaxel (the same deposit as the cube). The profile
γ exp(−y²/2)/(σ√2π) [1 + h3 H3(y) + h4 H4(y)], y = (v − V)/σ (van der Marel & Franx
1993; the H_n of pPXF and of [`rubix_eqx.fit.SpectrumModel`][]), averaged over each bin
(4-point Gauss–Legendre), is fitted to the histogram by unweighted least squares in
(γ, V, σ, h3, h4) — the quantity a Gauss–Hermite fit of the spectrum estimates.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from ._compile import jit
from ._maps import Maps, particle_weights, truth_maps
from ._observation import Observation
from ._observed_maps import EMPTY_RELATIVE, observed_truth_maps
from ._stages._deposit import AbstractDeposit
from ._stages._psf import PSFConvolution
from .galaxy import Galaxy
from .ssp import SSPGrid
from .telescope import Telescope


_SQRT2 = math.sqrt(2.0)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(4)


def gauss_hermite_profile(v, velocity, dispersion, h3, h4):
    """The Gauss–Hermite LOSVD (per km/s, unit γ) at velocities `v` (km/s)."""
    y = (v - velocity) / dispersion
    herm3 = (2 * _SQRT2 * y**3 - 3 * _SQRT2 * y) / math.sqrt(6.0)
    herm4 = (4 * y**4 - 12 * y**2 + 3) / math.sqrt(24.0)
    gauss = jnp.exp(-0.5 * y**2) / (dispersion * math.sqrt(2 * math.pi))
    return gauss * (1 + h3 * herm3 + h4 * herm4)


def _fit_one(hist, centres, step, max_steps):
    """(γ, V, σ, h3, h4) of one histogram `hist` (weight per bin); zeros if empty."""
    dtype = hist.dtype
    total = jnp.sum(hist)
    has = total > 0
    safe = jnp.where(has, total, 1)
    density = hist / (safe * step)  # unit integral, per km/s
    mean = jnp.sum(density * centres) * step
    var = jnp.sum(density * (centres - mean) ** 2) * step
    sigma0 = jnp.sqrt(jnp.maximum(var, (step / 2) ** 2))
    offsets = jnp.asarray(_NODES, dtype) * (step / 2)
    weights = jnp.asarray(_WEIGHTS, dtype) / 2

    def residual(p, _):
        v, log_s, h3, h4, amp = p[0] * sigma0 + mean, p[1], p[2], p[3], p[4]
        s = sigma0 * jnp.exp(log_s)
        at = centres[:, None] + offsets[None, :]
        model = gauss_hermite_profile(at, v, s, h3, h4) @ weights
        return (amp * model - density) * sigma0  # O(1) residuals

    p0 = jnp.asarray([0.0, 0.0, 0.0, 0.0, 1.0], dtype)
    sol = optx.least_squares(
        residual, optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10), p0, max_steps=max_steps,
        throw=False,
    )  # fmt: skip
    p = jnp.where(jnp.all(jnp.isfinite(sol.value)), sol.value, p0)
    out = jnp.stack([p[4] * safe, p[0] * sigma0 + mean, sigma0 * jnp.exp(p[1]), p[2], p[3]])
    return jnp.where(has, out, 0), has & (sol.result == optx.RESULTS.successful)


def fit_gauss_hermite(
    histogram: Float[Array, "n_x n_y n_v"], velocity: Float[Array, " n_v"], max_steps: int = 100
):
    """Gauss–Hermite least-squares fits to LOSVD histograms (see the module docstring).

    **Arguments:** `histogram` (weight per velocity bin per spaxel), `velocity` (bin
    centres, km/s, uniform steps), `max_steps` of the Levenberg–Marquardt solve.

    **Returns:** `(params, ok)`: params `(n_x, n_y, 5)` = (γ, V, σ, h3, h4) (γ the total
    weight of the fitted profile; zeros for empty spaxels), ok `(n_x, n_y)` (fitted and
    converged).
    """
    n_x, n_y, n_v = histogram.shape
    step = velocity[1] - velocity[0]
    one = lambda h: _fit_one(h, velocity, step, max_steps)
    params, ok = jax.vmap(one)(histogram.reshape(n_x * n_y, n_v))
    return params.reshape(n_x, n_y, 5), ok.reshape(n_x, n_y)


@jit
def _histograms(galaxy, observation, telescope, ssp, weighting, deposit, flux_unit, edges):
    index, spatial, weight, v_los = particle_weights(
        galaxy, observation, telescope, ssp, weighting, deposit, flux_unit
    )
    n_v = edges.shape[0] - 1
    step = edges[1] - edges[0]
    vbin = jnp.floor((v_los - edges[0]) / step).astype(jnp.int32)
    inside = (vbin >= 0) & (vbin < n_v)
    w = (spatial * jnp.where(inside, weight, 0)[:, None]).reshape(-1)
    segment = (index * n_v + jnp.clip(vbin, 0, n_v - 1)[:, None]).reshape(-1)
    n_spaxels = telescope.n_x * telescope.n_y
    hist = jax.ops.segment_sum(w, segment, num_segments=n_spaxels * n_v)
    return hist.reshape(telescope.n_x, telescope.n_y, n_v)


@jit
def _fit(histogram, velocity, max_steps):
    return fit_gauss_hermite(histogram, velocity, max_steps)


def losvd_histograms(
    galaxy: Galaxy,
    observation: Observation,
    telescope: Telescope,
    ssp: SSPGrid,
    weighting: str = "light",
    deposit: AbstractDeposit | str = "cic",
    flux_unit: float = 1e-20,
    *,
    velocity_bin: float = 10.0,
    max_velocity: float = 1000.0,
):
    """Per-spaxel light- (or mass-) weighted LOSVD histograms of the particles, with the
    weights and deposit of [`rubix_eqx.truth_maps`][].

    **Returns:** `(histogram, velocity)`: `(n_x, n_y, n_v)` weight per bin (the unit of
    `Maps.flux`), and the bin centres (km/s), bins of `velocity_bin` km/s over
    ±`max_velocity` (particles beyond are left out).
    """
    if not (velocity_bin > 0 and max_velocity > velocity_bin):
        raise ValueError(
            "`losvd_histograms(velocity_bin=..., max_velocity=...)` must satisfy "
            f"0 < velocity_bin < max_velocity; got {velocity_bin!r}, {max_velocity!r}."
        )
    n_half = int(math.ceil(max_velocity / velocity_bin))
    dtype = galaxy.velocity.dtype
    edges = jnp.asarray(np.arange(-n_half, n_half + 1) * float(velocity_bin), dtype)
    hist = _histograms(galaxy, observation, telescope, ssp, weighting, deposit, flux_unit, edges)
    return hist, 0.5 * (edges[1:] + edges[:-1])


def gauss_hermite_truth_maps(
    galaxy: Galaxy,
    observation: Observation,
    telescope: Telescope,
    ssp: SSPGrid,
    weighting: str = "light",
    deposit: AbstractDeposit | str = "cic",
    flux_unit: float = 1e-20,
    *,
    observed: bool = False,
    psf: PSFConvolution | None = None,
    velocity_bin: float = 10.0,
    max_velocity: float = 1000.0,
    max_steps: int = 100,
) -> Maps:
    """Truth maps whose kinematics are the Gauss–Hermite fit to each spaxel's LOSVD
    (module docstring): `velocity`, `dispersion`, `h3`, `h4` are V, σ, h3, h4 of the
    fitted profile (not moments); `log_age`, `metallicity`, `flux`, `mask` are those of
    [`rubix_eqx.truth_maps`][] (today's moments stay there).

    With `observed=True` the maps are seen through the PSF: each spaxel's LOSVD histogram
    is P∗(weighted histograms), the light of the spaxels combined as the PSF combines it,
    and fitted; age, [M/H], flux and mask are those of
    [`rubix_eqx.observed_truth_maps`][]. Spaxels whose fit did not converge (or that are
    empty) have `mask` False.

    **Arguments:** as `truth_maps`, plus `observed`, `psf` (the PSF stage; default
    `PSFConvolution.build(telescope)`; ignored unless `observed`), `velocity_bin` and
    `max_velocity` (km/s, the histogram), `max_steps` (of each fit).

    **Returns:** [`rubix_eqx.Maps`][] with `weighting` as given.
    """
    maps = truth_maps(galaxy, observation, telescope, ssp, weighting, deposit, flux_unit)
    hist, velocity = losvd_histograms(
        galaxy, observation, telescope, ssp, weighting, deposit, flux_unit,
        velocity_bin=velocity_bin, max_velocity=max_velocity,
    )  # fmt: skip
    if observed:
        if psf is None and telescope.psf is not None:
            psf = PSFConvolution.build(telescope)
        maps = observed_truth_maps(maps, telescope, psf)
        if psf is not None:
            hist = psf.apply(hist)
            peak = jnp.max(jnp.abs(jnp.sum(hist, -1)))
            empty = jnp.sum(hist, -1) <= EMPTY_RELATIVE * jnp.finfo(hist.dtype).eps * peak
            hist = jnp.where(empty[..., None], 0, hist)
    params, ok = _fit(hist, velocity, max_steps)
    mask = maps.mask & ok
    dtype = maps.flux.dtype

    def kin(i):
        return jnp.where(mask, params[..., i], 0).astype(dtype)

    return eqx.tree_at(
        lambda m: (m.velocity, m.dispersion, m.h3, m.h4, m.mask),
        maps,
        (kin(1), kin(2), kin(3), kin(4), mask),
    )
