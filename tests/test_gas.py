"""The `Gas` pytree, the TNG/EAGLE gas loaders (unit conversions) and the synthetic gas disk."""

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from .test_loaders import EAGLE, TNG, truth, write_eagle, write_tng


K_B, M_P = 1.380649e-16, 1.67262192369e-24


def gas_truth(n, seed, centre):
    rng = np.random.default_rng(seed)
    return {
        "pos": np.asarray(centre) + rng.normal(0, 4.0, (n, 3)),
        "vel": rng.normal(0, 50.0, (n, 3)) + np.array([300.0, -50.0, 20.0]),
        "mass": rng.uniform(1e5, 1e6, n),
        "Z": rng.uniform(0.001, 0.03, n),
        "sfr": np.where(rng.uniform(size=n) < 0.5, rng.uniform(0, 0.01, n), 0.0),
        "T": 10 ** rng.uniform(3.8, 6.5, n),
        "x_e": rng.uniform(0.0, 1.2, n),
        "rho": rng.uniform(1e5, 1e8, n),  # M☉/kpc³, physical
        "h": rng.uniform(0.1, 2.0, n),
    }


def _gas_kwargs(n=4):
    return dict(
        position=np.zeros((n, 3)), velocity=np.zeros((n, 3)), mass=np.ones(n),
        metallicity=np.full(n, 0.01), sfr=np.zeros(n), temperature=np.full(n, 1e4),
        smoothing_length=np.ones(n),
    )  # fmt: skip


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("sfr", -1.0, "`Gas.sfr` is negative"),
        ("temperature", np.nan, "`Gas.temperature` is NaN or infinite"),
        ("temperature", 0.0, "`Gas.temperature` is not positive"),
        ("mass", -2.0, "`Gas.mass` is negative"),
        ("smoothing_length", 0.0, "`Gas.smoothing_length` is not positive"),
        ("metallicity", 0.0, "`Gas.metallicity` is not positive"),
    ],
)
def test_gas_bad_values(field, value, match):
    kwargs = _gas_kwargs()
    kwargs[field] = kwargs[field].copy()
    kwargs[field][2] = value
    with pytest.raises(ValueError, match=match):
        rx.galaxy.Gas(**kwargs)


def test_gas_shapes_types_and_traced_checks():
    kwargs = _gas_kwargs()
    kwargs["sfr"] = np.zeros(3)
    with pytest.raises(ValueError, match="`Gas.sfr` has 3 elements but `Gas.mass` has 4"):
        rx.galaxy.Gas(**kwargs)
    kwargs = _gas_kwargs()
    kwargs["position"] = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"`Gas.position` must have shape \(n, 3\)"):
        rx.galaxy.Gas(**kwargs)
    kwargs = _gas_kwargs()
    kwargs["temperature"] = np.array(["hot"] * 4)
    with pytest.raises(TypeError, match="`Gas.temperature` must be numeric"):
        rx.galaxy.Gas(**kwargs)
    gas = rx.galaxy.Gas(**_gas_kwargs())
    assert gas.select(slice(0, 2)).n_particles == 2
    total = eqx.filter_jit(lambda g: sum(jnp.sum(x) for x in jax.tree.leaves(g.checked())))
    assert float(total(gas)) > 0
    bad = eqx.tree_at(lambda g: g.temperature, gas, jnp.asarray([1e4, 1e4, jnp.nan, 1e4]))
    with pytest.raises(eqx.EquinoxRuntimeError, match="Gas.temperature"):
        total(bad)


def write_tng_gas(path, g, a, h):
    with h5py.File(path, "a") as f:
        p0 = f.create_group("PartType0")
        p0["Coordinates"] = g["pos"] * h / a
        p0["Velocities"] = g["vel"] / np.sqrt(a)
        p0["Masses"] = g["mass"] * h / 1e10
        p0["GFM_Metallicity"] = g["Z"]
        p0["StarFormationRate"] = g["sfr"]
        mu = 4 * M_P / (1 + 3 * 0.76 + 4 * 0.76 * g["x_e"])
        p0["InternalEnergy"] = g["T"] * K_B / (2 / 3) / mu / 1e10  # (km/s)²
        p0["ElectronAbundance"] = g["x_e"]
        p0["Density"] = g["rho"] / 1e10 * h / (h / a) ** 3  # 1e10 M☉/h / (ckpc/h)³


def test_tng_gas_units_temperature_and_frame(tmp_path):
    a, h = 0.8, TNG["h"]
    centre = (1000.0, 2000.0, 3000.0)
    stars, gas_in = truth(300, 1, centre=centre, a_snap=a), gas_truth(200, 2, centre)
    path = tmp_path / "cutout.hdf5"
    write_tng(path, stars, a)
    write_tng_gas(path, gas_in, a, h)
    raw, info = rx.galaxy._tng.load_tng_gas(path, centre=False)
    np.testing.assert_allclose(raw.position, gas_in["pos"], rtol=1e-12)
    np.testing.assert_allclose(raw.velocity, gas_in["vel"], rtol=1e-12)
    np.testing.assert_allclose(raw.mass, gas_in["mass"], rtol=1e-12)
    np.testing.assert_allclose(raw.sfr, gas_in["sfr"], rtol=1e-12)
    sf = gas_in["sfr"] > 0
    np.testing.assert_allclose(raw.temperature[~sf], gas_in["T"][~sf], rtol=1e-10)
    np.testing.assert_allclose(raw.temperature[sf], 1e4)  # effective EOS → 10⁴ K
    assert info["n_eos_temperature_set"] == int(sf.sum())
    volume = gas_in["mass"] / gas_in["rho"]
    np.testing.assert_allclose(
        raw.smoothing_length, (3 * 32 * volume / (4 * np.pi)) ** (1 / 3), rtol=1e-10
    )
    keep = rx.galaxy.from_tng_gas(path, centre=False, eos_temperature=None)
    np.testing.assert_allclose(keep.temperature, gas_in["T"], rtol=1e-10)
    # gas in the frame of the stars: the same transform as from_tng's
    galaxy = rx.galaxy.from_tng(path, align=True)
    gas = rx.galaxy.from_tng_gas(path, align=True)
    box = rx.galaxy.from_tng(path, centre=False)
    offset = np.asarray(box.position[0]) - np.asarray(raw.position[0])
    rot_pos = np.asarray(galaxy.position[0]) - np.asarray(gas.position[0])
    # positions: R (x_star − x_gas) is preserved
    mat = np.linalg.lstsq(
        np.asarray(box.position) - np.asarray(box.position).mean(0),
        np.asarray(galaxy.position) - np.asarray(galaxy.position).mean(0),
        rcond=None,
    )[0]
    np.testing.assert_allclose(offset @ mat, rot_pos, atol=1e-8)


def test_eagle_gas_units(tmp_path):
    a, h = 0.9, EAGLE["h"]
    stars = truth(100, 3, centre=(5000.0, 5000.0, 5000.0), a_snap=a)
    g = gas_truth(80, 4, (5000.0, 5000.0, 5000.0))
    path = tmp_path / "snap.hdf5"
    write_eagle(path, stars, a, np.ones(100), np.zeros(100))

    def dataset(group, name, values, cgs, aexp, hexp):
        d = group.create_dataset(name, data=values)
        d.attrs["CGSConversionFactor"] = cgs
        d.attrs["aexp-scale-exponent"] = aexp
        d.attrs["h-scale-exponent"] = hexp

    with h5py.File(path, "a") as f:
        f["Constants"].attrs["SEC_PER_YEAR"] = 3.15576e7
        p0 = f.create_group("PartType0")
        dataset(p0, "Coordinates", g["pos"] / 1e3 * h / a, 3.085678e24, 1.0, -1.0)
        dataset(p0, "Velocity", g["vel"] / np.sqrt(a), 1e5, 0.5, 0.0)
        dataset(p0, "Mass", g["mass"] * h / 1e10, 1.989e43, 0.0, -1.0)
        dataset(p0, "SmoothedMetallicity", g["Z"], 1.0, 0.0, 0.0)
        dataset(p0, "StarFormationRate", g["sfr"], 1.989e33 / 3.15576e7, 0.0, 0.0)
        dataset(p0, "Temperature", g["T"], 1.0, 0.0, 0.0)
        dataset(p0, "SmoothingLength", g["h"] / 1e3 * h / a, 3.085678e24, 1.0, -1.0)
    gas = rx.galaxy.from_eagle_gas(path, centre=False, eos_temperature=None)
    np.testing.assert_allclose(gas.position, g["pos"], rtol=1e-10)
    np.testing.assert_allclose(gas.velocity, g["vel"], rtol=1e-10)
    np.testing.assert_allclose(gas.mass, g["mass"], rtol=1e-10)
    np.testing.assert_allclose(gas.sfr, g["sfr"], rtol=1e-10)
    np.testing.assert_allclose(gas.temperature, g["T"], rtol=1e-12)
    np.testing.assert_allclose(gas.smoothing_length, g["h"], rtol=1e-10)
    centred = rx.galaxy.from_eagle_gas(path)
    stars_c = rx.galaxy.from_eagle(path)
    raw_stars = rx.galaxy.from_eagle(path, centre=False)
    shift = np.asarray(raw_stars.position[0] - stars_c.position[0])
    np.testing.assert_allclose(np.asarray(gas.position) - shift, centred.position, atol=1e-8)
    np.testing.assert_allclose(centred.temperature[g["sfr"] > 0], 1e4)


def test_synthetic_gas_disk_truth():
    make = jax.jit(lambda k: rx.galaxy.synthetic_gas_disk(k, 2000, total_sfr=3.0, sf_radius=8.0))
    gas = rx.galaxy.Gas(**{k: v for k, v in vars(make(jax.random.key(1))).items()})  # checked
    radius = np.hypot(gas.position[:, 0], gas.position[:, 1])
    assert float(gas.sfr.sum()) == pytest.approx(3.0, rel=1e-12)
    assert np.all(np.asarray(gas.sfr)[radius >= 8.0] == 0)
    # rotation: mean tangential velocity follows v_flat tanh(R / r_turn)
    v_t = (
        gas.position[:, 0] * gas.velocity[:, 1] - gas.position[:, 1] * gas.velocity[:, 0]
    ) / radius
    ring = (radius > 6) & (radius < 10)
    expected = 200 * np.tanh(radius[ring] / 2.0)
    assert float(np.mean(np.asarray(v_t)[ring] - expected)) == pytest.approx(0.0, abs=1.5)
    mh = np.log10(np.asarray(gas.metallicity) / 0.019)
    np.testing.assert_allclose(mh, 0.1 - 0.03 * radius, atol=1e-12)
    # total Hα of the disk = Σ SFR × 10^41.27 erg/s
    lum = jax.jit(rx.physics.line_luminosities)(gas.sfr, gas.metallicity)
    halpha = float(lum[:, rx.physics.line_index("Halpha")].sum())
    assert halpha == pytest.approx(3.0 * 10**41.27, rel=1e-12)
