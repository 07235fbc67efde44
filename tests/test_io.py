"""Cube files: FITS layout and WCS checked with astropy; FITS and HDF5 round trips.

(Consumers of the files — mpdaf, spectral-cube, GIST/DAP-style reads, pPXF's noise rule —
and foreign MUSE/MaNGA cubes are in test_interop.py.)"""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx.io  # noqa: F401  (rx.io)
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


RA, DEC = 150.0, 30.0  # cos(Dec) != 1: RA offsets are checked in true angle


@pytest.fixture(scope="module")
def setup():
    import rubix_eqx as rx

    ssp = tiny_ssp()
    tel = tiny_telescope().replace(n_x=6, n_y=8)  # non-square: axis order is checked
    # high S/N: STAT is non-zero, yet the one-particle centroids below stay exact to 1e-5
    pipe = rx.Pipeline(tel, ssp, psf=False, noise=rx.Noise(snr=1e5))
    obs = observation(inclination=0.0, position_angle=0.0)
    obs = rx.Observation(redshift=obs.redshift, inclination=obs.inclination,
                         position_angle=obs.position_angle, ra=RA, dec=DEC)  # fmt: skip
    cube = pipe(random_galaxy(1, 300, size_kpc=1.0), obs, key=jax.random.key(2))
    return rx, ssp, tel, pipe, obs, cube


def synthetic_cube(rx, wavelength, sampling, n_x=5, n_y=4, medium="air", lsf_fwhm=None):
    rng = np.random.default_rng(0)
    flux = rng.uniform(0, 1, (n_x, n_y, wavelength.size)).astype(np.float32)
    mask = rng.uniform(size=(n_x, n_y)) > 0.3
    flux[~mask] = 0  # as the aperture stage leaves it
    zero = jnp.asarray(0)
    return rx.Cube(
        flux=jnp.asarray(flux),
        variance=jnp.asarray(flux**2),
        wavelength=jnp.asarray(wavelength),
        mask=jnp.asarray(mask),
        diagnostics=rx.Diagnostics(zero, zero, jnp.asarray(0.0), zero, jnp.asarray(0.0), zero),
        redshift=jnp.asarray(0.05),
        spaxel_size=0.2,
        ra=10.0,
        dec=-45.0,
        flux_unit=1e-20,
        wavelength_sampling=sampling,
        telescope="synthetic",
        lsf_fwhm=lsf_fwhm,
        medium=medium,
    )


def test_fits_layout_units_and_provenance(setup, tmp_path):
    rx, ssp, tel, pipe, obs, cube = setup
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path, ssp=ssp, observation=obs)
    lsf = [] if cube.lsf_fwhm is None else ["LSF_FWHM"]
    with fits.open(path) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "DATA", "STAT", "DQ", *lsf]
        data, stat, dq = hdus["DATA"], hdus["STAT"], hdus["DQ"]
        n_x, n_y, n_wave = cube.shape
        assert (data.header["NAXIS1"], data.header["NAXIS2"], data.header["NAXIS3"]) == (
            n_x,
            n_y,
            n_wave,
        )
        assert data.data.shape == dq.data.shape == (n_wave, n_y, n_x)
        assert data.data.dtype == stat.data.dtype == np.dtype(">f4")  # float32, as MUSE
        inside = np.asarray(cube.mask).T[None, :, :] & np.ones((n_wave, 1, 1), bool)
        flux = np.asarray(cube.flux, np.float32).transpose(2, 1, 0)
        variance = np.asarray(cube.variance, np.float32).transpose(2, 1, 0)
        np.testing.assert_array_equal(data.data[inside], flux[inside])
        np.testing.assert_array_equal(stat.data[inside], variance[inside])
        assert np.all(np.isnan(data.data[~inside])) and np.all(np.isnan(stat.data[~inside]))
        np.testing.assert_array_equal(dq.data, np.where(inside, 0, 3))  # no data | outside
        assert data.header["BUNIT"] == "10**(-20)*erg/s/cm**2/Angstrom"
        assert stat.header["BUNIT"] == "10**(-40)*erg**2/s**2/cm**4/Angstrom**2"
        import astropy.units as u

        assert u.Unit(data.header["BUNIT"], format="fits") == 1e-20 * u.erg / u.s / u.cm**2 / u.AA
        assert "CDELT1" not in data.header and data.header["CD1_1"] < 0 < data.header["CD2_2"]
        p = hdus[0].header
        assert p["NAXIS"] == 0 and hdus[0].data is None
        assert p["PROGRAM"] == "rubix_eqx" and p["PROGVER"] == rx.__version__
        assert p["TELESCOP"] == p["INSTRUME"] == p["TELMODEL"] == "tiny"
        assert p["OBJECT"] == "mock galaxy" and p["SSPNAME"] == ssp.name
        assert p["REDSHIFT"] == 0.05 and (p["RA"], p["DEC"]) == (RA, DEC)
        assert (p["INCLIN"], p["POSANG"]) == (0.0, 0.0) and len(p["DATE"]) == 19
        assert p["NPARTIC"] == 300 and p["NOUTSIDE"] == int(cube.diagnostics.n_outside)
        assert p["OUTFRAC"] == pytest.approx(float(cube.diagnostics.outside_mass_fraction))
        assert p["MEDIUM"] == "air" and data.header["CTYPE3"] == "AWAV"
    back = rx.io.read_cube(path)
    for name in ("flux", "variance"):
        np.testing.assert_array_equal(
            getattr(back, name), np.asarray(getattr(cube, name), np.float32)
        )
    np.testing.assert_array_equal(back.mask, cube.mask)
    np.testing.assert_allclose(back.wavelength, cube.wavelength, atol=1e-9)
    assert (back.spaxel_size, back.ra, back.dec, back.flux_unit, back.telescope) == (
        cube.spaxel_size, RA, DEC, 1e-20, "tiny",
    )  # fmt: skip
    assert back.medium == cube.medium and float(back.redshift) == float(cube.redshift)
    assert eqx.tree_equal(back.diagnostics, cube.diagnostics, typematch=False)
    assert rx.io.read_metadata(path)["SSPNAME"] == ssp.name


def test_fits_round_trip_keeps_every_field(tmp_path):
    """read_cube(write_cube_fits(cube)) is the same Cube (flux and variance in float32):
    outside the aperture flux 0 and variance 0, as the pipeline holds them; a noiseless
    cube's placeholder STAT reads back as variance 0; lsf_fwhm and medium are kept."""
    import rubix_eqx as rx

    wave = 10.0 ** (np.log10(3621.6) + 1e-4 * np.arange(300))
    lsf = jnp.asarray(np.linspace(2.5, 3.0, wave.size), jnp.float32)
    cube = synthetic_cube(rx, wave, "log", medium="vacuum", lsf_fwhm=lsf)
    noiseless = eqx.tree_at(lambda c: c.variance, cube, jnp.zeros_like(cube.variance))
    for layout in ("muse", "muse-drp"):
        for original in (cube, noiseless):
            path = tmp_path / f"{layout}.fits"
            rx.io.write_cube_fits(original, path, layout=layout)
            back = rx.io.read_cube(path)
            for name in ("flux", "variance", "mask"):
                np.testing.assert_array_equal(getattr(back, name), getattr(original, name))
            np.testing.assert_allclose(back.wavelength, wave, rtol=1e-15)
            if layout == "muse":
                assert back.lsf_fwhm.dtype == lsf.dtype
                np.testing.assert_array_equal(back.lsf_fwhm, lsf)
            else:  # the DRP's three HDUs have no room for it
                assert back.lsf_fwhm is None
            assert (back.medium, back.wavelength_sampling, back.telescope) == (
                "vacuum", "log", "synthetic",
            )  # fmt: skip
            assert (back.spaxel_size, back.ra, back.dec, float(back.redshift)) == (
                0.2, 10.0, -45.0, 0.05,
            )  # fmt: skip
            with fits.open(path) as hdus:
                assert hdus["DATA"].header["CTYPE3"] == "WAVE-LOG"
                stat, data = hdus["STAT"].data, hdus["DATA"].data
                assert np.all(stat[np.isfinite(data)] > 0)  # pPXF refuses noise <= 0
                if original is noiseless:
                    fill = hdus["STAT"].header["STATFILL"]
                    peak = np.nanmax(np.abs(data))
                    assert fill == pytest.approx((1e-4 * peak) ** 2, rel=1e-6)


def test_fits_reader_errors_name_file_and_keyword(setup, tmp_path):
    rx, *_ = setup
    cube = synthetic_cube(rx, 4800.0 + 2.0 * np.arange(20), "linear")
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path)

    def edited(name, edit):
        target = tmp_path / name
        with fits.open(path) as hdus:
            edit(hdus)
            # a foreign file: without our keywords the WCS and BUNIT are read
            del hdus[0].header["PROGRAM"]
            hdus.writeto(target)
        return target

    def set_header(key, value):
        return lambda h: h["DATA"].header.__setitem__(key, value)

    cases = [
        (set_header("CD1_1", -1e-4), r"CD1_1/CD2_2 give 0\.36\" x 0\.2\""),
        (set_header("BUNIT", "Jy"), r"`DATA`: BUNIT = 'Jy' is not a flux density"),
        (set_header("CDELT3", 2.5), r"CDELT3 = 2\.5 disagrees with CD3_3 = 2\.0"),
        (set_header("CD3_1", 0.1), r"CD3_1 = 0\.1: the spectral axis is mixed"),
        (set_header("CTYPE1", "PIXEL"), r"no celestial WCS: CTYPE1, CTYPE2"),
    ]
    for i, (edit, message) in enumerate(cases):
        bad = edited(f"bad{i}.fits", edit)
        with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: .*{message}"):
            rx.io.read_cube(bad)
    with pytest.raises(ValueError, match=r"layout=\.\.\.\)` must be one of"):
        rx.io.write_cube_fits(cube, tmp_path / "x.fits", layout="sami")
    with pytest.raises(ValueError, match=r"`Cube.variance` must be >= 0"):
        negative = eqx.tree_at(lambda c: c.variance, cube, -cube.variance)
        rx.io.write_cube_fits(negative, tmp_path / "x.fits")


@pytest.mark.parametrize("case", ["tiny-linear", "log", "MUSE-WFM", "MaNGA"])
def test_spectral_wcs_reproduces_wavelengths(case, tmp_path):
    import rubix_eqx as rx

    if case == "tiny-linear":
        wave, sampling, tol = np.asarray(tiny_telescope().wavelength), "linear", 1e-6
    elif case == "log":
        wave, sampling, tol = 10.0 ** (np.log10(4800.0) + 1e-4 * np.arange(900)), "log", 1e-6
    else:  # presets hold float32 wavelengths: MUSE's 1.25 Å grid is exact in float32
        tel = rx.Telescope.preset(case)
        wave, sampling = np.asarray(tel.wavelength), tel.sampling
        tol = 1e-6 if case == "MUSE-WFM" else 1e-3  # MaNGA log grid: float32 rounding
    medium = "vacuum" if case == "MaNGA" else "air"
    cube = synthetic_cube(rx, wave, sampling, medium=medium)
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path)
    header = fits.getheader(path, "DATA")
    ctype = "AWAV" if medium == "air" else "WAVE"
    assert header["CTYPE3"] == (ctype + "-LOG" if sampling == "log" else ctype)
    spectral = WCS(header).spectral
    got = spectral.pixel_to_world(np.arange(wave.size)).to_value("Angstrom")
    assert np.max(np.abs(got - wave.astype(np.float64))) <= tol
    np.testing.assert_allclose(rx.io.read_cube(path).wavelength, wave, rtol=0, atol=tol)


def test_fits_rejects_irregular_wavelengths(tmp_path):
    import rubix_eqx as rx

    wave = np.sort(np.random.default_rng(1).uniform(5000, 6000, 50))
    with pytest.raises(ValueError, match="not linear-sampled"):
        rx.io.write_cube_fits(synthetic_cube(rx, wave, "linear"), tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists() and not list(tmp_path.iterdir())  # atomic: no debris


def test_celestial_wcs_places_galaxy_on_sky(setup, tmp_path):
    """A particle at the galaxy centre lands on CRVAL; one 0.5 kpc along the galaxy's +x
    (PA = 0: North) and +y (East) lands at the right angle and direction (d_A)."""
    rx, ssp, tel, pipe, obs, _ = setup
    d_a = float(obs.angular_diameter_distance())  # Mpc
    offset_kpc = 0.5
    sep_deg = np.degrees(offset_kpc / (d_a * 1e3))
    centre = SkyCoord(RA, DEC, unit="deg")
    for where, position_angle in (
        ((0.0, 0.0), None),
        ((offset_kpc, 0.0), 0.0),
        ((0.0, offset_kpc), 90.0),
    ):
        n = 300  # as the fixture's galaxy: no recompilation; all but one particle massless
        galaxy = rx.Galaxy.from_arrays(
            position=np.tile([where[0], where[1], 0.0], (n, 1)), velocity=np.zeros((n, 3)),
            mass=np.r_[1e6, np.zeros(n - 1)], age=np.full(n, 5.0), metallicity=np.full(n, 0.019),
            dtype=jnp.float64,
        )  # fmt: skip
        cube = pipe(galaxy, obs, key=jax.random.key(0))
        rx.io.write_cube_fits(cube, tmp_path / "one.fits")
        with fits.open(tmp_path / "one.fits") as hdus:
            image = hdus["DATA"].data.sum(0)  # (n_y, n_x)
            wcs = WCS(hdus["DATA"].header).celestial
        yy, xx = np.indices(image.shape)
        x, y = (image * xx).sum() / image.sum(), (image * yy).sum() / image.sum()  # CIC centroid
        sky = wcs.pixel_to_world(x, y)
        if position_angle is None:
            assert centre.separation(sky).arcsec < 1e-4
        else:
            assert centre.separation(sky).deg == pytest.approx(sep_deg, rel=1e-4)
            # DATA is float32: a centroid due North may come out at 359.99999 degrees
            turn = (centre.position_angle(sky).deg - position_angle + 180.0) % 360.0 - 180.0
            assert turn == pytest.approx(0.0, abs=1e-2)


def test_hdf5_round_trip_is_exact(setup, tmp_path):
    rx, ssp, tel, pipe, obs, cube = setup
    config = {
        "seed": 3,
        "telescope": {"preset": "MUSE-WFM", "n_x": 6},
        "observation": {"redshift": 0.05},
    }
    rx.io.write_cube_hdf5(cube, tmp_path / "cube.h5", ssp=ssp, observation=obs, config=config)
    back = rx.io.read_cube(tmp_path / "cube.h5")
    assert eqx.tree_equal(back, cube)
    # the newer fields: the LSF actually on the pixels and the medium
    lsf = jnp.linspace(2.0, 3.0, cube.shape[2], dtype=jnp.float32)
    vacuum = rx.Cube(**{f: getattr(cube, f) for f in cube.__dataclass_fields__} | {
        "lsf_fwhm": lsf, "medium": "vacuum"})  # fmt: skip
    rx.io.write_cube_hdf5(vacuum, tmp_path / "vacuum.h5")
    assert eqx.tree_equal(rx.io.read_cube(tmp_path / "vacuum.h5"), vacuum)
    assert back.flux.dtype == cube.flux.dtype and back.wavelength.dtype == cube.wavelength.dtype
    meta = rx.io.read_metadata(tmp_path / "cube.h5")
    import yaml

    assert yaml.safe_load(meta["run_config"]) == config
    assert (
        meta["ssp_name"] == ssp.name and meta["inclination"] == 0.0 and meta["format_version"] == 1
    )
    import h5py

    with h5py.File(tmp_path / "cube.h5", "a") as f:
        f.attrs["format_version"] = 7
    with pytest.raises(ValueError, match="`format_version` 7 is not supported"):
        rx.io.read_cube_hdf5(tmp_path / "cube.h5")


def test_fits_written_before_the_muse_layout_still_reads(tmp_path):
    """Our earlier layout: CDELT WCS, float64 DATA, STAT = 0 for a noiseless cube, a 2-D
    uint8 `MASK` of the aperture, no `LAYOUT` keyword."""
    import rubix_eqx as rx

    n_x, n_y, n_wave = 4, 3, 10
    rng = np.random.default_rng(5)
    flux = rng.uniform(1, 2, (n_x, n_y, n_wave))
    aperture = np.ones((n_x, n_y), bool)
    aperture[0, 0] = False
    flux[~aperture] = 0
    primary = fits.PrimaryHDU()
    for key, value in {"PROGRAM": "rubix_eqx", "TELESCOP": "tiny", "RA": 1.0, "DEC": 2.0,
                       "REDSHIFT": 0.05, "FLUXUNIT": 1e-20, "SPAXSIZE": 0.5,
                       "WAVESAMP": "linear", "NPARTIC": 7}.items():  # fmt: skip
        primary.header[key] = value
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 1.0, "CRVAL2": 2.0,
           "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600, "CRPIX1": 2.5, "CRPIX2": 2.0,
           "CTYPE3": "AWAV", "CUNIT3": "Angstrom", "CRVAL3": 4800.0, "CDELT3": 2.0,
           "CRPIX3": 1.0}  # fmt: skip
    hdus = [primary]
    for name, data in (("DATA", flux), ("STAT", np.zeros_like(flux))):
        hdu = fits.ImageHDU(data.transpose(2, 1, 0), name=name)
        hdu.header.update(wcs)
        hdus.append(hdu)
    hdus.append(fits.ImageHDU(aperture.T.astype(np.uint8), name="MASK"))
    fits.HDUList(hdus).writeto(tmp_path / "old.fits")
    cube = rx.io.read_cube(tmp_path / "old.fits")
    np.testing.assert_array_equal(cube.flux, flux)
    np.testing.assert_array_equal(cube.variance, 0)
    np.testing.assert_array_equal(cube.mask, aperture)
    np.testing.assert_array_equal(cube.wavelength, 4800.0 + 2.0 * np.arange(n_wave))
    assert (cube.spaxel_size, cube.telescope, cube.medium, cube.lsf_fwhm) == (
        0.5, "tiny", "air", None,
    )  # fmt: skip
    assert int(cube.diagnostics.n_particles) == 7
