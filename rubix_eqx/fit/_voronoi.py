"""Voronoi binning of a cube's spaxels to a target S/N (vorbin, Cappellari & Copin 2003)
before fitting, and the fitted maps put back on the spaxel grid.

S/N: per spaxel, the signal is the mean flux and the noise the root-mean variance over
the pixels of a wavelength window (pixels of infinite variance, e.g. masked emission
lines, left out). vorbin's S/N of a bin, Σ signal / √(Σ noise²), is then exactly the
S/N per pixel of the bin's summed spectrum, mean(Σ F) / √mean(Σ var), when the spaxels
share their finite pixels: the quantity `fit_spaxels(min_snr=...)` compares with (a
median there, a mean here) and the one `VoronoiBins.snr` reports.
"""

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._cube import Cube
from .._observation import Observation
from .._pipeline import Pipeline
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._mixture import fit_mixture, MixtureFit
from ._spaxels import fit_spaxels, SpaxelFit, telescope_for_cube


class BinningError(ValueError):
    """Bad input to the Voronoi binning: a target S/N that is not > 0, a cube without
    variance, a window outside the cube, too little S/N in the whole cube, or fits and
    bins that do not match."""


class VoronoiBins(eqx.Module):
    """The Voronoi bins of a cube's spaxels.

    **Attributes:**

    - `bin_index`: the bin of each spaxel, −1 for spaxels not binned (outside the cube's
      mask, or with a mean flux ≤ 0 in the window). Bins are numbered in the raster order
      (x-major, as `cube.flux.reshape(-1, n_wave)`) of their first spaxel.
    - `snr`: S/N per pixel of each bin's summed spectrum over the window.
    - `n_spaxels`: spaxels per bin.
    - `signal`: mean flux per spaxel over the window (cube unit; 0 where not binned):
      the shares by which a bin's fitted mass is spread over its spaxels.
    - `target_snr`: the target S/N per pixel.
    - `window`: (start, stop) Å, observed, of the S/N.
    """

    bin_index: Int[Array, "n_x n_y"]
    snr: Float[Array, " n_bins"]
    n_spaxels: Int[Array, " n_bins"]
    signal: Float[Array, "n_x n_y"]
    target_snr: float = eqx.field(static=True)
    window: tuple[float, float] = eqx.field(static=True)

    @property
    def n_bins(self) -> int:
        return int(self.snr.shape[0])


class VoronoiFit(eqx.Module):
    """A fit of Voronoi-binned spectra.

    **Attributes:**

    - `bins`: the [`rubix_eqx.fit.VoronoiBins`][].
    - `binned`: the fit of the bins' summed spectra, a [`rubix_eqx.fit.SpaxelFit`][] or
      [`rubix_eqx.fit.MixtureFit`][] of shape `(n_bins, 1)`.
    - `spaxels`: the same on the cube's spaxel grid ([`rubix_eqx.fit.unbin`][]).
    """

    bins: VoronoiBins
    binned: SpaxelFit | MixtureFit
    spaxels: SpaxelFit | MixtureFit


def _signal_noise(cube: Cube, window):
    wave = np.asarray(cube.wavelength, np.float64)
    if window is None:
        window = (float(wave[0]), float(wave[-1]))
    try:
        lo, hi = (float(w) for w in window)
    except (TypeError, ValueError):
        raise BinningError(
            f"`voronoi_bins(window=...)` must be (start, stop) in Å; got {window!r}."
        ) from None
    pixels = (wave >= lo) & (wave <= hi)
    if not (lo < hi and pixels.any()):
        raise BinningError(
            f"`voronoi_bins(window={window!r})` holds no pixel of the cube "
            f"({wave[0]:.1f}-{wave[-1]:.1f} Å)."
        )
    flux = np.asarray(cube.flux, np.float64)[..., pixels]
    var = np.asarray(cube.variance, np.float64)[..., pixels]
    mask = np.asarray(cube.mask, bool)
    if not np.all((var[mask] > 0) & ~np.isnan(var[mask])):
        raise BinningError(
            "`voronoi_bins`: `cube.variance` must be > 0 inside the mask over the window "
            "(make the cube with a noise stage, or read a cube with a variance extension)."
        )
    finite = np.isfinite(var) & np.isfinite(flux)
    count = finite.sum(axis=-1)
    safe = np.maximum(count, 1)
    signal = np.where(finite, flux, 0).sum(axis=-1) / safe
    noise = np.sqrt(np.where(finite, var, 0).sum(axis=-1) / safe)
    good = mask & (count > 0) & (signal > 0)
    return signal, noise, good, (lo, hi)


def voronoi_bins(cube: Cube, target_snr: float, *, window=None) -> VoronoiBins:
    """Voronoi bins of `cube`'s spaxels reaching `target_snr` per pixel (vorbin's
    `voronoi_2d_binning`, centroidal weighted tessellation, on the spaxel indices).

    Spaxels whose S/N already reaches the target stay alone; where every spaxel does,
    each is its own bin (vorbin is not called). Spaxels outside the mask or with a mean
    flux ≤ 0 in the window are not binned (`bin_index` −1). See the module docstring for
    the S/N.

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][] with a variance > 0 inside its mask.
    - `target_snr`: S/N per pixel (> 0) of the summed spectrum of a bin.
    - `window`: (start, stop) Å, observed, over which the S/N is measured (default: the
      whole cube).

    **Returns:** [`rubix_eqx.fit.VoronoiBins`][]. Raises
    [`rubix_eqx.fit.BinningError`][] for bad input.
    """
    try:
        target = float(target_snr)
    except (TypeError, ValueError):
        raise BinningError(
            f"`voronoi_bins(target_snr=...)` must be a number > 0; got {target_snr!r}."
        ) from None
    if not (math.isfinite(target) and target > 0):
        raise BinningError(
            f"`voronoi_bins(target_snr=...)` must be finite and > 0; got {target_snr!r}."
        )
    signal, noise, good, window = _signal_noise(cube, window)
    if not good.any():
        raise BinningError("`voronoi_bins`: no spaxel inside the mask has a mean flux > 0.")
    n_x, n_y = good.shape
    flat = np.flatnonzero(good.reshape(-1))
    s, n = signal.reshape(-1)[flat], noise.reshape(-1)[flat]
    whole = s.sum() / math.sqrt(np.sum(n**2))
    if whole < target:
        raise BinningError(
            f"`voronoi_bins`: all spaxels together reach S/N {whole:.3g} per pixel, below "
            f"`target_snr` = {target:g}."
        )
    if np.all(s / n >= target):
        label = np.arange(flat.size)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # vorbin's deprecation notice
            from vorbin.voronoi_2d_binning import voronoi_2d_binning

            x, y = np.divmod(flat, n_y)
            try:
                label = voronoi_2d_binning(
                    x.astype(np.float64), y.astype(np.float64), s, n, target, pixelsize=1.0,
                    plot=False, quiet=True,
                )[0]  # fmt: skip
            except (ValueError, IndexError) as e:  # e.g. no bin reaches 0.8 × target
                raise BinningError(
                    f"`voronoi_bins`: vorbin cannot bin to S/N {target:g} per pixel "
                    f"({type(e).__name__}: {' '.join(str(e).split())})."
                ) from None
        # renumber by the raster order of each bin's first spaxel
        _, first = np.unique(label, return_index=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        label = rank[np.searchsorted(np.unique(label), label)]
    n_bins = int(label.max()) + 1
    index = np.full(n_x * n_y, -1, np.int64)
    index[flat] = label
    sum_s = np.bincount(label, weights=s, minlength=n_bins)
    sum_v = np.bincount(label, weights=n**2, minlength=n_bins)
    return VoronoiBins(
        bin_index=jnp.asarray(index.reshape(n_x, n_y), jnp.int32),
        snr=jnp.asarray(sum_s / np.sqrt(sum_v)),
        n_spaxels=jnp.asarray(np.bincount(label, minlength=n_bins), jnp.int32),
        signal=jnp.asarray(np.where(good, signal, 0.0)),
        target_snr=target,
        window=window,
    )


def _check(cube: Cube | None, bins: VoronoiBins, where: str):
    if not isinstance(bins, VoronoiBins):
        raise BinningError(
            f"`{where}(bins=...)` must be `rubix_eqx.fit.VoronoiBins`; got {type(bins).__name__}."
        )
    if cube is not None and tuple(cube.flux.shape[:2]) != tuple(bins.bin_index.shape):
        raise BinningError(
            f"`{where}`: the bins are for {tuple(bins.bin_index.shape)} spaxels; the cube has "
            f"{tuple(cube.flux.shape[:2])}."
        )


def bin_spectra(cube: Cube, bins: VoronoiBins) -> Cube:
    """The summed spectra of the bins as a cube of `(n_bins, 1)` spaxels: flux and
    variance summed over each bin's spaxels (independent noise), mask True; every other
    attribute is the cube's. Fit it with [`rubix_eqx.fit.fit_spaxels`][] or
    [`rubix_eqx.fit.fit_mixture`][] and put the maps back with
    [`rubix_eqx.fit.unbin`][]."""
    _check(cube, bins, "bin_spectra")
    n_wave = cube.flux.shape[2]
    index = np.asarray(bins.bin_index).reshape(-1)
    inside = index >= 0
    segment = jnp.asarray(index[inside])
    rows = jnp.asarray(np.flatnonzero(inside))

    def total(x):
        return jax.ops.segment_sum(x.reshape(-1, n_wave)[rows], segment, num_segments=bins.n_bins)[
            :, None, :
        ]

    return eqx.tree_at(
        lambda c: (c.flux, c.variance, c.mask),
        cube,
        (total(cube.flux), total(cube.variance), jnp.ones((bins.n_bins, 1), bool)),
    )


def unbin(fit: SpaxelFit | MixtureFit, bins: VoronoiBins) -> SpaxelFit | MixtureFit:
    """A fit of [`rubix_eqx.fit.bin_spectra`][] (shape `(n_bins, 1)`) on the spaxel grid:
    each spaxel gets its bin's values, except the fitted masses (`maps.flux`, and a
    mixture's `weights`), spread over the bin's spaxels in proportion to their
    `bins.signal`. Spaxels not binned have zeros, `mask`/`converged` False and status 1
    (masked)."""
    _check(None, bins, "unbin")
    status = fit.kinematics.status if isinstance(fit, MixtureFit) else fit.status
    if tuple(status.shape) != (bins.n_bins, 1):
        raise BinningError(
            f"`unbin(fit=...)` has {tuple(status.shape)} spaxels; the bins need "
            f"({bins.n_bins}, 1) (a fit of `bin_spectra`)."
        )
    index = np.asarray(bins.bin_index)
    valid = jnp.asarray(index >= 0)
    at = jnp.asarray(np.maximum(index, 0))

    def spread(x):
        out = x[:, 0][at]
        keep = valid.reshape(valid.shape + (1,) * (out.ndim - 2))
        return jnp.where(keep, out, jnp.zeros((), out.dtype))

    out = jax.tree.map(spread, fit)
    signal = np.asarray(bins.signal, np.float64)
    per_bin = np.bincount(index[index >= 0], weights=signal[index >= 0], minlength=bins.n_bins)
    per_bin = np.where(per_bin > 0, per_bin, 1)
    share = jnp.asarray(np.where(index >= 0, signal / per_bin[np.maximum(index, 0)], 0))
    kin = out.kinematics if isinstance(out, MixtureFit) else out
    kin = eqx.tree_at(
        lambda k: (k.maps.flux, k.status),
        kin,
        (kin.maps.flux * share.astype(kin.maps.flux.dtype), jnp.where(valid, kin.status, 1)),
    )
    if isinstance(out, MixtureFit):
        weights = out.weights * share.astype(out.weights.dtype)[..., None, None]
        return eqx.tree_at(lambda m: (m.kinematics, m.weights), out, (kin, weights))
    return kin


def fit_voronoi(
    cube: Cube,
    ssp: SSPGrid,
    telescope: Telescope,
    observation: Observation | None = None,
    *,
    target_snr: float,
    window=None,
    mixture: bool = False,
    **kwargs,
) -> VoronoiFit:
    """Bin `cube` to `target_snr` ([`rubix_eqx.fit.voronoi_bins`][]), fit each bin's
    summed spectrum once ([`rubix_eqx.fit.fit_spaxels`][], or
    [`rubix_eqx.fit.fit_mixture`][] with `mixture=True`; `kwargs` go to it, e.g.
    `moments=4`) and put the maps back on the spaxel grid ([`rubix_eqx.fit.unbin`][]).

    Where every bin is one spaxel, the maps equal those of the unbinned fit exactly (the
    summed spectra are the spaxels', in the same order).

    **Returns:** [`rubix_eqx.fit.VoronoiFit`][].
    """
    bins = voronoi_bins(cube, target_snr, window=window)
    binned_cube = bin_spectra(cube, bins)
    if kwargs.get("pipeline") is None:
        # the model of the unbinned cube, as `fit_spaxels` builds it: the same compiled
        # solve serves a binned and an unbinned fit with as many spectra
        dtype = jnp.promote_types(cube.flux.dtype, jnp.result_type(float))
        kwargs["pipeline"] = Pipeline(
            telescope_for_cube(cube, telescope), ssp, allow_sharper_lsf=True, psf=False,
            aperture=False, dtype=dtype,
        )  # fmt: skip
    fit = fit_mixture if mixture else fit_spaxels
    binned = fit(binned_cube, ssp, telescope, observation, **kwargs)
    return VoronoiFit(bins=bins, binned=binned, spaxels=unbin(binned, bins))
