"""Readers for public SSP grid formats (DSPS HDF5, pPXF 9 `.npz`), eager, into the fields
of an `SSPGrid` (which `SSPGrid.from_dsps` and `SSPGrid.from_ppxf_npz` check and build).

Units and conventions (docs/ssp.md):

- DSPS (Hearin et al. 2023, MNRAS 521, 1741): `ssp_lgmet` log10 Z (metal mass fraction),
  `ssp_lg_age_gyr` (older files: `ssp_lg_age`) log10(age / Gyr), `ssp_wave` Å (FSPS:
  vacuum), `ssp_flux` (n_met, n_age, n_wave) L☉ Hz⁻¹ per M☉ formed. Converted with
  L_λ = L_ν c / λ_vac² (ν = c / λ_vac), then to air wavelengths per Å of air.
- pPXF ≥ 9 `np.savez` files: `templates` (n_wave, n_age, n_Z) L☉ Å⁻¹ per M☉ formed (the
  file is not normalised; pPXF's `sps_lib` divides by a factor only at load time), `lam`
  Å, `ages` Gyr, `metals` [M/H], `masses` (n_age, n_Z) M☉ of living stars + remnants per
  M☉ formed, `fwhm` Å (per pixel or scalar). Z = Z☉ 10^[M/H]; `masses` becomes
  `remaining_mass_fraction`.
"""

import logging
import zipfile
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from .._medium import MEDIA, refractive_index, vacuum_to_air
from .._units import C_ANGSTROM_S, SOLAR_METALLICITY


logger = logging.getLogger(__name__)

AIR_LIMIT = 2000.0  # Å: below, wavelengths stay in vacuum (IAU convention, `_medium`)
DSPS_CITATION = (
    "DSPS: Hearin et al. 2023, MNRAS 521, 1741; cite also the SSP library the file was "
    "built from (the DSPS default is FSPS v3.2: Conroy et al. 2009, ApJ 699, 486; "
    "Conroy & Gunn 2010, ApJ 712, 833)."
)
PPXF_CITATION = (
    "pPXF template file (Cappellari 2017, MNRAS 466, 798; Cappellari 2023, MNRAS 526, "
    "3273); cite also the SSP library it holds (E-MILES: Vazdekis et al. 2016; GALAXEV: "
    "Bruzual & Charlot 2003; FSPS: Conroy et al. 2009, 2010; XSL: Verro et al. 2022)."
)


# ----------------------------------------------------------------------------- validation


def _axis(path: Path, field: str, values, unit: str, n: int | None = None) -> np.ndarray:
    """A 1-D, finite, strictly increasing axis of ≥ 2 entries (and `n` entries if given)."""
    values = np.asarray(values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"{path}: `{field}` [{unit}] must be 1-D; got shape {values.shape}.")
    if values.size < 2:
        raise ValueError(f"{path}: `{field}` [{unit}] needs at least 2 entries; got {values.size}.")
    if n is not None and values.size != n:
        raise ValueError(f"{path}: `{field}` [{unit}] has {values.size} entries; expected {n}.")
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{path}: `{field}` [{unit}] is not finite at index {i}: {float(values[i])!r}."
        )
    step = np.diff(values)
    if not np.all(step > 0):
        i = int(np.argmax(step <= 0))
        raise ValueError(
            f"{path}: `{field}` [{unit}] must be strictly increasing; entry {i + 1} "
            f"({float(values[i + 1])!r}) follows {float(values[i])!r}."
        )
    return values


def _non_negative(path: Path, field: str, values: np.ndarray, unit: str) -> None:
    for bad, problem in ((~np.isfinite(values), "is NaN or infinite"), (values < 0, "is negative")):
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{path}: `{field}` [{unit}] {problem} for {int(bad.sum())} of {bad.size} "
                f"values (first at index {first}: {float(values[first])!r})."
            )


def _shape(path: Path, field: str, values: np.ndarray, want: tuple[int, ...], meaning: str):
    if values.shape != want:
        raise ValueError(
            f"{path}: `{field}` must have shape {meaning} = {want}; got {values.shape}."
        )


def _medium(path: Path, medium: str) -> str:
    if medium not in MEDIA:
        raise ValueError(f"{path}: `medium` must be one of {MEDIA}; got {medium!r}.")
    return medium


def _to_air(path: Path, wave: np.ndarray, medium: str):
    """Air and vacuum wavelengths of the pixels, dλ_vac/dλ_air, and the pixels kept.

    Below 2000 Å wavelengths stay in vacuum (`rubix_eqx._medium`); the few vacuum pixels
    just below 2000 Å that would overlap the first converted pixel are dropped, so that
    the air grid stays strictly increasing."""
    if medium == "air":
        from .._medium import air_to_vacuum

        air, vac = wave, air_to_vacuum(wave)
    else:
        vac, air = wave, vacuum_to_air(wave)
    converted = vac >= AIR_LIMIT
    # d(λ/n(λ))/dλ by a central difference in float64 (relative step 1e-5: error ≪ 1e-9).
    eps = 1e-5
    hi, lo = vac * (1 + eps), vac * (1 - eps)
    dair_dvac = (hi / refractive_index(hi) - lo / refractive_index(lo)) / (2 * eps * vac)
    dvac_dair = np.where(converted, 1.0 / np.where(converted, dair_dvac, 1.0), 1.0)
    keep = np.ones(wave.shape, bool)
    if converted.any() and (~converted).any():
        keep = converted | (air < air[converted].min())
    if (~keep).any():
        logger.info(
            "%s: dropped %d pixels just below %.0f Å that overlap the air wavelengths above it.",
            path, int((~keep).sum()), AIR_LIMIT,
        )  # fmt: skip
    return air, vac, dvac_dair, keep


def _crop(path: Path, wave: np.ndarray, wavelength_range) -> np.ndarray:
    """Mask of the pixels inside `wavelength_range` (Å, air), all if `None`."""
    if wavelength_range is None:
        return np.ones(wave.shape, bool)
    lo, hi = (float(v) for v in wavelength_range)
    inside = (wave >= lo) & (wave <= hi)
    if inside.sum() < 2:
        raise ValueError(
            f"{path}: `wavelength_range={wavelength_range!r}` keeps {int(inside.sum())} pixels "
            f"of {wave[0]:.1f}–{wave[-1]:.1f} Å (need at least 2)."
        )
    return inside


def _fwhm(path: Path, fwhm, wave: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`fwhm` (Å; scalar or one per file pixel) on the kept pixels, or, if `None`, twice
    the local pixel spacing (the finest resolution the sampling represents)."""
    if fwhm is None:
        out = 2.0 * np.gradient(wave[keep])
        logger.warning(
            "%s: no spectral resolution given; assuming FWHM = 2 pixels (%.3g–%.3g Å). Pass "
            "`fwhm=` (Å) if the templates' resolution is known.",
            path, out.min(), out.max(),
        )  # fmt: skip
        return out
    arr = np.asarray(fwhm, np.float64)
    if arr.ndim == 0:
        arr = np.full(wave.shape, float(arr))
    elif arr.shape != wave.shape:
        raise ValueError(
            f"{path}: `fwhm` must be a scalar or have one value per pixel {wave.shape}; "
            f"got shape {arr.shape}."
        )
    arr = arr[keep]
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{path}: `fwhm` [Angstrom] is not positive at pixel {i}: {float(arr[i])!r}."
        )
    return arr


def _build(path: Path, **fields) -> dict:
    """The fields of an `SSPGrid`, arrays as float32 JAX arrays (`SSPGrid` checks them)."""
    arrays = {
        k: jnp.asarray(v, jnp.float32)
        for k, v in fields.items()
        if isinstance(v, np.ndarray) and k != "metallicity_label"
    }
    return {**fields, **arrays}


# ----------------------------------------------------------------------------------- DSPS

DSPS_FIELDS = {
    "metallicity": (("ssp_lgmet",), "log10 Z"),
    "age": (("ssp_lg_age_gyr", "ssp_lg_age"), "log10 Gyr"),
    "wavelength": (("ssp_wave",), "Angstrom"),
    "flux": (("ssp_flux",), "Lsun/Hz/Msun"),
}


def read_dsps(
    path: str | Path,
    *,
    fwhm=None,
    medium: str = "vacuum",
    wavelength_range: tuple[float, float] | None = None,
    name: str | None = None,
    citation: str = DSPS_CITATION,
    licence: str = "",
) -> dict:
    """Read a DSPS SSP file (HDF5); see [`rubix_eqx.SSPGrid.from_dsps`][]."""
    path = Path(path)
    medium = _medium(path, medium)
    if not path.is_file():
        raise FileNotFoundError(f"DSPS SSP file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}).") from None
    raw = {}
    with f:
        for field, (keys, unit) in DSPS_FIELDS.items():
            key = next((k for k in keys if k in f), None)
            if key is None or not isinstance(f[key], h5py.Dataset):
                raise ValueError(
                    f"{path}: missing dataset `{' or '.join(keys)}` [{unit}] (a DSPS SSP file "
                    f"has {', '.join(k[0] for k, _ in DSPS_FIELDS.values())}); found "
                    f"{sorted(f.keys())}."
                )
            dset = f[key]
            assert isinstance(dset, h5py.Dataset)
            if dset.dtype.kind not in "iuf":
                raise ValueError(f"{path}: dataset `{key}` must be numeric; got {dset.dtype}.")
            raw[field] = (key, np.asarray(dset[...], np.float64))
    (zkey, lgmet), (akey, lg_age) = raw["metallicity"], raw["age"]
    (wkey, wave), (fkey, flux_nu) = raw["wavelength"], raw["flux"]
    lgmet = _axis(path, zkey, lgmet, "log10 Z")
    lg_age = _axis(path, akey, lg_age, "log10 Gyr")
    wave = _axis(path, wkey, wave, "Angstrom")
    if lg_age.max() > 2.5:  # > 300 Gyr: these are log10(age / yr)
        raise ValueError(
            f"{path}: `{akey}` reaches {lg_age.max():.3g}, i.e. an age of 10^{lg_age.max():.3g} "
            "Gyr; DSPS stores log10(age / Gyr) (these look like log10(age / yr): subtract 9)."
        )
    if lgmet.max() >= 0:
        raise ValueError(
            f"{path}: `{zkey}` reaches {lgmet.max():.3g}, i.e. Z ≥ 1; DSPS stores log10 of the "
            "metal mass fraction Z (not [M/H] or log10(Z/Z☉))."
        )
    if wave[0] <= 0:
        raise ValueError(f"{path}: `{wkey}` [Angstrom] is not positive: {float(wave[0])!r}.")
    _shape(path, fkey, flux_nu, (lgmet.size, lg_age.size, wave.size), "(n_met, n_age, n_wave)")
    _non_negative(path, fkey, flux_nu, "Lsun/Hz/Msun")

    air, vac, dvac_dair, keep = _to_air(path, wave, medium)
    keep &= _crop(path, air, wavelength_range)
    # L_λ(vacuum) = L_ν |dν/dλ| = L_ν c / λ_vac², then per Å of air: × dλ_vac/dλ_air.
    flux = np.transpose(flux_nu, (1, 0, 2)) * (C_ANGSTROM_S / vac**2 * dvac_dair)
    return _build(
        path,
        age=10.0**lg_age,
        metallicity=10.0**lgmet,
        wavelength=air[keep],
        flux=flux[..., keep],
        fwhm=_fwhm(path, fwhm, air, keep),
        remaining_mass_fraction=np.ones((lg_age.size, lgmet.size)),
        name=name or f"DSPS: {path.name}",
        citation=citation,
        licence=licence,
    )


# ------------------------------------------------------------------------------ pPXF .npz

PPXF_FIELDS = {
    "templates": "(n_wave, n_age, n_Z) Lsun/Angstrom/Msun",
    "lam": "Angstrom",
    "ages": "Gyr",
    "metals": "[M/H]",
    "masses": "(n_age, n_Z) Msun",
    "fwhm": "Angstrom",
}


def read_ppxf_npz(
    path: str | Path,
    *,
    solar_metallicity: float = SOLAR_METALLICITY,
    medium: str = "air",
    wavelength_range: tuple[float, float] | None = None,
    name: str | None = None,
    citation: str = PPXF_CITATION,
    licence: str = "",
) -> dict:
    """Read a pPXF ≥ 9 SSP template file (`.npz`); see [`rubix_eqx.SSPGrid.from_ppxf_npz`][]."""
    path = Path(path)
    medium = _medium(path, medium)
    if not (solar_metallicity > 0):
        raise ValueError(f"{path}: `solar_metallicity` must be > 0; got {solar_metallicity!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"pPXF template file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable NumPy .npz file ({e}).") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single array (.npy), not an .npz archive of named arrays.")
    raw = {}
    with npz:
        for key, unit in PPXF_FIELDS.items():
            if key not in npz.files:
                raise ValueError(
                    f"{path}: missing array `{key}` [{unit}] (a pPXF template file has "
                    f"{', '.join(PPXF_FIELDS)}); found {sorted(npz.files)}."
                )
            try:
                values = npz[key]
            except ValueError as e:  # object arrays need pickle: refused
                raise ValueError(f"{path}: array `{key}` is not numeric ({e}).") from None
            if values.dtype.kind not in "iuf":
                raise ValueError(f"{path}: array `{key}` must be numeric; got {values.dtype}.")
            raw[key] = np.asarray(values, np.float64)
    wave = _axis(path, "lam", raw["lam"], "Angstrom")
    ages = _axis(path, "ages", raw["ages"], "Gyr")
    metals = _axis(path, "metals", raw["metals"], "[M/H]")
    if ages[0] <= 0:
        raise ValueError(f"{path}: `ages` [Gyr] is not positive: {float(ages[0])!r}.")
    if ages[-1] > 300:
        raise ValueError(
            f"{path}: `ages` reaches {ages[-1]:.4g} Gyr; pPXF stores ages in Gyr (these look "
            "like years)."
        )
    if wave[0] <= 0:
        raise ValueError(f"{path}: `lam` [Angstrom] is not positive: {float(wave[0])!r}.")
    templates, masses = raw["templates"], raw["masses"]
    _shape(path, "templates", templates, (wave.size, ages.size, metals.size),
           "(n_wave, n_age, n_Z)")  # fmt: skip
    _non_negative(path, "templates", templates, "Lsun/Angstrom/Msun")
    _shape(path, "masses", masses, (ages.size, metals.size), "(n_age, n_Z)")
    bad = ~(np.isfinite(masses) & (masses > 0) & (masses <= 1.01))
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}: `masses` (living stars + remnants per M☉ formed) must lie in (0, 1]; "
            f"got {float(masses[i, j])!r} at (age {ages[i]:g} Gyr, [M/H] {metals[j]:+g}) "
            f"({int(bad.sum())} of {bad.size} bad): the templates must be per unit initial mass."
        )

    air, _, dvac_dair, keep = _to_air(path, wave, medium)
    keep &= _crop(path, air, wavelength_range)
    flux = np.transpose(templates, (1, 2, 0))  # already L☉/Å: only a change of medium
    if medium == "vacuum":
        flux = flux * dvac_dair  # per Å of air
    return _build(
        path,
        age=ages,
        metallicity=solar_metallicity * 10.0**metals,
        wavelength=air[keep],
        flux=flux[..., keep],
        fwhm=_fwhm(path, raw["fwhm"], wave, keep),
        remaining_mass_fraction=np.minimum(masses, 1.0),
        name=name or f"pPXF: {path.name}",
        citation=citation,
        licence=licence,
        metallicity_label=tuple(float(m) for m in metals),
    )
