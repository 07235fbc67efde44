"""Voronoi binning (`rubix_eqx.fit.voronoi_bins`, vorbin) before spaxel fits: bins at the
target S/N, maps identical to the unbinned fit where every bin is one spaxel, masses
conserved when spread back, named errors, and `rubix-eqx fit --target-sn --moments`."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope
from .test_papercuts import count_compilations


N = 6  # spaxels per side of the fitted cubes
STEPS = 20  # solver steps of the fits


def synthetic_cube(n=32, peak=2.0, scale=20.0, n_wave=20, seed=0):
    """A flat-spectrum cube (no fit needed) whose S/N per pixel falls from `peak` at the
    centre as 1/(1 + r/scale), unit noise per pixel."""
    import rubix_eqx as rx

    x, y = np.meshgrid(np.arange(n) - n / 2 + 0.5, np.arange(n) - n / 2 + 0.5, indexing="ij")
    sb = peak / (1 + np.hypot(x, 0.7 * y) / scale)
    rng = np.random.default_rng(seed)
    flux = sb[..., None] + rng.normal(size=(n, n, n_wave))
    zero, fzero = jnp.zeros((), jnp.int32), jnp.zeros(())
    return rx.Cube(
        flux=jnp.asarray(flux), variance=jnp.ones((n, n, n_wave)),
        wavelength=jnp.linspace(5000.0, 5100.0, n_wave), mask=jnp.ones((n, n), bool),
        diagnostics=rx.Diagnostics(zero, zero, fzero, zero, fzero, zero),
        redshift=jnp.asarray(0.05), spaxel_size=0.5, ra=0.0, dec=0.0, flux_unit=1e-20,
        wavelength_sampling="linear", telescope="synthetic",
    )  # fmt: skip


def test_bins_reach_the_target_snr():
    """vorbin's bins of a 32×32 field (S/N 2 → 0.8 per spaxel and pixel), target 8: the
    S/N per pixel of each bin's summed spectrum (computed here from `bin_spectra`) equals
    `VoronoiBins.snr`; the bins' median is within 10 % of the target, their rms scatter
    below 10 % and none below 0.75 × target; every spaxel is in one bin."""
    import rubix_eqx as rx

    cube = synthetic_cube()
    target = 8.0
    bins = rx.fit.voronoi_bins(cube, target)
    summed = rx.fit.bin_spectra(cube, bins)
    assert summed.flux.shape == (bins.n_bins, 1, 20)
    flux, var = np.asarray(summed.flux)[:, 0], np.asarray(summed.variance)[:, 0]
    snr = flux.mean(-1) / np.sqrt(var.mean(-1))
    np.testing.assert_allclose(np.asarray(bins.snr), snr, rtol=1e-12)
    ratio = snr / target - 1
    print(f"{bins.n_bins} bins; S/N/target − 1: median {np.median(ratio):+.3f}, rms "
          f"{np.sqrt(np.mean(ratio**2)):.3f}, range {ratio.min():+.3f}…{ratio.max():+.3f}, "
          f"within ±10 %: {np.mean(np.abs(ratio) < 0.1):.0%}")  # fmt: skip
    assert bins.n_bins > 10
    assert abs(np.median(ratio)) < 0.1
    assert np.sqrt(np.mean(ratio**2)) < 0.1
    assert ratio.min() > -0.25
    index = np.asarray(bins.bin_index)
    assert index.min() == 0 and np.array_equal(np.bincount(index.ravel()), bins.n_spaxels)
    # numbered in the raster order of each bin's first spaxel
    _, first = np.unique(index.ravel(), return_index=True)
    assert np.all(np.diff(first) > 0)
    # the summed flux is the sum of the spaxels'
    k = int(np.argmax(np.asarray(bins.n_spaxels)))
    np.testing.assert_allclose(
        np.asarray(summed.flux[k, 0]), np.asarray(cube.flux)[index == k].sum(0), rtol=1e-12
    )


def test_bad_input_raises_binning_errors():
    import rubix_eqx as rx

    cube = synthetic_cube(n=8)
    for target in (0.0, -3.0, float("nan"), float("inf")):
        with pytest.raises(rx.fit.BinningError, match="target_snr"):
            rx.fit.voronoi_bins(cube, target)
    no_noise = dataclasses.replace(cube, variance=jnp.zeros_like(cube.variance))
    with pytest.raises(rx.fit.BinningError, match="variance"):
        rx.fit.voronoi_bins(no_noise, 5.0)
    with pytest.raises(rx.fit.BinningError, match="window"):
        rx.fit.voronoi_bins(cube, 5.0, window=(6000.0, 6100.0))
    with pytest.raises(rx.fit.BinningError, match="all spaxels together"):
        rx.fit.voronoi_bins(cube, 1e4)
    dark = dataclasses.replace(cube, flux=-jnp.abs(cube.flux))
    with pytest.raises(rx.fit.BinningError, match="mean flux > 0"):
        rx.fit.voronoi_bins(dark, 5.0)
    bins = rx.fit.voronoi_bins(cube, 5.0)
    with pytest.raises(rx.fit.BinningError, match="spaxels"):
        rx.fit.bin_spectra(synthetic_cube(n=6), bins)
    assert isinstance(rx.fit.BinningError("x"), ValueError)


@pytest.fixture(scope="module")
def galaxy_cube():
    """6×6 spaxels of a random galaxy, tiny SSP grid, constant S/N 40 per pixel."""
    import rubix_eqx as rx

    ssp, tel, obs = tiny_ssp(metal_slope=0.3), tiny_telescope(n=N), observation()
    cube = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=40.0))(
        random_galaxy(3, 3000, size_kpc=1.0), obs, key=jax.random.key(5)
    )
    return ssp, tel, obs, cube


@pytest.fixture(scope="module")
def unbinned_fit(galaxy_cube):
    import rubix_eqx as rx

    ssp, tel, obs, cube = galaxy_cube
    # few solver steps: the test compares fits, it does not need them converged
    return jax.block_until_ready(
        rx.fit.fit_spaxels(cube, ssp, tel, obs, moments=4, max_steps=STEPS)
    )


def test_one_spaxel_per_bin_equals_the_unbinned_fit(galaxy_cube, unbinned_fit):
    """Target S/N below every spaxel's: each bin is one spaxel, and every map, error and
    flag equals the unbinned `fit_spaxels` exactly; a second call compiles nothing."""
    import rubix_eqx as rx

    ssp, tel, obs, cube = galaxy_cube
    run = lambda: rx.fit.fit_voronoi(
        cube, ssp, tel, obs, target_snr=5.0, moments=4, max_steps=STEPS
    )
    result = run()
    with count_compilations() as count:
        jax.block_until_ready(run())
    assert count() == 0
    assert result.bins.n_bins == N * N
    assert np.array_equal(np.asarray(result.bins.bin_index).ravel(), np.arange(N * N))
    assert np.ptp(np.asarray(unbinned_fit.maps.velocity)) > 10  # real, varied fits
    for got, want in zip(jax.tree.leaves(result.spaxels), jax.tree.leaves(unbinned_fit)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_unbin_spreads_maps_and_mass(galaxy_cube, unbinned_fit):
    """`unbin` of a fit of `(n_bins, 1)` spectra (here: rows of a real fit standing in for
    the bins' fits): each spaxel carries its bin's maps and errors, the fitted mass is
    spread by the spaxels' signal (sums per bin conserved); spaxels outside the cube's
    mask are not binned and come back masked (status 1)."""
    import rubix_eqx as rx

    ssp, tel, obs, cube = galaxy_cube
    rng = np.random.default_rng(0)
    scale = 2.5  # S/N 16 per spaxel and pixel
    noisy = dataclasses.replace(
        cube,
        flux=cube.flux + (scale**2 - 1) ** 0.5 * jnp.sqrt(cube.variance)
        * jnp.asarray(rng.normal(size=cube.flux.shape)),
        variance=cube.variance * scale**2, mask=cube.mask.at[0, 0].set(False),
    )  # fmt: skip
    bins = rx.fit.voronoi_bins(noisy, 35.0)
    index = np.asarray(bins.bin_index)
    print(f"{bins.n_bins} bins of {N * N} spaxels, S/N {np.asarray(bins.snr).round(1)}")
    assert 1 < bins.n_bins < N * N and index[0, 0] == -1
    stand_in = jax.tree.map(lambda x: x.reshape(N * N, 1)[: bins.n_bins], unbinned_fit)
    fit = rx.fit.unbin(stand_in, bins)
    inside = index >= 0
    for name in ("velocity", "dispersion", "log_age", "metallicity", "h3", "h4"):
        got, per_bin = np.asarray(getattr(fit.maps, name)), np.asarray(getattr(stand_in.maps, name))
        np.testing.assert_array_equal(got[inside], per_bin[index[inside], 0])
    np.testing.assert_array_equal(np.asarray(fit.velocity_err)[inside],
                                  np.asarray(stand_in.velocity_err)[index[inside], 0])  # fmt: skip
    mass = np.bincount(index[inside], weights=np.asarray(fit.maps.flux)[inside])
    np.testing.assert_allclose(mass, np.asarray(stand_in.maps.flux)[:, 0], rtol=1e-12)
    signal = np.asarray(bins.signal)
    k = int(np.argmax(np.asarray(bins.n_spaxels)))
    share = np.asarray(fit.maps.flux)[index == k] / signal[index == k]
    np.testing.assert_allclose(share, share[0], rtol=1e-12)  # ∝ signal
    assert int(fit.status[0, 0]) == 1 and not bool(fit.converged[0, 0])
    assert float(fit.maps.flux[0, 0]) == 0 and not bool(fit.maps.mask[0, 0])
    np.testing.assert_array_equal(np.asarray(fit.status)[inside],
                                  np.asarray(stand_in.status)[index[inside], 0])  # fmt: skip
    with pytest.raises(rx.fit.BinningError, match="fit of `bin_spectra`"):
        rx.fit.unbin(unbinned_fit, bins)


def test_cli_fit_target_sn_and_moments(galaxy_cube, tmp_path, capsys):
    """`rubix-eqx fit --target-sn 60 --moments 4` on our own cube file (S/N 16 per spaxel):
    a BIN image, h3/h4 images, the options in the header and summary."""
    import rubix_eqx as rx
    from astropy.io import fits
    from rubix_eqx.cli import main

    ssp, tel, obs, cube = galaxy_cube
    rng = np.random.default_rng(1)
    noisy = dataclasses.replace(
        cube, flux=cube.flux + 1.2 * jnp.sqrt(cube.variance) * rng.normal(size=cube.flux.shape),
        variance=cube.variance * 2.44,
    )  # fmt: skip
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(noisy, path, observation=obs)
    ssp_path = tmp_path / "ssp.h5"
    ssp.to_hdf5(ssp_path)
    out = tmp_path / "fit"
    argv = ["fit", str(path), "--out", str(out), "--ssp", str(ssp_path), "--target-sn", "60",
            "--moments", "4", "--batch-size", "64"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "Voronoi bins to S/N 60" in captured.out
    summary = json.loads((out / "fit_summary.json").read_text())
    n_bins = summary["voronoi"]["n_bins"]
    assert 1 < n_bins < N * N and summary["options"]["moments"] == 4
    assert sum(summary["status_counts"].values()) == N * N
    with fits.open(out / "maps.fits") as hdus:
        assert hdus[0].header["TARGETSN"] == 60.0 and hdus[0].header["NBINS"] == n_bins
        assert "--target-sn 60" in hdus[0].header["COMMAND"]
        bin_index = hdus["BIN"].data.T
        h3 = hdus["H3"].data.T
    assert bin_index.max() == n_bins - 1
    assert np.any(h3 != 0) and np.all(hdus is not None)
    for k in range(n_bins):  # one value per bin
        assert np.unique(h3[bin_index == k]).size == 1
    assert main(argv[:-4] + ["--target-sn", "-1"]) == 1
    assert "--target-sn" in capsys.readouterr().err


def test_cli_fit_mixture(galaxy_cube, tmp_path, capsys):
    """`rubix-eqx fit --mixture` in batches of 16 (the last padded): maps.fits holds the
    mean-population maps and the weights per spaxel; any 16 spaxels of it equal
    `fit_mixture` of those spaxels alone (the cube as the command reads it; same shape: no
    new compilation), so batches stitch back in order; the LOGAGEj/MHk cards and the axis
    order agree with the maps (the light-weighted mean of LIGHT_WEIGHTS over the cards is
    LOG_AGE_LW); bad --regul, or --regul without --mixture, is a named error."""
    import argparse

    import rubix_eqx as rx
    from astropy.io import fits
    from rubix_eqx.cli import fit_lsf, fit_observation, fit_telescope, main
    from rubix_eqx.config import build_ssp

    ssp, _, obs, cube = galaxy_cube
    path, ssp_path, out = tmp_path / "cube.fits", tmp_path / "ssp.h5", tmp_path / "fit"
    rx.io.write_cube_fits(cube, path, observation=obs)
    ssp.to_hdf5(ssp_path)
    argv = ["fit", str(path), "--out", str(out), "--ssp", str(ssp_path), "--mixture",
            "--batch-size", "16"]  # fmt: skip
    assert main(argv + ["--regul", "-1"]) == 1
    assert "--regul: must be finite and >= 0" in capsys.readouterr().err
    assert main(argv[:-3] + ["--regul", "5"]) == 1
    assert "add --mixture" in capsys.readouterr().err
    assert main(argv) == 0
    assert "mixtures of all 12 SSPs" in capsys.readouterr().err
    summary = json.loads((out / "fit_summary.json").read_text())
    assert summary["options"]["mixture"] is True and summary["mixture"]["regul"] == 0.0
    with fits.open(out / "maps.fits") as hdus:
        assert hdus[0].header["MIXTURE"] is True and hdus[0].header["REGUL"] == 0.0
        maps = {name: hdus[name].data.T for name in (
            "LOG_AGE_LW", "METALLICITY_LW", "LOG_AGE_MW", "METALLICITY_MW", "MIX_CHI2",
            "MIX_CONV", "VELOCITY")}  # fmt: skip
        light = hdus["LIGHT_WEIGHTS"].data.transpose(3, 2, 1, 0)  # → (x, y, age, Z)
        mass = hdus["WEIGHTS"].data.transpose(3, 2, 1, 0)
        cards = hdus["LIGHT_WEIGHTS"].header
        log_age = np.array([cards[f"LOGAGE{j + 1}"] for j in range(ssp.age.shape[0])])
        mh = np.array([cards[f"MH{k + 1}"] for k in range(ssp.metallicity.shape[0])])
    ok = maps["MIX_CONV"] == 1
    assert ok.sum() > N * N // 2 and light.shape == (N, N, *ssp.flux.shape[:2])
    np.testing.assert_allclose(light.sum((2, 3))[ok], 1.0, rtol=1e-9)
    np.testing.assert_allclose(np.einsum("xyaz,a->xy", light, log_age)[ok],
                               maps["LOG_AGE_LW"][ok], atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(np.einsum("xyaz,z->xy", light, mh)[ok], maps["METALLICITY_LW"][ok],
                               atol=1e-9)  # fmt: skip

    read, _ = fit_lsf(None, rx.io.read_cube(path))  # as the command builds its inputs
    tel, _ = fit_telescope(None, read)
    ns = argparse.Namespace(redshift=None, distance=None)
    fit_obs, _ = fit_observation(ns, read, rx.io.read_metadata(path), path)
    flux, variance = read.flux.reshape(N * N, -1), read.variance.reshape(N * N, -1)
    for rows in (np.arange(16, 32), np.r_[35, 0, 7:21]):  # any 16 spaxels: one shape
        part = dataclasses.replace(
            read, flux=flux[rows][:, None], variance=variance[rows][:, None],
            mask=read.mask.reshape(N * N)[rows][:, None],
        )  # fmt: skip
        with count_compilations() as count:
            alone = rx.fit.fit_mixture(part, build_ssp(str(ssp_path)), tel, fit_obs)
        assert count() == 0
        at = lambda image: image.reshape(N * N, *image.shape[2:])[rows]  # noqa: E731
        for name, ref in (("LOG_AGE_LW", alone.log_age), ("METALLICITY_LW", alone.metallicity),
                          ("LOG_AGE_MW", alone.log_age_mass),
                          ("METALLICITY_MW", alone.metallicity_mass), ("MIX_CHI2", alone.chi2),
                          ("VELOCITY", alone.kinematics.maps.velocity)):  # fmt: skip
            np.testing.assert_allclose(at(maps[name]), np.asarray(ref)[:, 0], rtol=1e-7,
                                       atol=1e-9, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(at(mass), np.asarray(alone.weights)[:, 0], rtol=1e-7,
                                   atol=1e-9 * float(mass.max()))  # fmt: skip
