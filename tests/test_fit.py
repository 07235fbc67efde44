"""Recovery by least squares: particle level, spaxel maps, whole galaxy (small cases)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from .cases import observation, tiny_ssp, tiny_telescope


@pytest.fixture(scope="module")
def ssp():
    return tiny_ssp(metal_slope=0.3)


def test_particle_recovery_from_a_grid_of_starts(ssp):
    """The RUBIX paper's case: one particle in one spaxel, S/N = 100."""
    tel = tiny_telescope(n=1)
    obs = observation(inclination=0.0)
    truth = rx.galaxy.single_population(1, age=3.0, metallicity=0.012, dtype=jnp.float64)
    cube = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=100.0), dtype=jnp.float64)(
        truth, obs, key=jax.random.key(3)
    )
    model = rx.Pipeline(tel, ssp, dtype=jnp.float64)
    hits = []
    for age0 in (0.6, 2.0, 9.0):
        for z0 in (0.005, 0.015, 0.028):
            start = eqx.tree_at(
                lambda g: (g.age, g.metallicity), truth, (jnp.array([age0]), jnp.array([z0]))
            )
            fit = rx.fit.fit_particles(cube, model, start, obs)
            d_age = abs(float(jnp.log10(fit.age[0] / 3.0)))
            d_z = abs(float(jnp.log10(fit.metallicity[0] / 0.012)))
            hits.append(d_age < 0.02 and d_z < 0.02)
            assert np.isfinite(float(fit.log_age_err[0])) and float(fit.log_age_err[0]) > 0
    assert np.mean(hits) >= 0.8


@pytest.fixture(scope="module")
def miles_disk_cube():
    """A small E-MILES cube (4×4 spaxels of 0.6″, 4800–6500 Å) of a composite disk."""
    pytest.importorskip("ppxf")
    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset(
        "MUSE-WFM", n_x=4, n_y=4, spaxel_size=0.6, wavelength={"stop": 6500.0}
    )
    gal, _ = rx.galaxy.synthetic_disk(
        jax.random.key(0), 20_000, dispersion=60.0, bulge_fraction=0.0, dtype=jnp.float64
    )
    obs = observation(inclination=50.0, position_angle=20.0)
    pipe = rx.Pipeline(tel, ssp, allow_sharper_lsf=True, dtype=jnp.float64)
    noisy = rx.Pipeline(
        tel, ssp, allow_sharper_lsf=True, noise=rx.Noise(snr=50.0), dtype=jnp.float64
    )
    return ssp, tel, gal, obs, pipe, noisy(gal, obs, key=jax.random.key(1))


def test_spaxel_maps_recover_truth(miles_disk_cube):
    """Single-SSP fits of a composite disk against the light-weighted truth maps (the
    issue's thresholds; the full 20×20, 10⁵-particle case is in docs/fitting.md)."""
    ssp, tel, gal, obs, pipe, cube = miles_disk_cube
    fit = rx.fit.fit_spaxels(cube, ssp, tel, obs, pipeline=pipe, rtol=1e-5, atol=1e-5)
    truth = rx.truth_maps(gal, obs, tel, ssp)
    for leaf in jax.tree.leaves(fit):
        assert np.all(np.isfinite(np.asarray(leaf)))
    ok = np.asarray(fit.converged)
    assert ok.mean() >= 0.75
    d = lambda f: (np.asarray(getattr(fit.maps, f)) - np.asarray(getattr(truth, f)))[ok]
    assert np.median(np.abs(d("log_age"))) < 0.05
    assert np.median(np.abs(d("metallicity"))) < 0.05
    # The central 4×4 spaxels see the steep inner rotation curve: skewed LOSVDs, where a
    # Gaussian's peak velocity differs from the light-weighted mean by several km/s.
    # Over a 20×20 map the median is 2.8 km/s (docs/fitting.md).
    assert np.median(np.abs(d("velocity"))) < 10.0
    assert (
        np.median(np.abs(d("dispersion")) / np.asarray(truth.dispersion)[ok]) < 0.15
    )  # idem: 4 % over 20×20
    assert np.median(np.asarray(fit.chi2)[ok]) == pytest.approx(1.0, abs=0.1)
    assert np.all(np.asarray(fit.velocity_err)[ok] > 0)
    masked = rx.fit.fit_spaxels(cube, ssp, tel, obs, pipeline=pipe, min_snr=1e6)
    assert np.all(np.asarray(masked.status) == 1) and not np.asarray(masked.converged).any()


def test_spaxel_fit_needs_variance(ssp):
    tel = tiny_telescope(n=2)
    cube = rx.Pipeline(tel, ssp, dtype=jnp.float64)(
        rx.galaxy.single_population(1, dtype=jnp.float64), observation()
    )
    with pytest.raises(ValueError, match="variance"):
        rx.fit.fit_spaxels(cube, ssp, tel)
    with pytest.raises(ValueError, match="solver"):
        rx.fit.fit_spaxels(cube, ssp, tel, solver="newton")


def test_whole_galaxy_parameters(ssp):
    """Age and [M/H] gradients and inclination through the full particle pipeline,
    from a start 30 % / 15° off, with the particles redrawn from fixed draws."""
    tel = tiny_telescope(n=8, step=4.0, lsf_fwhm=8.0)
    key = jax.random.key(0)
    gal, truth = rx.galaxy.synthetic_disk(
        key, 2000, scale_length=1.0, log_age_centre=0.6, log_age_gradient=-0.1,
        metallicity_centre=-0.1, metallicity_gradient=-0.1, dtype=jnp.float64,
    )  # fmt: skip
    draws = rx.galaxy.draw_disk(key, 2000, float(truth.bulge_fraction), jnp.float64)
    data = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=50.0), dtype=jnp.float64)(
        gal, observation(inclination=50.0), key=jax.random.key(1)
    )
    start = eqx.tree_at(
        lambda t: (t.log_age_gradient, t.metallicity_gradient),
        truth,
        (truth.log_age_gradient * 1.3, truth.metallicity_gradient * 0.7),
    )
    model = rx.Pipeline(tel, ssp, dtype=jnp.float64)
    fit = rx.fit.fit_galaxy(data, model, draws, start, observation(inclination=35.0))
    assert bool(fit.converged)
    assert float(fit.values["inclination"]) == pytest.approx(50.0, abs=2.0)
    assert float(fit.values["log_age_gradient"]) == pytest.approx(-0.1, rel=0.1)
    assert float(fit.values["metallicity_gradient"]) == pytest.approx(-0.1, rel=0.1)


def test_fit_command_writes_maps(tmp_path):
    """`rubix-eqx fit CUBE --out DIR` on a small E-MILES MUSE cube."""
    pytest.importorskip("ppxf")
    from astropy.io import fits
    from rubix_eqx.cli import main

    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset(
        "MUSE-WFM", n_x=2, n_y=2, spaxel_size=1.0, wavelength={"stop": 5600.0}
    )
    gal, _ = rx.galaxy.synthetic_disk(jax.random.key(0), 2000, dispersion=60.0)
    pipe = rx.Pipeline(tel, ssp, allow_sharper_lsf=True, noise=rx.Noise(snr=40.0))
    cube = pipe(gal, rx.Observation(redshift=0.05, inclination=40.0), key=jax.random.key(1))
    rx.io.write_cube_fits(cube, tmp_path / "cube.fits")
    assert main(["fit", str(tmp_path / "cube.fits"), "--out", str(tmp_path / "fit")]) == 0
    with fits.open(tmp_path / "fit" / "maps.fits") as hdul:
        assert hdul["LOG_AGE"].data.shape == (2, 2)
        assert np.all(np.isfinite(hdul["VELOCITY_ERR"].data))
    assert (tmp_path / "fit" / "maps.png").stat().st_size > 10_000
    assert (tmp_path / "fit" / "fit_summary.json").is_file()
