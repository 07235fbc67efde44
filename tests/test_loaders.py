"""Galaxy files: our HDF5 layout, and IllustrisTNG / EAGLE snapshots written here in the
layouts of their public data releases (TNG: Nelson et al. 2019; EAGLE: the EAGLE team
2017 particle-data manual, McAlpine et al. 2016), checked against astropy."""

import equinox as eqx
import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM

from .cases import random_galaxy


TNG = {"h": 0.6774, "om": 0.3089}  # Planck 2015, TNG
EAGLE = {"h": 0.6777, "om": 0.307}  # Planck 2013, EAGLE


def truth(n, seed, centre=(0.0, 0.0, 0.0), a_snap=0.8):
    """Physical particle properties (kpc, km/s, Msun, formation scale factor, Z)."""
    rng = np.random.default_rng(seed)
    return {
        "pos": np.asarray(centre) + rng.normal(0, 3.0, (n, 3)),
        "vel": rng.normal(0, 100.0, (n, 3)) + np.array([300.0, -50.0, 20.0]),
        "mass": rng.uniform(1e5, 1e6, n),
        "a_form": rng.uniform(0.1, a_snap * 0.999, n),
        "Z": rng.uniform(0.001, 0.03, n),
    }


def astropy_ages(a_form, a_snap, h, om):
    cosmo = FlatLambdaCDM(H0=100 * h, Om0=om)
    return cosmo.age(1 / a_snap - 1).value - cosmo.age(1 / a_form - 1).value


def write_tng(
    path,
    t,
    a,
    *,
    chunk=None,
    n_files=1,
    header_cosmology=True,
    box=None,
    wind=(),
    initial_mass=True,
    current_mass=True,
):
    """A TNG snapshot chunk or cutout: PartType4 in ckpc/h, km/s sqrt(a), 1e10 Msun/h."""
    h = TNG["h"]
    sl = slice(None) if chunk is None else chunk
    a_form = t["a_form"].copy()
    a_form[list(wind)] = [-0.4, 0.0][: len(wind)] if wind else []
    with h5py.File(path, "w") as f:
        hd = f.create_group("Header")
        hd.attrs["Time"] = a
        hd.attrs["Redshift"] = 1 / a - 1
        if header_cosmology:
            hd.attrs["HubbleParam"] = h
            hd.attrs["Omega0"] = TNG["om"]
            hd.attrs["OmegaLambda"] = 1 - TNG["om"]
        hd.attrs["BoxSize"] = 35000.0 if box is None else box
        hd.attrs["NumFilesPerSnapshot"] = n_files
        n = len(t["mass"][sl])
        hd.attrs["NumPart_ThisFile"] = np.array([0, 0, 0, 0, n, 0])
        hd.attrs["MassTable"] = np.zeros(6)
        p4 = f.create_group("PartType4")
        p4["Coordinates"] = t["pos"][sl] * h / a
        p4["Velocities"] = t["vel"][sl] / np.sqrt(a)
        if initial_mass:
            p4["GFM_InitialMass"] = t["mass"][sl] * h / 1e10
        if current_mass:
            p4["Masses"] = 0.6 * t["mass"][sl] * h / 1e10  # current mass: only as a fallback
        p4["GFM_StellarFormationTime"] = a_form[sl]
        p4["GFM_Metallicity"] = t["Z"][sl]


def test_tng_cutout_units_and_ages(tmp_path):
    import rubix_eqx as rx
    from rubix_eqx.galaxy._tng import load_tng

    a = 0.8
    t = truth(50, 1, centre=(1000.0, 2000.0, 3000.0), a_snap=a)
    path = tmp_path / "cutout.hdf5"
    write_tng(path, t, a, wind=(3, 7))
    galaxy, info = load_tng(path, centre=False)
    keep = np.ones(50, bool)
    keep[[3, 7]] = False  # wind particles (formation time <= 0) are excluded
    assert galaxy.n_particles == 48 and info["n_wind_excluded"] == 2
    np.testing.assert_allclose(galaxy.position, t["pos"][keep], rtol=1e-12)
    np.testing.assert_allclose(galaxy.velocity, t["vel"][keep], rtol=1e-12)
    np.testing.assert_allclose(galaxy.mass, t["mass"][keep], rtol=1e-12)  # initial mass
    np.testing.assert_allclose(galaxy.metallicity, t["Z"][keep], rtol=1e-12)
    ref = astropy_ages(t["a_form"][keep], a, **TNG)
    np.testing.assert_allclose(galaxy.age, ref, rtol=1e-4)
    assert (
        info["snapshot_redshift"] == pytest.approx(0.25) and info["mass_field"] == "GFM_InitialMass"
    )
    assert info["mass_is_initial"] is True and "mass_fallback" not in info
    # the public entry point centres by default: positions about the centre, v about systemic
    centred = rx.galaxy.from_tng(path)
    assert abs(float(jnp.average(centred.velocity[:, 0], weights=centred.mass))) < 100.0
    assert float(jnp.median(jnp.linalg.norm(centred.position, axis=1))) < 10.0


def test_tng_default_cosmology_is_planck15(tmp_path):
    from rubix_eqx.galaxy._tng import load_tng

    a = 0.5
    t = truth(20, 2, a_snap=a)
    write_tng(tmp_path / "c.hdf5", t, a, header_cosmology=False)
    # TNG headers carry HubbleParam; without it we fall back to Planck15 (h = 0.6774)
    galaxy, info = load_tng(tmp_path / "c.hdf5", centre=False)
    assert "Planck15" in info["cosmology"]
    np.testing.assert_allclose(galaxy.age, astropy_ages(t["a_form"], a, **TNG), rtol=1e-4)
    np.testing.assert_allclose(galaxy.position, t["pos"], rtol=1e-12)


def test_tng_snapshot_chunks_and_group_catalogue(tmp_path):
    import rubix_eqx as rx

    # groups: 0 = subhalos 0 (3 stars) + 1 (2 stars); 1 = subhalo 2 (4 stars); 9 stars in
    # two chunk files of 4 and 5 (subhalo 1 straddles the boundary).
    a = 1.0
    t = truth(9, 3, a_snap=a)
    t["Z"] = 0.001 * (1 + np.arange(9))  # tags
    write_tng(tmp_path / "snap_099.0.hdf5", t, a, chunk=slice(0, 4), n_files=2)
    write_tng(tmp_path / "snap_099.1.hdf5", t, a, chunk=slice(4, 9), n_files=2)
    cat = tmp_path / "fof_subhalo_tab_099.0.hdf5"
    with h5py.File(cat, "w") as f:
        f.create_group("Header").attrs["NumFiles"] = 1
        glen = np.zeros((2, 6), np.int32)
        glen[:, 4] = [5, 4]
        f["Group/GroupLenType"] = glen
        slen = np.zeros((3, 6), np.int32)
        slen[:, 4] = [3, 2, 4]
        f["Subhalo/SubhaloLenType"] = slen
        f["Subhalo/SubhaloGrNr"] = np.array([0, 0, 1])
    snap = tmp_path / "snap_099.0.hdf5"
    for kw, want in (
        ({"subhalo_id": 1}, [3, 4]),
        ({"subhalo_id": 2}, [5, 6, 7, 8]),
        ({"group_id": 0}, [0, 1, 2, 3, 4]),
        ({}, list(range(9))),
    ):
        g = rx.galaxy.from_tng(snap, catalog=cat if kw else None, centre=False, **kw)
        np.testing.assert_allclose(g.metallicity, t["Z"][want], rtol=1e-12)
    with pytest.raises(ValueError, match="need `catalog="):
        rx.galaxy.from_tng(snap, subhalo_id=1)
    with pytest.raises(ValueError, match="out of range: the catalogue has 3 subhalos"):
        rx.galaxy.from_tng(snap, subhalo_id=5, catalog=cat)
    (tmp_path / "snap_099.1.hdf5").unlink()
    with pytest.raises(FileNotFoundError, match="missing chunk files"):
        rx.galaxy.from_tng(snap)


def write_eagle(path, t, a, groups, subgroups, initial_mass=True):
    """An EAGLE snapshot file: h-scaled comoving units with conversion attributes."""
    h = EAGLE["h"]

    def dataset(group, name, values, cgs, aexp, hexp):
        d = group.create_dataset(name, data=values)
        d.attrs["CGSConversionFactor"] = cgs
        d.attrs["aexp-scale-exponent"] = aexp
        d.attrs["h-scale-exponent"] = hexp

    with h5py.File(path, "w") as f:
        hd = f.create_group("Header")
        hd.attrs["ExpansionFactor"] = a
        hd.attrs["Time"] = a
        hd.attrs["Redshift"] = 1 / a - 1
        hd.attrs["HubbleParam"] = h
        hd.attrs["Omega0"] = EAGLE["om"]
        hd.attrs["OmegaLambda"] = 1 - EAGLE["om"]
        hd.attrs["BoxSize"] = 25 * h  # h^-1 cMpc
        hd.attrs["NumFilesPerSnapshot"] = 1
        c = f.create_group("Constants")
        c.attrs["CM_PER_MPC"] = 3.085678e24
        c.attrs["SOLAR_MASS"] = 1.989e33
        p4 = f.create_group("PartType4")
        dataset(p4, "Coordinates", t["pos"] / 1e3 * h / a, 3.085678e24, 1.0, -1.0)  # h^-1 cMpc
        dataset(p4, "Velocity", t["vel"] / np.sqrt(a), 1e5, 0.5, 0.0)
        if initial_mass:
            dataset(p4, "InitialMass", t["mass"] * h / 1e10, 1.989e43, 0.0, -1.0)
        dataset(p4, "Mass", 0.6 * t["mass"] * h / 1e10, 1.989e43, 0.0, -1.0)
        dataset(p4, "StellarFormationTime", t["a_form"], 1.0, 0.0, 0.0)
        dataset(p4, "SmoothedMetallicity", t["Z"], 1.0, 0.0, 0.0)
        dataset(p4, "Metallicity", 2 * t["Z"], 1.0, 0.0, 0.0)
        dataset(p4, "GroupNumber", np.asarray(groups, np.int32), 1.0, 0.0, 0.0)
        dataset(p4, "SubGroupNumber", np.asarray(subgroups, np.int32), 1.0, 0.0, 0.0)


def test_eagle_units_ages_and_selection(tmp_path):
    import rubix_eqx as rx
    from rubix_eqx.galaxy._eagle import load_eagle

    a = 1 / 1.1
    t = truth(12, 4, centre=(5000.0, 6000.0, 7000.0), a_snap=a)
    groups = [1, 1, 1, 1, 1, 2, 2, 2, 2**30, 1, 2, 1]
    subs = [0, 0, 0, 1, 1, 0, 0, 0, 2**30, 0, 1, 0]
    path = tmp_path / "snap_028_z000p100.0.hdf5"
    write_eagle(path, t, a, groups, subs)
    galaxy, info = load_eagle(path, centre=False)
    np.testing.assert_allclose(galaxy.position, t["pos"], rtol=1e-12)
    np.testing.assert_allclose(galaxy.velocity, t["vel"], rtol=1e-12)
    np.testing.assert_allclose(galaxy.mass, t["mass"], rtol=1e-12)
    np.testing.assert_allclose(galaxy.metallicity, t["Z"], rtol=1e-12)  # smoothed by default
    np.testing.assert_allclose(galaxy.age, astropy_ages(t["a_form"], a, **EAGLE), rtol=1e-4)
    assert info["mass_field"] == "InitialMass" and info["snapshot_redshift"] == pytest.approx(0.1)
    assert info["mass_is_initial"] is True and "mass_fallback" not in info
    central = rx.galaxy.from_eagle(path, 1, 0, centre=False, metallicity="particle")
    want = [i for i in range(12) if groups[i] == 1 and subs[i] == 0]
    np.testing.assert_allclose(central.metallicity, 2 * t["Z"][want], rtol=1e-12)
    assert rx.galaxy.from_eagle(path, 2, centre=False).n_particles == 4
    with pytest.raises(ValueError, match="`subgroup_number` needs `group_number`"):
        rx.galaxy.from_eagle(path, None, 0)


def test_tng_without_initial_masses_warns_and_records(tmp_path, capsys):
    """No `GFM_InitialMass`: the current `Masses` are used (too faint by the mass lost),
    with a `MassFallbackWarning`, and recorded in the info and in converted files."""
    import rubix_eqx as rx
    from rubix_eqx.cli import main
    from rubix_eqx.galaxy._tng import load_tng

    a = 0.8
    t = truth(20, 11, a_snap=a)
    path = tmp_path / "cutout.hdf5"
    write_tng(path, t, a, initial_mass=False)
    message = (
        r"cutout\.hdf5: no `PartType4/GFM_InitialMass` \(initial stellar mass\); using the "
        r"current mass `Masses`"
    )
    with pytest.warns(rx.galaxy.MassFallbackWarning, match=message):
        galaxy, info = load_tng(path, centre=False)
    np.testing.assert_allclose(galaxy.mass, 0.6 * t["mass"], rtol=1e-12)  # current masses
    assert info["mass_field"] == "Masses" and info["mass_is_initial"] is False
    assert "current mass `Masses`" in info["mass_fallback"]
    with pytest.warns(rx.galaxy.MassFallbackWarning):
        rx.galaxy.from_tng(path)
    out = tmp_path / "galaxy.h5"
    with pytest.warns(rx.galaxy.MassFallbackWarning):
        assert main(["convert", str(path), "--loader", "tng", "--out", str(out)]) == 0
    assert "mass field Masses" in capsys.readouterr().out
    meta = rx.galaxy.hdf5_metadata(out)
    assert meta["mass_field"] == "Masses" and not meta["mass_is_initial"]
    assert "current mass `Masses`" in meta["mass_fallback"]
    # neither dataset: the header's MassTable entry is a fallback too
    write_tng(path, t, a, initial_mass=False, current_mass=False)
    with h5py.File(path, "a") as f:
        f["Header"].attrs["MassTable"] = np.array([0, 0, 0, 0, 1e-4, 0])
    with pytest.warns(rx.galaxy.MassFallbackWarning, match="`Header/MassTable`"):
        galaxy, info = load_tng(path, centre=False)
    np.testing.assert_allclose(galaxy.mass, 1e-4 * 1e10 / TNG["h"], rtol=1e-12)
    assert info["mass_field"] == "Header/MassTable" and info["mass_is_initial"] is False


def test_eagle_without_initial_masses_warns_and_records(tmp_path):
    import rubix_eqx as rx
    from rubix_eqx.galaxy._eagle import load_eagle

    a = 1.0
    t = truth(8, 12, a_snap=a)
    path = tmp_path / "snap.hdf5"
    write_eagle(path, t, a, [1] * 8, [0] * 8, initial_mass=False)
    with pytest.warns(rx.galaxy.MassFallbackWarning, match=r"no `PartType4/InitialMass`.*`Mass`"):
        galaxy, info = load_eagle(path, centre=False)
    np.testing.assert_allclose(galaxy.mass, 0.6 * t["mass"], rtol=1e-12)
    assert info["mass_field"] == "Mass" and info["mass_is_initial"] is False
    assert "current mass `Mass`" in info["mass_fallback"]
    out = tmp_path / "galaxy.h5"
    rx.galaxy.to_hdf5(galaxy, out, **info)  # what `rubix-eqx convert` writes
    assert rx.galaxy.hdf5_metadata(out)["mass_is_initial"] is False


def test_eagle_missing_unit_attributes(tmp_path):
    import rubix_eqx as rx

    a = 1.0
    t = truth(5, 5, a_snap=a)
    path = tmp_path / "snap.hdf5"
    write_eagle(path, t, a, [1] * 5, [0] * 5)
    with h5py.File(path, "a") as f:
        del f["PartType4/Velocity"].attrs["aexp-scale-exponent"]
    with pytest.raises(ValueError, match="lacks the unit attribute.*aexp-scale-exponent"):
        rx.galaxy.from_eagle(path)


def test_centre_unwraps_box_and_align_face_on(tmp_path):
    import rubix_eqx as rx
    from rubix_eqx.galaxy._tng import load_tng

    # a thin rotating disk, tilted by a random rotation, straddling the periodic box edge
    rng = np.random.default_rng(6)
    n = 200
    r = rng.uniform(0.5, 8.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    disk = np.stack([r * np.cos(phi), r * np.sin(phi), np.zeros(n)], 1)
    spin = 200.0 * np.stack([-np.sin(phi), np.cos(phi), np.zeros(n)], 1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))  # proper rotation
    pos = np.concatenate([disk, -disk]) @ rot.T  # point-symmetric pairs: exact centre
    vel = np.concatenate([spin, -spin]) @ rot.T
    a, h, box = 1.0, TNG["h"], 10000.0  # box in ckpc/h
    centre = np.array([0.5, 3000.0, 6000.0])  # kpc: x on the box edge
    t = {
        "pos": (centre + pos) % (box / h),
        "vel": vel + np.array([100.0, 0.0, -30.0]),
        "mass": np.full(2 * n, 1e6),
        "a_form": np.full(2 * n, 0.5),
        "Z": np.full(2 * n, 0.02),
    }
    write_tng(tmp_path / "c.hdf5", t, a, box=box)
    centred, _ = load_tng(tmp_path / "c.hdf5", centre=True)
    np.testing.assert_allclose(centred.position, pos, atol=1e-8)
    np.testing.assert_allclose(centred.velocity, vel, atol=1e-8)
    aligned = rx.galaxy.face_on(centred)
    np.testing.assert_allclose(aligned.position[:, 2], 0.0, atol=1e-8)  # the disk lies in z = 0
    ang = np.sum(
        np.cross(aligned.position, aligned.velocity) * np.asarray(aligned.mass)[:, None], 0
    )
    np.testing.assert_allclose(ang / np.linalg.norm(ang), [0, 0, 1], atol=1e-10)  # spin along +z
    np.testing.assert_allclose(
        np.linalg.norm(aligned.position, axis=1), np.linalg.norm(pos, axis=1), rtol=1e-10
    )
    assert rx.galaxy.from_tng(tmp_path / "c.hdf5", align=True).n_particles == 2 * n


def test_galaxy_hdf5_layout_round_trip_and_versions(tmp_path):
    import rubix_eqx as rx

    galaxy = random_galaxy(0, 30)
    path = tmp_path / "galaxy.h5"
    rx.galaxy.to_hdf5(galaxy, path, source="test", snapshot_redshift=0.1, note=None)
    with h5py.File(path, "r") as f:  # the documented layout, exactly
        assert f.attrs["format"] == "rubix_eqx.galaxy" and f.attrs["format_version"] == 1
        units = {k: f["particles"][k].attrs["units"] for k in f["particles"]}
        assert units == {
            "position": "kpc",
            "velocity": "km/s",
            "mass": "Msun",
            "age": "Gyr",
            "metallicity": "Z",
        }
        assert f["particles/position"].shape == (30, 3) and f["particles/mass"].shape == (30,)
    assert eqx.tree_equal(rx.galaxy.from_hdf5(path), galaxy)
    meta = rx.galaxy.hdf5_metadata(path)
    assert meta["source"] == "test" and meta["snapshot_redshift"] == 0.1 and "note" not in meta
    for version, word in ((2, "newer"), (0, "older")):
        with h5py.File(path, "a") as f:
            f.attrs["format_version"] = version
        with pytest.raises(ValueError, match=f"format_version` {version}, {word} than"):
            rx.galaxy.from_hdf5(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1
        f["particles/age"].attrs["units"] = "yr"
    with pytest.raises(ValueError, match="`particles/age` has units 'yr'; expected 'Gyr'"):
        rx.galaxy.from_hdf5(path)
    write_tng(tmp_path / "snap.hdf5", truth(3, 0), 1.0)
    with pytest.raises(ValueError, match="use `rx.galaxy.from_tng`"):
        rx.galaxy.from_hdf5(tmp_path / "snap.hdf5")
    with pytest.raises(ValueError, match="'format' is reserved"):
        rx.galaxy.to_hdf5(galaxy, path, format="x")


def test_cli_convert(tmp_path, capsys):
    import rubix_eqx as rx
    from rubix_eqx.cli import main

    a = 0.9
    t = truth(40, 7, centre=(100.0, 100.0, 100.0), a_snap=a)
    write_tng(tmp_path / "cutout.hdf5", t, a, wind=(0,))
    out = tmp_path / "galaxy.h5"
    assert (
        main(["convert", str(tmp_path / "cutout.hdf5"), "--loader", "tng", "--out", str(out)]) == 0
    )
    assert "39 star particles" in capsys.readouterr().out
    galaxy = rx.galaxy.from_hdf5(out)
    assert eqx.tree_equal(galaxy, rx.galaxy.from_tng(tmp_path / "cutout.hdf5"))
    meta = rx.galaxy.hdf5_metadata(out)
    assert meta["loader"] == "tng" and meta["n_wind_excluded"] == 1 and meta["centred"]
    assert main(["convert", str(tmp_path / "cutout.hdf5"), "--loader", "tng", "--subhalo-id", "3",
                 "--out", str(out)]) == 1  # fmt: skip
    assert "need `catalog=`" in capsys.readouterr().err
