"""IllustrisTNG star particles (snapshot chunks or API cutouts) → a `Galaxy` in physical units.

Field names and units follow the TNG data release (Nelson et al. 2019, Computational
Astrophysics and Cosmology 6, 2, and its data specifications):

| `PartType4` dataset | unit in the file | becomes |
|---|---|---|
| `Coordinates` | ckpc/h | × a / h → kpc (physical) |
| `Velocities` | km/s · sqrt(a) | × sqrt(a) → peculiar km/s |
| `GFM_InitialMass` (else `Masses`, warned) | 10¹⁰ M☉/h | × 10¹⁰ / h → M☉ |
| `GFM_StellarFormationTime` | scale factor of birth (≤ 0: wind particle) | age, Gyr (see below) |
| `GFM_Metallicity` | metal mass fraction | Z |

Ages are t(a_snap) − t(a_form) at the snapshot's epoch; wind particles are dropped.
`Header` attributes: `Time` (= a of the snapshot), `Redshift`, `HubbleParam`, `Omega0`,
`OmegaLambda`, `BoxSize` (ckpc/h, for periodic unwrapping), `NumFilesPerSnapshot`, and,
if present, `UnitLength_in_cm`, `UnitMass_in_g`, `UnitVelocity_in_cm_per_s` (which scale
the code units above; TNG's are 1 kpc, 10¹⁰ M☉, 1 km/s).
"""

from pathlib import Path

import h5py
import numpy as np

from ._galaxy import Galaxy
from ._io import attr, chunk_files, finish_galaxy, sim_cosmology, stellar_ages
from ._warnings import record_mass_fallback


PLANCK15_TNG = (0.6774, 0.3089)  # h, Omega_m: Planck 2015 as used by TNG (Nelson et al. 2019)
KPC_CM = 3.085678e21  # TNG/Gadget's kpc in cm
MSUN_G = 1.989e33  # TNG/Gadget's solar mass in g
STAR = 4  # PartType4


def _catalogue_range(
    catalog: str | Path, subhalo_id: int | None, group_id: int | None
) -> tuple[int, int]:
    """(offset, count) of the stars of a subhalo or FoF group in the snapshot's PartType4
    order (sorted by group, then subhalo), from the group catalogue's length tables."""
    files = chunk_files(catalog, "Header", "NumFiles")
    group_len, sub_len, sub_group = [], [], []
    for path in files:
        with h5py.File(path, "r") as f:
            if "Group" in f and "GroupLenType" in f["Group"]:
                group_len.append(f["Group/GroupLenType"][:, STAR])
            if "Subhalo" in f and "SubhaloLenType" in f["Subhalo"]:
                sub_len.append(f["Subhalo/SubhaloLenType"][:, STAR])
                sub_group.append(f["Subhalo/SubhaloGrNr"][()])
    if not group_len:
        raise ValueError(
            f"{catalog}: no `Group/GroupLenType`: not a TNG group catalogue (fof_subhalo_tab)?"
        )
    glen = np.concatenate(group_len).astype(np.int64)
    group_offset = np.concatenate([[0], np.cumsum(glen)[:-1]])
    if subhalo_id is None:
        assert group_id is not None
        if not 0 <= group_id < glen.size:
            raise ValueError(
                f"`group_id` {group_id} is out of range: the catalogue has {glen.size} groups."
            )
        return int(group_offset[group_id]), int(glen[group_id])
    if not sub_len:
        raise ValueError(f"{catalog}: no `Subhalo/SubhaloLenType` datasets.")
    slen = np.concatenate(sub_len).astype(np.int64)
    sgroup = np.concatenate(sub_group).astype(np.int64)
    if not 0 <= subhalo_id < slen.size:
        raise ValueError(
            f"`subhalo_id` {subhalo_id} is out of range: the catalogue has {slen.size} subhalos."
        )
    g = sgroup[subhalo_id]
    if group_id is not None and group_id != g:
        raise ValueError(f"Subhalo {subhalo_id} belongs to group {g}, not `group_id` {group_id}.")
    before = np.sum(slen[:subhalo_id][sgroup[:subhalo_id] == g])
    return int(group_offset[g] + before), int(slen[subhalo_id])


def _read(files: list[Path], name: str, start: int, count: int | None) -> np.ndarray | None:
    """PartType4/`name` rows [start, start+count) across chunk files (all if count is None);
    `None` if no file has the dataset."""
    parts, seen, found = [], 0, False
    for path in files:
        with h5py.File(path, "r") as f:
            group = f.get("PartType4")
            n = (
                int(np.asarray(f["Header"].attrs.get("NumPart_ThisFile", [0] * 6))[STAR])
                if "Header" in f
                else 0
            )
            if group is not None and name in group:
                found = True
                dset = group[name]
                n = dset.shape[0]
                lo = max(start - seen, 0)
                hi = n if count is None else min(start + count - seen, n)
                if hi > lo:
                    parts.append(dset[lo:hi])
            seen += n
    if not found:
        return None
    total = sum(p.shape[0] for p in parts)
    if count is not None and total != count:
        raise ValueError(
            f"PartType4/{name}: expected {count} rows from offset {start}, found {total}."
        )
    return np.concatenate(parts) if parts else np.zeros((0,))


def load_tng(
    path: str | Path,
    subhalo_id: int | None = None,
    *,
    group_id: int | None = None,
    catalog: str | Path | None = None,
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
) -> tuple[Galaxy, dict]:
    """[`rubix_eqx.galaxy.from_tng`][], plus a dict describing the snapshot and the selection."""
    files = chunk_files(path)
    with h5py.File(files[0], "r") as f:
        if "Header" not in f:
            raise ValueError(f"{path}: no `Header` group: not a TNG snapshot or cutout.")
        header = dict(f["Header"].attrs)
        params = dict(f["Parameters"].attrs) if "Parameters" in f else {}
    a_snap = attr(header, "Time")
    redshift = attr(header, "Redshift")
    if a_snap is None:
        if redshift is None:
            raise ValueError(f"{path}: the header has neither `Time` nor `Redshift`.")
        a_snap = 1 / (1 + redshift)
    a_snap = float(a_snap)
    redshift = float(redshift) if redshift is not None else 1 / a_snap - 1
    cosmology, h, cosmo_source = sim_cosmology(
        [header, params], PLANCK15_TNG, "Planck15 (TNG)", Path(path)
    )
    length = (
        float(attr(header, "UnitLength_in_cm", attr(params, "UnitLength_in_cm", KPC_CM))) / KPC_CM
    )
    mass_unit = (
        float(attr(header, "UnitMass_in_g", attr(params, "UnitMass_in_g", 1e10 * MSUN_G))) / MSUN_G
    )
    velocity_unit = (
        float(
            attr(header, "UnitVelocity_in_cm_per_s", attr(params, "UnitVelocity_in_cm_per_s", 1e5))
        )
        / 1e5
    )

    start, count = 0, None
    if subhalo_id is not None or group_id is not None:
        if catalog is None:
            raise ValueError(
                "`subhalo_id`/`group_id` need `catalog=` (the group catalogue, "
                "fof_subhalo_tab_*.hdf5) to locate the particles in a snapshot; for an API "
                "cutout, leave them unset."
            )
        start, count = _catalogue_range(catalog, subhalo_id, group_id)
    fields = {}
    for name in ("Coordinates", "Velocities", "GFM_StellarFormationTime", "GFM_Metallicity"):
        fields[name] = _read(files, name, start, count)
        if fields[name] is None:
            raise ValueError(f"{path}: missing dataset `PartType4/{name}`.")
    mass_field = "GFM_InitialMass"
    masses = _read(files, mass_field, start, count)
    if masses is None:
        mass_field = "Masses"
        masses = _read(files, mass_field, start, count)
    if masses is None:
        table = attr(header, "MassTable")
        if table is None or not float(np.asarray(table)[STAR]) > 0:
            raise ValueError(
                f"{path}: no `PartType4/GFM_InitialMass` or `Masses`, and no MassTable entry."
            )
        mass_field = "Header/MassTable"
        masses = np.full(
            fields["GFM_StellarFormationTime"].shape[0], float(np.asarray(table)[STAR])
        )

    a_form = np.asarray(fields["GFM_StellarFormationTime"], np.float64)
    stars = a_form > 0  # wind particles have a formation time <= 0
    n_wind = int((~stars).sum())
    position = np.asarray(fields["Coordinates"], np.float64)[stars] * (length * a_snap / h)
    velocity = np.asarray(fields["Velocities"], np.float64)[stars] * (
        velocity_unit * np.sqrt(a_snap)
    )
    mass = np.asarray(masses, np.float64)[stars] * (mass_unit / h)
    age = stellar_ages(a_form[stars], a_snap, cosmology)
    metallicity = np.asarray(fields["GFM_Metallicity"], np.float64)[stars]
    box = attr(header, "BoxSize")
    box_kpc = float(box) * length * a_snap / h if box is not None else None
    info = {
        "loader": "tng",
        "source": str(path),
        "snapshot_redshift": redshift,
        "snapshot_scale_factor": a_snap,
        "hubble_param": h,
        "cosmology": cosmo_source,
        "n_wind_excluded": n_wind,
        "n_particles": int(stars.sum()),
    }
    record_mass_fallback(info, path, "GFM_InitialMass", mass_field)
    if subhalo_id is not None:
        info["subhalo_id"] = int(subhalo_id)
    if group_id is not None:
        info["group_id"] = int(group_id)
    galaxy = finish_galaxy(
        position, velocity, mass, age, metallicity,
        centre=centre, align=align, radius=radius, box=box_kpc, info=info,
    )  # fmt: skip
    return galaxy, info


def from_tng(
    path: str | Path,
    subhalo_id: int | None = None,
    *,
    group_id: int | None = None,
    catalog: str | Path | None = None,
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
) -> Galaxy:
    """Star particles of an IllustrisTNG snapshot or cutout as a [`rubix_eqx.Galaxy`][].

    Reads offline HDF5 in the TNG layout (units and fields: module docs, docs/loaders.md):
    comoving → physical with a and h from the header; initial masses
    (`GFM_InitialMass`; without it the current `Masses`, with a
    [`rubix_eqx.galaxy.MassFallbackWarning`][], recorded as `mass_is_initial = False` in
    the info of `load_tng` and in files written by `rubix-eqx convert`); ages
    t(a_snap) − t(a_form) at the **snapshot's** epoch, with h and Ω_m from the header
    (else `Parameters`, else Planck15 as used by TNG: h = 0.6774, Ω_m = 0.3089); wind
    particles (formation time ≤ 0) dropped.

    **Arguments:**

    - `path`: a cutout (`PartType4` only, e.g. from the TNG web API) or one chunk of a
      snapshot (`snap_099.0.hdf5`: the other chunks are found from `NumFilesPerSnapshot`).
    - `subhalo_id`, `group_id`: select one subhalo or FoF group of a full snapshot, located
      with the group catalogue `catalog` (`fof_subhalo_tab_099.0.hdf5`; its
      `GroupLenType`, `SubhaloLenType`, `SubhaloGrNr` give the offsets). Leave both
      unset for a cutout (every star in the file is read).
    - `centre`: move to the shrinking-sphere centre (unwrapping the periodic box) and
      subtract the systemic velocity (see [`rubix_eqx.galaxy.centre`][]).
    - `align`: rotate face-on by the stellar angular momentum within `radius`.
    - `radius`: kpc, for the systemic velocity and the angular momentum (default: twice
      the stellar half-mass radius).
    """
    return load_tng(
        path,
        subhalo_id,
        group_id=group_id,
        catalog=catalog,
        centre=centre,
        align=align,
        radius=radius,
    )[0]
