"""E-MILES SSP spectra (Vazdekis et al. 2010, 2016), converted once into our HDF5 grid in
the user cache.

Where the FITS files are found, first match wins: the `path` argument of
`SSPGrid.load("miles", path=...)`; the directory in `$RUBIX_EQX_MILES_DIR`; the
`miles_models` folder of an installed pPXF 8.x (8.0.2 … 8.2.6 ship the same 150 files and
mass table). pPXF ≥ 9 ships no templates (they are downloaded separately, as `.npz`; read
those with `SSPGrid.from_ppxf_npz`).

Metallicity nodes are the Padova 2000 isochrones' own Z (Vazdekis et al. 2010, MNRAS 404,
1639): the file names' [M/H] labels −1.71, −1.31, −0.71, −0.40, 0.00, +0.22 are Z =
0.0004, 0.001, 0.004, 0.008, 0.019, 0.03 (the labels are kept in
`SSPGrid.metallicity_label`). The cache file records `cache_version`; a file of another
version (or none) is converted again.

The MILES licence allows non-commercial use and forbids redistribution: the converted
file lives only in the user's cache and is never shipped with this package.
"""

import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import re
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from ._cache import cache_dir as default_cache_dir
from ._io import read_ssp_hdf5, write_ssp_hdf5


logger = logging.getLogger(__name__)

# Version of the converted grid: 1 had Z = 0.019·10^[M/H] nodes; 2 has the isochrones' Z
# and the [M/H] labels. Bump it whenever the conversion changes, so caches are rebuilt.
CACHE_VERSION = 2
CACHE_NAME = f"emiles_un1.30_padova00_baseFe_v{CACHE_VERSION}.h5"
FILE_PATTERN = re.compile(
    r"Eun1\.30Z([mp])(\d\.\d\d)T(\d+\.\d+)_iPp0\.00_baseFe_linear_FWHM_variable\.fits"
)
MASS_TABLE = "Vazdekis2012_ssp_mass_Padova00_UN_baseFe_v10.0.txt"
# Padova 2000 isochrones (Girardi et al. 2000) behind MILES: [M/H] label → their Z
# (Vazdekis et al. 2010, MNRAS 404, 1639). pPXF 8.2.6 ships the six nodes from −1.71 up.
PADOVA00_Z = {
    -2.32: 0.0001,
    -1.71: 0.0004,
    -1.31: 0.001,
    -0.71: 0.004,
    -0.40: 0.008,
    0.00: 0.019,
    0.22: 0.03,
}
# Vazdekis et al. 2016 (MNRAS 463, 3409), Sect. 2: E-MILES resolution is FWHM 2.51 Å over
# 3540.5–8950 Å (MILES, Falcón-Barroso et al. 2011; CaT) and 3.0 Å in the NGSL-based UV.
FWHM_OPTICAL = 2.51
FWHM_UV = 3.0
UV_OPTICAL_BOUNDARY = 3540.5
CITATION = (
    "E-MILES SSP models: Vazdekis et al. 2010, MNRAS 404, 1639; Vazdekis et al. 2016, "
    "MNRAS 463, 3409; MILES resolution: Falcon-Barroso et al. 2011, A&A 532, A95. "
    "Acknowledge: 'This research is/was (partially) based on data from the MILES project.'"
)
MILES_DIR_ENV = "RUBIX_EQX_MILES_DIR"
INSTALL_HINT = (
    "`SSPGrid.load('miles')` needs the E-MILES FITS files: install pPXF 8.x, which ships "
    "them, with `pip install 'rubix-eqx[miles]'` (from a clone: `pip install -e \".[miles]\"`), "
    "or point to a directory of E-MILES FITS files (pPXF naming, "
    "Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits) with "
    f"`SSPGrid.load('miles', path=...)` or the environment variable `{MILES_DIR_ENV}`."
)


def ppxf_miles_dir() -> Path:
    """The `miles_models` folder of the installed `ppxf` package (pPXF 8.x)."""
    try:
        root = importlib.resources.files("ppxf")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"pPXF is not installed. {INSTALL_HINT}") from None
    path = Path(str(root)) / "miles_models"
    if not path.is_dir():
        try:
            version = importlib.metadata.version("ppxf")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        raise FileNotFoundError(
            f"{path} does not exist: the installed pPXF (version {version}) ships no E-MILES "
            "FITS files (pPXF >= 9 distributes its templates separately, as .npz files; read "
            f"one with `SSPGrid.from_ppxf_npz`). {INSTALL_HINT}"
        )
    return path


def miles_source(path=None) -> Path | None:
    """The user's E-MILES directory (the `path` argument, else `$RUBIX_EQX_MILES_DIR`), or
    `None` for pPXF's package data."""
    if path is not None:
        where = f"`SSPGrid.load('miles', path={str(path)!r})`"
    elif env := os.environ.get(MILES_DIR_ENV):
        path, where = env, f"`${MILES_DIR_ENV}` = {env!r}"
    else:
        return None
    source = Path(path).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(f"{where}: {source} is not a directory. {INSTALL_HINT}")
    return source


def _licence_text(header) -> str:
    lines = [
        str(c).lstrip("= ").strip().strip("'").lstrip("#").strip()
        for c in header.get("COMMENT", [])
    ]
    start = next((i for i, s in enumerate(lines) if "Copyright" in s), 0)
    stop = next((i for i, s in enumerate(lines) if "All other rights" in s), len(lines) - 1)
    return "\n".join(lines[start : stop + 1])


def _read_mass_table(path: Path) -> dict[tuple[float, float], float]:
    """(rounded [M/H], rounded age) → M(stars + remnants) per unit initial mass, Salpeter."""
    table = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] != "UN" or parts[1] != "1.30":
            continue
        metal, age, m_star_remnant = float(parts[2]), float(parts[3]), float(parts[5])
        table[(round(metal, 2), round(age, 4))] = m_star_remnant
    return table


def isochrone_metallicity(labels, source_dir: Path) -> np.ndarray:
    """The Padova 2000 isochrones' Z of each [M/H] label of the E-MILES file names."""
    z = []
    for label in labels:
        node = min(PADOVA00_Z, key=lambda m: abs(m - label))
        if abs(node - label) > 0.005:
            known = ", ".join(f"{m:+.2f}" for m in PADOVA00_Z)
            raise ValueError(
                f"{source_dir}: E-MILES files with [M/H] = {label:+.2f} are not on the Padova "
                f"2000 isochrone grid ([M/H] = {known}); only Padova00 E-MILES grids "
                "(pPXF naming) are supported."
            )
        z.append(PADOVA00_Z[node])
    return np.asarray(z, np.float64)


def convert_miles(source_dir: Path) -> dict:
    """Read the 150 E-MILES FITS files and the mass table in `source_dir` into the fields
    of an `SSPGrid`."""
    from astropy.io import fits

    files = {}
    for path in source_dir.glob("*.fits"):
        match = FILE_PATTERN.fullmatch(path.name)
        if match:
            sign, metal, age = match.groups()
            files[(float(age), (-1 if sign == "m" else 1) * float(metal))] = path
    if not files:
        raise FileNotFoundError(
            f"No E-MILES FITS files (Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits) "
            f"in {source_dir}. {INSTALL_HINT}"
        )
    ages = sorted({a for a, _ in files})
    metals = sorted({m for _, m in files})
    missing = [(a, m) for a in ages for m in metals if (a, m) not in files]
    if missing:
        raise FileNotFoundError(
            f"{source_dir}: E-MILES grid incomplete; missing (age, [M/H]) {missing[:5]}."
        )

    header = fits.getheader(files[(ages[0], metals[0])])
    n_pix = int(header["NAXIS1"])
    wave = header["CRVAL1"] + header["CDELT1"] * (np.arange(n_pix) + 1 - header["CRPIX1"])
    flux = np.empty((len(ages), len(metals), n_pix), np.float64)
    for i, a in enumerate(ages):
        for j, m in enumerate(metals):
            flux[i, j] = fits.getdata(files[(a, m)]).astype(np.float64)
    # Keep the range where every template is complete (young ones are zero above 8950 Å).
    incomplete = np.nonzero(np.any(flux <= 0, axis=(0, 1)))[0]
    stop = incomplete[0] if incomplete.size else n_pix
    wave, flux = wave[:stop], flux[..., :stop]
    fwhm = np.where(wave < UV_OPTICAL_BOUNDARY, FWHM_UV, FWHM_OPTICAL)

    mass_path = source_dir / MASS_TABLE
    remaining = np.ones((len(ages), len(metals)))
    if mass_path.is_file():
        table = _read_mass_table(mass_path)
        for i, a in enumerate(ages):
            for j, m in enumerate(metals):
                key = min(table, key=lambda k: abs(k[0] - m) + abs(k[1] - a))
                remaining[i, j] = table[key]
    else:
        logger.warning("%s not found: remaining_mass_fraction set to 1.", mass_path)

    return dict(
        age=jnp.asarray(ages, jnp.float32),
        metallicity=jnp.asarray(isochrone_metallicity(metals, source_dir), jnp.float32),
        wavelength=jnp.asarray(wave, jnp.float32),
        flux=jnp.asarray(flux, jnp.float32),
        fwhm=jnp.asarray(fwhm, jnp.float32),
        remaining_mass_fraction=jnp.asarray(remaining, jnp.float32),
        name="E-MILES (Salpeter, Padova00, baseFe)",
        citation=CITATION,
        licence=_licence_text(header),
        metallicity_label=tuple(float(m) for m in metals),
    )


def write_cache(ssp: dict, path: Path) -> None:
    """The fields `ssp` in the SSP HDF5 layout (with its [M/H] `metallicity_label`) plus the cache's
    `cache_version` root attribute (atomic)."""
    with atomic_path(path) as tmp:
        write_ssp_hdf5(ssp, tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["cache_version"] = CACHE_VERSION


def read_cache(path: Path) -> dict | None:
    """The fields of the cached grid, or `None` if the file is of another `cache_version` (or none,
    as caches written before version 2) or unreadable: then it is converted again."""
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("cache_version")
    except OSError as e:
        logger.warning("%s: unreadable cached E-MILES grid (%s); converting again.", path, e)
        return None
    try:
        current = version is not None and int(version) == CACHE_VERSION
    except (TypeError, ValueError):
        current = False
    if not current:
        logger.info(
            "%s: cache_version %s, this rubix_eqx writes %d; converting again.",
            path, version, CACHE_VERSION,
        )  # fmt: skip
        return None
    return read_ssp_hdf5(path)


def load_miles(source_dir=None, cache_dir=None) -> dict:
    """The fields of the E-MILES grid from the cache, converting it on first use (or again
    if the cache is of another `cache_version`) from `source_dir`, else
    `$RUBIX_EQX_MILES_DIR`, else pPXF 8.x's package data."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source = miles_source(source_dir)
    if source is None:
        name = CACHE_NAME
    else:
        digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
        name = f"emiles_{digest}_v{CACHE_VERSION}.h5"
    path = cache / name
    if path.is_file():
        ssp = read_cache(path)
        if ssp is not None:
            return ssp
    if source is None:
        source = ppxf_miles_dir()
    logger.info("Converting E-MILES templates from %s into %s (once).", source, path)
    write_cache(convert_miles(source), path)
    ssp = read_cache(path)
    assert ssp is not None
    return ssp
