"""Truth maps beside the cube: FITS `TRUE_*`/`OBS_*` extensions and HDF5 groups (round
trips, WCS), and the seeing-convolved maps of `observed_truth_maps`."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
import rubix_eqx.io  # noqa: F401  (rx.io)
from astropy.io import fits
from astropy.wcs import WCS

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


SUFFIXES = ("VEL", "DISP", "H3", "H4", "AGE", "MH")
FIELDS = ("log_age", "metallicity", "velocity", "dispersion", "h3", "h4", "flux")


@pytest.fixture(scope="module")
def setup():
    ssp = tiny_ssp()
    # non-square field: the (n_y, n_x) image order and the WCS axes are checked
    tel = tiny_telescope(psf=rx.PSF("gaussian", 0.8)).replace(n_x=6, n_y=8)
    galaxy = random_galaxy(3, 300, size_kpc=0.3)
    obs = observation()
    obs = rx.Observation(redshift=obs.redshift, inclination=obs.inclination,
                         position_angle=obs.position_angle, ra=150.0, dec=30.0)  # fmt: skip
    cube = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=100.0))(galaxy, obs, key=jax.random.key(0))
    maps = {w: rx.truth_maps(galaxy, obs, tel, ssp, weighting=w) for w in ("light", "mass")}
    observed = {w: rx.observed_truth_maps(m, tel) for w, m in maps.items()}
    assert not bool(np.all(maps["light"].mask))  # empty spaxels are exercised
    return ssp, tel, galaxy, obs, cube, maps, observed


def hand_maps(flux, velocity, dispersion, log_age, metallicity, h3=None, h4=None):
    """`Maps` from (n_x, n_y) arrays, 0 where the flux is 0 (as `truth_maps`)."""
    flux = np.asarray(flux, np.float64)
    mask = flux > 0

    def field(x):
        x = np.zeros_like(flux) if x is None else np.asarray(x, np.float64)
        return jnp.asarray(np.where(mask, x, 0.0))

    return rx.Maps(
        log_age=field(log_age), metallicity=field(metallicity), velocity=field(velocity),
        dispersion=field(dispersion), h3=field(h3), h4=field(h4), flux=jnp.asarray(flux),
        mask=jnp.asarray(mask), weighting="light",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("weighting", ["light", "mass"])
def test_fits_round_trip_of_every_map(setup, tmp_path, weighting):
    ssp, _, _, obs, cube, maps, observed = setup
    path, plain = tmp_path / "cube.fits", tmp_path / "plain.fits"
    rx.io.write_cube_fits(cube, path, ssp=ssp, observation=obs, truth=maps[weighting],
                          observed_truth=observed[weighting])  # fmt: skip
    rx.io.write_cube_fits(cube, plain, ssp=ssp, observation=obs)
    back = rx.io.read_truth(path)
    assert sorted(back) == ["observed_truth", "truth"]
    assert eqx.tree_equal(back["truth"], maps[weighting], typematch=True)
    assert eqx.tree_equal(back["observed_truth"], observed[weighting], typematch=True)
    assert eqx.tree_equal(rx.io.read_cube(path), rx.io.read_cube(plain))  # cube unchanged
    assert rx.io.read_truth(plain) == {}

    weight = "FLUX" if weighting == "light" else "MASS"
    want_units = {
        weight: "10**(-20)*erg/s/cm**2" if weighting == "light" else "solMass",
        "VEL": "km/s", "DISP": "km/s", "AGE": "dex(yr)", "MH": "dex",
    }  # fmt: skip
    with fits.open(path) as hdus:
        names = [h.name for h in hdus]
        assert names[:5] == ["PRIMARY", "DATA", "STAT", "DQ", "LSF_FWHM"]  # indices kept
        for prefix, m in (("TRUE", maps[weighting]), ("OBS", observed[weighting])):
            assert f"{prefix}_{'MASS' if weight == 'FLUX' else 'FLUX'}" not in names
            empty = ~np.asarray(m.mask).T
            for suffix in (weight, *SUFFIXES):
                hdu = hdus[f"{prefix}_{suffix}"]
                assert hdu.data.shape == (8, 6)  # (n_y, n_x)
                assert hdu.header["TRUTHWT"] == weighting
                assert hdu.header.get("BUNIT") == want_units.get(suffix)
                assert np.all(np.isnan(hdu.data[empty])) and np.all(np.isfinite(hdu.data[~empty]))
            np.testing.assert_array_equal(hdus[f"{prefix}_VEL"].data.T[np.asarray(m.mask)],
                                          np.asarray(m.velocity)[np.asarray(m.mask)])  # fmt: skip
            assert hdus[f"{prefix}_{weight}"].header["NCLIPPED"] == int(m.n_clipped)
        assert hdus["TRUE_MH"].header["ZSOLAR"] == 0.019


def test_extensions_carry_the_cubes_celestial_wcs(setup, tmp_path):
    ssp, _, _, obs, cube, maps, observed = setup
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path, truth=maps["light"], observed_truth=observed["light"])
    want = rx.io.cube_wcs(cube).celestial
    x, y = np.meshgrid(np.arange(6.0), np.arange(8.0), indexing="ij")
    with fits.open(path) as hdus:
        data = hdus["DATA"].header
        for hdu in hdus[5:]:
            h = hdu.header
            assert h["WCSAXES"] == 2
            for key in ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1",
                        "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "RADESYS"):  # fmt: skip
                assert h[key] == data[key], (hdu.name, key)
            assert "CD3_3" not in h and "CDELT1" not in h
            got = WCS(h)
            assert got.naxis == 2
            np.testing.assert_array_equal(got.wcs.cd, want.wcs.cd)
            np.testing.assert_array_equal(got.wcs.crpix, want.wcs.crpix)
            np.testing.assert_array_equal(got.wcs.crval, want.wcs.crval)
            np.testing.assert_array_equal(
                np.asarray(got.pixel_to_world_values(x, y)),
                np.asarray(want.pixel_to_world_values(x, y)),
            )


@pytest.mark.parametrize("weighting", ["light", "mass"])
def test_hdf5_round_trip_of_every_map(setup, tmp_path, weighting):
    import h5py

    ssp, _, _, obs, cube, maps, observed = setup
    path = tmp_path / "cube.h5"
    rx.io.write_cube_hdf5(cube, path, ssp=ssp, observation=obs, truth=maps[weighting],
                          observed_truth=observed[weighting])  # fmt: skip
    back = rx.io.read_truth(path)
    assert eqx.tree_equal(back["truth"], maps[weighting], typematch=True)
    assert eqx.tree_equal(back["observed_truth"], observed[weighting], typematch=True)
    assert eqx.tree_equal(rx.io.read_cube(path), cube)
    with h5py.File(path, "r") as f:
        group = f["truth"]
        assert group.attrs["weighting"] == weighting
        empty = ~np.asarray(maps[weighting].mask)
        assert np.all(np.isnan(group["velocity"][()][empty]))
        assert group["velocity"].attrs["units"] == "km/s"
        assert group["log_age"].attrs["units"] == "dex(yr)"
    only = tmp_path / "only.h5"
    rx.io.write_cube_hdf5(cube, only, truth=maps[weighting])
    assert sorted(rx.io.read_truth(only)) == ["truth"]


def test_bad_truth_arguments(setup, tmp_path):
    _, tel, _, _, cube, maps, _ = setup
    light = maps["light"]
    for layout in ("muse-drp", "manga"):
        with pytest.raises(ValueError, match=r"truth=\.\.\.\)` needs `layout='muse'`"):
            rx.io.write_cube_fits(cube, tmp_path / "x.fits", layout=layout, truth=light)
    small = dataclasses.replace(light, **{f: getattr(light, f)[:4] for f in (*FIELDS, "mask")})
    for writer in (rx.io.write_cube_fits, rx.io.write_cube_hdf5):
        with pytest.raises(ValueError, match=r"observed_truth=\.\.\.\)` has spaxels.*\(4, 8\)"):
            writer(cube, tmp_path / "x.out", observed_truth=small)
        with pytest.raises(ValueError, match="'fit'"):
            writer(cube, tmp_path / "x.out", truth=dataclasses.replace(light, weighting="fit"))
        with pytest.raises(TypeError, match="rubix_eqx.Maps"):
            writer(cube, tmp_path / "x.out", truth={"velocity": light.velocity})
    assert not list(tmp_path.iterdir())  # nothing written


# ----------------------------------------------------------------------------------------
# Observed (seeing-convolved) maps


def centred_maps(n=10, seed=0):
    """Random maps with flux in the central 4×4 spaxels only (any PSF of half-size ≤ 3
    spaxels stays inside the field)."""
    rng = np.random.default_rng(seed)
    flux = np.zeros((n, n))
    flux[3:7, 3:7] = rng.uniform(0.5, 2.0, (4, 4))
    shape = (n, n)
    return hand_maps(
        flux, rng.normal(0, 150, shape), rng.uniform(20, 120, shape),
        rng.uniform(9, 10, shape), rng.uniform(-0.5, 0.2, shape),
        rng.uniform(-0.05, 0.05, shape), rng.uniform(-0.05, 0.05, shape),
    )  # fmt: skip


@pytest.mark.parametrize("method", ["separable", "fft"])
def test_observed_flux_is_conserved(method):
    tel = tiny_telescope(psf=rx.PSF("gaussian", 0.6))
    psf = rx.PSFConvolution.build(tel, method=method)
    assert max(psf.half_size) <= 3
    maps = centred_maps()
    observed = rx.observed_truth_maps(maps, tel, psf=psf)
    assert float(observed.flux.sum()) == pytest.approx(float(maps.flux.sum()), rel=1e-12)
    assert int(observed.mask.sum()) > int(maps.mask.sum())  # the light spreads
    # total first moment (flux × V) is conserved too
    assert float(jnp.sum(observed.flux * observed.velocity)) == pytest.approx(
        float(jnp.sum(maps.flux * maps.velocity)), rel=1e-9
    )
    assert observed.weighting == "light" and observed.flux.dtype == maps.flux.dtype


def mixture_moments(w, mean, sigma):
    """Mean, σ, skewness and excess kurtosis of a mixture of Gaussians."""
    w = np.asarray(w) / np.sum(w)
    mu = np.sum(w * mean)
    d = np.asarray(mean) - mu
    var = np.sum(w * (d**2 + sigma**2))
    m3 = np.sum(w * (d**3 + 3 * d * sigma**2))
    m4 = np.sum(w * (d**4 + 6 * d**2 * sigma**2 + 3 * sigma**4))
    return mu, math.sqrt(var), m3 / var**1.5, m4 / var**2 - 3


@pytest.mark.parametrize("kind", ["gaussian", "moffat"])
def test_two_populations_mix_as_the_psf_weights_them(kind):
    """Two spaxels of different V, σ, age, [M/H]: every observed spaxel is the mixture of
    the two Gaussian LOSVDs with weights flux × PSF kernel, analytically."""
    psf_model = rx.PSF("gaussian", 1.0) if kind == "gaussian" else rx.PSF("moffat", 1.0, 3.5)
    tel = tiny_telescope(psf=psf_model)
    n = tel.n_x
    a, b = (3, 5), (5, 5)
    flux = np.zeros((n, n))
    flux[a], flux[b] = 1.0, 3.0
    grid = np.zeros((n, n))

    def two(va, vb):
        out = grid.copy()
        out[a], out[b] = va, vb
        return out

    vel, disp = np.array([100.0, -50.0]), np.array([20.0, 30.0])
    age, mh = np.array([9.0, 10.0]), np.array([-0.3, 0.1])
    maps = hand_maps(flux, two(*vel), two(*disp), two(*age), two(*mh))
    observed = rx.observed_truth_maps(maps, tel)
    kernel = np.asarray(rx.PSFConvolution.build(tel).kernels[0])
    hx, hy = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2

    def k(p, q):
        dx, dy = p[0] - q[0], p[1] - q[1]
        return kernel[dx + hx, dy + hy] if abs(dx) <= hx and abs(dy) <= hy else 0.0

    # between the two, both spaxels are at (±1, 0): the weights are the fluxes, 1 : 3
    mid = (4, 5)
    assert float(observed.velocity[mid]) == pytest.approx((100.0 - 3 * 50.0) / 4, rel=1e-12)
    checked = 0
    for p in np.ndindex(n, n):
        w = np.array([flux[a] * k(p, a), flux[b] * k(p, b)])
        if w.sum() < 1e-6 * kernel.max():
            continue
        mu, sigma, skew, kurt = mixture_moments(w, vel, disp)
        got = {name: float(getattr(observed, name)[p]) for name in FIELDS}
        assert got["flux"] == pytest.approx(w.sum(), rel=1e-10, abs=1e-14)
        assert got["velocity"] == pytest.approx(mu, rel=1e-9, abs=1e-8)
        assert got["dispersion"] == pytest.approx(sigma, rel=1e-9)
        assert got["h3"] == pytest.approx(skew / (4 * math.sqrt(3)), abs=1e-9)
        assert got["h4"] == pytest.approx(kurt / (8 * math.sqrt(6)), abs=1e-9)
        assert got["log_age"] == pytest.approx(np.sum(w * age) / w.sum(), rel=1e-12)
        assert got["metallicity"] == pytest.approx(np.sum(w * mh) / w.sum(), rel=1e-9)
        checked += 1
    assert checked >= 9
    assert float(observed.dispersion[mid]) > 30.0  # the mixture is broader than either


def test_without_psf_observed_is_intrinsic(setup):
    ssp, tel, galaxy, obs, _, maps, _ = setup
    bare = tel.replace(psf=None)
    for weighting, m in maps.items():
        assert rx.observed_truth_maps(m, bare) is m, weighting


def test_observed_flux_matches_the_psf_convolved_cube(setup):
    """The observed flux map is the band integral of the PSF-convolved cube (the PSF is
    linear on each wavelength slice), as `truth_maps` matches the unconvolved cube."""
    ssp, tel, galaxy, obs, _, _, _ = setup
    galaxy = eqx.tree_at(lambda g: g.velocity, galaxy, galaxy.velocity * 0)
    pipeline = rx.Pipeline(tel, ssp, lsf=False, dtype=jnp.float64)
    cube = pipeline(galaxy, obs)
    maps = rx.truth_maps(galaxy, obs, tel, ssp)
    observed = rx.observed_truth_maps(maps, tel, psf=pipeline.stage(rx.PSFConvolution))
    per_spaxel = np.asarray(cube.flux).sum(axis=2) * 2.0  # 2 Å pixels
    np.testing.assert_allclose(observed.flux, per_spaxel, rtol=1e-3, atol=1e-6 * per_spaxel.max())
    assert not np.allclose(maps.flux, per_spaxel, rtol=1e-2)  # the PSF matters here


def test_observed_truth_errors(setup):
    _, tel, _, _, _, maps, _ = setup
    light = maps["light"]
    with pytest.raises(ValueError, match=r"spaxels \(6, 8\); the telescope `tiny` has"):
        rx.observed_truth_maps(light, tel.replace(n_x=8))
    varying = rx.PSFConvolution.build(tel, wavelength_dependent=True)
    with pytest.raises(ValueError, match="wavelength dependent"):
        rx.observed_truth_maps(light, tel, psf=varying)
    other = rx.PSFConvolution.build(tel.replace(n_x=8))
    with pytest.raises(ValueError, match=r"built for \(n_x, n_y\) = \(8, 8\)"):
        rx.observed_truth_maps(light, tel, psf=other)
    with pytest.raises(ValueError, match="'fit'"):
        rx.observed_truth_maps(dataclasses.replace(light, weighting="fit"), tel)


def test_run_command_writes_truth_and_observed_truth(tmp_path, capsys):
    from rubix_eqx.cli import main

    from .test_cli import DEFAULT

    ssp_path, galaxy_path = tmp_path / "tiny_ssp.h5", tmp_path / "galaxy.h5"
    tiny_ssp().to_hdf5(ssp_path)
    rx.galaxy.to_hdf5(random_galaxy(0, 500), galaxy_path)
    out = tmp_path / "out"
    overrides = [
        f"ssp={ssp_path}", f"galaxy={{source: file, path: {galaxy_path}}}", "telescope.n_x=8",
        "telescope.n_y=6", "telescope.wavelength.stop=5600", "pipeline.noise=null",
        "output.quicklook=null", "output.summary=null",
    ]  # fmt: skip
    argv = ["run", str(DEFAULT), "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    capsys.readouterr()
    from_fits, from_hdf5 = rx.io.read_truth(out / "cube.fits"), rx.io.read_truth(out / "cube.h5")
    assert sorted(from_fits) == sorted(from_hdf5) == ["observed_truth", "truth"]  # MUSE PSF
    for key in from_fits:
        assert eqx.tree_equal(from_fits[key], from_hdf5[key], typematch=True)
    truth, observed = from_hdf5["truth"], from_hdf5["observed_truth"]
    assert truth.weighting == observed.weighting == "light" and truth.flux.shape == (8, 6)
    assert int(observed.mask.sum()) >= int(truth.mask.sum())
    with fits.open(out / "cube.fits") as hdus:
        assert hdus["TRUE_FLUX"].header["CRVAL1"] == hdus["DATA"].header["CRVAL1"] == 150.0
