"""Format-sniffing readers for cube files (FITS or HDF5)."""

from pathlib import Path

from .._cube import Cube


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def read_cube(path: str | Path) -> Cube:
    """Read a cube file: ours ([`rubix_eqx.io.write_cube_fits`][] in any layout,
    [`rubix_eqx.io.write_cube_hdf5`][]), a MUSE DRP cube or a MaNGA DRP LOGCUBE. The format is
    recognised from the file's contents (HDF5 signature; FITS extension names). For FITS
    files bad voxels read as flux 0 and variance +inf, and spaxels without a good voxel
    have `mask` False: see [`rubix_eqx.io.read_cube_fits`][].

    **Returns:** a [`rubix_eqx.Cube`][].
    """
    from ._cube_fits import read_cube_fits
    from ._hdf5 import read_cube_hdf5

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    return read_cube_hdf5(path) if _is_hdf5(path) else read_cube_fits(path)


def read_truth(path: str | Path) -> dict:
    """The truth maps stored beside the cube in one of our files (FITS `TRUE_*`/`OBS_*`
    extensions, HDF5 groups `truth`/`observed_truth`; layouts in docs/api.md).

    **Returns:** a dict with `"truth"` (the particles' [`rubix_eqx.Maps`][]),
    `"observed_truth"` (seeing-convolved) and `"gas_truth"` (the gas's
    [`rubix_eqx.GasMaps`][]) for those the file holds; empty if none. Empty
    spaxels (NaN in the file) read as `mask` False and 0, as `truth_maps` returns them.
    """
    from ._fits import read_truth_fits
    from ._hdf5 import read_truth_hdf5

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    return read_truth_hdf5(path) if _is_hdf5(path) else read_truth_fits(path)


def read_metadata(path: str | Path) -> dict:
    """Provenance of a cube file as a dict: for HDF5 its root attributes plus the run
    config (`"run_config"`, YAML text); for FITS the primary header's keywords."""
    from ._hdf5 import hdf5_metadata

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    if _is_hdf5(path):
        return hdf5_metadata(path)
    from astropy.io import fits

    header = fits.getheader(path, 0)
    return {
        key: header[key] for key in header if key not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "")
    }
