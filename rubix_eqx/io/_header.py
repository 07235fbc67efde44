"""FITS header pieces shared by the cube layouts: exact float cards, flux units, the 3-D WCS
(written as MUSE and MaNGA write it, read back through `astropy.wcs`), observation keywords.

Why the cards are written here rather than by `astropy.wcs.WCS.to_header()`: that method
writes a PC matrix with CDELT = 1, converts the spectral axis to metres and prints 14
significant digits, whereas MUSE and MaNGA cubes carry a CD matrix in degrees and
Angstrom, and readers index `CD3_3` and `CD2_2` directly. We write the CD cards with every
digit of the float64 value (a free-format card when the value needs more than 20
characters, which astropy would otherwise truncate), and `cube_wcs` parses them back
with `astropy.wcs.WCS` so the file's WCS is what astropy, mpdaf and spectral-cube see.
"""

import math
import re
import warnings

import numpy as np


# Largest allowed mismatch between the wavelength array and its WCS, in pixels; float32
# wavelength arrays of log-sampled grids are exact to ~3e-4 pixel only.
WCS_TOLERANCE_PIXELS = 1e-2
UNIT_TAIL = "erg/s/cm**2/Angstrom"
SPECTRAL_UNITS = {"angstrom": 1.0, "nm": 10.0, "m": 1e10, "um": 1e4}
SPECTRAL_TYPES = ("AWAV", "WAVE", "AWAV-LOG", "WAVE-LOG")

# TELESCOP / INSTRUME written for the presets (override with `telescop=`/`instrume=`).
OBSERVATORIES = {
    "MUSE": ("ESO-VLT-U4", "MUSE"),  # ESO keyword values of MUSE on UT4
    "MaNGA": ("SDSS 2-5m", "MaNGA"),  # SDSS 2.5 m at Apache Point
    "SAMI": ("Anglo-Australian Telescope", "SAMI"),
    "Hector": ("Anglo-Australian Telescope", "Hector"),
    "KCWI": ("Keck II", "KCWI"),
    "CALIFA": ("CAHA 3.5m", "PMAS"),  # PMAS/PPak at Calar Alto
}
DEFAULT_OBJECT = "mock galaxy"


def observatory(telescope: str) -> tuple[str, str]:
    """(TELESCOP, INSTRUME) for a rubix_eqx telescope name: by its prefix (`MUSE-WFM` →
    `ESO-VLT-U4`, `MUSE`), else the name itself for both."""
    for prefix, values in OBSERVATORIES.items():
        if telescope.upper().startswith(prefix.upper()):
            return values
    return telescope, telescope


def exact(value) -> float:
    """A float for a header: float32 (or float16) values by their shortest decimal
    (0.05, not 0.05000000074505806), float64 and Python floats unchanged."""
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype.itemsize < 8:
        return float(str(array[()]))
    return float(array)


def ascii_text(text: str) -> str:
    return str(text).encode("ascii", "replace").decode("ascii").replace("\n", " ")


def card(key: str, value, comment: str = ""):
    """A `fits.Card` whose float value reads back bit for bit: astropy truncates floats to
    20 characters (−5.55555555555555E-05 for −0.2/3600), so a longer repr is written as a
    free-format card (FITS standard §4.2.4)."""
    from astropy.io import fits

    if isinstance(value, float | np.floating) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"FITS keyword {key} must be finite; got {value}.")
        text = repr(value).upper()
        if len(text) > 20:
            image = f"{key:<8}= {text:>20}"
            if comment:
                image += f" / {comment}"
            return fits.Card.fromstring(image[:80].ljust(80))
    elif isinstance(value, str):
        value = ascii_text(value)
        quoted = len(value.replace("'", "''")) + 2
        if quoted <= 70 and comment:  # one card: the comment takes what room is left
            comment = comment[: max(0, 80 - max(10 + quoted, 30) - 3)]
    return fits.Card(key, value, comment)


def put(header, key: str, value, comment: str = "") -> None:
    """Set `key` in `header` (replacing an existing card) with `card`."""
    new = card(key, value, comment)
    if key in header:
        header.remove(key)
    header.append(new)


def bunit(flux_unit: float, power: int = 1) -> str:
    """FITS `BUNIT` of a flux (power 1) or variance (power 2) in units of `flux_unit`
    erg s⁻¹ cm⁻² Å⁻¹: `10**(-20)*erg/s/cm**2/Angstrom` as in MUSE cubes. The variance is
    written `10**(-40)*erg**2/s**2/cm**4/Angstrom**2` (MUSE writes
    `(10**(-20)*erg/s/cm**2/Angstrom)**2`, which astropy cannot parse). A unit that is not
    a power of ten is written as e.g. `3e-17 erg/s/cm**2/Angstrom`."""
    exponent = round(math.log10(flux_unit))
    tail = UNIT_TAIL if power == 1 else "erg**2/s**2/cm**4/Angstrom**2"
    if math.isclose(10.0**exponent, flux_unit, rel_tol=1e-12):
        return f"10**({exponent * power})*{tail}" if exponent else tail
    return f"{flux_unit**power!r} {tail}"


def parse_flux_unit(text: str, where: str) -> float:
    """erg s⁻¹ cm⁻² Å⁻¹ per unit of a `BUNIT` string: MUSE's `10**(-20)*erg/s/cm**2/Angstrom`,
    MaNGA's `1E-17 erg/s/cm^2/Ang/spaxel` (per spaxel, as our cubes), plain astropy
    strings; rounded to 12 significant digits. An empty `BUNIT` reads as 1. `where` names
    the file and extension."""
    import astropy.units as u

    raw = str(text).strip()
    if not raw:
        return 1.0
    cleaned = re.sub(r"\bAng\b", "Angstrom", raw.replace("/spaxel", "").replace("^", "**"))
    factor, unit_text = 1.0, cleaned
    match = re.fullmatch(r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s+(.+)", cleaned)
    if match:
        factor, unit_text = float(match.group(1)), match.group(2)
    target = u.erg / u.s / u.cm**2 / u.AA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        for fmt in ("fits", None):
            try:
                scale = float(factor * u.Unit(unit_text, format=fmt).to(target))
                return float(f"{scale:.12g}")  # 1e-20, not 1.0000000000000001e-20
            except (ValueError, u.UnitConversionError, TypeError):
                continue
    raise ValueError(
        f"{where}: BUNIT = {raw!r} is not a flux density (erg/s/cm**2/Angstrom, optionally "
        "scaled, e.g. '10**(-20)*erg/s/cm**2/Angstrom' or '1E-17 erg/s/cm^2/Ang/spaxel')."
    )


def _shortest(raw: float, ok) -> float:
    """The shortest decimal (1..17 significant digits) near `raw` for which `ok` holds."""
    for digits in range(1, 18):
        candidate = float(f"{raw:.{digits}g}")
        if ok(candidate):
            return candidate
    return raw


def spectral_keywords(wavelength, sampling: str, medium: str = "air") -> dict[str, object]:
    """`CTYPE3`/`CUNIT3`/`CRVAL3`/`CD3_3`/`CRPIX3` reproducing `wavelength` (Å).

    `CTYPE3` is `AWAV` (air) or `WAVE` (vacuum), with `-LOG` for log-sampled grids (FITS
    WCS paper III: λ = CRVAL3 exp(CD3_3 (p − CRPIX3) / CRVAL3)). `CRVAL3` and `CD3_3` are
    the shortest decimals that reproduce the grid as well as its end points do (1.25, not
    1.2500000000000002; float32 grids by their float32 decimals). Raises `ValueError` if
    the array is not linear (or log-linear) to 1e-2 pixel."""
    values = np.asarray(wavelength)
    wave = values.astype(np.float64)
    n = wave.size
    index = np.arange(n, dtype=np.float64)
    crval = exact(values[0])
    pixel = np.gradient(wave) if n > 1 else np.ones(1)
    if values.dtype.itemsize < 8:
        slack = 0.5 * float(np.max(np.spacing(values.astype(values.dtype))))
    else:
        slack = 4.0 * float(np.max(np.spacing(wave)))
    ctype = "AWAV" if medium == "air" else "WAVE"

    if sampling == "log":
        ctype += "-LOG"
        raw = crval * math.log(wave[-1] / crval) / (n - 1) if n > 1 else 1.0

        def model(step):
            return crval * np.exp(step * index / crval)
    else:
        raw = (wave[-1] - crval) / (n - 1) if n > 1 else 1.0

        def model(step):
            return crval + step * index

    tolerance = max(float(np.max(np.abs(model(raw) - wave))), slack)
    step = _shortest(raw, lambda s: float(np.max(np.abs(model(s) - wave))) <= tolerance)
    worst = float(np.max(np.abs(model(step) - wave) / pixel))
    if not (worst <= WCS_TOLERANCE_PIXELS and step > 0):
        raise ValueError(
            f"The cube's wavelength grid is not {sampling}-sampled (a {ctype} WCS misses "
            f"it by {worst:.3g} pixels): write it with `rx.io.write_cube_hdf5` instead."
        )
    return {"CTYPE3": ctype, "CUNIT3": "Angstrom", "CRPIX3": 1.0, "CRVAL3": crval, "CD3_3": step}


def sky_step(spaxel_arcsec: float) -> float:
    """spaxel/3600 in degrees, chosen among the neighbouring doubles so that
    `CD2_2 * 3600 == spaxel` exactly (as GIST and mpdaf compute the spaxel size)."""
    degrees = spaxel_arcsec / 3600.0
    candidates = [degrees]
    up = down = degrees
    for _ in range(4):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        candidates += [float(up), float(down)]
    for candidate in candidates:
        if candidate * 3600.0 == spaxel_arcsec:
            return candidate
    return degrees


def celestial_keywords(n_x: int, n_y: int, spaxel: float, ra: float, dec: float) -> dict:
    """RA---TAN/DEC--TAN with a CD matrix in degrees: `CD1_1 = −spaxel/3600` (x grows to
    the West, so East is left), `CD2_2 = +spaxel/3600`, zero cross terms, CRVAL at the
    field centre, pixel n/2 in 0-based pixel-edge units (FITS CRPIX = n/2 + 0.5)."""
    step = sky_step(spaxel)
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": n_x / 2 + 0.5, "CRPIX2": n_y / 2 + 0.5,
        "CRVAL1": float(ra), "CRVAL2": float(dec),
        "CD1_1": -step, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": step,
    }  # fmt: skip


WCS_COMMENTS = {
    "CTYPE1": "Right ascension, gnomonic projection",
    "CTYPE2": "Declination, gnomonic projection",
    "CUNIT1": "Units of coordinate increment and value",
    "CUNIT2": "Units of coordinate increment and value",
    "CUNIT3": "Units of coordinate increment and value",
    "CRPIX1": "Pixel coordinate of reference point",
    "CRPIX2": "Pixel coordinate of reference point",
    "CRPIX3": "Pixel coordinate of reference point",
    "CRVAL1": "[deg] RA of the field centre",
    "CRVAL2": "[deg] Dec of the field centre",
    "CRVAL3": "[Angstrom] wavelength of the first pixel",
    "CD1_1": "[deg] -spaxel: x grows to the West (East left)",
    "CD2_2": "[deg] spaxel: y grows to the North",
    "CD3_3": "[Angstrom] wavelength step (-LOG: at CRPIX3)",
}


def cube_keywords(cube) -> dict[str, object]:
    """Every WCS keyword of a 3-D cube extension (x, y, λ), in writing order."""
    n_x, n_y = cube.flux.shape[:2]
    sky = celestial_keywords(n_x, n_y, exact(cube.spaxel_size), exact(cube.ra), exact(cube.dec))
    spectral = spectral_keywords(cube.wavelength, cube.wavelength_sampling, cube.medium)
    keys = {"WCSAXES": 3}
    for name in ("CTYPE", "CUNIT", "CRPIX", "CRVAL"):
        for axis in "12":
            keys[f"{name}{axis}"] = sky[f"{name}{axis}"]
        keys[f"{name}3"] = spectral[f"{name}3"]
    for i in "123":
        for j in "123":
            key = f"CD{i}_{j}"
            keys[key] = sky.get(key, spectral["CD3_3"] if key == "CD3_3" else 0.0)
    keys["RADESYS"] = "ICRS"
    return keys


def spectrum_keywords(cube) -> dict[str, object]:
    """The WCS of a 1-D spectrum (e.g. `LSF_FWHM`) on the cube's wavelength axis."""
    spectral = spectral_keywords(cube.wavelength, cube.wavelength_sampling, cube.medium)
    return {
        "WCSAXES": 1, "CTYPE1": spectral["CTYPE3"], "CUNIT1": "Angstrom",
        "CRPIX1": spectral["CRPIX3"], "CRVAL1": spectral["CRVAL3"], "CD1_1": spectral["CD3_3"],
    }  # fmt: skip


SPECTRAL_COMMENTS = {
    "AWAV": "Air wavelength (linear)",
    "WAVE": "Vacuum wavelength (linear)",
    "AWAV-LOG": "Air wavelength (logarithmic)",
    "WAVE-LOG": "Vacuum wavelength (logarithmic)",
}


def write_keywords(header, keys: dict) -> None:
    for key, value in keys.items():
        comment = WCS_COMMENTS.get(key, "")
        if key.startswith("CTYPE") and value in SPECTRAL_COMMENTS:
            comment = SPECTRAL_COMMENTS[value]
        put(header, key, value, comment)


def cube_wcs(cube):
    """The 3-D `astropy.wcs.WCS` (x, y, λ) of `cube` as written by
    [`rubix_eqx.io.write_cube_fits`][] (pixel coordinates 0-based, FITS axis order)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    header = fits.Header()
    write_keywords(header, cube_keywords(cube))
    return WCS(header)


# ----------------------------------------------------------------------------------------
# Reading


def _number(header, key: str, where: str, default=None) -> float:
    value = header.get(key, default)
    if value is None:
        raise ValueError(f"{where}: the spectral WCS needs {key} (missing).")
    if isinstance(value, bool):
        raise ValueError(f"{where}: {key} = {value!r} must be a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} = {value!r} must be a number.") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {key} = {value!r} must be finite.")
    return number


def check_separable(header, where: str) -> None:
    """The wavelength axis must not mix with the sky axes (zero CD/PC cross terms)."""
    for key in ("CD3_1", "CD3_2", "CD1_3", "CD2_3", "PC3_1", "PC3_2", "PC1_3", "PC2_3"):
        if key in header and _number(header, key, where) != 0.0:
            raise ValueError(
                f"{where}: {key} = {header[key]!r}: the spectral axis is mixed with the "
                "sky axes; only cubes with a separate wavelength axis can be read."
            )


def read_spectral(header, n: int, where: str) -> tuple[np.ndarray, str, str]:
    """(wavelengths in Å (float64), sampling `"linear"`/`"log"`, medium `"air"`/`"vacuum"`)
    of axis 3 of a cube header: CD3_3 or CDELT3 (× PC3_3), CRVAL3, CRPIX3, CUNIT3, CTYPE3
    `AWAV`/`WAVE` (air/vacuum) with optional `-LOG`. Checked against `astropy.wcs`."""
    ctype = str(header.get("CTYPE3", "")).strip().upper()
    if ctype not in SPECTRAL_TYPES:
        raise ValueError(
            f"{where}: spectral axis CTYPE3 = {header.get('CTYPE3')!r}; expected one of "
            f"{SPECTRAL_TYPES} (air/vacuum wavelength, linear or -LOG)."
        )
    check_separable(header, where)
    crval = _number(header, "CRVAL3", where)
    crpix = _number(header, "CRPIX3", where, 1.0)
    if "CD3_3" in header:
        step = _number(header, "CD3_3", where)
        if "CDELT3" in header:
            cdelt = _number(header, "CDELT3", where)
            if not math.isclose(cdelt, step, rel_tol=1e-9) and not cdelt == 1.0:
                raise ValueError(
                    f"{where}: CDELT3 = {cdelt!r} disagrees with CD3_3 = {step!r}; readers "
                    "differ on which one wins, so the wavelength axis is ambiguous."
                )
        key = "CD3_3"
    else:
        step = _number(header, "CDELT3", where) * _number(header, "PC3_3", where, 1.0)
        key = "CDELT3"
    if not crval > 0:
        raise ValueError(f"{where}: CRVAL3 = {crval!r} must be a wavelength > 0.")
    if not step > 0:
        raise ValueError(
            f"{where}: {key} = {step!r} must be > 0 (wavelengths increasing with pixel)."
        )
    unit_text = str(header.get("CUNIT3", "Angstrom")).strip()
    unit = unit_text.lower()
    if unit not in SPECTRAL_UNITS:
        raise ValueError(
            f"{where}: CUNIT3 = {unit_text!r} is not a wavelength unit; expected one of "
            f"{list(SPECTRAL_UNITS)}."
        )
    scale = SPECTRAL_UNITS[unit]
    p = np.arange(1, n + 1, dtype=np.float64)
    if ctype.endswith("-LOG"):
        wave = crval * np.exp(step * (p - crpix) / crval)
    else:
        wave = crval + step * (p - crpix)
    wave = wave * scale if scale != 1.0 else wave
    _check_with_astropy(header, wave, where)
    sampling = "log" if ctype.endswith("-LOG") else "linear"
    return wave, sampling, ("air" if ctype.startswith("AWAV") else "vacuum")


def _quiet_wcs(header):
    from astropy.wcs import FITSFixedWarning, WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _check_with_astropy(header, wave: np.ndarray, where: str) -> None:
    """astropy's reading of the spectral axis must agree with ours to 1e-6 pixel."""
    import astropy.units as u

    try:
        spectral = _quiet_wcs(header).sub([3])
        unit = u.Unit(spectral.wcs.cunit[0] or "m")
        got = spectral.pixel_to_world_values(np.arange(wave.size, dtype=np.float64))
        got = (np.asarray(got, np.float64) * unit).to_value(u.AA)
    except Exception as e:  # astropy's own message, with the file named
        detail = " ".join(str(e).split())
        raise ValueError(f"{where}: astropy.wcs cannot read the WCS ({detail}).") from None
    pixel = np.gradient(wave) if wave.size > 1 else np.ones(1)
    worst = float(np.max(np.abs(got - wave) / pixel))
    if not worst <= 1e-6:
        raise ValueError(
            f"{where}: astropy.wcs reads the spectral axis {worst:.3g} pixels away from "
            "CRVAL3 + CD3_3 (p - CRPIX3); the header has a spectral WCS feature this reader "
            "does not handle."
        )


def read_celestial(header, n_x: int, n_y: int, where: str) -> tuple[float, float, float]:
    """(spaxel size in arcsec, RA, Dec in degrees of the field centre) from the celestial
    WCS (CD matrix, or CDELT with optional PC), through `astropy.wcs`. The spaxel size is
    rounded to 12 significant digits (0.2, not 0.19999999999999998 from a 15-digit CD
    card); non-square spaxels raise `ValueError`. A rotated WCS is read in its own pixel
    axes (the Cube's axis 0 is then not exactly West)."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    check_separable(header, where)
    types = [str(header.get(f"CTYPE{i}", "")).strip().upper() for i in (1, 2)]
    if not (types[0].startswith("RA") and types[1].startswith("DEC")):
        raise ValueError(
            f"{where}: no celestial WCS: CTYPE1, CTYPE2 = {types}; expected 'RA---TAN', "
            "'DEC--TAN' (the spaxel size is read from the WCS)."
        )
    try:
        wcs = _quiet_wcs(header).celestial
        scales = proj_plane_pixel_scales(wcs)  # degrees
        ra, dec = wcs.pixel_to_world_values(n_x / 2 - 0.5, n_y / 2 - 0.5)
    except Exception as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"{where}: astropy.wcs cannot read the WCS ({detail}).") from None
    arcsec = [float(f"{s * 3600.0:.12g}") for s in scales]
    if not (arcsec[0] > 0 and math.isclose(arcsec[0], arcsec[1], rel_tol=1e-6)):
        keys = "CD1_1/CD2_2" if "CD1_1" in header else "CDELT1/CDELT2"
        raise ValueError(
            f'{where}: spaxels must be square and non-zero; {keys} give {arcsec[0]:g}" x '
            f'{arcsec[1]:g}".'
        )
    return arcsec[1], float(ra), float(dec)
