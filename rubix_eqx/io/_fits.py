"""Cubes as FITS files the field's tools open as their own: MUSE-DRP-like (default) or
MaNGA-DRP-like (`layout="manga"`, in `_manga.py`); and a reader for those and for the
MUSE and MaNGA cubes users have (the front doors, choosing the layout, are in
`_cube_fits.py`).

MUSE layout (`layout="muse"`; documented in docs/api.md, "Cube files"):

- primary HDU: no data. Observation keywords `TELESCOP`, `INSTRUME`, `OBJECT`, `RA`,
  `DEC`; our provenance (`PROGRAM`, `PROGVER`, `DATE`, `TELMODEL` (the rubix_eqx
  telescope), `SSPNAME`, `SSPCITE`, `REDSHIFT`, `INCLIN`, `POSANG`, `DISTANCE`), the
  cube's `FLUXUNIT`, `SPAXSIZE`, `WAVESAMP`, `MEDIUM`, the diagnostics (`NPARTIC`,
  `NCLIPPED`, `CLIPFRAC`, `NOUTSIDE`, `OUTFRAC`, `NLSFCLIP`) and, given a PSF, `PSFTYPE`,
  `PSFFWHM`, `PSFBETA`, ESO's `SKY_RES` and (Moffat) mpdaf's FSF keywords;
- `DATA` (ext 1): float32 flux, NumPy shape (n_λ, n_y, n_x) = FITS NAXIS1 = x, NAXIS2 =
  y, NAXIS3 = λ; `BUNIT` e.g. `10**(-20)*erg/s/cm**2/Angstrom`; NaN where there is no
  data (outside the instrument's aperture, non-finite values, infinite variance);
- `STAT` (ext 2): float32 variance, > 0 wherever `DATA` is finite, NaN where it is NaN.
  Where the model variance is 0 (noiseless cube) it holds `STATFILL` (keyword of `STAT`):
  a uniform σ = 1e-4 × the cube's peak |flux|, so that pPXF (which refuses noise ≤ 0) and
  1/variance weights see an unweighted fit;
- `DQ` (ext 3): uint8, 0 = good; bit 1 = no data (`DATA` is NaN), bit 2 = outside the
  instrument's aperture (mpdaf reads any non-zero value as masked);
- `LSF_FWHM` (ext 4, if `cube.lsf_fwhm` is known): 1-D image, the line-spread FWHM (Å)
  on the cube's pixels, with the cube's spectral WCS as axis 1 (mpdaf `Spectrum`,
  specutils read it as a spectrum);
- given `truth=` / `observed_truth=` (`layout="muse"` only; `_truth.py`): one 2-D image
  per map after those, `TRUE_FLUX` (or `TRUE_MASS`), `TRUE_VEL`, `TRUE_DISP`, `TRUE_H3`,
  `TRUE_H4`, `TRUE_AGE`, `TRUE_MH` and the `OBS_*` equivalents: NumPy shape (n_y, n_x),
  the maps' dtype, NaN on empty spaxels, `BUNIT`, `TRUTHWT`, and the celestial WCS of
  `DATA` (`WCSAXES = 2`); given `gas_truth=` (`_gas_truth.py`), the `GAS_*` maps alike.

WCS of `DATA`, `STAT`, `DQ` (`_header.py`): RA---TAN/DEC--TAN with a CD matrix in
degrees, `CD1_1 = −spaxel/3600` (East left), `CD2_2 = +spaxel/3600`, zero cross terms,
CRPIX at the field centre; `CTYPE3 = 'AWAV'` (air) or `'WAVE'` (vacuum), `'-LOG'` for
log sampling, `CUNIT3 = 'Angstrom'`, `CRVAL3`, `CD3_3`, `CRPIX3 = 1`. Every float is
written with all its digits (float32 values by their shortest decimal).

`layout="muse-drp"` is the DRP's `DATACUBE_FINAL` exactly: primary, `DATA`, `STAT` and
nothing else (GIST's `MUSE_WFM` reader only reads `STAT` when the file has 3 HDUs);
`lsf_fwhm` is then not stored.
"""

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._cube import Cube, Diagnostics
from .._units import SOLAR_METALLICITY
from ._gas_truth import fits_hdus as gas_fits_hdus, GROUP as GAS_GROUP, read_fits as read_gas_fits
from ._header import (
    ascii_text,
    bunit,
    cube_keywords,
    cube_wcs as cube_wcs,
    DEFAULT_OBJECT,
    exact,
    observatory,
    parse_flux_unit,
    put,
    read_celestial,
    read_spectral,
    spectrum_keywords,
    write_keywords,
)
from ._provenance import provenance
from ._truth import (
    arrays as truth_arrays,
    extension_names,
    FIELDS as TRUTH_FIELDS,
    KINDS as TRUTH_KINDS,
    rebuild as rebuild_truth,
    scalar,
    units as truth_units,
    WEIGHT_SUFFIX,
    WEIGHT_TEXT,
)


LAYOUTS = ("muse", "muse-drp", "manga")
DIAGNOSTIC_KEYS = {
    "n_particles": ("NPARTIC", "particles in the galaxy"),
    "n_clipped": ("NCLIPPED", "particles clipped to the SSP grid edge"),
    "clipped_mass_fraction": ("CLIPFRAC", "mass fraction clipped to the SSP grid"),
    "n_outside": ("NOUTSIDE", "particles outside the field of view"),
    "outside_mass_fraction": ("OUTFRAC", "mass fraction outside the field"),
    "n_lsf_clipped": ("NLSFCLIP", "lattice bins where LSF broadening was clipped"),
}
PROGRAM = "rubix_eqx"
DQ_NODATA = 1  # DATA is NaN: no value
DQ_OUTSIDE = 2  # spaxel outside the instrument's aperture
NOISELESS_RELATIVE_SIGMA = 1e-4  # STATFILL: σ = this × peak |flux|
ESO_DOC = (("HDUCLASS", "ESO", "class name (ESO format)"), ("HDUDOC", "DICD", "document"),
           ("HDUVERS", "DICD version 6", "version"))  # fmt: skip


# ----------------------------------------------------------------------------------------
# Writing


def write_muse(
    cube: Cube, path, *, ssp, observation, layout, telescop, instrume, object, psf, given
) -> None:
    """The MUSE layouts (`"muse"`, `"muse-drp"`) of [`rubix_eqx.io.write_cube_fits`][];
    `given`: the checked truth maps by argument name (`"truth"`, `"observed_truth"`)."""
    from astropy.io import fits

    wcs = cube_keywords(cube)  # raises for irregular grids before anything is written
    primary = primary_hdu(cube, ssp, observation, telescop, instrume, object, psf, layout)
    put(primary.header, "FLUXUNIT", exact(cube.flux_unit), "[erg/s/cm2/Angstrom] unit of DATA")
    voxels = prepared_voxels(cube)
    extra = {"ERRDATA": "STAT"} | ({"QUALDATA": "DQ"} if layout == "muse" else {})

    def image(name, data, unit, classes, links):
        hdu = fits.ImageHDU(data=data, name=name)
        h = hdu.header
        for key, value, comment in ESO_DOC:
            put(h, key, value, comment)
        for key, value in zip(("HDUCLAS1", "HDUCLAS2", "HDUCLAS3"), classes, strict=False):
            put(h, key, value, "")
        for key, value in links.items():
            put(h, key, value, "linked extension")
        if unit is not None:
            put(h, "BUNIT", unit, "")
        write_keywords(h, wcs)
        return hdu

    data = image("DATA", voxels["flux"], bunit(cube.flux_unit),
                 ("IMAGE", "DATA"), extra)  # fmt: skip
    stat = image("STAT", voxels["variance"], bunit(cube.flux_unit, 2),
                 ("IMAGE", "ERROR", "MSE"), {"SCIDATA": "DATA"} | extra)  # fmt: skip
    stat.header.remove("ERRDATA")
    if voxels["fill"] is not None:
        put(stat.header, "STATFILL", voxels["fill"], "STAT where the model variance is 0")
        stat.header.add_comment(
            "STATFILL is a placeholder for a noiseless cube: sigma = 1e-4 x peak |DATA|."
        )
    hdus = [primary, data, stat]
    if layout == "muse":
        dq = voxels["nodata"].astype(np.uint8)  # DQ_NODATA
        dq |= np.where(voxels["outside"], np.uint8(DQ_OUTSIDE), np.uint8(0))
        dq_hdu = image("DQ", dq, None, ("IMAGE", "QUALITY"),
                       {"SCIDATA": "DATA", "ERRDATA": "STAT"})  # fmt: skip
        dq_hdu.header.add_comment("0 = good; non-zero = bad (DATA and STAT are NaN there)")
        dq_hdu.header.add_comment("bit 1 (value 1): no data; bit 2 (value 2): outside aperture")
        hdus.append(dq_hdu)
        if cube.lsf_fwhm is not None:
            hdus.append(lsf_hdu(cube))
        for argument, prefix in TRUTH_KINDS:
            if given[argument] is not None:
                hdus += truth_hdus(given[argument], prefix, cube)
        if given.get("gas_truth") is not None:
            hdus += gas_fits_hdus(
                given["gas_truth"], cube.flux_unit, image_keywords(cube), put, write_keywords
            )
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def fits_order(array, dtype) -> np.ndarray:
    """(n_x, n_y, n_λ) → a new C-contiguous (n_λ, n_y, n_x) array of `dtype`: FITS
    NAXIS1 = x, NAXIS3 = λ."""
    return np.array(np.transpose(np.asarray(array), (2, 1, 0)), dtype=dtype, order="C", copy=True)


def lsf_hdu(cube: Cube):
    from astropy.io import fits

    values = np.asarray(cube.lsf_fwhm)
    hdu = fits.ImageHDU(data=values, name="LSF_FWHM")
    put(hdu.header, "BUNIT", "Angstrom", "")
    write_keywords(hdu.header, spectrum_keywords(cube))
    hdu.header.add_comment("Line-spread FWHM on the cube's pixels, as a Gaussian fit to the")
    hdu.header.add_comment("pixel values measures it; axis 1 is the cube's wavelength axis.")
    return hdu


def image_keywords(cube: Cube) -> dict[str, object]:
    """The celestial WCS of `DATA` (same cards, same CD matrix) for a 2-D (x, y) image."""
    keys = cube_keywords(cube)
    out: dict[str, object] = {"WCSAXES": 2}
    for key in ("CTYPE", "CUNIT", "CRPIX", "CRVAL"):
        for axis in "12":
            out[f"{key}{axis}"] = keys[f"{key}{axis}"]
    for i in "12":
        for j in "12":
            out[f"CD{i}_{j}"] = keys[f"CD{i}_{j}"]
    out["RADESYS"] = keys["RADESYS"]
    return out


def truth_hdus(maps, prefix: str, cube: Cube) -> list:
    """One image HDU per map (`TRUE_*` or `OBS_*`): (n_y, n_x), NaN where empty."""
    from astropy.io import fits

    names = extension_names(prefix, maps.weighting)
    values = truth_arrays(maps)
    unit_of = truth_units(maps.weighting, cube.flux_unit)
    wcs = image_keywords(cube)
    kind = "seeing-convolved (PSF) " if prefix == "OBS" else ""
    n_clipped, fraction = scalar(maps.n_clipped), scalar(maps.clipped_mass_fraction)
    hdus = []
    for field, (_, text) in TRUTH_FIELDS.items():
        data = np.ascontiguousarray(values[field].T)
        hdu = fits.ImageHDU(data=data, name=names[field])
        h = hdu.header
        if unit_of[field] is not None:
            put(h, "BUNIT", unit_of[field], "")
        put(h, "TRUTHWT", maps.weighting, "truth maps weighted by light or mass")
        put(h, "WEIGHTS", names["flux"], "extension holding the weights")
        if field == "metallicity":
            put(h, "ZSOLAR", exact(SOLAR_METALLICITY), "solar metallicity (mass fraction)")
        if n_clipped is not None:
            put(h, "NCLIPPED", int(n_clipped), "particles clipped to the SSP grid edge")
        if fraction is not None:
            put(h, "CLIPFRAC", exact(fraction), "mass fraction clipped to the SSP grid")
        write_keywords(h, wcs)
        what = WEIGHT_TEXT[maps.weighting] if field == "flux" else text
        h.add_comment(f"{kind}particle truth: {what}; NaN where no particle")
        hdus.append(hdu)
    return hdus


def prepared_voxels(cube: Cube) -> dict:
    """The cube in FITS order (n_λ, n_y, n_x): float32 `flux` and `variance`, NaN on the
    no-data voxels (`nodata`: outside `mask`, non-finite flux, infinite or NaN variance);
    where the variance is 0 (`fill_mask`) it holds the placeholder `fill` (None if no
    voxel needs it); `outside` (1, n_y, n_x). Built in place: ~2.5× the cube's memory."""
    flux = fits_order(cube.flux, np.float32)
    variance = fits_order(cube.variance, np.float32)
    if np.any(variance < 0):
        raise ValueError(
            f"`Cube.variance` must be >= 0; its minimum is {float(np.nanmin(variance))!r}."
        )
    outside = ~np.asarray(cube.mask).T[None, :, :]
    nodata = ~np.isfinite(flux)
    nodata |= ~np.isfinite(variance)
    nodata |= outside
    need = variance <= 0
    need &= ~nodata
    fill = None
    if np.any(need):
        peak = float(np.max(np.abs(flux), where=~nodata, initial=0.0))
        value = np.float32((NOISELESS_RELATIVE_SIGMA * (peak if peak > 0 else 1.0)) ** 2)
        if not value > 0:
            value = np.finfo(np.float32).tiny
        real = ~nodata & ~need
        while np.any((variance == value) & real):  # STATFILL differs from every real variance
            value = np.nextafter(value, np.float32(np.inf))
        variance[need] = value
        fill = exact(value)
    flux[nodata] = np.nan
    variance[nodata] = np.nan
    return {
        "flux": flux,
        "variance": variance,
        "nodata": nodata,
        "outside": outside,
        "fill": fill,
        "fill_mask": need,
    }


def primary_hdu(cube, ssp, observation, telescop, instrume, object, psf, layout):
    """The header-only primary HDU: observation keywords, provenance, diagnostics, PSF."""
    from astropy.io import fits

    info = provenance(ssp, observation)
    default_telescop, default_instrume = observatory(str(cube.telescope))
    primary = fits.PrimaryHDU()
    h = primary.header
    put(h, "TELESCOP", telescop or default_telescop, "telescope")
    put(h, "INSTRUME", instrume or default_instrume, "instrument")
    put(h, "OBJECT", object or DEFAULT_OBJECT, "target")
    put(h, "RA", exact(cube.ra), "[deg] field centre")
    put(h, "DEC", exact(cube.dec), "[deg] field centre")
    put(h, "DATE", info["date"], "UTC date the file was written")
    put(h, "PROGRAM", PROGRAM, "software that made this cube")
    put(h, "PROGVER", info["software_version"], "its version")
    put(h, "LAYOUT", layout, "rubix_eqx file layout")
    put(h, "TELMODEL", str(cube.telescope), "rubix_eqx telescope model")
    put(h, "REDSHIFT", exact(cube.redshift), "redshift of the observation")
    if "inclination" in info:
        put(h, "INCLIN", exact(info["inclination"]), "[deg] inclination, 0 = face-on")
        put(h, "POSANG", exact(info["position_angle"]), "[deg] position angle, N through E")
    if "distance" in info:
        put(h, "DISTANCE", exact(info["distance"]), "[Mpc] distance given instead of cosmology")
    if "ssp_name" in info:
        put(h, "SSPNAME", info["ssp_name"], "SSP template grid")
        h["SSPCITE"] = ascii_text(info["ssp_citation"])
    put(h, "SPAXSIZE", exact(cube.spaxel_size), "[arcsec] spaxel size")
    put(h, "WAVESAMP", cube.wavelength_sampling, "wavelength sampling: linear or log")
    put(h, "MEDIUM", cube.medium, "wavelengths in air or vacuum")
    for name, (key, comment) in DIAGNOSTIC_KEYS.items():
        value = np.asarray(getattr(cube.diagnostics, name))
        put(h, key, exact(value) if value.dtype.kind == "f" else int(value), comment)
    if psf is not None:
        psf_keywords(h, psf, cube, layout)
    return primary


def psf_keywords(h, psf, cube, layout: str) -> None:
    """PSF keywords: ours, ESO's `SKY_RES`, mpdaf's FSF model (Moffat; `FSFMODE = 2`,
    FWHM and β constant over `FSFLB1`–`FSFLB2`), MaNGA's per-band FWHM."""
    fwhm = exact(psf.fwhm)
    put(h, "PSFTYPE", str(psf.kind).upper(), "PSF profile the cube was convolved with")
    put(h, "PSFFWHM", fwhm, "[arcsec] PSF FWHM")
    if psf.kind == "moffat":
        beta = exact(psf.beta)
        put(h, "PSFBETA", beta, "Moffat beta")
    if layout == "manga":
        for band in "GRIZ":
            put(h, f"{band}FWHM", fwhm, f"[arcsec] PSF FWHM in {band.lower()}")
        return
    put(h, "SKY_RES", fwhm, "[arcsec] spatial resolution (FWHM)")
    if psf.kind == "moffat":
        wave = np.asarray(cube.wavelength, np.float64)
        put(h, "FSFMODE", 2, "Circular MOFFAT beta=poly(lbda) fwhm=poly(lbda)")
        put(h, "FSFLB1", exact(wave[0]), "FSF Blue Ref Wave (A)")
        put(h, "FSFLB2", exact(wave[-1]), "FSF Red Ref Wave (A)")
        put(h, "FSF00FNC", 1, "FSF00 FWHM Poly Ncoef")
        put(h, "FSF00F00", fwhm, "FSF00 FWHM Poly C00")
        put(h, "FSF00BNC", 1, "FSF00 BETA Poly Ncoef")
        put(h, "FSF00B00", beta, "FSF00 BETA Poly C00")


# ----------------------------------------------------------------------------------------
# Reading


def _native(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=array.dtype.newbyteorder("="))


def open_fits(path: Path):
    """All HDUs of `path`, data read now (so that a truncated file fails here)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    hdus = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.simplefilter("error", AstropyUserWarning)  # "File may have been truncated"
            hdus = fits.open(path, memmap=False)
            hdus.verify("exception")
            for hdu in hdus:
                hdu.data  # noqa: B018
    except (OSError, ValueError, fits.verify.VerifyError, AstropyUserWarning) as e:
        if hdus is not None:
            hdus.close()
        raise ValueError(f"{path}: not a readable FITS file ({e}).") from None
    return hdus


def cube_data(hdus, name: str, path, shape=None) -> np.ndarray:
    """Extension `name` as a native-endian (n_x, n_y, n_λ) array; checks its shape."""
    data = hdus[name].data
    if data is None or data.ndim != 3:
        got = None if data is None else data.shape
        raise ValueError(f"{path}: `{name}` must be a 3-D cube; got shape {got}.")
    array = _native(data).transpose(2, 1, 0)
    if shape is not None and array.shape != shape:
        raise ValueError(
            f"{path}: `{name}` has shape (x, y, λ) = {array.shape}; the flux has {shape}."
        )
    return array


def spectrum_data(hdus, name: str, path, n: int) -> np.ndarray:
    data = hdus[name].data
    if data is None or data.ndim != 1 or data.size != n:
        got = None if data is None else data.shape
        raise ValueError(f"{path}: `{name}` must be 1-D with {n} values; got shape {got}.")
    return _native(data)


def diagnostics_from(primary) -> Diagnostics:
    values = {}
    for name, (key, _) in DIAGNOSTIC_KEYS.items():
        default = 0 if name.startswith("n_") else 0.0
        values[name] = jnp.asarray(primary.get(key, default))
    return Diagnostics(**values)


def telescope_name(primary, header, spaxel: float, ours: bool, fallback: str = "unknown") -> str:
    """Ours: `TELMODEL`. Others: a preset name where the instrument is one (`MUSE` with
    0.2″ spaxels → `MUSE-WFM`, 0.025″ → `MUSE-NFM`), else `INSTRUME` or `TELESCOP`."""
    if ours and "TELMODEL" in primary:
        return str(primary["TELMODEL"])
    instrument = str(primary.get("INSTRUME", header.get("INSTRUME", ""))).strip()
    if instrument.upper() == "MUSE":
        return {0.2: "MUSE-WFM", 0.025: "MUSE-NFM"}.get(round(spaxel, 6), "MUSE")
    return instrument or str(primary.get("TELESCOP", fallback)).strip() or fallback


def lsf_from_extension(hdus, path, n: int):
    """`LSF_FWHM` (Å per pixel) if present, keeping its dtype; `None` if absent."""
    if "LSF_FWHM" not in [h.name for h in hdus]:
        return None
    values = spectrum_data(hdus, "LSF_FWHM", path, n)
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"{path}: `LSF_FWHM` must be finite and > 0 Angstrom at every pixel.")
    return jnp.asarray(values)


def read_axes(hdus, name: str, path: Path):
    """The flux of extension `name` (x, y, λ) and the cube's axes: `(flux, ours, spaxel,
    ra, dec, wavelength, sampling, medium)`; `ours` for files this library wrote (their
    spaxel and centre from our keywords, else from the celestial WCS)."""
    primary = hdus[0].header
    ours = primary.get("PROGRAM") == PROGRAM
    flux = cube_data(hdus, name, path)
    where = f"{path}: `{name}`"
    if ours:
        spaxel, ra, dec = float(primary["SPAXSIZE"]), float(primary["RA"]), float(primary["DEC"])
    else:
        spaxel, ra, dec = read_celestial(hdus[name].header, flux.shape[0], flux.shape[1], where)
    wavelength, sampling, medium = read_spectral(hdus[name].header, flux.shape[2], where)
    return flux, ours, spaxel, ra, dec, wavelength, sampling, medium


def read_muse(hdus, path: Path) -> Cube:
    names = [hdu.name for hdu in hdus]
    primary = hdus[0].header
    header = hdus["DATA"].header
    flux, ours, spaxel, ra, dec, wavelength, sampling, medium = read_axes(hdus, "DATA", path)
    shape = flux.shape
    where = f"{path}: `DATA`"
    # our files before the MUSE layout (no LAYOUT keyword): STAT = 0 meant noiseless, and
    # a 2-D MASK extension held the aperture
    legacy = ours and "LAYOUT" not in primary
    bad = ~np.isfinite(flux)  # every step in place: files can be GB
    if "STAT" in names:
        variance = cube_data(hdus, "STAT", path, shape).astype(flux.dtype, copy=False)
        good = (variance >= 0) if legacy else (variance > 0)
        good &= np.isfinite(variance)
        bad |= ~good
    else:  # no variance: unknown noise, held as 0 on the good voxels
        variance = np.zeros(shape, flux.dtype)
    if "DQ" in names:
        bad |= cube_data(hdus, "DQ", path, shape) != 0
    fill = hdus["STAT"].header.get("STATFILL") if ours and "STAT" in names else None
    if fill is not None:  # our noiseless placeholder: variance 0, as in the Cube written
        noiseless = variance == np.asarray(fill, variance.dtype)
        noiseless &= ~bad
        variance[noiseless] = 0
    variance[bad] = np.inf
    flux[bad] = 0
    mask = ~np.all(bad, axis=2)
    if legacy and "MASK" in names:
        aperture = hdus["MASK"].data
        if aperture is None or aperture.shape != shape[1::-1]:
            got = None if aperture is None else aperture.shape
            raise ValueError(
                f"{path}: `MASK` must have shape (n_y, n_x) = {shape[1::-1]}; got {got}."
            )
        mask &= _native(aperture).T.astype(bool)
    if ours:  # outside the aperture: as the pipeline holds it (flux 0, variance 0)
        variance[~mask] = 0
    unit = float(primary["FLUXUNIT"]) if ours and "FLUXUNIT" in primary else None
    if unit is None:
        unit = parse_flux_unit(header.get("BUNIT", ""), where)
    sampling = str(primary.get("WAVESAMP", sampling)) if ours else sampling
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
        flux_unit=unit,
        wavelength_sampling=sampling,
        telescope=telescope_name(primary, header, spaxel, ours),
        lsf_fwhm=lsf_from_extension(hdus, path, shape[2]),
        medium=medium,
    )


def read_truth_fits(path: str | Path) -> dict:
    """The truth maps of one of our FITS files (`TRUE_*`, `OBS_*` extensions) as
    {`"truth"`: Maps, `"observed_truth"`: Maps, `"gas_truth"`: GasMaps}, each key
    present when the file has it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    with open_fits(path) as hdus:
        names = [hdu.name for hdu in hdus]
        out = {}
        gas = read_gas_fits(hdus, path, _native)
        if gas is not None:
            out[GAS_GROUP] = gas
        for key, prefix in TRUTH_KINDS:
            found = [w for w, suffix in WEIGHT_SUFFIX.items() if f"{prefix}_{suffix}" in names]
            if not found:
                continue
            if len(found) > 1:
                raise ValueError(
                    f"{path}: both `{prefix}_FLUX` and `{prefix}_MASS`: one weighting per file."
                )
            weighting = found[0]
            ext = extension_names(prefix, weighting)
            missing = [name for name in ext.values() if name not in names]
            if missing:
                raise ValueError(f"{path}: truth extensions {missing} are missing.")
            header = hdus[ext["flux"]].header
            written = str(header.get("TRUTHWT", weighting))
            if written != weighting:
                raise ValueError(
                    f"{path}: `{ext['flux']}` has TRUTHWT = {written!r}; its name says "
                    f"{weighting!r}."
                )
            values = {}
            for field, name in ext.items():
                data = hdus[name].data
                if data is None or data.ndim != 2:
                    got = None if data is None else data.shape
                    raise ValueError(f"{path}: `{name}` must be a 2-D image; got shape {got}.")
                values[field] = _native(data).T
            out[key] = rebuild_truth(
                values, weighting, header.get("NCLIPPED"), header.get("CLIPFRAC"),
                f"{path}: `{prefix}_*`",
            )  # fmt: skip
        return out
