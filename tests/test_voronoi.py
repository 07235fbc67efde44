"""Voronoi bins (vorbin) to a target S/N, binned cubes, and maps back on the spaxel grid."""

import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from . import spaxel_cases as sc


TARGET = 40.0


@pytest.fixture(scope="module")
def faint_cube():
    """12×12 spaxels of one spectrum, brightness falling off from the centre, constant
    noise: per-spaxel S/N from ≈ 5 (corners) to ≈ 45 (centre)."""
    tel = sc.telescope(12, 12, stop=5000.0, step=2.0)
    wave = np.asarray(tel.wavelength)
    spectrum = 1.0 + 0.2 * np.sin(wave / 7.0)
    x, y = np.meshgrid(np.arange(12) - 5.5, np.arange(12) - 5.5, indexing="ij")
    brightness = 50.0 * np.exp(-np.hypot(x, y) / 4.0)
    flux = brightness[..., None] * spectrum
    rng = np.random.default_rng(0)
    flux = flux + rng.normal(size=flux.shape)
    return sc.cube_from_spectra(flux, np.ones_like(flux), tel)


def test_bins_reach_the_target_snr(faint_cube):
    bins = rx.fit.voronoi_bins(faint_cube, TARGET)
    number, counts, snr = (np.asarray(a) for a in (bins.bin_number, bins.n_spaxels, bins.snr))
    assert number.shape == (12, 12) and np.all(number >= 0)  # every spaxel in one bin
    assert counts.sum() == 144 and np.all(counts >= 1)
    assert np.array_equal(np.bincount(number.ravel()), counts)
    multi = counts > 1
    assert multi.sum() >= 5 and (~multi).sum() >= 1  # binned outskirts, single centre
    print(f"{counts.size} bins; S/N of binned spectra: median {np.median(snr[multi]):.1f}, "
          f"rms {np.std(snr[multi] / TARGET):.1%}, "
          f"range {snr[multi].min():.1f}-{snr[multi].max():.1f} (target {TARGET:g})")  # fmt: skip
    # The median on target within 10 %; vorbin's bins scatter about it (Cappellari &
    # Copin 2003): on a field of only 144 spaxels of noisy signal, 15 % rms, none < 0.6.
    assert np.median(snr[multi]) == pytest.approx(TARGET, rel=0.1)
    assert np.std(snr[multi] / TARGET) < 0.2
    assert np.all(snr[multi] > 0.6 * TARGET)
    binned = rx.fit.bin_cube(faint_cube, bins)
    assert binned.flux.shape == (counts.size, 1, faint_cube.flux.shape[-1])
    assert float(jnp.sum(binned.flux)) == pytest.approx(float(jnp.sum(faint_cube.flux)), rel=1e-12)
    assert np.allclose(np.asarray(binned.variance)[:, 0, 0], counts)


def test_unbin_puts_bin_values_on_their_spaxels(faint_cube):
    bins = rx.fit.voronoi_bins(faint_cube, TARGET)
    n_bin = int(bins.n_spaxels.shape[0])
    value = jnp.arange(n_bin, dtype=jnp.float64).reshape(n_bin, 1)
    zero, ok = jnp.zeros_like(value), jnp.ones(value.shape, bool)
    maps = rx.Maps(log_age=value, metallicity=value, velocity=value, dispersion=value, h3=zero,
                   h4=zero, flux=value + 1.0, mask=ok, weighting="fit")  # fmt: skip
    fit = rx.fit.SpaxelFit(
        maps=maps, log_age_err=value, metallicity_err=value, velocity_err=value,
        dispersion_err=value, h3_err=zero, h4_err=zero, converged=ok,
        status=jnp.zeros(value.shape, jnp.int32), chi2=value, snr=value,
    )  # fmt: skip
    back = rx.fit.unbin(fit, bins)
    number = np.asarray(bins.bin_number)
    assert back.maps.velocity.shape == (12, 12)
    assert np.array_equal(np.asarray(back.maps.velocity), number.astype(float))
    assert np.array_equal(np.asarray(back.velocity_err), number.astype(float))
    share = np.asarray(bins.n_spaxels)[number]
    assert np.allclose(np.asarray(back.maps.flux), (number + 1.0) / share)  # mass shared
    assert np.all(np.asarray(back.status) == 0) and np.asarray(back.converged).all()


def test_voronoi_rejects_bad_targets(faint_cube):
    with pytest.raises(ValueError, match="target_snr"):
        rx.fit.voronoi_bins(faint_cube, -1.0)
    with pytest.raises(ValueError, match="target_snr"):
        rx.fit.voronoi_bins(faint_cube, 1e6)  # more than the whole field
