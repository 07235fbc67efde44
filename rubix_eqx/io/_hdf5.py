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
- dataset `run_config` (string, YAML), if given;
- group `gas_truth`, if given (`_gas_truth.py`): one dataset per gas map and `mask`;
- groups `truth` and `observed_truth`, if given (`_truth.py`): datasets `flux` (the
  weights: flux, or mass), `velocity`, `dispersion`, `h3`, `h4`, `log_age`, `metallicity`
  (n_x, n_y) in the maps' dtype with NaN on empty spaxels and a `units` attribute, `mask`
  (bool), and `n_clipped`, `clipped_mass_fraction` when known; attribute `weighting`.
"""

from collections.abc import Mapping
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._cube import Cube, Diagnostics
from .._file_format import open_format
from ._gas_truth import (
    checked as checked_gas,
    GROUP as GAS_GROUP,
    read_group as read_gas_group,
    write_group as write_gas_group,
)
from ._provenance import config_text, provenance
from ._truth import (
    arrays as truth_arrays,
    checked as checked_truth,
    FIELDS as TRUTH_FIELDS,
    KINDS as TRUTH_KINDS,
    rebuild as rebuild_truth,
    scalar,
    units as truth_units,
)


FORMAT = "rubix_eqx.cube"
FORMAT_VERSION = 1
ARRAYS = ("flux", "variance", "wavelength", "mask", "redshift")


def write_cube_hdf5(
    cube: Cube,
    path: str | Path,
    *,
    ssp=None,
    observation=None,
    config: Mapping | str | None = None,
    truth=None,
    observed_truth=None,
    gas_truth=None,
) -> None:
    """Write every field of `cube` to HDF5 (layout: module docstring / docs/api.md).

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][].
    - `path`: the file to write (atomically).
    - `ssp`, `observation`: recorded as provenance attributes, if given.
    - `config`: the run config (a mapping, dumped as YAML, or YAML text), stored as the
      string dataset `run_config`.
    - `truth`, `observed_truth`: light- or mass-weighted [`rubix_eqx.Maps`][] of the
      particles ([`rubix_eqx.truth_maps`][]) and their seeing-convolved version
      ([`rubix_eqx.observed_truth_maps`][]), stored as the groups `truth` and
      `observed_truth`; read back with [`rubix_eqx.io.read_truth`][].
    - `gas_truth`: the gas's [`rubix_eqx.GasMaps`][] ([`rubix_eqx.gas_truth_maps`][]),
      stored as the group `gas_truth` (one dataset per field, and `mask`).
    """
    given = {"truth": truth, "observed_truth": observed_truth}
    for argument, maps in given.items():
        if maps is not None:
            checked_truth(maps, f"write_cube_hdf5({argument}=...)", tuple(cube.flux.shape[:2]))
    if gas_truth is not None:
        checked_gas(gas_truth, "write_cube_hdf5(gas_truth=...)", tuple(cube.flux.shape[:2]))
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
        for argument, _ in TRUTH_KINDS:
            if given[argument] is not None:
                write_truth_group(f.create_group(argument), given[argument], cube.flux_unit)
        if gas_truth is not None:
            write_gas_group(f.create_group(GAS_GROUP), gas_truth, cube.flux_unit)


def write_truth_group(group: h5py.Group, maps, flux_unit: float) -> None:
    group.attrs["weighting"] = maps.weighting
    unit_of = truth_units(maps.weighting, flux_unit)
    for field, value in truth_arrays(maps).items():
        dset = group.create_dataset(field, data=value)
        dset.attrs["units"] = unit_of[field] or "1"
    group.create_dataset("mask", data=np.asarray(maps.mask, bool))
    for name in ("n_clipped", "clipped_mass_fraction"):
        value = scalar(getattr(maps, name))
        if value is not None:
            group.create_dataset(name, data=value)


def _open(path: Path) -> h5py.File:
    return open_format(path, FORMAT, FORMAT_VERSION, "cube")


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


def read_truth_hdf5(path: str | Path) -> dict:
    """The truth maps of a cube HDF5 file: {`"truth"`: Maps, `"observed_truth"`: Maps,
    `"gas_truth"`: GasMaps}, each key present when the file has the group. Exact round
    trip."""
    path = Path(path)
    out = {}
    with _open(path) as f:
        if GAS_GROUP in f:
            out[GAS_GROUP] = read_gas_group(f[GAS_GROUP], f"{path}: group `{GAS_GROUP}`")
        for key, _ in TRUTH_KINDS:
            if key not in f:
                continue
            group = f[key]
            where = f"{path}: group `{key}`"
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{where} must be a group; got a {type(group).__name__}.")
            missing = [n for n in (*TRUTH_FIELDS, "mask") if n not in group]
            if missing:
                raise ValueError(f"{where}: missing datasets {missing}.")
            values = {field: np.asarray(group[field][()]) for field in TRUTH_FIELDS}
            mask = np.asarray(group["mask"][()])
            if not np.array_equal(mask, np.isfinite(values["flux"])):
                raise ValueError(
                    f"{where}: dataset `mask` differs from the finite spaxels of `flux` "
                    "(NaN marks the empty spaxels)."
                )
            extra = {
                name: (group[name][()] if name in group else None)
                for name in ("n_clipped", "clipped_mass_fraction")
            }
            out[key] = rebuild_truth(
                values, str(group.attrs.get("weighting", "")), extra["n_clipped"],
                extra["clipped_mass_fraction"], where,
            )  # fmt: skip
    return out
