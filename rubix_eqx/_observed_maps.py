"""Truth maps as the telescope sees them: flux-weighted moments combined through the PSF."""

import math

import jax
import jax.numpy as jnp

from ._maps import Maps
from ._stages._psf import PSFConvolution
from .telescope import Telescope


# h3 ≈ skew / (4√3), h4 ≈ kurt / (8√6): the conversion of `truth_maps`.
H3_PER_SKEW = 1 / (4 * math.sqrt(3.0))
H4_PER_KURT = 1 / (8 * math.sqrt(6.0))
# Observed spaxels: PSF-convolved weight above this × eps × the peak (FFT round-off is
# ~eps × peak everywhere; the separable kernel gives exact zeros beyond its support).
EMPTY_RELATIVE = 64


def observed_truth_maps(
    maps: Maps, telescope: Telescope, psf: PSFConvolution | None = None
) -> Maps:
    """The truth maps seen through the telescope's PSF (seeing-convolved, as SimSpin's
    observed images): the per-spaxel moments of the particles are combined with the PSF
    as the light of the spaxels is.

    With F the weight map (flux, or mass for mass-weighted maps), each spaxel's raw
    moments E[vᵏ] (k = 1…4, from V, σ and the h3, h4 of [`rubix_eqx.truth_maps`][]:
    μ₃ = 4√3 h3 σ³, μ₄ = (3 + 8√6 h4) σ⁴), log age and [M/H] are convolved as F·x:

    - F_obs = P∗F (total weight conserved for a source inside the field);
    - V_obs = P∗(F V) / P∗F, σ²_obs = P∗(F (σ² + V²)) / P∗F − V²_obs;
    - h3, h4 from the central 3rd and 4th moments of the combined raw moments
      (the mixture's LOSVD), converted as `truth_maps` does;
    - log age and [M/H]: P∗(F x) / P∗F (the weight-averaged log, as `truth_maps`).

    Spaxels where P∗F is below 64 ε × its peak have `mask` False and zeros elsewhere.
    The arithmetic is done in float64 when JAX has x64 enabled; the result has the
    maps' dtype. `n_clipped` and `clipped_mass_fraction` are the input's.

    **Arguments:**

    - `maps`: light- or mass-weighted [`rubix_eqx.Maps`][] from
      [`rubix_eqx.truth_maps`][] on `telescope`'s spaxels.
    - `telescope`: the [`rubix_eqx.Telescope`][]; without a PSF (and no `psf`) the
      maps are returned unchanged.
    - `psf`: the PSF stage to use (e.g. `pipeline.stage(rx.PSFConvolution)`, so that
      the maps see exactly the cube's kernel); default `PSFConvolution.build(telescope)`.
      It must not be wavelength dependent (the maps are integrated over the band).

    **Returns:** [`rubix_eqx.Maps`][] with the same `weighting`.
    """
    if not isinstance(maps, Maps):
        raise TypeError(
            f"`observed_truth_maps(maps=...)` must be a `rubix_eqx.Maps`; got "
            f"{type(maps).__name__}."
        )
    if maps.weighting not in ("light", "mass"):
        raise ValueError(
            f"`observed_truth_maps(maps=...)` must be light- or mass-weighted truth maps; "
            f"got `Maps.weighting` = {maps.weighting!r} (fitted maps have no weights to "
            "convolve)."
        )
    shape = (telescope.n_x, telescope.n_y)
    if tuple(maps.flux.shape) != shape:
        raise ValueError(
            f"`observed_truth_maps(maps=...)` has spaxels {tuple(maps.flux.shape)}; the "
            f"telescope `{telescope.name}` has (n_x, n_y) = {shape}."
        )
    if psf is None:
        if telescope.psf is None:
            return maps
        psf = PSFConvolution.build(telescope)
    if psf.reference_index is not None:
        raise ValueError(
            "`observed_truth_maps(psf=...)` is wavelength dependent; the maps are "
            "integrated over the band: pass a PSF stage with one kernel "
            "(`PSFConvolution.build(telescope)`)."
        )
    if (psf.n_x, psf.n_y) != shape:
        raise ValueError(
            f"`observed_truth_maps(psf=...)` was built for (n_x, n_y) = "
            f"{(psf.n_x, psf.n_y)}; the maps have {shape}."
        )
    out_dtype = maps.flux.dtype
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    weight = jnp.where(maps.mask, maps.flux, 0).astype(dtype)
    v = maps.velocity.astype(dtype)
    s2 = maps.dispersion.astype(dtype) ** 2
    mu3 = maps.h3.astype(dtype) / H3_PER_SKEW * s2**1.5
    mu4 = (3 + maps.h4.astype(dtype) / H4_PER_KURT) * s2**2
    raw = (
        v,
        s2 + v**2,
        v**3 + 3 * v * s2 + mu3,
        v**4 + 6 * v**2 * s2 + 4 * v * mu3 + mu4,
    )
    columns = (maps.log_age.astype(dtype), maps.metallicity.astype(dtype)) + raw
    stack = jnp.stack([weight] + [weight * c for c in columns], axis=-1)
    convolved = psf.apply(stack)
    total = convolved[..., 0]
    peak = jnp.max(jnp.abs(total))
    has = total > EMPTY_RELATIVE * jnp.finfo(dtype).eps * peak
    safe = jnp.where(has, total, 1)

    def mean(i):
        return jnp.where(has, convolved[..., i] / safe, 0)

    log_age, metal, e1, e2, e3, e4 = (mean(i) for i in range(1, 7))
    var = jnp.where(has, e2 - e1**2, 0)
    var = jnp.maximum(var, 0)
    c3 = e3 - 3 * e1 * e2 + 2 * e1**3
    c4 = e4 - 4 * e1 * e3 + 6 * e1**2 * e2 - 3 * e1**4
    positive = has & (var > 0)
    safe_var = jnp.where(positive, var, 1)
    skew = jnp.where(positive, c3 / safe_var**1.5, 0)
    kurt = jnp.where(positive, c4 / safe_var**2 - 3, 0)

    def cast(x):
        return x.astype(out_dtype)

    return Maps(
        log_age=cast(log_age),
        metallicity=cast(metal),
        velocity=cast(e1),
        dispersion=cast(jnp.sqrt(var)),
        h3=cast(skew * H3_PER_SKEW),
        h4=cast(kurt * H4_PER_KURT),
        flux=cast(jnp.where(has, total, 0)),
        mask=has,
        weighting=maps.weighting,
        n_clipped=maps.n_clipped,
        clipped_mass_fraction=maps.clipped_mass_fraction,
    )
