"""Galaxies in HDF5: our documented, versioned layout (docs/loaders.md).

Layout (format `rubix_eqx.galaxy`, version 1):

- root attributes `format = "rubix_eqx.galaxy"`, `format_version = 1`, plus any
  metadata attributes (strings, numbers, booleans or numeric arrays);
- group `particles` with datasets `position` (n, 3) [kpc], `velocity` (n, 3) [km/s],
  `mass` (n,) [Msun], `age` (n,) [Gyr], `metallicity` (n,) [Z]; each with a string
  attribute `units` holding exactly the unit in brackets;
- optionally `smoothing_length` (n,) [kpc] in `particles` (written when the galaxy
  carries one; a file without it reads as `smoothing_length=None`, and readers that do
  not know it ignore it, so the version stays 1).
"""

import re
from pathlib import Path
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np
from jaxtyping import TypeCheckError

from .._atomic import atomic_path
from .._file_format import open_format, open_hdf5
from ._galaxy import bad_values, Galaxy, problem


FORMAT = "rubix_eqx.galaxy"
FORMAT_VERSION = 1
# Galaxy field -> (trailing shape of its dataset `particles/<field>`, its `units`).
LAYOUT = {
    "position": ((3,), "kpc"),
    "velocity": ((3,), "km/s"),
    "mass": ((), "Msun"),
    "age": ((), "Gyr"),
    "metallicity": ((), "Z"),
}
# Optional datasets: written when the galaxy field is not `None`, read when present.
OPTIONAL_LAYOUT = {"smoothing_length": ((), "kpc")}
SNAPSHOT_HINT = "; a simulation snapshot? use `rx.galaxy.from_tng` or `rx.galaxy.from_eagle`"


def _metadata_value(key: str, value: Any):
    if isinstance(value, str | bool | int | float | np.integer | np.floating):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "biuf":
        return arr
    raise TypeError(
        f"`to_hdf5(..., {key}=...)`: metadata must be a string, number, boolean or numeric "
        f"array; got {type(value).__name__}."
    )


def to_hdf5(galaxy: Galaxy, path: str | Path, **metadata) -> None:
    """Write `galaxy` in the `rubix_eqx.galaxy` HDF5 layout (version 1), atomically.

    **Arguments:**

    - `galaxy`: a [`rubix_eqx.Galaxy`][].
    - `path`: the file to write.
    - `**metadata`: root attributes to store beside the particles, e.g.
      `snapshot_redshift=0.1, source="TNG50-1 snap 91 subhalo 12"`. `None` values are
      skipped.
    """
    for reserved in ("format", "format_version"):
        if reserved in metadata:
            raise ValueError(f"`to_hdf5(..., {reserved}=...)`: {reserved!r} is reserved.")
    attrs = {k: _metadata_value(k, v) for k, v in metadata.items() if v is not None}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            f.attrs[key] = value
        group = f.create_group("particles")
        for name, (_, unit) in (LAYOUT | OPTIONAL_LAYOUT).items():
            if getattr(galaxy, name) is None:
                continue
            dset = group.create_dataset(name, data=np.asarray(getattr(galaxy, name)))
            dset.attrs["units"] = unit


def open_galaxy_file(path: str | Path) -> h5py.File:
    """`path` opened read-only after checking `format` and `format_version`."""
    return open_format(path, FORMAT, FORMAT_VERSION, "galaxy", SNAPSHOT_HINT)


def particle_datasets(path: str | Path, f: h5py.File) -> tuple[dict[str, h5py.Dataset], int]:
    """The datasets of the group `particles` of an open galaxy file, checked against
    `LAYOUT` (present, `units`, trailing shape, one length), and the number of particles;
    the datasets of `OPTIONAL_LAYOUT` are included (and checked) when present. Nothing is
    read. Raises `ValueError` naming the file and the dataset."""
    group = f.get("particles")
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{path}: missing group `particles`.")
    datasets = {}
    for name, (tail, unit) in (LAYOUT | OPTIONAL_LAYOUT).items():
        dset = group.get(name)
        if name in OPTIONAL_LAYOUT and dset is None:
            continue
        if not isinstance(dset, h5py.Dataset):
            raise ValueError(f"{path}: missing dataset `particles/{name}` [{unit}].")
        got = dset.attrs.get("units")
        got = got.decode() if isinstance(got, bytes) else got
        if got != unit:
            raise ValueError(
                f"{path}: dataset `particles/{name}` has units {got!r}; expected {unit!r} "
                f"(`particles/{name}` must have units {unit!r})."
            )
        if dset.ndim != 1 + len(tail) or dset.shape[1:] != tail:
            want = "(n, 3)" if tail else "(n,)"
            raise ValueError(
                f"{path}: dataset `particles/{name}` must have shape {want}; got {dset.shape}."
            )
        datasets[name] = dset
    n = datasets["mass"].shape[0]
    for name, dset in datasets.items():
        if dset.shape[0] != n:
            raise ValueError(
                f"{path}: `particles/{name}` has {dset.shape[0]} particles but "
                f"`particles/mass` has {n}."
            )
    return datasets, n


def read_rows(dataset: h5py.Dataset, name: str, start: int, stop: int) -> np.ndarray:
    """Rows `start:stop` of the particle dataset of field `name`, checked by the rules of
    [`rubix_eqx.Galaxy`][] (`ValueError` naming the field and the first bad row)."""
    data = np.asarray(dataset[start:stop]) if start < stop else np.empty((0,) + dataset.shape[1:])
    bad = bad_values(name, data)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"`Galaxy.{name}` is {problem(name)} in the file (first at row {start + first})."
        )
    return data


def from_hdf5(path: str | Path) -> Galaxy:
    """Read a galaxy written by [`rubix_eqx.galaxy.to_hdf5`][] (layout in
    docs/loaders.md). Arrays keep their stored dtype (under JAX's x64 setting).

    Raises `ValueError` naming the problem for a wrong `format`, an older or newer
    `format_version`, a missing dataset, wrong `units` or inconsistent shapes.
    """
    with open_galaxy_file(path) as f:
        datasets, _ = particle_datasets(path, f)
        arrays = {name: dset[()] for name, dset in datasets.items()}
    try:
        return Galaxy(**{name: jnp.asarray(a) for name, a in arrays.items()})
    except (ValueError, TypeCheckError) as e:
        raise ValueError(f"{path}: {str(e).splitlines()[0]}") from None


def hdf5_metadata(path: str | Path) -> dict[str, Any]:
    """The root attributes of a galaxy file (including `format` and `format_version`)."""
    with open_galaxy_file(path) as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


# --- helpers shared by the simulation loaders (_tng.py, _eagle.py) ---------------------

logger_name = "rubix_eqx"
CHUNK = re.compile(r"^(?P<base>.*)\.(?P<index>\d+)\.(?P<ext>hdf5|h5)$")


def chunk_files(
    path: str | Path, header: str = "Header", count_key: str = "NumFilesPerSnapshot"
) -> list[Path]:
    """All files of a snapshot or catalogue split into chunks `<base>.<i>.hdf5`: the
    siblings of `path` listed by its header's `count_key` (one file if it is 1 or absent)."""
    path = Path(path)
    with open_hdf5(path, "simulation") as f:
        n_files = int(np.asarray(f[header].attrs.get(count_key, 1)).item()) if header in f else 1
    if n_files <= 1:
        return [path]
    match = CHUNK.match(path.name)
    if match is None:
        raise ValueError(
            f"{path}: header says the output is split into {n_files} files, but the name is "
            "not of the form <base>.<i>.hdf5, so the other chunks cannot be found."
        )
    files = [path.with_name(f"{match['base']}.{i}.{match['ext']}") for i in range(n_files)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: missing chunk files of this output: {', '.join(missing[:3])}."
        )
    return files


def attr(attrs, name: str, default=None) -> Any:
    """A header attribute as a Python scalar (h5py returns NumPy scalars or 1-arrays)."""
    if name not in attrs:
        return default
    value = np.asarray(attrs[name])
    return value.item() if value.size == 1 else value


def sim_cosmology(attrs_list, default: tuple[float, float], default_name: str, path: Path):
    """A flat, radiation-free ΛCDM `Cosmology` from `HubbleParam` and `Omega0` of the first
    attribute set that has them (Header, then Parameters), else `default` (h, Ω_m).

    **Returns:** `(cosmology, h, description)`.
    """
    from ..cosmology import Cosmology

    for attrs in attrs_list:
        h, omega_m = attr(attrs, "HubbleParam"), attr(attrs, "Omega0")
        if h is not None and omega_m is not None:
            omega_l = attr(attrs, "OmegaLambda")
            if omega_l is not None and abs(omega_m + omega_l - 1) > 1e-3:
                raise ValueError(
                    f"{path}: Omega0 + OmegaLambda = {omega_m + omega_l:.4f}; only flat "
                    "cosmologies are supported."
                )
            source = f"file header (h = {h:g}, Omega0 = {omega_m:g})"
            break
    else:
        h, omega_m = default
        source = f"{default_name} default (h = {h:g}, Omega0 = {omega_m:g}); not in the file"
    cosmology = Cosmology(
        h0=100.0 * float(h), omega_m=float(omega_m), t_cmb=0.0, n_eff=0.0, m_nu=0.0
    )
    return cosmology, float(h), source


def stellar_ages(a_form: np.ndarray, a_snap: float, cosmology) -> np.ndarray:
    """Ages (Gyr) at the snapshot epoch: t(a_snap) − t(a_form), cosmic times from
    [`rubix_eqx.cosmology.scale_factor_to_cosmic_time`][] (in JAX's default float)."""
    from ..cosmology import scale_factor_to_cosmic_time

    dtype = jnp.result_type(float)
    if np.any(a_form > a_snap * (1 + 1e-6)):
        raise ValueError(
            f"{int(np.sum(a_form > a_snap))} stars formed after the snapshot (scale factor "
            f"> {a_snap:g}): wrong header `Time`/`ExpansionFactor`?"
        )
    t_snap = scale_factor_to_cosmic_time(jnp.asarray(a_snap, dtype), cosmology)
    t_form = scale_factor_to_cosmic_time(jnp.asarray(np.minimum(a_form, a_snap), dtype), cosmology)
    return np.maximum(np.asarray(t_snap - t_form, np.float64), 0.0)


def finish_galaxy(
    position,
    velocity,
    mass,
    age,
    metallicity,
    *,
    centre: bool,
    align: bool,
    radius,
    box,
    info: dict,
) -> Galaxy:
    """A `Galaxy` from physical-unit NumPy arrays, optionally centred and aligned face-on.
    Non-positive metallicities are raised to `Z_FLOOR` (counted in `info`)."""
    import logging

    from ._align import centre as centre_galaxy, face_on

    n = mass.shape[0]
    if n == 0:
        raise ValueError("No star particles selected.")
    low = metallicity <= 0
    info["n_zero_metallicity"] = int(low.sum())
    if low.any():
        logging.getLogger(logger_name).warning(
            "%d of %d star particles have metallicity <= 0; set to Z = %g.",
            int(low.sum()),
            n,
            Z_FLOOR,
        )
        metallicity = np.where(low, Z_FLOOR, metallicity)
    dtype = jnp.result_type(float)
    galaxy = Galaxy(**{
        name: jnp.asarray(value, dtype)
        for name, value in zip(
            ("position", "velocity", "mass", "age", "metallicity"),
            (position, velocity, mass, age, metallicity),
        )
    })  # fmt: skip
    if centre:
        galaxy = centre_galaxy(galaxy, radius=radius, box=box)
    if align:
        if not centre:
            raise ValueError("`align=True` needs `centre=True` (the rotation is about the centre).")
        galaxy = face_on(galaxy, radius=radius)
    info["centred"], info["aligned"] = bool(centre), bool(align)
    return galaxy


Z_FLOOR = 1e-8
