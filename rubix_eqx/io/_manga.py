"""Cubes as MaNGA DRP LOGCUBEs (`write_cube_fits(..., layout="manga")`) and the reader of
MaNGA cubes.

Layout (documented in docs/api.md, "Cube files"):

- primary HDU: no data; the observation keywords and provenance of the MUSE layout
  (without `FLUXUNIT`), `MASKNAME = 'MANGA_DRP3PIXMASK'`, `BUNIT`, `OBJRA`/`OBJDEC` and
  `IFURA`/`IFUDEC` (the field centre) and, given a PSF, `GFWHM`, `RFWHM`, `IFWHM`,
  `ZFWHM` (arcsec; one FWHM for all bands);
- `FLUX`: float32 (n_λ, n_y, n_x) in `1E-17 erg/s/cm^2/Ang/spaxel`, 0 where there is no
  data; CD-matrix WCS with `CTYPE3 = 'WAVE-LOG'` (`'WAVE'` for a linear grid, as
  MaNGA's LINCUBE);
- `IVAR`: float32 inverse variance, 0 where there is no data; where the model variance is
  0 (noiseless cube) it holds `IVARFILL` (keyword of `IVAR`), 1 / the MUSE layout's
  `STATFILL` in these units;
- `MASK`: int32 MANGA_DRP3PIXMASK bits: DONOTUSE (2¹⁰ = 1024) on every voxel without data,
  plus NOCOV (2⁰) outside the instrument's aperture (1025 there);
- `WAVE`: float64 vacuum wavelengths (Å) of the pixel centres;
- `SPECRES`: float64 R = λ / FWHM of the line spread on the pixels (as the DRP's
  post-pixellisation `SPECRES`), `SPECRESD` its spaxel-to-spaxel scatter (0): both only
  when the cube knows its `lsf_fwhm`.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._cube import Cube
from ._fits import (
    cube_data,
    diagnostics_from,
    prepared_voxels,
    primary_hdu,
    read_axes,
    spectrum_data,
    telescope_name,
)
from ._header import (
    cube_keywords,
    exact,
    parse_flux_unit,
    put,
    write_keywords,
)


MANGA_UNIT = 1e-17
MANGA_BUNIT = "1E-17 erg/s/cm^2/Ang/spaxel"
NOCOV = 1 << 0
FORESTAR = 1 << 3
DONOTUSE = 1 << 10


def write_manga(cube: Cube, path, *, ssp, observation, telescop, instrume, object, psf) -> None:
    from astropy.io import fits

    if cube.medium != "vacuum":
        raise ValueError(
            f"`write_cube_fits(layout='manga')`: MaNGA cubes hold vacuum wavelengths (WAVE, "
            f"CTYPE3 'WAVE-LOG'), but this cube's `medium` is {cube.medium!r}; model it with "
            "a vacuum telescope (e.g. the MaNGA preset) or write layout='muse'."
        )
    wcs = cube_keywords(cube)  # raises for irregular grids before anything is written
    n = cube.flux.shape[2]
    index = np.arange(n, dtype=np.float64)
    if cube.wavelength_sampling == "log":
        wave = wcs["CRVAL3"] * np.exp(wcs["CD3_3"] * index / wcs["CRVAL3"])
    else:
        wave = wcs["CRVAL3"] + wcs["CD3_3"] * index
    primary = primary_hdu(cube, ssp, observation, telescop, instrume, object, psf, "manga")
    h = primary.header
    put(h, "BUNIT", MANGA_BUNIT, "Specific intensity (per spaxel)")
    put(h, "MASKNAME", "MANGA_DRP3PIXMASK", "Bits in sdssMaskbits.par used by mask extension")
    for prefix in ("OBJ", "IFU"):
        put(h, f"{prefix}RA", exact(cube.ra), "[deg] field centre")
        put(h, f"{prefix}DEC", exact(cube.dec), "[deg] field centre")

    voxels = prepared_voxels(cube)  # FITS order (n_λ, n_y, n_x)
    factor = float(cube.flux_unit) / MANGA_UNIT
    nodata, fill_mask = voxels["nodata"], voxels["fill_mask"]
    flux = voxels["flux"]
    flux *= np.float32(factor) if factor != 1 else np.float32(1)
    flux[nodata] = 0
    ivar = voxels["variance"]
    with np.errstate(divide="ignore"):
        np.divide(np.float32(1 / factor**2), ivar, out=ivar)
    ivar[nodata] = 0
    fill = None
    if voxels["fill"] is not None:
        fill = np.float32(1 / (voxels["fill"] * factor**2))
        real = ~nodata & ~fill_mask
        while np.any((ivar == fill) & real):
            fill = np.nextafter(fill, np.float32(np.inf))
        ivar[fill_mask] = fill
    mask = np.where(nodata, np.int32(DONOTUSE), np.int32(0))
    mask |= np.where(voxels["outside"], np.int32(NOCOV), np.int32(0))

    def image(name, data, classes, links, unit=None):
        hdu = fits.ImageHDU(data=data, name=name)
        for key, value in zip(("HDUCLAS1", "HDUCLAS2", "HDUCLAS3"), classes, strict=False):
            put(hdu.header, key, value, "")
        for key, value in links.items():
            put(hdu.header, key, value, "linked extension")
        if unit is not None:
            put(hdu.header, "BUNIT", unit, "")
        put(hdu.header, "MASKNAME", "MANGA_DRP3PIXMASK", "")
        write_keywords(hdu.header, wcs)
        return hdu

    hdus = [
        primary,
        image("FLUX", flux, ("CUBE", "DATA"), {"ERRDATA": "IVAR", "QUALDATA": "MASK"},
              MANGA_BUNIT),
        image("IVAR", ivar, ("CUBE", "ERROR", "INVMSE"), {"SCIDATA": "FLUX", "QUALDATA": "MASK"},
              "1E+34 (erg/s/cm^2/Ang/spaxel)^-2"),
        image("MASK", mask, ("CUBE", "QUALITY", "FLAG32BIT"),
              {"SCIDATA": "FLUX", "ERRDATA": "IVAR"}),
    ]  # fmt: skip
    if fill is not None:
        put(hdus[2].header, "IVARFILL", exact(fill), "IVAR where the model variance is 0")
        hdus[2].header.add_comment(
            "IVARFILL is a placeholder for a noiseless cube: sigma = 1e-4 x peak |FLUX|."
        )
    wave_hdu = fits.ImageHDU(data=wave, name="WAVE")
    put(wave_hdu.header, "BUNIT", "Angstrom", "vacuum wavelengths of the pixel centres")
    hdus.append(wave_hdu)
    if cube.lsf_fwhm is not None:
        resolution = wave / np.asarray(cube.lsf_fwhm, np.float64)
        specres = fits.ImageHDU(data=resolution, name="SPECRES")
        specres.header.add_comment("R = lambda / FWHM of the line spread on the cube's pixels")
        hdus += [specres, fits.ImageHDU(data=np.zeros_like(resolution), name="SPECRESD")]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def read_manga(hdus, path: Path) -> Cube:
    """A MaNGA DRP cube (or ours in its layout) → Cube; see
    [`rubix_eqx.io.read_cube_fits`][]. Flux stays in the file's unit (1e-17)."""
    names = [hdu.name for hdu in hdus]
    primary = hdus[0].header
    header = hdus["FLUX"].header
    flux, ours, spaxel, ra, dec, wavelength, sampling, medium = read_axes(hdus, "FLUX", path)
    shape = flux.shape
    where = f"{path}: `FLUX`"
    if "WAVE" in names:
        wavelength = spectrum_data(hdus, "WAVE", path, shape[2]).astype(np.float64)
        if not (np.all(np.isfinite(wavelength)) and np.all(np.diff(wavelength) > 0)):
            raise ValueError(f"{path}: `WAVE` must be finite and strictly increasing.")
    ivar = cube_data(hdus, "IVAR", path, shape).astype(flux.dtype, copy=False)
    bad = ~np.isfinite(flux)  # in place, as for MUSE cubes
    bad |= ~((ivar > 0) & np.isfinite(ivar))
    if "MASK" in names:
        bits = cube_data(hdus, "MASK", path, shape).astype(np.int64)
        bad |= (bits & (DONOTUSE | FORESTAR)) != 0
    fill = hdus["IVAR"].header.get("IVARFILL") if ours else None
    noiseless = None
    if fill is not None:  # our noiseless placeholder: variance 0, as in the Cube written
        noiseless = ivar == np.asarray(fill, ivar.dtype)
        noiseless &= ~bad
    ivar[bad] = 1
    variance = np.divide(1, ivar, out=ivar)
    variance[bad] = np.inf
    if noiseless is not None:
        variance[noiseless] = 0
    flux[bad] = 0
    mask = ~np.all(bad, axis=2)
    if ours:
        variance[~mask] = 0
    lsf = None
    if "SPECRES" in names:
        resolution = spectrum_data(hdus, "SPECRES", path, shape[2]).astype(np.float64)
        good = np.isfinite(resolution) & (resolution > 0)
        if good.sum() >= 2:
            fwhm = wavelength[good] / resolution[good]
            lsf = jnp.asarray(np.interp(wavelength, wavelength[good], fwhm))
    return Cube(
        flux=jnp.asarray(flux),
        variance=jnp.asarray(variance),
        wavelength=jnp.asarray(wavelength),
        mask=jnp.asarray(mask),
        diagnostics=diagnostics_from(primary if ours else {}),
        redshift=jnp.asarray(float(primary.get("REDSHIFT", 0.0)) if ours else 0.0),
        spaxel_size=spaxel,
        ra=ra,
        dec=dec,
        flux_unit=parse_flux_unit(header.get("BUNIT", primary.get("BUNIT", "")), where),
        wavelength_sampling=str(primary.get("WAVESAMP", sampling)) if ours else sampling,
        telescope=telescope_name(primary, header, spaxel, ours) if ours else "MaNGA",
        lsf_fwhm=lsf,
        medium=medium,
    )
