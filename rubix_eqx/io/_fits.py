"""Cubes as MUSE-like FITS files: `DATA`, `STAT` and `MASK` extensions with a 3-D WCS.

Layout (documented in docs/api.md, "Cube files"):

- primary HDU: no data; provenance (`PROGRAM`, `PROGVER`, `DATE`, `TELESCOP`, `SSPNAME`,
  `SSPCITE`, `REDSHIFT`, `RA`, `DEC`, `INCLIN`, `POSANG`, `DISTANCE`), the cube's
  `FLUXUNIT`, `SPAXSIZE`, `WAVESAMP`, and the [`rubix_eqx.Diagnostics`][] (`NPARTIC`,
  `NCLIPPED`, `CLIPFRAC`, `NOUTSIDE`, `OUTFRAC`, `NLSFCLIP`);
- `DATA`: flux, NumPy shape (n_λ, n_y, n_x), i.e. FITS NAXIS1 = x, NAXIS2 = y,
  NAXIS3 = λ; `BUNIT` e.g. `10**(-20)*erg/s/cm**2/Angstrom`;
- `STAT`: the variance of `DATA`, same shape and WCS, `BUNIT` squared;
- `MASK`: uint8 (n_y, n_x), 1 inside the instrument's aperture, celestial WCS.

WCS: `RA---TAN`/`DEC--TAN` with CRVAL = (`ra`, `dec`) of the field centre, CDELT1 =
−spaxel/3600 (x grows to the West, so East is left), CDELT2 = +spaxel/3600 and CRPIX at
the field centre (pixel n/2 in 0-based edge units = FITS n/2 + 0.5). Spectral axis
`AWAV` (air wavelength, Å; linear: λ = CRVAL3 + CDELT3 (p − CRPIX3)) or `AWAV-LOG`
(log-sampled, FITS paper III: λ = CRVAL3 exp(CDELT3 (p − CRPIX3) / CRVAL3)).
"""

import math
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._cube import Cube, Diagnostics
from ._provenance import provenance


UNIT_TAIL = "erg/s/cm**2/Angstrom"
DIAGNOSTIC_KEYS = {
    "n_particles": ("NPARTIC", "particles in the galaxy"),
    "n_clipped": ("NCLIPPED", "particles clipped to the SSP grid edge"),
    "clipped_mass_fraction": ("CLIPFRAC", "mass fraction clipped to the SSP grid"),
    "n_outside": ("NOUTSIDE", "particles outside the field of view"),
    "outside_mass_fraction": ("OUTFRAC", "mass fraction outside the field"),
    "n_lsf_clipped": ("NLSFCLIP", "lattice bins where LSF broadening was clipped"),
}
# Largest allowed mismatch between the wavelength array and its WCS, in pixels; float32
# wavelength arrays of log-sampled grids are exact to ~3e-4 pixel only.
WCS_TOLERANCE_PIXELS = 1e-2


def bunit(flux_unit: float, power: int = 1) -> str:
    """FITS `BUNIT` of a flux (power 1) or variance (power 2) in units of `flux_unit`
    erg s⁻¹ cm⁻² Å⁻¹: `10**(-20)*erg/s/cm**2/Angstrom` as in MUSE cubes. A unit that is
    not a power of ten is written as e.g. `3e-17 erg/s/cm**2/Angstrom` (not FITS-standard,
    but astropy reads it)."""
    exponent = round(math.log10(flux_unit))
    tail = UNIT_TAIL if power == 1 else "erg**2/s**2/cm**4/Angstrom**2"
    if math.isclose(10.0**exponent, flux_unit, rel_tol=1e-12):
        return f"10**({exponent * power})*{tail}" if exponent else tail
    return f"{flux_unit**power!r} {tail}"


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").replace("\n", " ")


def spectral_keywords(wavelength: np.ndarray, sampling: str) -> dict[str, object]:
    """CTYPE3/CUNIT3/CRVAL3/CDELT3/CRPIX3 reproducing `wavelength` (Å). Raises
    `ValueError` if the array is not linear (or log-linear) to 1e-2 pixel."""
    wave = np.asarray(wavelength, np.float64)
    n = wave.size
    if sampling == "log":
        ratio = math.log(wave[-1] / wave[0]) / (n - 1)
        keys = {"CTYPE3": "AWAV-LOG", "CRVAL3": float(wave[0]), "CDELT3": float(wave[0] * ratio)}
        model = wave[0] * np.exp(ratio * np.arange(n))
    else:
        step = (wave[-1] - wave[0]) / (n - 1)
        keys = {"CTYPE3": "AWAV", "CRVAL3": float(wave[0]), "CDELT3": float(step)}
        model = wave[0] + step * np.arange(n)
    pixel = np.gradient(wave)
    worst = float(np.max(np.abs(model - wave) / pixel))
    if worst > WCS_TOLERANCE_PIXELS:
        raise ValueError(
            f"The cube's wavelength grid is not {sampling}-sampled (a {keys['CTYPE3']} WCS misses "
            f"it by {worst:.3g} pixels): write it with `to_hdf5` instead."
        )
    return {**keys, "CUNIT3": "Angstrom", "CRPIX3": 1.0}


def celestial_keywords(cube: Cube) -> dict[str, object]:
    n_x, n_y = cube.flux.shape[:2]
    scale = float(cube.spaxel_size) / 3600.0
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": float(cube.ra), "CRVAL2": float(cube.dec),
        "CRPIX1": n_x / 2 + 0.5, "CRPIX2": n_y / 2 + 0.5,
        "CDELT1": -scale, "CDELT2": scale, "RADESYS": "ICRS",
    }  # fmt: skip


def cube_wcs(cube: Cube):
    """The 3-D `astropy.wcs.WCS` (x, y, λ) of `cube` as written by
    [`rubix_eqx.io.write_cube_fits`][] (pixel coordinates 0-based, FITS axis order)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    header = fits.Header()
    header["WCSAXES"] = 3
    for key, value in celestial_keywords(cube).items():
        header[key] = value
    wave = np.asarray(cube.wavelength)
    for key, value in spectral_keywords(wave, cube.wavelength_sampling).items():
        header[key] = value
    return WCS(header)


def write_cube_fits(cube: Cube, path: str | Path, *, ssp=None, observation=None) -> None:
    """Write `cube` as a MUSE-like FITS file (layout: module docstring / docs/api.md).

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][].
    - `path`: the file to write (atomically: a temporary name, then a rename).
    - `ssp`: the [`rubix_eqx.SSPGrid`][] used, recorded as `SSPNAME`/`SSPCITE`.
    - `observation`: the [`rubix_eqx.Observation`][] used, recorded as `INCLIN`,
      `POSANG` (and `DISTANCE`).
    """
    from astropy.io import fits

    wave = np.asarray(cube.wavelength)
    spectral = spectral_keywords(wave, cube.wavelength_sampling)
    celestial = celestial_keywords(cube)
    info = provenance(ssp, observation)

    primary = fits.PrimaryHDU()
    h = primary.header
    h["PROGRAM"] = (info["software"], "software that made this cube")
    h["PROGVER"] = (info["software_version"], "its version")
    h["DATE"] = (info["date"], "UTC date the file was written")
    h["TELESCOP"] = (_ascii(cube.telescope), "telescope model (rubix_eqx preset name)")
    h["OBJECT"] = ("mock galaxy", "simulated observation")
    h["RA"] = (float(cube.ra), "[deg] field centre")
    h["DEC"] = (float(cube.dec), "[deg] field centre")
    h["REDSHIFT"] = (float(cube.redshift), "redshift of the observation")
    if "inclination" in info:
        h["INCLIN"] = (info["inclination"], "[deg] inclination, 0 = face-on")
        h["POSANG"] = (info["position_angle"], "[deg] position angle, North through East")
    if "distance" in info:
        h["DISTANCE"] = (info["distance"], "[Mpc] distance given instead of cosmology")
    if "ssp_name" in info:
        h["SSPNAME"] = (_ascii(info["ssp_name"]), "SSP template grid")
        h["SSPCITE"] = _ascii(info["ssp_citation"])
    h["FLUXUNIT"] = (float(cube.flux_unit), "[erg/s/cm2/Angstrom] unit of DATA")
    h["SPAXSIZE"] = (float(cube.spaxel_size), "[arcsec] spaxel size")
    h["WAVESAMP"] = (cube.wavelength_sampling, "wavelength sampling: linear or log")
    for name, (key, comment) in DIAGNOSTIC_KEYS.items():
        value = np.asarray(getattr(cube.diagnostics, name))
        h[key] = (value.item(), comment)

    def image(name, data, unit, keys):
        hdu = fits.ImageHDU(data=data, name=name)
        hdu.header["BUNIT"] = unit
        hdu.header["WCSAXES"] = 3 if data.ndim == 3 else 2
        for key, value in keys.items():
            hdu.header[key] = value
        return hdu

    flux = np.ascontiguousarray(np.asarray(cube.flux).transpose(2, 1, 0))
    variance = np.ascontiguousarray(np.asarray(cube.variance).transpose(2, 1, 0))
    mask = np.ascontiguousarray(np.asarray(cube.mask).T.astype(np.uint8))
    hdus = fits.HDUList([
        primary,
        image("DATA", flux, bunit(cube.flux_unit), celestial | spectral),
        image("STAT", variance, bunit(cube.flux_unit, 2), celestial | spectral),
        image("MASK", mask, "", celestial),
    ])  # fmt: skip
    hdus["MASK"].header["COMMENT"] = "1 = spaxel inside the instrument's aperture"
    with atomic_path(path) as tmp:
        hdus.writeto(tmp, overwrite=True)


def _native(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=array.dtype.newbyteorder("="))


SPECTRAL_TYPES = ("AWAV", "WAVE", "AWAV-LOG", "WAVE-LOG")
SPECTRAL_UNITS = {"angstrom": 1.0, "nm": 10.0, "m": 1e10, "um": 1e4}


def _wavelength(header, n: int, path="") -> tuple[np.ndarray, str]:
    ctype = str(header.get("CTYPE3", "AWAV")).strip()
    if ctype not in SPECTRAL_TYPES:
        raise ValueError(
            f"{path}: spectral axis CTYPE3 = {ctype!r}; expected one of {SPECTRAL_TYPES}."
        )

    def keyword(name, default=None):
        value = header.get(name, default)
        if value is None:
            raise ValueError(f"{path}: the spectral WCS needs {name}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {name} must be a number; got {value!r}.") from None

    crval = keyword("CRVAL3")
    cdelt = keyword("CDELT3", header.get("CD3_3"))
    crpix = keyword("CRPIX3", 1.0)
    if not (np.isfinite(crval) and crval > 0 and np.isfinite(cdelt) and cdelt > 0):
        raise ValueError(f"{path}: need CRVAL3 > 0 and CDELT3 > 0; got {crval}, {cdelt}.")
    unit = str(header.get("CUNIT3", "Angstrom")).strip().lower()
    if unit not in SPECTRAL_UNITS:
        raise ValueError(
            f"{path}: unknown CUNIT3 {unit!r}; expected one of {list(SPECTRAL_UNITS)}."
        )
    scale = SPECTRAL_UNITS[unit]
    p = np.arange(1, n + 1, dtype=np.float64)
    if ctype.endswith("-LOG"):
        return scale * crval * np.exp(cdelt * (p - crpix) / crval), "log"
    return scale * (crval + cdelt * (p - crpix)), "linear"


def _flux_unit(primary, data_header) -> float:
    if "FLUXUNIT" in primary:
        return float(primary["FLUXUNIT"])
    import astropy.units as u

    unit = str(data_header.get("BUNIT", "")).strip()
    if not unit:
        return 1.0
    try:
        parsed = u.Unit(unit, format="fits")
    except ValueError:
        parsed = u.Unit(unit, parse_strict="silent")
    return float(parsed.to(u.erg / u.s / u.cm**2 / u.AA))


def read_cube_fits(path: str | Path) -> Cube:
    """Read a cube written by [`rubix_eqx.io.write_cube_fits`][] (or a MUSE-like cube
    with `DATA` and optional `STAT`/`MASK`, linear or `-LOG` spectral axis) into a
    [`rubix_eqx.Cube`][]. Missing provenance reads as 0 (redshift, diagnostics) or
    all-True (mask). Wavelengths are evaluated from the WCS in float64."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    hdus = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hdus = fits.open(path, memmap=False)
            hdus.verify("exception")
            for hdu in hdus:
                hdu.data  # noqa: B018 (read now, so that a truncated file fails here)
    except (OSError, ValueError, fits.verify.VerifyError, fits.verify.VerifyWarning) as e:
        if hdus is not None:
            hdus.close()
        raise ValueError(f"{path}: not a readable FITS file ({e}).") from None
    with hdus:
        names = [hdu.name for hdu in hdus]
        if "DATA" not in names:
            raise ValueError(f"{path}: no `DATA` extension; extensions are {names}.")
        primary = hdus[0].header
        data = hdus["DATA"]
        if data.data is None or data.data.ndim != 3:
            shape = None if data.data is None else data.data.shape
            raise ValueError(f"{path}: `DATA` must be a 3-D cube; got shape {shape}.")
        flux = _native(data.data).transpose(2, 1, 0)
        header = data.header
        variance = (
            _native(hdus["STAT"].data).transpose(2, 1, 0)
            if "STAT" in names
            else np.zeros_like(flux)
        )
        mask = (
            _native(hdus["MASK"].data).T.astype(bool)
            if "MASK" in names
            else np.ones(flux.shape[:2], bool)
        )
        wavelength, sampling = _wavelength(header, flux.shape[2], path)
        sampling = str(primary.get("WAVESAMP", sampling))
        spaxel = float(primary.get("SPAXSIZE", abs(float(header.get("CDELT1", 1 / 3600))) * 3600))
        diag = {}
        for name, (key, _) in DIAGNOSTIC_KEYS.items():
            default = 0 if name.startswith("n_") else 0.0
            diag[name] = jnp.asarray(primary.get(key, default))
        return Cube(
            flux=jnp.asarray(flux),
            variance=jnp.asarray(variance),
            wavelength=jnp.asarray(wavelength),
            mask=jnp.asarray(mask),
            diagnostics=Diagnostics(**diag),
            redshift=jnp.asarray(float(primary.get("REDSHIFT", 0.0))),
            spaxel_size=spaxel,
            ra=float(primary.get("RA", header.get("CRVAL1", 0.0))),
            dec=float(primary.get("DEC", header.get("CRVAL2", 0.0))),
            flux_unit=_flux_unit(primary, header),
            wavelength_sampling=sampling,
            telescope=str(primary.get("TELESCOP", "unknown")),
        )
