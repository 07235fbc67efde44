"""Voronoi binning of a cube's spaxels to a target S/N (vorbin: Cappellari & Copin 2003),
the binned spectra as a cube, and fitted maps put back on the spaxel grid."""

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._cube import Cube


class VoronoiBins(eqx.Module):
    """Which bin each spaxel belongs to.

    **Attributes:**

    - `bin_number`: (n_x, n_y) bin of each spaxel, −1 for spaxels not binned (outside
      the mask, or no positive signal).
    - `n_spaxels`: (n_bin,) spaxels per bin.
    - `snr`: (n_bin,) median S/N per pixel of each binned spectrum (summed flux over the
      square root of the summed variance).
    - `target_snr`: the target S/N per pixel.
    """

    bin_number: Int[Array, "n_x n_y"]
    n_spaxels: Int[Array, " n_bin"]
    snr: Float[Array, " n_bin"]
    target_snr: float = eqx.field(static=True)


def _median_snr(flux, variance):
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.median(flux / np.sqrt(np.where(variance > 0, variance, np.inf)), axis=-1)
    return np.where(np.isfinite(snr), snr, 0.0)


def voronoi_bins(cube: Cube, target_snr: float) -> VoronoiBins:
    """Bin the spaxels of `cube` (inside its mask, with positive median flux and variance)
    to `target_snr` per pixel with `vorbin.voronoi_2d_binning` (centroidal tessellation,
    the default weighted-Voronoi variant). Signal and noise of a spaxel are its median flux
    and median √variance, so a bin's S/N (vorbin: Σ S/√Σ N²) is that of the summed
    spectrum. Spaxels already at the target stay single; if all are, no binning."""
    if not (np.isfinite(target_snr) and target_snr > 0):
        raise ValueError(f"`voronoi_bins(target_snr=...)` must be > 0; got {target_snr!r}.")
    flux, variance = np.asarray(cube.flux, np.float64), np.asarray(cube.variance, np.float64)
    n_x, n_y, _ = flux.shape
    signal = np.median(flux, axis=-1)
    noise = np.median(np.sqrt(np.clip(variance, 0, None)), axis=-1)
    good = np.asarray(cube.mask) & (signal > 0) & (noise > 0) & np.isfinite(signal * noise)
    if not good.any():
        raise ValueError("`voronoi_bins`: no spaxel has positive signal and variance.")
    ix, iy = np.nonzero(good)
    number = np.full((n_x, n_y), -1)
    if np.min(signal[good] / noise[good]) >= target_snr:
        number[ix, iy] = np.arange(ix.size)
    else:
        with warnings.catch_warnings():  # vorbin 3.2 warns that PowerBin supersedes it
            warnings.filterwarnings(
                "ignore", message=".*VorBin is deprecated", category=UserWarning
            )
            from vorbin.voronoi_2d_binning import voronoi_2d_binning

            try:
                classes = voronoi_2d_binning(
                    ix.astype(float), iy.astype(float), signal[good], noise[good], target_snr,
                    plot=False, quiet=True, pixelsize=1.0,
                )[0]  # fmt: skip
            except ValueError as e:
                raise ValueError(f"`voronoi_bins(target_snr={target_snr:g})`: {e}") from None
        number[ix, iy] = classes
    n_bin = int(number.max()) + 1
    counts = np.bincount(number[good], minlength=n_bin)
    summed_flux, summed_var = _sums(flux, variance, number, n_bin)
    return VoronoiBins(
        bin_number=jnp.asarray(number),
        n_spaxels=jnp.asarray(counts),
        snr=jnp.asarray(_median_snr(summed_flux, summed_var)),
        target_snr=float(target_snr),
    )


def _sums(flux, variance, number, n_bin):
    inside = number >= 0
    idx = number[inside]
    f = np.zeros((n_bin, flux.shape[-1]))
    v = np.zeros((n_bin, flux.shape[-1]))
    np.add.at(f, idx, flux[inside])
    np.add.at(v, idx, variance[inside])
    return f, v


def bin_cube(cube: Cube, bins: VoronoiBins) -> Cube:
    """The binned spectra as a cube of shape (n_bin, 1, n_wave): flux and variance summed
    over each bin's spaxels; every bin inside the mask."""
    number = np.asarray(bins.bin_number)
    n_bin = int(bins.n_spaxels.shape[0])
    f, v = _sums(np.asarray(cube.flux), np.asarray(cube.variance), number, n_bin)
    dtype = cube.flux.dtype
    return dataclasses.replace(
        cube,
        flux=jnp.asarray(f[:, None], dtype),
        variance=jnp.asarray(v[:, None], cube.variance.dtype),
        mask=jnp.ones((n_bin, 1), bool),
    )


def unbin(fit, bins: VoronoiBins):
    """A fit of `bin_cube(cube, bins)` (a `SpaxelFit` or `MixtureFit`, maps of shape
    (n_bin, 1)) back on the (n_x, n_y) spaxel grid: each spaxel takes its bin's values,
    except `maps.flux` (mass), shared equally among the bin's spaxels. Spaxels in no bin
    get status 1 (masked), zeros elsewhere."""
    number = np.asarray(bins.bin_number)
    n_bin = int(bins.n_spaxels.shape[0])
    inside = number >= 0
    safe = np.where(inside, number, 0)

    def spread(leaf):
        a = np.asarray(leaf)
        if a.ndim < 2 or a.shape[:2] != (n_bin, 1):
            return leaf
        out = a[:, 0][safe]
        keep = inside.reshape(inside.shape + (1,) * (out.ndim - 2))
        return jnp.asarray(np.where(keep, out, np.zeros((), out.dtype)))

    spread_fit = jax.tree.map(spread, fit)
    share = np.asarray(bins.n_spaxels)[safe]
    return eqx.tree_at(
        lambda f: (f.status, f.maps.flux),
        spread_fit,
        (
            jnp.where(inside, spread_fit.status, 1).astype(spread_fit.status.dtype),
            spread_fit.maps.flux / jnp.asarray(np.where(inside, share, 1)),
        ),
    )


def fit_voronoi(cube: Cube, ssp, telescope, observation=None, *, target_snr: float,
                mixture: bool = False, **kwargs):  # fmt: skip
    """Voronoi-bin `cube` to `target_snr`, fit the binned spectra with
    [`rubix_eqx.fit.fit_spaxels`][] (or [`rubix_eqx.fit.fit_mixture`][] with
    `mixture=True`; `kwargs` go to it) and return (the fit on the spaxel grid, the bins)."""
    from ._mixture import fit_mixture
    from ._spaxels import fit_spaxels

    bins = voronoi_bins(cube, target_snr)
    fitter = fit_mixture if mixture else fit_spaxels
    return unbin(fitter(bin_cube(cube, bins), ssp, telescope, observation, **kwargs), bins), bins
