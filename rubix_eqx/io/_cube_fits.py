"""Cube FITS files, the front doors: write in a layout of the MUSE or MaNGA pipeline,
read ours or a pipeline's (layouts in `_fits.py`, MaNGA's in `_manga.py`)."""

from pathlib import Path

from .._cube import Cube
from ._fits import LAYOUTS, open_fits, read_muse, write_muse
from ._gas_truth import checked as checked_gas
from ._manga import read_manga, write_manga
from ._truth import checked as checked_truth


def write_cube_fits(
    cube: Cube,
    path: str | Path,
    *,
    ssp=None,
    observation=None,
    layout: str = "muse",
    telescop: str | None = None,
    instrume: str | None = None,
    object: str | None = None,
    psf=None,
    truth=None,
    observed_truth=None,
    gas_truth=None,
) -> None:
    """Write `cube` as a FITS file in the layout of a MUSE or MaNGA pipeline cube
    (layouts: module docstring / docs/api.md).

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][].
    - `path`: the file to write (atomically: a temporary name, then a rename).
    - `ssp`: the [`rubix_eqx.SSPGrid`][] used, recorded as `SSPNAME`/`SSPCITE`.
    - `observation`: the [`rubix_eqx.Observation`][] used, recorded as `INCLIN`,
      `POSANG` (and `DISTANCE`).
    - `layout`: `"muse"` (`DATA`, `STAT`, `DQ`, `LSF_FWHM`), `"muse-drp"` (`DATA`, `STAT`
      only, as the MUSE DRP's `DATACUBE_FINAL`) or `"manga"` (`FLUX`, `IVAR`, `MASK`,
      `WAVE`, `SPECRES`, `SPECRESD` as a MaNGA DRP LOGCUBE; needs vacuum wavelengths).
    - `telescop`, `instrume`: the `TELESCOP`/`INSTRUME` keywords; default from the
      telescope name (`MUSE-*` → `ESO-VLT-U4`/`MUSE`, `MaNGA` → `SDSS 2-5m`/`MaNGA`, …;
      any other name is written as both).
    - `object`: the `OBJECT` keyword (default `"mock galaxy"`).
    - `psf`: the [`rubix_eqx.PSF`][] the cube was convolved with, written as keywords
      (`PSFTYPE`, `PSFFWHM`, `PSFBETA`, `SKY_RES`; mpdaf FSF keywords for a Moffat;
      MaNGA's `GFWHM`…`ZFWHM`), or `None`.
    - `truth`: light- or mass-weighted [`rubix_eqx.Maps`][] of the particles
      ([`rubix_eqx.truth_maps`][], with the cube's `flux_unit`), written as the image
      extensions `TRUE_FLUX` (`TRUE_MASS` for mass weights), `TRUE_VEL`, `TRUE_DISP`,
      `TRUE_H3`, `TRUE_H4`, `TRUE_AGE`, `TRUE_MH` with the cube's celestial WCS
      (`layout="muse"` only); or `None`.
    - `observed_truth`: the seeing-convolved maps
      ([`rubix_eqx.observed_truth_maps`][]), written as `OBS_*` alike; or `None`.
    - `gas_truth`: the gas's [`rubix_eqx.GasMaps`][] ([`rubix_eqx.gas_truth_maps`][]),
      written as `GAS_HA`, `GAS_HA0`, `GAS_VEL`, `GAS_DISP`, `GAS_N2HA`, `GAS_O3HB`,
      `GAS_S2HA`, `GAS_BD`, `GAS_AV` alike; or `None`.
      Read them back with [`rubix_eqx.io.read_truth`][].
    """
    if layout not in LAYOUTS:
        raise ValueError(f"`write_cube_fits(layout=...)` must be one of {LAYOUTS}; got {layout!r}.")
    given = {"truth": truth, "observed_truth": observed_truth, "gas_truth": gas_truth}
    for argument, maps in given.items():
        if maps is None:
            continue
        if layout != "muse":
            raise ValueError(
                f"`write_cube_fits({argument}=...)` needs `layout='muse'`; got layout "
                f"{layout!r} (the {layout!r} layout holds the pipeline's extensions only)."
            )
        check = checked_gas if argument == "gas_truth" else checked_truth
        check(maps, f"write_cube_fits({argument}=...)", tuple(cube.flux.shape[:2]))
    if layout == "manga":
        write_manga(cube, path, ssp=ssp, observation=observation, telescop=telescop,
                    instrume=instrume, object=object, psf=psf)  # fmt: skip
    else:
        write_muse(cube, path, ssp=ssp, observation=observation, layout=layout,
                   telescop=telescop, instrume=instrume, object=object, psf=psf,
                   given=given)  # fmt: skip


def read_cube_fits(path: str | Path) -> Cube:
    """Read a FITS cube into a [`rubix_eqx.Cube`][]: ours (any layout), a MUSE DRP cube
    (`DATA`, optional `STAT` and `DQ`; CD-matrix or CDELT WCS) or a MaNGA DRP cube
    (`FLUX`, `IVAR`, `MASK`, `WAVE`, `SPECRES`), recognised by its extension names.

    - Wavelengths come from the spectral WCS in float64 (MaNGA: the `WAVE` extension);
      `medium` from `CTYPE3` (`AWAV` → air, `WAVE` → vacuum), the sampling from `-LOG`.
    - The spaxel size and field centre come from the celestial WCS via `astropy.wcs`.
    - Bad voxels — NaN or infinite flux, `STAT` ≤ 0 or NaN, `DQ` ≠ 0, `IVAR` ≤ 0, MaNGA
      `MASK` with DONOTUSE (2¹⁰) or FORESTAR (2³) — are held in memory as flux 0 and
      variance +inf (zero weight); spaxels with no good voxel have `mask` False. A MUSE
      file without `STAT` reads with variance 0 (unknown) on its good voxels.
    - A file written by rubix_eqx reads back as the Cube written (flux and variance to
      float32): spaxels outside the aperture as flux 0 and variance 0, `STATFILL`/
      `IVARFILL` voxels as variance 0 (noiseless), and `redshift`, diagnostics,
      `telescope`, `lsf_fwhm` from its keywords and extensions. Files of our earlier
      layout (no `LAYOUT` keyword: STAT = 0 for noiseless cubes, a 2-D `MASK`) still read.
    - Other files: `redshift` 0 and diagnostics 0 (a file does not say them), `lsf_fwhm`
      from `LSF_FWHM` or MaNGA's `SPECRES` (FWHM = λ/R), else `None`; `telescope` a
      preset name where recognisable (`MUSE-WFM`, `MUSE-NFM`, `MaNGA`), else `INSTRUME`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    hdus = open_fits(path)
    with hdus:
        names = [hdu.name for hdu in hdus]
        if "FLUX" in names and "IVAR" in names and "DATA" not in names:
            return read_manga(hdus, path)
        if "DATA" not in names:
            raise ValueError(
                f"{path}: no `DATA` extension; extensions are {names} (a MUSE cube has "
                "`DATA`, a MaNGA cube `FLUX` and `IVAR`)."
            )
        return read_muse(hdus, path)
