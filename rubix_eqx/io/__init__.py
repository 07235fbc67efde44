"""Cube files: FITS in the layouts of the MUSE and MaNGA pipelines (3-D WCS), readers for
MUSE DRP and MaNGA DRP cubes, and HDF5 with every field (exact); truth maps beside the cube
(`read_truth`).

Writes are atomic (a temporary file beside the target, then a rename).
"""

from ._cube_fits import read_cube_fits as read_cube_fits, write_cube_fits as write_cube_fits
from ._fits import cube_wcs as cube_wcs
from ._hdf5 import read_cube_hdf5 as read_cube_hdf5, write_cube_hdf5 as write_cube_hdf5
from ._read import (
    read_cube as read_cube,
    read_metadata as read_metadata,
    read_truth as read_truth,
)
