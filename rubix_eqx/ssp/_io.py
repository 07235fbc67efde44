"""SSP grids in HDF5: the documented layout (docs/ssp.md), read and written eagerly.

Layout (format `rubix_eqx.ssp`, version 1): datasets `age` [Gyr], `metallicity` [Z],
`wavelength` [Angstrom, rest, air], `flux` (n_age, n_Z, n_wave) [Lsun/Angstrom/Msun],
`fwhm` [Angstrom], `remaining_mass_fraction` (n_age, n_Z) [1]; each with a `units`
attribute; root attributes `format`, `format_version`, `name`, `citation`, `licence`, and
optionally `metallicity_label` (float64, n_Z: the published label of each metallicity node)
with `metallicity_label_name` (e.g. "[M/H]").
"""

from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._file_format import open_format


FORMAT = "rubix_eqx.ssp"
FORMAT_VERSION = 1
UNITS = {
    "age": "Gyr",
    "metallicity": "Z",
    "wavelength": "Angstrom",
    "flux": "Lsun/Angstrom/Msun",
    "fwhm": "Angstrom",
    "remaining_mass_fraction": "1",
}


def write_ssp_hdf5(fields: dict, path: str | Path) -> None:
    """Write the fields of an `SSPGrid` (by name) in this layout, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["name"] = fields["name"]
        f.attrs["citation"] = fields["citation"]
        f.attrs["licence"] = fields["licence"]
        if fields["metallicity_label"] is not None:
            f.attrs["metallicity_label"] = np.asarray(fields["metallicity_label"], np.float64)
            f.attrs["metallicity_label_name"] = "[M/H]"
        for name, unit in UNITS.items():
            dset = f.create_dataset(name, data=np.asarray(fields[name], np.float32))
            dset.attrs["units"] = unit


def _read_labels(path: Path, attrs) -> tuple[float, ...] | None:
    """The optional `metallicity_label` root attribute as a tuple of floats."""
    raw = attrs.get("metallicity_label")
    if raw is None:
        return None
    labels = np.atleast_1d(np.asarray(raw))
    if labels.ndim != 1 or labels.dtype.kind not in "iuf":
        raise ValueError(
            f"{path}: attribute `metallicity_label` must be a 1-D numeric array; got {raw!r}."
        )
    return tuple(float(m) for m in labels)


def read_ssp_hdf5(path: str | Path) -> dict:
    """The fields of the `SSPGrid` in a file of this layout (`SSPGrid.from_hdf5` checks
    and builds it); `ValueError` naming the file for a wrong format, dataset or unit."""
    path = Path(path)
    with open_format(path, FORMAT, FORMAT_VERSION, "SSP grid") as f:
        arrays = {}
        for name, unit in UNITS.items():
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise ValueError(f"{path}: missing dataset `{name}` [{unit}].")
            dset = f[name]
            assert isinstance(dset, h5py.Dataset)
            got = dset.attrs.get("units")
            got = got.decode() if isinstance(got, bytes) else got
            if got != unit:
                raise ValueError(f"{path}: dataset `{name}` has units {got!r}; expected {unit!r}.")
            if dset.dtype.kind not in "iuf":
                raise ValueError(
                    f"{path}: dataset `{name}` must be numeric; got dtype {dset.dtype}."
                )
            arrays[name] = jnp.asarray(dset[...], jnp.float32 if dset.dtype.kind in "iu" else None)
        meta = {k: str(f.attrs.get(k, "")) for k in ("name", "citation", "licence")}
        labels = _read_labels(path, f.attrs)
    return {**arrays, **meta, "metallicity_label": labels}
