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

import warnings
from pathlib import Path

import h5py
import numpy as np

from ._galaxy import Galaxy
from ._io import attr, chunk_files, finish_galaxy, sim_cosmology, stellar_ages
from ._warnings import MassFallbackWarning, record_mass_fallback


PLANCK15_TNG = (0.6774, 0.3089)  # h, Omega_m: Planck 2015 as used by TNG (Nelson et al. 2019)
KPC_CM = 3.085678e21  # TNG/Gadget's kpc in cm
MSUN_G = 1.989e33  # TNG/Gadget's solar mass in g
STAR = 4  # PartType4


def _catalogue_range(
    catalog: str | Path, subhalo_id: int | None, group_id: int | None, part_type: int = STAR
) -> tuple[int, int]:
    """(offset, count) of the particles of type `part_type` (default stars) of a subhalo or
    FoF group in the snapshot's order (sorted by group, then subhalo), from the group
    catalogue's length tables."""
    files = chunk_files(catalog, "Header", "NumFiles")
    group_len, sub_len, sub_group = [], [], []
    for path in files:
        with h5py.File(path, "r") as f:
            if "Group" in f and "GroupLenType" in f["Group"]:
                group_len.append(f["Group/GroupLenType"][:, part_type])
            if "Subhalo" in f and "SubhaloLenType" in f["Subhalo"]:
                sub_len.append(f["Subhalo/SubhaloLenType"][:, part_type])
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


def _read(
    files: list[Path], name: str, start: int, count: int | None, part_type: int = STAR
) -> np.ndarray | None:
    """PartType`part_type`/`name` rows [start, start+count) across chunk files (all if count
    is None); `None` if no file has the dataset."""
    parts, seen, found = [], 0, False
    for path in files:
        with h5py.File(path, "r") as f:
            group = f.get(f"PartType{part_type}")
            n = (
                int(np.asarray(f["Header"].attrs.get("NumPart_ThisFile", [0] * 6))[part_type])
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
            f"PartType{part_type}/{name}: expected {count} rows from offset {start}, found {total}."
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


# --- gas (PartType0) ---------------------------------------------------------------------

GAS = 0  # PartType0
X_HYDROGEN = 0.76  # primordial hydrogen mass fraction of the TNG model (data specifications)
GAMMA = 5.0 / 3.0  # adiabatic index
K_B_CGS = 1.380649e-16  # erg/K (exact)
M_P_CGS = 1.67262192369e-24  # proton mass, g (CODATA 2018)


def internal_energy_to_temperature(
    internal_energy, electron_abundance, x_h: float = X_HYDROGEN
) -> np.ndarray:
    """Temperature (K) of TNG/Arepo gas from its specific internal energy u (cm²/s²) and
    electron abundance x_e = n_e/n_H: T = (γ − 1) u μ / k_B, with μ = 4 m_p / (1 + 3 X_H +
    4 X_H x_e), γ = 5/3, X_H = 0.76 (the formula of the TNG data specifications' FAQ,
    Nelson et al. 2019)."""
    u = np.asarray(internal_energy, np.float64)
    mu = 4.0 * M_P_CGS / (1.0 + 3.0 * x_h + 4.0 * x_h * np.asarray(electron_abundance, np.float64))
    return (GAMMA - 1.0) * u * mu / K_B_CGS


def _tng_snapshot(path, files):
    """(a_snap, redshift, cosmology, h, cosmo_source, length, mass_unit, velocity_unit, box_kpc)
    from the header (as `load_tng`)."""
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
    cosmology, h, source = sim_cosmology(
        [header, params], PLANCK15_TNG, "Planck15 (TNG)", Path(path)
    )
    unit = lambda key, default: float(attr(header, key, attr(params, key, default)))
    length = unit("UnitLength_in_cm", KPC_CM) / KPC_CM
    mass_unit = unit("UnitMass_in_g", 1e10 * MSUN_G) / MSUN_G
    velocity_unit = unit("UnitVelocity_in_cm_per_s", 1e5) / 1e5
    box = attr(header, "BoxSize")
    box_kpc = float(box) * length * a_snap / h if box is not None else None
    return a_snap, redshift, h, source, length, mass_unit, velocity_unit, box_kpc


def load_tng_gas(
    path: str | Path,
    subhalo_id: int | None = None,
    *,
    group_id: int | None = None,
    catalog: str | Path | None = None,
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
    eos_temperature: float | None = 1e4,
    n_neighbours: int = 32,
):
    """[`rubix_eqx.galaxy.from_tng_gas`][], plus a dict describing the snapshot and selection."""
    from ._frame import apply_frame
    from ._gas import Gas
    from ._io import Z_FLOOR

    files = chunk_files(path)
    a_snap, redshift, h, source, length, mass_unit, velocity_unit, box_kpc = _tng_snapshot(
        path, files
    )
    start, count = 0, None
    if subhalo_id is not None or group_id is not None:
        if catalog is None:
            raise ValueError(
                "`subhalo_id`/`group_id` need `catalog=` (the group catalogue) to locate the "
                "gas cells in a snapshot; for an API cutout, leave them unset."
            )
        start, count = _catalogue_range(catalog, subhalo_id, group_id, part_type=GAS)
    fields = {}
    required = (
        "Coordinates", "Velocities", "Masses", "GFM_Metallicity", "StarFormationRate",
        "InternalEnergy", "ElectronAbundance",
    )  # fmt: skip
    for name in required + ("Density",):
        fields[name] = _read(files, name, start, count, part_type=GAS)
        if fields[name] is None and name in required:
            raise ValueError(f"{path}: missing dataset `PartType0/{name}`.")
    n = fields["Masses"].shape[0]
    if n == 0:
        raise ValueError(f"{path}: no gas cells selected.")
    position = np.asarray(fields["Coordinates"], np.float64) * (length * a_snap / h)
    velocity = np.asarray(fields["Velocities"], np.float64) * (velocity_unit * np.sqrt(a_snap))
    mass = np.asarray(fields["Masses"], np.float64) * (mass_unit / h)
    sfr = np.asarray(fields["StarFormationRate"], np.float64)  # M☉/yr, physical
    u_cgs = np.asarray(fields["InternalEnergy"], np.float64) * (velocity_unit * 1e5) ** 2
    temperature = internal_energy_to_temperature(u_cgs, fields["ElectronAbundance"])
    metallicity = np.asarray(fields["GFM_Metallicity"], np.float64)
    info = {
        "loader": "tng-gas",
        "source": str(path),
        "snapshot_redshift": redshift,
        "snapshot_scale_factor": a_snap,
        "hubble_param": h,
        "cosmology": source,
        "n_particles": int(n),
        "n_star_forming": int((sfr > 0).sum()),
    }
    if fields["Density"] is not None:
        volume = mass / (
            np.asarray(fields["Density"], np.float64) * (mass_unit / h) / (length * a_snap / h) ** 3
        )
        smoothing = (3.0 * n_neighbours * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
        info["smoothing_length"] = f"(3 N m / (4 pi rho))^(1/3), N = {n_neighbours}"
    else:
        from ..physics._kernels import kth_neighbour_distance

        smoothing = kth_neighbour_distance(position, k=min(n_neighbours, n - 1))
        info["smoothing_length"] = f"distance to the {min(n_neighbours, n - 1)}-th neighbour"
    _finish_gas_fields(info, sfr, temperature, metallicity, eos_temperature, Z_FLOOR)
    frame = _tng_frame(
        path,
        subhalo_id,
        group_id,
        catalog,
        centre,
        align,
        radius,
        box_kpc,
        position,
        velocity,
        mass,
        info,
    )
    position, velocity = apply_frame(frame, position, velocity)
    gas = _make_gas(Gas, position, velocity, mass, metallicity, sfr, temperature, smoothing)
    return gas, info


def _finish_gas_fields(info, sfr, temperature, metallicity, eos_temperature, z_floor):
    """In place: star-forming gas to `eos_temperature`, Z ≤ 0 to `z_floor`; counts in `info`."""
    eos = sfr > 0
    info["eos_temperature"] = eos_temperature
    if eos_temperature is not None:
        if not eos_temperature > 0:
            raise ValueError(f"`eos_temperature` must be > 0 K or None; got {eos_temperature}.")
        temperature[eos] = eos_temperature
        info["n_eos_temperature_set"] = int(eos.sum())
    low = metallicity <= 0
    metallicity[low] = z_floor
    info["n_zero_metallicity"] = int(low.sum())


def _tng_frame(
    path,
    subhalo_id,
    group_id,
    catalog,
    centre,
    align,
    radius,
    box_kpc,
    position,
    velocity,
    mass,
    info,
):
    """The frame of `from_tng` with the same arguments (from the stars), or of the gas itself
    when the file has no star particles."""
    from ._frame import stellar_frame

    if centre:
        try:
            with warnings.catch_warnings():  # the stars' mass provenance is irrelevant here
                warnings.simplefilter("ignore", MassFallbackWarning)
                stars, _ = load_tng(
                    path, subhalo_id, group_id=group_id, catalog=catalog, centre=False
                )
        except ValueError as e:
            if "PartType4" not in str(e):
                raise
            info["frame"] = "gas (no star particles in the file)"
            return stellar_frame(
                position, velocity, mass, centre=centre, align=align, radius=radius, box=box_kpc
            )
        info["frame"] = "stars"
        return stellar_frame(
            stars.position, stars.velocity, stars.mass,
            centre=centre, align=align, radius=radius, box=box_kpc,
        )  # fmt: skip
    info["frame"] = "box"
    return stellar_frame(
        position, velocity, mass, centre=False, align=align, radius=radius, box=None
    )


def _make_gas(cls, position, velocity, mass, metallicity, sfr, temperature, smoothing):
    import jax.numpy as jnp

    dtype = jnp.result_type(float)
    values = (position, velocity, mass, metallicity, sfr, temperature, smoothing)
    names = (
        "position",
        "velocity",
        "mass",
        "metallicity",
        "sfr",
        "temperature",
        "smoothing_length",
    )
    return cls(**{k: jnp.asarray(v, dtype) for k, v in zip(names, values)})


def from_tng_gas(
    path: str | Path,
    subhalo_id: int | None = None,
    *,
    group_id: int | None = None,
    catalog: str | Path | None = None,
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
    eos_temperature: float | None = 1e4,
    n_neighbours: int = 32,
):
    """Gas cells (`PartType0`) of an IllustrisTNG snapshot or cutout as a
    [`rubix_eqx.galaxy.Gas`][], in the frame of the stars.

    Units as for the stars (docs/loaders.md): `Coordinates` × a/h → kpc, `Velocities` × √a →
    km/s, `Masses` × 10¹⁰/h → M☉, `StarFormationRate` M☉/yr (physical), `GFM_Metallicity` Z;
    temperature from `InternalEnergy` ((km/s)²) and `ElectronAbundance` by
    T = (γ − 1) u μ / k_B, μ = 4 m_p / (1 + 3 X_H + 4 X_H x_e), X_H = 0.76, γ = 5/3.
    Star-forming cells (SFR > 0) sit on the Springel & Hernquist (2003) effective equation of
    state, whose u is the two-phase average (T ~ 10⁵–10⁷ K, not the temperature of the
    line-emitting phase): they keep their SFR and get T = `eos_temperature` (10⁴ K; `None`
    keeps the formula's value). Smoothing length: h = (3 N m / (4π ρ))^(1/3) with
    N = `n_neighbours` (the radius of a sphere holding N cells' volume m/ρ at the local
    density; `Density` × 10¹⁰ h² M☉ / (a³ ckpc³)); without `Density`, the distance to the
    N-th nearest cell. Z ≤ 0 is set to 10⁻⁸ (counted).

    **Arguments:** as [`rubix_eqx.galaxy.from_tng`][] (`centre`, `align`, `radius` define
    the frame from the **stars** of the same selection, so that
    `from_tng(path, ...)` and `from_tng_gas(path, ...)` with the same arguments share one
    frame; a file without stars is centred on its gas), plus `eos_temperature` (K or None)
    and `n_neighbours`.
    """
    return load_tng_gas(
        path, subhalo_id, group_id=group_id, catalog=catalog, centre=centre, align=align,
        radius=radius, eos_temperature=eos_temperature, n_neighbours=n_neighbours,
    )[0]  # fmt: skip
