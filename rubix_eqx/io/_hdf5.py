"""Cubes in HDF5: every field of a `Cube` (exact round trip), provenance and the run config.

Layout (format `rubix_eqx.cube`, version 1; documented in docs/api.md):

- root attributes: `format`, `format_version`, `software`, `software_version`, `date`,
  `telescope`, `flux_unit` [erg/s/cm2/Angstrom], `wavelength_sampling`, `medium` (`air`
  or `vacuum`; absent in older files: air), `spaxel_size` [arcsec], `ra`, `dec` [deg], and
  when known `ssp_name`, `ssp_citation`, `inclination`, `position_angle` [deg],
  `distance` [Mpc];
- datasets `flux`, `variance` (n_x, n_y, n_wave) in the Cube's axis order (x = West,
  y = North), `wavelength` (n_wave) [Angstrom, observed], `mask` (n_x, n_y) bool,
  `redshift` (scalar), and `lsf_fwhm` (n_wave) [Angstrom] when the cube knows it (absent:
  `None`); each with a `units` attribute where it has one;
- group `diagnostics`: one scalar dataset per [`rubix_eqx.Diagnostics`][] field;
- dataset `run_config` (string, YAML), if given.
"""

from collections.abc import Mapping
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._checks import format_version
from .._cube import Cube, Diagnostics
from ._provenance import config_text, provenance


FORMAT = "rubix_eqx.cube"
FORMAT_VERSION = 1
ARRAYS = ("flux", "variance", "wavelength", "mask", "redshift")


def write_cube_hdf5(
    cube: Cube, path: str | Path, *, ssp=None, observation=None, config: Mapping | str | None = None
) -> None:
    """Write every field of `cube` to HDF5 (layout: module docstring / docs/api.md).

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][].
    - `path`: the file to write (atomically).
    - `ssp`, `observation`: recorded as provenance attributes, if given.
    - `config`: the run config (a mapping, dumped as YAML, or YAML text), stored as the
      string dataset `run_config`.
    """
    unit = f"{cube.flux_unit!r} erg/s/cm**2/Angstrom"
    units = {
        "flux": unit,
        "variance": f"({unit})**2",
        "wavelength": "Angstrom",
        "redshift": "1",
        "lsf_fwhm": "Angstrom",
    }
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in provenance(ssp, observation).items():
            f.attrs[key] = value
        f.attrs["telescope"] = cube.telescope
        f.attrs["flux_unit"] = float(cube.flux_unit)
        f.attrs["wavelength_sampling"] = cube.wavelength_sampling
        f.attrs["medium"] = cube.medium
        f.attrs["spaxel_size"] = float(cube.spaxel_size)
        f.attrs["ra"] = float(cube.ra)
        f.attrs["dec"] = float(cube.dec)
        for name in ARRAYS + ("lsf_fwhm",):
            value = getattr(cube, name)
            if value is None:
                continue
            dset = f.create_dataset(name, data=np.asarray(value))
            if name in units:
                dset.attrs["units"] = units[name]
        group = f.create_group("diagnostics")
        for name in Diagnostics.__dataclass_fields__:
            group.create_dataset(name, data=np.asarray(getattr(cube.diagnostics, name)))
        text = config_text(config)
        if text is not None:
            f.create_dataset("run_config", data=text, dtype=h5py.string_dtype())


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"Cube file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}).") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ValueError(
            f"{path}: attribute `format` is {f.attrs.get('format')!r}, expected {FORMAT!r}."
        )
    try:
        version = format_version(path, f.attrs)
    except ValueError:
        f.close()
        raise
    if version != FORMAT_VERSION:
        f.close()
        raise ValueError(
            f"{path}: cube `format_version` {version} is not supported (this version of "
            f"rubix_eqx reads {FORMAT_VERSION})."
        )
    return f


def read_cube_hdf5(path: str | Path) -> Cube:
    """Read a cube written by [`rubix_eqx.io.write_cube_hdf5`][]: every array keeps its
    dtype and value, so the round trip is exact."""
    path = Path(path)
    with _open(path) as f:
        arrays = {}
        for name in ARRAYS:
            if name not in f:
                raise ValueError(f"{path}: missing dataset `{name}`.")
            arrays[name] = jnp.asarray(f[name][()])
        if "diagnostics" not in f:
            raise ValueError(f"{path}: missing group `diagnostics`.")
        missing = [n for n in Diagnostics.__dataclass_fields__ if n not in f["diagnostics"]]
        required = ("spaxel_size", "ra", "dec", "flux_unit", "wavelength_sampling", "telescope")
        missing += [a for a in required if a not in f.attrs]
        if missing:
            raise ValueError(f"{path}: missing diagnostics datasets or attributes {missing}.")
        diag = {
            name: jnp.asarray(f["diagnostics"][name][()])
            for name in Diagnostics.__dataclass_fields__
        }
        medium = str(f.attrs.get("medium", "air"))
        if medium not in ("air", "vacuum"):
            raise ValueError(
                f"{path}: attribute `medium` is {medium!r}; expected 'air' or 'vacuum'."
            )
        lsf = None
        if "lsf_fwhm" in f:
            lsf = np.asarray(f["lsf_fwhm"][()])
            if lsf.shape != arrays["wavelength"].shape:
                raise ValueError(
                    f"{path}: dataset `lsf_fwhm` has shape {lsf.shape}; `wavelength` has "
                    f"{arrays['wavelength'].shape}."
                )
            lsf = jnp.asarray(lsf)
        return Cube(
            **arrays,
            diagnostics=Diagnostics(**diag),
            spaxel_size=float(f.attrs["spaxel_size"]),
            ra=float(f.attrs["ra"]),
            dec=float(f.attrs["dec"]),
            flux_unit=float(f.attrs["flux_unit"]),
            wavelength_sampling=str(f.attrs["wavelength_sampling"]),
            telescope=str(f.attrs["telescope"]),
            lsf_fwhm=lsf,
            medium=medium,
        )


def hdf5_metadata(path: Path) -> dict:
    with _open(path) as f:
        out = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        if "run_config" in f:
            text = f["run_config"][()]
            out["run_config"] = text.decode() if isinstance(text, bytes) else str(text)
        return out
