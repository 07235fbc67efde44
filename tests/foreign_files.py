"""Cube files as other pipelines write them, made with astropy alone (no rubix_eqx code and
no keyword of ours), for reader and fit tests.

- [`write_muse_drp_cube`][]: a MUSE DRP `DATACUBE_FINAL`: header-only primary HDU
  (`TELESCOP = 'ESO-VLT-U4'`, `INSTRUME = 'MUSE'`, pointing `RA`/`DEC`), `DATA` and `STAT`
  float32 with NAXIS1 = x, NAXIS2 = y, NAXIS3 = λ, NaN where there is no data, a CD matrix
  in degrees (`CD1_1 < 0`), `CTYPE3 = 'AWAV'`, `CUNIT3 = 'Angstrom'`, `CD3_3`, `CRVAL3`,
  `CRPIX3 = 1`; `BUNIT = '10**(-20)*erg/s/cm**2/Angstrom'` and its square in the MUSE
  spelling. Optional `DQ`, and a CDELT form of the WCS (as some re-processed cubes have).
- [`write_manga_logcube`][]: a MaNGA DRP LOGCUBE: `FLUX` (`1E-17 erg/s/cm^2/Ang/spaxel`),
  `IVAR`, `MASK` (MANGA_DRP3PIXMASK: NOCOV 2⁰, LOWCOV 2¹, FORESTAR 2³, DONOTUSE 2¹⁰),
  `WAVE` (vacuum Å), `SPECRES`/`SPECRESD`; `CTYPE3 = 'WAVE-LOG'` with the FITS log
  convention λ = CRVAL3 exp(CD3_3 (p − 1) / CRVAL3).

Floats go into the headers as astropy formats them (20 characters, as in real files), so
readers meet the rounded CD values (e.g. 5.55555555555555E-05) that real cubes carry.
"""

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits


MUSE_BUNIT = "10**(-20)*erg/s/cm**2/Angstrom"
MUSE_STAT_BUNIT = "(10**(-20)*erg/s/cm**2/Angstrom)**2"
MANGA_BUNIT = "1E-17 erg/s/cm^2/Ang/spaxel"
NOCOV, LOWCOV, FORESTAR, DONOTUSE = 1, 2, 8, 1024


def _fits_order(array) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(array), (2, 1, 0)))


def _celestial(h, n_x: int, n_y: int, spaxel_arcsec: float, ra: float, dec: float, cdelt: bool):
    h["CTYPE1"] = ("RA---TAN", "")
    h["CTYPE2"] = ("DEC--TAN", "")
    h["CUNIT1"] = ("deg", "")
    h["CUNIT2"] = ("deg", "")
    h["CRPIX1"] = (n_x / 2 + 0.5, "")
    h["CRPIX2"] = (n_y / 2 + 0.5, "")
    h["CRVAL1"] = (ra, "")
    h["CRVAL2"] = (dec, "")
    step = spaxel_arcsec / 3600.0
    if cdelt:
        h["CDELT1"] = -step
        h["CDELT2"] = step
    else:
        h["CD1_1"] = -step
        h["CD1_2"] = 0.0
        h["CD2_1"] = 0.0
        h["CD2_2"] = step


def write_muse_drp_cube(
    path: str | Path,
    flux,
    variance,
    wavelength_start: float,
    wavelength_step: float,
    spaxel_arcsec: float,
    ra: float = 150.1,
    dec: float = 2.2,
    nan_spaxels: Iterable[tuple[int, int]] | None = None,
    *,
    nan_voxels=None,
    dq=None,
    wcs: str = "cd",
    object: str = "NGC 4000",
) -> Path:
    """Write a MUSE DRP-style cube.

    **Arguments:**

    - `path`: the file.
    - `flux`, `variance`: (n_x, n_y, n_wave) arrays in 1e-20 erg/s/cm²/Å (per spaxel) and
      its square; written float32 as `DATA` and `STAT`.
    - `wavelength_start`, `wavelength_step`: air wavelength of the first pixel and the
      step (Å): `CRVAL3`, `CD3_3` (or `CDELT3`), `CRPIX3 = 1`.
    - `spaxel_arcsec`: spaxel size: `CD2_2 = −CD1_1 = spaxel/3600`.
    - `ra`, `dec`: field centre (degrees) at the centre pixel; the primary `RA`/`DEC`
      (telescope pointing) are written 10″ off, as they are not the field centre.
    - `nan_spaxels`: (x, y) spaxels whose `DATA` and `STAT` are NaN at every wavelength
      (no data, as at the edges of a rotated MUSE field).
    - `nan_voxels`: optional (n_x, n_y, n_wave) bool array of further NaN voxels.
    - `dq`: optional (n_x, n_y, n_wave) integer array written as an int32 `DQ` extension.
    - `wcs`: `"cd"` (CD matrix, as the DRP writes) or `"cdelt"` (CDELT1/2/3, no CD).
    - `object`: the `OBJECT` keyword.

    **Returns:** `path`.
    """
    path = Path(path)
    data = np.array(flux, np.float32)
    stat = np.array(variance, np.float32)
    n_x, n_y, n_wave = data.shape
    if stat.shape != data.shape:
        raise ValueError(f"`variance` must have shape {data.shape}; got {stat.shape}.")
    for x, y in nan_spaxels or ():
        data[x, y, :] = np.nan
        stat[x, y, :] = np.nan
    if nan_voxels is not None:
        data[np.asarray(nan_voxels)] = np.nan
        stat[np.asarray(nan_voxels)] = np.nan

    primary = fits.PrimaryHDU()
    p = primary.header
    p["TELESCOP"] = ("ESO-VLT-U4", "ESO Telescope Name")
    p["INSTRUME"] = ("MUSE", "Instrument used.")
    p["OBJECT"] = (object, "Original target.")
    p["RA"] = (ra + 10 / 3600 / math.cos(math.radians(dec)), "[deg] pointing")
    p["DEC"] = (dec + 10 / 3600, "[deg] pointing")
    p["EQUINOX"] = 2000.0
    p["RADECSYS"] = "FK5"
    p["EXPTIME"] = (3600.0, "Integration time")
    p["MJD-OBS"] = (58000.1, "Obs start")
    p["DATE-OBS"] = ("2017-09-04T02:24:00.000", "Observing date")
    p["HIERARCH ESO INS MODE"] = ("WFM-NOAO-N", "Instrument mode used.")

    def extension(name, array, unit, hduclas2):
        hdu = fits.ImageHDU(data=_fits_order(array), name=name)
        h = hdu.header
        h["HDUCLASS"] = "ESO"
        h["HDUCLAS1"] = "IMAGE"
        h["HDUCLAS2"] = hduclas2
        if unit is not None:
            h["BUNIT"] = unit
        _celestial(h, n_x, n_y, spaxel_arcsec, ra, dec, wcs == "cdelt")
        h["CTYPE3"] = ("AWAV", "")
        h["CUNIT3"] = ("Angstrom", "")
        h["CRPIX3"] = 1.0
        h["CRVAL3"] = float(wavelength_start)
        if wcs == "cdelt":
            h["CDELT3"] = float(wavelength_step)
        else:
            h["CD3_3"] = float(wavelength_step)
            for key in ("CD1_3", "CD2_3", "CD3_1", "CD3_2"):
                h[key] = 0.0
        return hdu

    hdus = [
        primary,
        extension("DATA", data, MUSE_BUNIT, "DATA"),
        extension("STAT", stat, MUSE_STAT_BUNIT, "ERROR"),
    ]
    if dq is not None:
        hdus.append(extension("DQ", np.asarray(dq, np.int32), None, "QUALITY"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_manga_logcube(
    path: str | Path,
    flux,
    ivar,
    log10_start: float,
    dlog10: float,
    spaxel_arcsec: float,
    *,
    mask=None,
    specres=None,
    ra: float = 184.5,
    dec: float = 48.1,
    plateifu: str = "8485-1901",
) -> Path:
    """Write a MaNGA DRP LOGCUBE-style cube.

    **Arguments:**

    - `path`: the file.
    - `flux`, `ivar`: (n_x, n_y, n_wave) arrays in 1e-17 erg/s/cm²/Å/spaxel and its
      inverse square (0 = no data); written float32 as `FLUX` and `IVAR`.
    - `log10_start`, `dlog10`: log10 of the first vacuum wavelength (Å) and the step
      (MaNGA: 3.5589 and 1e-4). `WAVE` = 10**(log10_start + dlog10 i); `CRVAL3` its first
      value, `CD3_3 = CRVAL3 ln(10) dlog10`.
    - `spaxel_arcsec`: spaxel size (MaNGA: 0.5).
    - `mask`: (n_x, n_y, n_wave) MANGA_DRP3PIXMASK bits; default DONOTUSE where `ivar` is
      0, plus NOCOV on spaxels with no good voxel.
    - `specres`: (n_wave) R = λ/FWHM; default R rising linearly from 1400 to 2600.
    - `ra`, `dec`: the field centre (`IFURA`/`IFUDEC`, `OBJRA`/`OBJDEC`, CRVAL1/2).
    - `plateifu`: the `PLATEIFU` keyword.

    **Returns:** `path`.
    """
    path = Path(path)
    data = np.asarray(flux, np.float32)
    inverse = np.asarray(ivar, np.float32)
    n_x, n_y, n_wave = data.shape
    wave = 10.0 ** (log10_start + dlog10 * np.arange(n_wave))
    if mask is None:
        mask = np.where(inverse > 0, 0, DONOTUSE)
        mask[~np.any(inverse > 0, axis=2)] |= NOCOV
    if specres is None:
        specres = np.linspace(1400.0, 2600.0, n_wave)

    primary = fits.PrimaryHDU()
    p = primary.header
    p["TELESCOP"] = "SDSS 2-5m"
    p["PLATEIFU"] = (plateifu, "Plate-IFU")
    p["MANGAID"] = ("1-209232", "MaNGA ID")
    p["OBJRA"] = (ra, "[deg] object RA")
    p["OBJDEC"] = (dec, "[deg] object Dec")
    p["IFURA"] = (ra, "[deg] IFU RA")
    p["IFUDEC"] = (dec, "[deg] IFU Dec")
    p["BUNIT"] = (MANGA_BUNIT, "Specific intensity (per spaxel)")
    p["MASKNAME"] = ("MANGA_DRP3PIXMASK", "Bits in sdssMaskbits.par used by mask extension")
    p["VERSDRP3"] = ("v3_1_1", "DRP version")
    for band in "GRIZ":
        p[f"{band}FWHM"] = (2.5, f"Reconstructed FWHM in {band.lower()}-band (arcsec)")

    def cube(name, array, hduclas2, unit=None):
        hdu = fits.ImageHDU(data=_fits_order(array), name=name)
        h = hdu.header
        h["HDUCLAS1"] = "CUBE"
        h["HDUCLAS2"] = hduclas2
        if unit is not None:
            h["BUNIT"] = unit
        h["MASKNAME"] = "MANGA_DRP3PIXMASK"
        _celestial(h, n_x, n_y, spaxel_arcsec, ra, dec, cdelt=False)
        h["CTYPE3"] = "WAVE-LOG"
        h["CUNIT3"] = "Angstrom"
        h["CRPIX3"] = 1.0
        h["CRVAL3"] = float(wave[0])
        h["CD3_3"] = float(wave[0] * math.log(10.0) * dlog10)
        return hdu

    hdus = fits.HDUList([
        primary,
        cube("FLUX", data, "DATA", MANGA_BUNIT),
        cube("IVAR", inverse, "ERROR"),
        cube("MASK", np.asarray(mask, np.int32), "QUALITY"),
        fits.ImageHDU(data=wave, name="WAVE"),
        fits.ImageHDU(data=np.asarray(specres, np.float64), name="SPECRES"),
        fits.ImageHDU(data=0.05 * np.asarray(specres, np.float64), name="SPECRESD"),
    ])  # fmt: skip
    hdus.writeto(path, overwrite=True)
    return path
