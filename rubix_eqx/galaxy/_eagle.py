"""EAGLE star particles (snapshot or particle-data files) → a `Galaxy` in physical units.

Field names and units follow the EAGLE particle data release (The EAGLE team 2017,
arXiv:1706.09899; McAlpine et al. 2016, Astronomy and Computing 15, 72). Every
`PartType4` dataset carries the attributes `CGSConversionFactor`, `aexp-scale-exponent`
and `h-scale-exponent`; the physical value in CGS is

    value × a^aexp-scale-exponent × h^h-scale-exponent × CGSConversionFactor,

which is what we apply (e.g. `Coordinates`: h⁻¹ cMpc, exponents 1 and −1). Then cm → kpc
and g → M☉ with the file's `Constants/CM_PER_MPC` and `Constants/SOLAR_MASS` (EAGLE's
3.085678e24 cm and 1.989e33 g if absent), cm/s → km/s.

| `PartType4` dataset | becomes |
|---|---|
| `Coordinates`, `Velocity` | kpc (physical), peculiar km/s |
| `InitialMass` (else `Mass`, with a warning) | M☉ (initial mass) |
| `StellarFormationTime` | scale factor of birth → age = t(a_snap) − t(a_form), Gyr |
| `SmoothedMetallicity` (default) or `Metallicity` | Z |
| `GroupNumber`, `SubGroupNumber` | selection |

`Header` attributes: `ExpansionFactor` (else `Time`), `Redshift`, `HubbleParam`,
`Omega0`, `OmegaLambda`, `BoxSize` (h⁻¹ cMpc), `NumFilesPerSnapshot`.
"""

from pathlib import Path

import h5py
import numpy as np

from ._galaxy import Galaxy
from ._io import attr, chunk_files, finish_galaxy, sim_cosmology, stellar_ages
from ._warnings import record_mass_fallback


PLANCK13_EAGLE = (0.6777, 0.307)  # h, Omega_m: Planck 2013 as used by EAGLE (Schaye et al. 2015)
CM_PER_MPC = 3.085678e24  # EAGLE's Constants/CM_PER_MPC
SOLAR_MASS_G = 1.989e33  # EAGLE's Constants/SOLAR_MASS
CONVERSION_ATTRS = ("CGSConversionFactor", "aexp-scale-exponent", "h-scale-exponent")


def _cgs(dset: h5py.Dataset, values: np.ndarray, a: float, h: float, where: str) -> np.ndarray:
    missing = [k for k in CONVERSION_ATTRS if k not in dset.attrs]
    if missing:
        raise ValueError(
            f"{where}: dataset `{dset.name}` lacks the unit attribute(s) {', '.join(missing)}."
        )
    factor = float(attr(dset.attrs, "CGSConversionFactor"))
    factor *= a ** float(attr(dset.attrs, "aexp-scale-exponent"))
    factor *= h ** float(attr(dset.attrs, "h-scale-exponent"))
    return np.asarray(values, np.float64) * factor


def load_eagle(
    path: str | Path,
    group_number: int | None = None,
    subgroup_number: int | None = None,
    *,
    metallicity: str = "smoothed",
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
) -> tuple[Galaxy, dict]:
    """[`rubix_eqx.galaxy.from_eagle`][], plus a dict describing the snapshot and the selection."""
    if metallicity not in ("smoothed", "particle"):
        raise ValueError(
            f"`from_eagle(metallicity=...)` must be 'smoothed' or 'particle'; got {metallicity!r}."
        )
    if subgroup_number is not None and group_number is None:
        raise ValueError(
            "`subgroup_number` needs `group_number` (SubGroupNumber is per FoF group)."
        )
    files = chunk_files(path)
    with h5py.File(files[0], "r") as f:
        if "Header" not in f:
            raise ValueError(f"{path}: no `Header` group: not an EAGLE snapshot.")
        header = dict(f["Header"].attrs)
        constants = dict(f["Constants"].attrs) if "Constants" in f else {}
    a_snap = attr(header, "ExpansionFactor", attr(header, "Time"))
    redshift = attr(header, "Redshift")
    if a_snap is None:
        if redshift is None:
            raise ValueError(
                f"{path}: the header has neither `ExpansionFactor`/`Time` nor `Redshift`."
            )
        a_snap = 1 / (1 + redshift)
    a_snap = float(a_snap)
    redshift = float(redshift) if redshift is not None else 1 / a_snap - 1
    cosmology, h, cosmo_source = sim_cosmology(
        [header], PLANCK13_EAGLE, "Planck13 (EAGLE)", Path(path)
    )
    kpc_cm = float(attr(constants, "CM_PER_MPC", CM_PER_MPC)) / 1e3
    msun_g = float(attr(constants, "SOLAR_MASS", SOLAR_MASS_G))

    z_field = "SmoothedMetallicity" if metallicity == "smoothed" else "Metallicity"
    names = {
        "position": ("Coordinates",),
        "velocity": ("Velocity",),
        "mass": ("InitialMass", "Mass"),
        "a_form": ("StellarFormationTime",),
        "metallicity": (z_field,),
    }
    columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
    used: dict[str, str] = {}
    mass_fields: set[str] = set()
    for file in files:
        with h5py.File(file, "r") as f:
            stars = f.get("PartType4")
            if stars is None or "Coordinates" not in stars:
                continue
            n = stars["Coordinates"].shape[0]
            keep = np.ones(n, bool)
            if group_number is not None:
                for field in ("GroupNumber",) + (
                    ("SubGroupNumber",) if subgroup_number is not None else ()
                ):
                    if field not in stars:
                        raise ValueError(
                            f"{file}: missing dataset `PartType4/{field}` needed for the selection."
                        )
                keep &= np.abs(stars["GroupNumber"][()]) == group_number
                if subgroup_number is not None:
                    keep &= stars["SubGroupNumber"][()] == subgroup_number
            for key, options in names.items():
                field = next((o for o in options if o in stars), None)
                if field is None:
                    raise ValueError(f"{file}: missing dataset `PartType4/{' or '.join(options)}`.")
                used[key] = field
                if key == "mass":
                    mass_fields.add(field)
                dset = stars[field]
                columns[key].append(_cgs(dset, dset[()][keep], a_snap, h, str(file)))
    if not columns["position"]:
        raise ValueError(f"{path}: no `PartType4` star particles in the file(s).")
    data = {k: np.concatenate(v) for k, v in columns.items()}
    a_form = data["a_form"]
    formed = a_form > 0
    position = data["position"][formed] / kpc_cm
    velocity = data["velocity"][formed] / 1e5
    mass = data["mass"][formed] / msun_g
    age = stellar_ages(a_form[formed], a_snap, cosmology)
    box = attr(header, "BoxSize")
    box_kpc = float(box) * a_snap / h * 1e3 if box is not None else None
    info = {
        "loader": "eagle",
        "source": str(path),
        "snapshot_redshift": redshift,
        "snapshot_scale_factor": a_snap,
        "hubble_param": h,
        "cosmology": cosmo_source,
        "metallicity_field": used["metallicity"],
        "n_unformed_excluded": int((~formed).sum()),
        "n_particles": int(formed.sum()),
    }
    # Current masses in any chunk (e.g. files without `InitialMass`) make it a fallback.
    mass_used = "Mass" if "Mass" in mass_fields else "InitialMass"
    record_mass_fallback(info, path, "InitialMass", mass_used)
    if group_number is not None:
        info["group_number"] = int(group_number)
    if subgroup_number is not None:
        info["subgroup_number"] = int(subgroup_number)
    galaxy = finish_galaxy(
        position, velocity, mass, age, data["metallicity"][formed],
        centre=centre, align=align, radius=radius, box=box_kpc, info=info,
    )  # fmt: skip
    return galaxy, info


def from_eagle(
    path: str | Path,
    group_number: int | None = None,
    subgroup_number: int | None = None,
    *,
    metallicity: str = "smoothed",
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
) -> Galaxy:
    """Star particles of an EAGLE snapshot (or particle-data file) as a
    [`rubix_eqx.Galaxy`][].

    Units are converted with each dataset's `CGSConversionFactor`, `aexp-scale-exponent`
    and `h-scale-exponent` attributes (module docs, docs/loaders.md); initial masses
    (`InitialMass`; without it the current `Mass`, with a
    [`rubix_eqx.galaxy.MassFallbackWarning`][], recorded as `mass_is_initial = False`);
    ages t(a_snap) − t(a_form) at the **snapshot's** epoch, with h and Ω_m from the
    header, else Planck13 as used by EAGLE (h = 0.6777, Ω_m = 0.307).

    **Arguments:**

    - `path`: one file of the output (`snap_028_z000p000.0.hdf5`; the other chunks are
      found from `NumFilesPerSnapshot`).
    - `group_number`, `subgroup_number`: keep stars with |`GroupNumber`| = `group_number`
      (and `SubGroupNumber` = `subgroup_number`, 0 = the central galaxy). Unset: every star.
    - `metallicity`: `"smoothed"` (`SmoothedMetallicity`, the default, as recommended for
      EAGLE) or `"particle"` (`Metallicity`).
    - `centre`, `align`, `radius`: as [`rubix_eqx.galaxy.from_tng`][].
    """
    return load_eagle(
        path,
        group_number,
        subgroup_number,
        metallicity=metallicity,
        centre=centre,
        align=align,
        radius=radius,
    )[0]


# --- gas (PartType0) ---------------------------------------------------------------------

SEC_PER_YEAR = 3.15576e7  # Julian year, s (EAGLE's Constants/SEC_PER_YEAR if present)


def load_eagle_gas(
    path: str | Path,
    group_number: int | None = None,
    subgroup_number: int | None = None,
    *,
    metallicity: str = "smoothed",
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
    eos_temperature: float | None = 1e4,
):
    """[`rubix_eqx.galaxy.from_eagle_gas`][], plus a dict describing snapshot and selection."""
    import warnings

    import jax.numpy as jnp

    from ._frame import apply_frame, stellar_frame
    from ._gas import Gas
    from ._io import Z_FLOOR
    from ._tng import _finish_gas_fields
    from ._warnings import MassFallbackWarning

    if metallicity not in ("smoothed", "particle"):
        raise ValueError(
            "`from_eagle_gas(metallicity=...)` must be 'smoothed' or 'particle'; "
            f"got {metallicity!r}."
        )
    if subgroup_number is not None and group_number is None:
        raise ValueError(
            "`subgroup_number` needs `group_number` (SubGroupNumber is per FoF group)."
        )
    files = chunk_files(path)
    with h5py.File(files[0], "r") as f:
        if "Header" not in f:
            raise ValueError(f"{path}: no `Header` group: not an EAGLE snapshot.")
        header = dict(f["Header"].attrs)
        constants = dict(f["Constants"].attrs) if "Constants" in f else {}
    a_snap = attr(header, "ExpansionFactor", attr(header, "Time"))
    redshift = attr(header, "Redshift")
    if a_snap is None:
        if redshift is None:
            raise ValueError(
                f"{path}: the header has neither `ExpansionFactor`/`Time` nor `Redshift`."
            )
        a_snap = 1 / (1 + redshift)
    a_snap = float(a_snap)
    redshift = float(redshift) if redshift is not None else 1 / a_snap - 1
    _, h, cosmo_source = sim_cosmology([header], PLANCK13_EAGLE, "Planck13 (EAGLE)", Path(path))
    kpc_cm = float(attr(constants, "CM_PER_MPC", CM_PER_MPC)) / 1e3
    msun_g = float(attr(constants, "SOLAR_MASS", SOLAR_MASS_G))
    year_s = float(attr(constants, "SEC_PER_YEAR", SEC_PER_YEAR))
    names = {
        "position": "Coordinates",
        "velocity": "Velocity",
        "mass": "Mass",
        "metallicity": "SmoothedMetallicity" if metallicity == "smoothed" else "Metallicity",
        "sfr": "StarFormationRate",
        "temperature": "Temperature",
        "smoothing_length": "SmoothingLength",
    }
    columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for file in files:
        with h5py.File(file, "r") as f:
            gas = f.get("PartType0")
            if gas is None or "Coordinates" not in gas:
                continue
            keep = np.ones(gas["Coordinates"].shape[0], bool)
            if group_number is not None:
                for field in ("GroupNumber",) + (
                    ("SubGroupNumber",) if subgroup_number is not None else ()
                ):
                    if field not in gas:
                        raise ValueError(
                            f"{file}: missing dataset `PartType0/{field}` needed for the selection."
                        )
                keep &= np.abs(gas["GroupNumber"][()]) == group_number
                if subgroup_number is not None:
                    keep &= gas["SubGroupNumber"][()] == subgroup_number
            for key, field in names.items():
                if field not in gas:
                    raise ValueError(f"{file}: missing dataset `PartType0/{field}`.")
                dset = gas[field]
                columns[key].append(_cgs(dset, dset[()][keep], a_snap, h, str(file)))
    if not columns["position"]:
        raise ValueError(f"{path}: no `PartType0` gas particles in the file(s).")
    data = {k: np.concatenate(v) for k, v in columns.items()}
    if data["mass"].shape[0] == 0:
        raise ValueError(f"{path}: no gas particles selected.")
    position = data["position"] / kpc_cm
    velocity = data["velocity"] / 1e5
    mass = data["mass"] / msun_g
    sfr = data["sfr"] / msun_g * year_s
    temperature = data["temperature"]
    z = data["metallicity"]
    smoothing = data["smoothing_length"] / kpc_cm
    box = attr(header, "BoxSize")
    box_kpc = float(box) * a_snap / h * 1e3 if box is not None else None
    info = {
        "loader": "eagle-gas",
        "source": str(path),
        "snapshot_redshift": redshift,
        "snapshot_scale_factor": a_snap,
        "hubble_param": h,
        "cosmology": cosmo_source,
        "metallicity_field": names["metallicity"],
        "n_particles": int(mass.shape[0]),
        "n_star_forming": int((sfr > 0).sum()),
        "smoothing_length": "SmoothingLength (kernel support radius)",
    }
    _finish_gas_fields(info, sfr, temperature, z, eos_temperature, Z_FLOOR)
    if centre:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MassFallbackWarning)
                stars, _ = load_eagle(path, group_number, subgroup_number, centre=False)
            frame = stellar_frame(
                stars.position, stars.velocity, stars.mass,
                centre=True, align=align, radius=radius, box=box_kpc,
            )  # fmt: skip
            info["frame"] = "stars"
        except ValueError as e:
            if "PartType4" not in str(e):
                raise
            frame = stellar_frame(
                position, velocity, mass, centre=True, align=align, radius=radius, box=box_kpc
            )
            info["frame"] = "gas (no star particles in the file)"
    else:
        frame = stellar_frame(
            position, velocity, mass, centre=False, align=align, radius=radius, box=None
        )
        info["frame"] = "box"
    position, velocity = apply_frame(frame, position, velocity)
    dtype = jnp.result_type(float)
    values = dict(
        position=position, velocity=velocity, mass=mass, metallicity=z, sfr=sfr,
        temperature=temperature, smoothing_length=smoothing,
    )  # fmt: skip
    return Gas(**{k: jnp.asarray(v, dtype) for k, v in values.items()}), info


def from_eagle_gas(
    path: str | Path,
    group_number: int | None = None,
    subgroup_number: int | None = None,
    *,
    metallicity: str = "smoothed",
    centre: bool = True,
    align: bool = False,
    radius: float | None = None,
    eos_temperature: float | None = 1e4,
):
    """Gas particles (`PartType0`) of an EAGLE snapshot as a [`rubix_eqx.galaxy.Gas`][], in
    the frame of the stars.

    Units from each dataset's `CGSConversionFactor`, `aexp-scale-exponent`,
    `h-scale-exponent` (as [`rubix_eqx.galaxy.from_eagle`][]): `Coordinates`, `Velocity`,
    `Mass`, `SmoothedMetallicity` (or `Metallicity`), `StarFormationRate` (g/s → M☉/yr with
    `Constants/SEC_PER_YEAR`, else 3.15576e7 s), `Temperature` (K), `SmoothingLength` (the
    SPH kernel's support radius, h⁻¹ cMpc → kpc). Star-forming particles (SFR > 0) are on
    EAGLE's imposed pressure floor P ∝ ρ^(4/3) (Schaye & Dalla Vecchia 2008), whose
    temperature is not that of the line-emitting phase: they keep their SFR and get
    T = `eos_temperature` (10⁴ K; `None` keeps the file's value). Z ≤ 0 is set to 10⁻⁸.

    **Arguments:** as [`rubix_eqx.galaxy.from_eagle`][] (`centre`, `align` and `radius`
    define the frame from the **stars** of the same selection; a file without stars is
    centred on its gas), plus `eos_temperature` (K or None).
    """
    return load_eagle_gas(
        path, group_number, subgroup_number, metallicity=metallicity, centre=centre,
        align=align, radius=radius, eos_temperature=eos_temperature,
    )[0]  # fmt: skip
