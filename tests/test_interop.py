"""Our cube files as the field's tools open them, and their files through our reader.

Consumers: mpdaf (`Cube`, `Spectrum`, `FSFModel`), spectral-cube (`SpectralCube.read`),
the header reads of GIST's `MUSE_WFM` reader and of the MaNGA DAP (`CD3_3`, `CRVAL3`,
`CD2_2`·3600, positional `DATA`/`STAT`, 1/`STAT`), and pPXF (which refuses noise ≤ 0).
Foreign files come from tests/foreign_files.py (astropy alone, the pipelines' conventions).
"""

import math
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
import rubix_eqx.io  # noqa: F401  (rx.io)
from astropy.io import fits

from .cases import tiny_ssp
from .foreign_files import (
    DONOTUSE,
    FORESTAR,
    LOWCOV,
    write_manga_logcube,
    write_muse_drp_cube,
)


# MUSE's BUNIT '10**(-20)*erg/s/cm**2/Angstrom' (ours too) has several slashes: astropy's
# generic parser, which mpdaf and spectral-cube call, reads it with this warning (under
# filterwarnings=error the warning would make their parse fail).
SLASHES = "ignore:.*contains multiple slashes:astropy.units.UnitsWarning"
MUSE_WAVE = 4750.0 + 1.25 * np.arange(300)  # exact in float32, as the MUSE-WFM preset
RA, DEC = 150.25, -12.5
C_KMS = 299792.458


def make_cube(wave, *, noise=True, medium="air", sampling="linear", n_x=6, n_y=5,
              dtype=jnp.float32, spaxel=0.2, flux_unit=1e-20, seed=0):  # fmt: skip
    """A small cube with an aperture (spaxels outside hold flux 0 and variance 0, as the
    pipeline leaves them), positive flux and a known LSF."""
    rng = np.random.default_rng(seed)
    n = wave.size
    flux = rng.uniform(1.0, 2.0, (n_x, n_y, n)) * (1 + 0.2 * np.sin(np.arange(n) / 7.0))
    mask = np.ones((n_x, n_y), bool)
    mask[0, 0] = mask[-1, -1] = mask[0, -1] = False
    variance = (0.05 * flux) ** 2 if noise else np.zeros_like(flux)
    flux, variance = np.where(mask[:, :, None], flux, 0), np.where(mask[:, :, None], variance, 0)
    zero = jnp.asarray(0)
    return rx.Cube(
        flux=jnp.asarray(flux, dtype),
        variance=jnp.asarray(variance, dtype),
        wavelength=jnp.asarray(wave, dtype),
        mask=jnp.asarray(mask),
        diagnostics=rx.Diagnostics(
            zero, zero, jnp.asarray(0.0, jnp.float32), zero, jnp.asarray(0.1, jnp.float32), zero
        ),  # fmt: skip
        redshift=jnp.asarray(0.05, jnp.float32),
        spaxel_size=spaxel,
        ra=RA,
        dec=DEC,
        flux_unit=flux_unit,
        wavelength_sampling=sampling,
        telescope="MUSE-WFM" if medium == "air" else "MaNGA",
        lsf_fwhm=jnp.asarray(np.linspace(2.9, 2.5, n), jnp.float32),
        medium=medium,
    )


PSF = rx.PSF("moffat", 0.7, 2.8)


@pytest.fixture(scope="module")
def muse_file(tmp_path_factory):
    cube = make_cube(MUSE_WAVE)
    path = tmp_path_factory.mktemp("interop") / "cube.fits"
    rx.io.write_cube_fits(cube, path, psf=PSF, object="NGC 1234")
    return cube, path


def spectral_cube():
    from astropy.utils.exceptions import AstropyPendingDeprecationWarning

    with warnings.catch_warnings():  # spectral-cube 0.7.0 on astropy 8: COPY_IF_NEEDED
        warnings.filterwarnings("ignore", category=AstropyPendingDeprecationWarning)
        from spectral_cube import SpectralCube
    return SpectralCube


# ----------------------------------------------------------------------------------------
# Our files in their tools


@pytest.mark.filterwarnings(SLASHES)
def test_mpdaf_opens_our_cube(muse_file):
    import astropy.units as u
    from mpdaf.MUSE import FSFModel
    from mpdaf.obj import Cube, Spectrum

    cube, path = muse_file
    m = Cube(str(path))
    n_x, n_y, n_wave = cube.shape
    assert m.shape == (n_wave, n_y, n_x)
    np.testing.assert_array_equal(m.wave.coord(), MUSE_WAVE)  # exactly
    assert m.wave.get_step() == 1.25 and m.wave.wcs.wcs.ctype[0] == "AWAV"
    np.testing.assert_array_equal(m.wcs.get_step(unit=u.arcsec), [0.2, 0.2])  # exactly
    assert m.unit == u.Unit(1e-20 * u.erg / u.s / u.cm**2 / u.AA)
    with fits.open(path) as hdus:
        dq = hdus["DQ"].data
        stat = hdus["STAT"].data
    np.testing.assert_array_equal(m.mask, dq != 0)
    outside = ~np.asarray(cube.mask).T
    assert np.all(m.mask[:, outside]) and not np.any(m.mask[:, ~outside])
    np.testing.assert_array_equal(m.var.data[~m.mask], stat[dq == 0])
    centre = m.wcs.pix2sky([[(n_y - 1) / 2, (n_x - 1) / 2]])[0]  # (dec, ra)
    np.testing.assert_allclose(centre, [DEC, RA], rtol=0, atol=1e-12)
    fsf = FSFModel.read(str(path))
    assert fsf.get_fwhm(6000.0) == pytest.approx(0.7) and fsf.get_beta(6000.0) == 2.8
    lsf = Spectrum(str(path), ext="LSF_FWHM")
    np.testing.assert_array_equal(lsf.wave.coord(), MUSE_WAVE)
    np.testing.assert_array_equal(lsf.data, np.asarray(cube.lsf_fwhm))
    assert lsf.unit == u.AA


@pytest.mark.filterwarnings(SLASHES)
def test_spectral_cube_reads_our_cube(muse_file):
    import astropy.units as u
    from astropy.wcs.utils import proj_plane_pixel_scales

    cube, path = muse_file
    sc = spectral_cube().read(path, hdu="DATA")
    n_x, n_y, n_wave = cube.shape
    assert sc.shape == (n_wave, n_y, n_x)
    assert sc.unit == u.Unit(1e-20 * u.erg / u.s / u.cm**2 / u.AA)
    assert list(sc.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN", "AWAV"]
    np.testing.assert_allclose(sc.spectral_axis.to_value(u.AA), MUSE_WAVE, rtol=1e-14, atol=0)
    np.testing.assert_allclose(proj_plane_pixel_scales(sc.wcs.celestial) * 3600, 0.2, rtol=1e-14)
    sky = sc.wcs.celestial.pixel_to_world((n_x - 1) / 2, (n_y - 1) / 2)
    assert sky.ra.deg == pytest.approx(RA, abs=1e-12) and sky.dec.deg == pytest.approx(
        DEC, abs=1e-12
    )
    inside = np.asarray(cube.mask).T
    np.testing.assert_array_equal(
        sc.unmasked_data[:, inside].value, np.asarray(cube.flux).transpose(2, 1, 0)[:, inside]
    )


def test_gist_and_dap_header_reads_give_our_values(muse_file, tmp_path):
    """What GIST's MUSE_WFM reader and the DAP's MUSE reader compute from the header:
    data in HDU 1, variance in HDU 2, λ = CRVAL3 + CD3_3·arange(n) (CRPIX3 = 1 assumed),
    pixel size CD2_2·3600, ivar = 1/STAT masked where not finite."""
    cube, path = muse_file
    with fits.open(path) as hdus:
        hdr, data, stat = hdus[1].header, hdus[1].data, hdus[2].data
        dq = hdus["DQ"].data
        assert hdus[1].name == "DATA" and hdus[2].name == "STAT"
        assert hdr["CRPIX3"] == 1.0 and "CDELT3" not in hdr
        wave = hdr["CRVAL3"] + np.arange(hdr["NAXIS3"]) * hdr["CD3_3"]
        np.testing.assert_array_equal(wave, MUSE_WAVE)
        assert hdr["CD2_2"] * 3600.0 == 0.2 and -hdr["CD1_1"] * 3600.0 == 0.2
        assert hdr["CD1_2"] == hdr["CD2_1"] == 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = 1.0 / stat
        dap_mask = ~np.isfinite(ivar) | ~np.isfinite(data)
        np.testing.assert_array_equal(dap_mask, dq != 0)
        noise = np.sqrt(stat[np.isfinite(data)])  # GIST: sqrt of the variance
        assert np.all(noise > 0)
    drp = tmp_path / "drp.fits"
    rx.io.write_cube_fits(cube, drp, layout="muse-drp")
    with fits.open(drp) as hdus:  # GIST reads STAT only if the file has exactly 3 HDUs
        assert [h.name for h in hdus] == ["PRIMARY", "DATA", "STAT"]


@pytest.mark.parametrize("noise", [True, False])
def test_stat_positive_wherever_data_finite_and_dq_marks_every_nan(noise, tmp_path):
    cube = make_cube(MUSE_WAVE, noise=noise)
    cube = eqx.tree_at(lambda c: c.variance, cube, cube.variance.at[1, 1, 5].set(jnp.inf))
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path)
    with fits.open(path) as hdus:
        data, stat, dq = hdus["DATA"].data, hdus["STAT"].data, hdus["DQ"].data
        assert np.all(stat[np.isfinite(data)] > 0)  # pPXF: assert noise > 0
        np.testing.assert_array_equal(np.isnan(data), dq != 0)
        np.testing.assert_array_equal(np.isnan(stat), dq != 0)
        assert dq[5, 1, 1] == 1 and np.isnan(data[5, 1, 1])  # infinite variance: no data
        assert ("STATFILL" in hdus["STAT"].header) == (not noise)
    back = rx.io.read_cube(path)
    assert float(back.variance[1, 1, 5]) == np.inf and float(back.flux[1, 1, 5]) == 0.0
    np.testing.assert_array_equal(back.mask, cube.mask)


def test_ppxf_fits_a_spectrum_of_our_cube_with_its_noise(tmp_path):
    """pPXF on one spaxel of a log-sampled cube (noisy and noiseless), with noise =
    sqrt(STAT) and velscale from CD3_3/CRVAL3: it accepts the noise and recovers V."""
    pytest.importorskip("ppxf")
    from ppxf.ppxf import ppxf

    ssp = tiny_ssp()
    velscale = 60.0
    step = velscale / C_KMS
    ln_t = np.log(4000.0) + step * np.arange(int(np.log(7000 / 4000) / step))
    templates = np.stack(
        [np.interp(np.exp(ln_t), ssp.wavelength, ssp.flux[i, 1]) for i in range(4)], axis=1
    )
    kernel = np.exp(-0.5 * (np.arange(-15, 16) / (120 / velscale)) ** 2)
    model = np.convolve(templates @ [0.5, 0.3, 0.2, 0.0], kernel / kernel.sum(), mode="same")
    start, n = int(np.log(4500 / 4000) / step), int(np.log(6000 / 4500) / step)
    galaxy = np.interp(ln_t[start : start + n] - 150.0 / C_KMS, ln_t, model) * 1e3
    rng = np.random.default_rng(1)
    for snr in (50.0, None):
        variance = (
            np.zeros((2, 2, n)) if snr is None else np.broadcast_to((galaxy / snr) ** 2, (2, 2, n))
        )
        flux = np.broadcast_to(galaxy, (2, 2, n)) + rng.normal(size=(2, 2, n)) * np.sqrt(variance)
        cube = rx.Cube(**{
            f: getattr(make_cube(np.exp(ln_t[start : start + n]), n_x=2, n_y=2), f)
            for f in rx.Cube.__dataclass_fields__
        } | {"flux": jnp.asarray(flux, jnp.float32), "variance": jnp.asarray(variance, jnp.float32),
             "mask": jnp.ones((2, 2), bool), "wavelength_sampling": "log"})  # fmt: skip
        path = tmp_path / "log.fits"
        rx.io.write_cube_fits(cube, path)
        with fits.open(path) as hdus:
            hdr = hdus["DATA"].header
            assert hdr["CTYPE3"] == "AWAV-LOG"
            spectrum = hdus["DATA"].data[:, 0, 0].astype(np.float64)
            noise = np.sqrt(hdus["STAT"].data[:, 0, 0].astype(np.float64))
        scale = C_KMS * hdr["CD3_3"] / hdr["CRVAL3"]
        assert scale == pytest.approx(velscale, rel=1e-6)
        pp = ppxf(templates, spectrum, noise, scale, [100.0, 50.0], moments=2, degree=-1,
                  vsyst=C_KMS * np.log(np.exp(ln_t[0]) / hdr["CRVAL3"]), quiet=True)  # fmt: skip
        assert pp.sol[0] == pytest.approx(150.0, abs=5.0 if snr else 0.5)


def test_header_floats_are_exact(tmp_path):
    """float32 values are written by their shortest decimal, float64 values with every
    digit (cards longer than 20 characters where needed)."""
    wave = (4800.1 + 0.3 * np.arange(50)).astype(np.float32)
    cube = make_cube(wave, spaxel=float(np.float32(0.2)))
    cube = eqx.tree_at(lambda c: c.spaxel_size, cube, np.float32(0.2))
    path = tmp_path / "cube.fits"
    rx.io.write_cube_fits(cube, path)
    with fits.open(path) as hdus:
        p, h = hdus[0].header, hdus["DATA"].header
        assert p["REDSHIFT"] == 0.05 and p["SPAXSIZE"] == 0.2 and p["OUTFRAC"] == 0.1
        assert p.cards["REDSHIFT"].image.split("=")[1].split("/")[0].strip() == "0.05"
        assert (h["CRVAL3"], h["CD3_3"]) == (4800.1, 0.3)
        assert h["CD2_2"] == -h["CD1_1"] == 0.2 / 3600 and h["CD2_2"] * 3600 == 0.2
        assert (h["CRVAL1"], h["CRVAL2"]) == (RA, DEC)
        lsf = hdus["LSF_FWHM"].header
        assert (lsf["CRVAL1"], lsf["CD1_1"], lsf["CTYPE1"]) == (4800.1, 0.3, "AWAV")
    np.testing.assert_array_equal(
        (4800.1 + 0.3 * np.arange(50)).astype(np.float32),
        rx.io.read_cube(path).wavelength.astype(np.float32),
    )


# ----------------------------------------------------------------------------------------
# Their files through our reader


@pytest.mark.parametrize("wcs", ["cd", "cdelt", "dq"])
def test_muse_drp_cube_reads_with_spaxels_wavelengths_variance_mask(wcs, tmp_path):
    rng = np.random.default_rng(3)
    n_x, n_y, n_wave = 7, 6, 120
    flux = rng.uniform(1, 5, (n_x, n_y, n_wave))
    variance = rng.uniform(0.1, 0.2, flux.shape)
    nan_voxels = np.zeros(flux.shape, bool)
    nan_voxels[3, 2, 10:20] = True
    dq = None
    if wcs == "dq":
        dq = np.zeros(flux.shape, np.int32)
        dq[4, 4, 50] = 8  # a bad-pixel flag with finite DATA
    path = write_muse_drp_cube(
        tmp_path / "DATACUBE_FINAL.fits", flux, variance, 4750.0, 1.25, 0.2, ra=RA, dec=DEC,
        nan_spaxels=[(0, 0), (6, 5)], nan_voxels=nan_voxels, dq=dq,
        wcs="cdelt" if wcs == "cdelt" else "cd",
    )  # fmt: skip
    with fits.open(path) as hdus:  # no keyword of ours
        assert "PROGRAM" not in hdus[0].header and "SPAXSIZE" not in hdus[0].header
    cube = rx.io.read_cube(path)
    assert cube.shape == (n_x, n_y, n_wave)
    assert cube.spaxel_size == 0.2  # from the CD matrix (was read as 1.0)
    np.testing.assert_array_equal(cube.wavelength, 4750.0 + 1.25 * np.arange(n_wave))
    assert (cube.medium, cube.wavelength_sampling, cube.flux_unit) == ("air", "linear", 1e-20)
    assert cube.telescope == "MUSE-WFM" and float(cube.redshift) == 0.0 and cube.lsf_fwhm is None
    assert cube.ra == pytest.approx(RA, abs=1e-10) and cube.dec == pytest.approx(DEC, abs=1e-10)
    bad = nan_voxels.copy()
    bad[0, 0] = bad[6, 5] = True
    if dq is not None:
        bad |= dq != 0
    np.testing.assert_array_equal(cube.variance, np.where(bad, np.inf, variance.astype(np.float32)))
    np.testing.assert_array_equal(cube.flux, np.where(bad, 0, flux.astype(np.float32)))
    expected_mask = np.ones((n_x, n_y), bool)
    expected_mask[0, 0] = expected_mask[6, 5] = False
    np.testing.assert_array_equal(cube.mask, expected_mask)
    # and out again in our layout: the bad voxels stay bad, the rest unchanged
    rx.io.write_cube_fits(cube, tmp_path / "ours.fits")
    again = rx.io.read_cube(tmp_path / "ours.fits")
    np.testing.assert_array_equal(
        again.variance, np.where(expected_mask[:, :, None], cube.variance, 0)
    )
    np.testing.assert_array_equal(again.flux, cube.flux)


def test_manga_logcube_reads_with_spaxels_wavelengths_variance_mask(tmp_path):
    rng = np.random.default_rng(4)
    n_x, n_y, n_wave = 9, 8, 200
    flux = rng.uniform(0.5, 2, (n_x, n_y, n_wave))
    ivar = rng.uniform(50, 100, flux.shape)
    ivar[0, :, :] = 0  # outside the hexagon: no data (NOCOV | DONOTUSE by default)
    mask = np.where(ivar > 0, 0, DONOTUSE | 1)
    mask[4, 4, 30:40] |= FORESTAR  # the DAP does not fit these
    mask[5, 5, 60] |= LOWCOV  # still good
    mask[2, 3, 70] |= DONOTUSE
    specres = np.linspace(1500.0, 2500.0, n_wave)
    path = write_manga_logcube(
        tmp_path / "manga-8485-1901-LOGCUBE.fits", flux, ivar, 3.5589, 1e-4, 0.5, mask=mask,
        specres=specres, ra=RA, dec=DEC,
    )  # fmt: skip
    cube = rx.io.read_cube(path)
    wave = 10.0 ** (3.5589 + 1e-4 * np.arange(n_wave))
    np.testing.assert_array_equal(cube.wavelength, wave)  # the WAVE extension
    assert cube.spaxel_size == 0.5 and cube.telescope == "MaNGA"
    assert (cube.medium, cube.wavelength_sampling, cube.flux_unit) == ("vacuum", "log", 1e-17)
    bad = (ivar <= 0) | ((mask & (DONOTUSE | FORESTAR)) != 0)
    with np.errstate(divide="ignore"):
        variance = np.where(bad, np.inf, 1 / ivar.astype(np.float32))
    np.testing.assert_array_equal(cube.variance, variance.astype(np.float32))
    np.testing.assert_array_equal(cube.flux, np.where(bad, 0, flux.astype(np.float32)))
    np.testing.assert_array_equal(cube.mask, ~np.all(bad, axis=2))
    assert not np.any(cube.mask[0]) and np.all(cube.mask[1:])
    np.testing.assert_allclose(cube.lsf_fwhm, wave / specres, rtol=1e-14)
    assert cube.ra == pytest.approx(RA, abs=1e-10) and cube.dec == pytest.approx(DEC, abs=1e-10)


def test_manga_layout_output(tmp_path):
    wave = 10.0 ** (np.log10(3621.6) + 1e-4 * np.arange(400))
    cube = make_cube(wave, medium="vacuum", sampling="log", flux_unit=1e-20)
    path = tmp_path / "manga.fits"
    rx.io.write_cube_fits(cube, path, layout="manga", psf=rx.PSF("gaussian", 2.5))
    inside = np.asarray(cube.mask)
    with fits.open(path) as hdus:
        assert [h.name for h in hdus] == [
            "PRIMARY", "FLUX", "IVAR", "MASK", "WAVE", "SPECRES", "SPECRESD",
        ]  # fmt: skip
        p, h = hdus[0].header, hdus["FLUX"].header
        assert (p["TELESCOP"], p["INSTRUME"], p["MASKNAME"]) == ("SDSS 2-5m", "MaNGA",
                                                                "MANGA_DRP3PIXMASK")  # fmt: skip
        assert (p["IFURA"], p["IFUDEC"], p["RFWHM"]) == (RA, DEC, 2.5)
        assert h["BUNIT"] == "1E-17 erg/s/cm^2/Ang/spaxel" and h["CTYPE3"] == "WAVE-LOG"
        assert h["CD2_2"] * 3600 == 0.2 and h["CRPIX3"] == 1.0
        flux, ivar, bits = (hdus[n].data.transpose(2, 1, 0) for n in ("FLUX", "IVAR", "MASK"))
        f = np.asarray(cube.flux, np.float64)
        np.testing.assert_allclose(flux[inside], f[inside] * 1e-3, rtol=1e-6)
        np.testing.assert_allclose(
            ivar[inside], 1 / (np.asarray(cube.variance, np.float64)[inside] * 1e-6), rtol=1e-6
        )
        assert np.all(flux[~inside] == 0) and np.all(ivar[~inside] == 0)
        assert np.all(bits[~inside] == DONOTUSE | 1) and np.all(bits[inside] == 0)
        np.testing.assert_allclose(hdus["WAVE"].data, wave, rtol=1e-7)  # float32 grid
        np.testing.assert_allclose(
            hdus["SPECRES"].data, hdus["WAVE"].data / np.asarray(cube.lsf_fwhm), rtol=1e-12
        )
        # the DAP: SPECRES is used where > 0; FWHM = λ/R
        assert np.all(hdus["SPECRES"].data > 0) and np.all(hdus["SPECRESD"].data == 0)
        # WCS spectral axis agrees with WAVE (FITS -LOG convention)
        n = np.arange(wave.size)
        wcs_wave = h["CRVAL3"] * np.exp(h["CD3_3"] * n / h["CRVAL3"])
        np.testing.assert_allclose(wcs_wave, hdus["WAVE"].data, rtol=1e-12)
    back = rx.io.read_cube(path)
    assert (back.flux_unit, back.medium, back.wavelength_sampling, back.telescope) == (
        1e-17, "vacuum", "log", "MaNGA",
    )  # fmt: skip
    np.testing.assert_allclose(back.flux * 1e-17, np.asarray(cube.flux) * 1e-20, rtol=1e-6)
    np.testing.assert_array_equal(back.mask, cube.mask)
    np.testing.assert_allclose(back.lsf_fwhm, cube.lsf_fwhm, rtol=1e-6)
    assert back.variance[~inside].max() == 0  # outside the aperture, as written
    noiseless = eqx.tree_at(lambda c: c.variance, cube, jnp.zeros_like(cube.variance))
    rx.io.write_cube_fits(noiseless, path, layout="manga")
    with fits.open(path) as hdus:
        ivar = hdus["IVAR"].data
        assert np.all(np.isfinite(ivar)) and hdus["IVAR"].header["IVARFILL"] > 0
        assert np.all(ivar[hdus["FLUX"].data != 0] > 0)
    assert np.all(np.asarray(rx.io.read_cube(path).variance) == 0)
    with pytest.raises(ValueError, match=r"layout='manga'.*`medium` is 'air'"):
        rx.io.write_cube_fits(make_cube(wave, sampling="log"), path, layout="manga")


def test_reader_sniffs_layouts(muse_file, tmp_path):
    cube, path = muse_file
    back = rx.io.read_cube(path)
    assert back.telescope == "MUSE-WFM" and back.lsf_fwhm is not None
    assert math.isclose(float(back.redshift), 0.05)
    with fits.open(path) as hdus:
        hdus["DATA"].name = "SCI"
        hdus.writeto(tmp_path / "sci.fits")
    with pytest.raises(ValueError, match=r"no `DATA` extension; extensions are "):
        rx.io.read_cube(tmp_path / "sci.fits")
