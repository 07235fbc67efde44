import gc
import importlib.resources
import os
import warnings
from pathlib import Path

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
import rubix_eqx as rx

from .helpers import central_difference, make_ssp, max_rel_err, SSP_AGES, SSP_METALLICITIES


def grid_fields(ssp, **changes):
    fields = {
        k: getattr(ssp, k)
        for k in ("age", "metallicity", "wavelength", "flux", "fwhm", "remaining_mass_fraction")
    }
    fields.update(changes)
    return fields


# ------------------------------------------------------------------------------- validation


def test_make_ssp_is_valid():
    ssp = make_ssp()
    assert ssp.flux.shape == (4, 3, 64)
    assert ssp.n_templates == 12
    np.testing.assert_allclose(ssp.log_age, np.log10(SSP_AGES))
    np.testing.assert_allclose(ssp.log_metallicity, np.log10(SSP_METALLICITIES))


@pytest.mark.parametrize(
    "field, transform, message",
    [
        ("age", lambda a: a[::-1], r"SSPGrid\.age` must be strictly increasing"),
        ("age", lambda a: a.at[2].set(a[1]), r"SSPGrid\.age` must be strictly increasing"),
        ("metallicity", lambda a: a[::-1], r"SSPGrid\.metallicity` must be strictly increasing"),
        (
            "wavelength",
            lambda a: a.at[10].set(a[9]),
            r"SSPGrid\.wavelength` must be strictly increasing",
        ),
        ("age", lambda a: a - a[1], r"SSPGrid\.age` is not positive"),
        ("metallicity", lambda a: a.at[0].set(0.0), r"SSPGrid\.metallicity` is not positive"),
        ("flux", lambda a: a.at[1, 2, 3].set(-1e-9), r"SSPGrid\.flux` is negative for 1 of 768"),
        ("flux", lambda a: a.at[0, 0, 0].set(jnp.nan), r"SSPGrid\.flux` is NaN or infinite"),
        ("fwhm", lambda a: a.at[5].set(0.0), r"SSPGrid\.fwhm` is not positive"),
    ],
)
def test_invalid_grid_raises_value_error(field, transform, message):
    ssp = make_ssp()
    with pytest.raises(ValueError, match=message):
        rx.SSPGrid(**grid_fields(ssp, **{field: transform(getattr(ssp, field))}))


def test_single_node_axis_raises_value_error():
    ssp = make_ssp()
    fields = grid_fields(
        ssp,
        age=ssp.age[:1],
        flux=ssp.flux[:1],
        remaining_mass_fraction=ssp.remaining_mass_fraction[:1],
    )
    with pytest.raises(ValueError, match=r"SSPGrid\.age` needs at least 2 entries"):
        rx.SSPGrid(**fields)


@pytest.mark.parametrize(
    "field, shape",
    [
        ("flux", (4, 3, 63)),  # wavelength mismatch
        ("flux", (3, 4, 64)),  # age/Z swapped
        ("flux", (12, 64)),  # wrong rank
        ("fwhm", (63,)),
        ("remaining_mass_fraction", (4, 2)),
    ],
)
def test_shape_mismatch_raises_type_check_error(field, shape):
    with pytest.raises(jaxtyping.TypeCheckError):
        rx.SSPGrid(**grid_fields(make_ssp(), **{field: jnp.ones(shape)}))


# ------------------------------------------------------------------------------------- HDF5


def test_hdf5_round_trip_is_exact(tmp_path):
    ssp = make_ssp(dtype=jnp.float32)
    path = tmp_path / "grid.h5"
    ssp.to_hdf5(path)
    back = rx.SSPGrid.from_hdf5(path)
    assert eqx.tree_equal(back, ssp, typematch=True)
    assert (back.name, back.citation, back.licence) == (ssp.name, ssp.citation, ssp.licence)
    assert sorted(os.listdir(tmp_path)) == ["grid.h5"]  # no temporary file left


def test_hdf5_stores_float32(tmp_path):
    ssp = make_ssp()  # float64
    ssp.to_hdf5(tmp_path / "grid.h5")
    back = rx.SSPGrid.from_hdf5(tmp_path / "grid.h5")
    assert back.flux.dtype == jnp.float32
    np.testing.assert_array_equal(back.flux, np.asarray(ssp.flux, np.float32))


def _corrupt(path: Path, how: str) -> None:
    if how == "not hdf5":
        path.write_text("age,metallicity\n1,0.02\n")
        return
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    with h5py.File(path, "a") as f:
        if how == "missing dataset":
            del f["fwhm"]
        elif how == "group not dataset":
            del f["age"]
            f.create_group("age")
        elif how == "missing units":
            del f["wavelength"].attrs["units"]
        elif how == "wrong units":
            f["flux"].attrs["units"] = "erg/s/cm2/Angstrom"
        elif how == "format_version":
            f.attrs["format_version"] = 2
        elif how == "format":
            f.attrs["format"] = "something.else"


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing dataset", r"missing dataset `fwhm`"),
        ("group not dataset", r"missing dataset `age`"),
        ("missing units", r"dataset `wavelength` has units None"),
        (
            "wrong units",
            r"dataset `flux` has units 'erg/s/cm2/Angstrom'; expected 'Lsun/Angstrom/Msun'",
        ),
        ("format_version", r"`format_version` 2 is not supported"),
        ("format", r"attribute `format` is 'something.else'"),
        ("not hdf5", r"not a readable HDF5 file"),
        ("truncated", r"not a readable HDF5 file"),
    ],
)
def test_malformed_hdf5_raises_and_is_not_modified(tmp_path, how, message):
    path = tmp_path / "bad_grid.h5"
    make_ssp().to_hdf5(path)
    _corrupt(path, how)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"bad_grid\.h5: .*{message}"):
        rx.SSPGrid.from_hdf5(path)
    assert path.read_bytes() == before


def test_hdf5_inconsistent_shapes_name_the_file(tmp_path):
    path = tmp_path / "bad_grid.h5"
    make_ssp().to_hdf5(path)
    with h5py.File(path, "a") as f:
        del f["fwhm"]
        f.create_dataset("fwhm", data=np.ones(10, np.float32)).attrs["units"] = "Angstrom"
    with pytest.raises(ValueError, match=r"bad_grid\.h5.*fwhm"):
        rx.SSPGrid.from_hdf5(path)


def test_missing_hdf5_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        rx.SSPGrid.from_hdf5(tmp_path / "nothing.h5")


def test_failed_write_is_atomic(tmp_path, monkeypatch):
    ssp = make_ssp()
    target = tmp_path / "grid.h5"
    ssp.to_hdf5(target)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError, match="simulated"):
        ssp.to_hdf5(target)  # overwrite fails: the old file survives intact
    with pytest.raises(OSError, match="simulated"):
        ssp.to_hdf5(tmp_path / "new.h5")
    assert sorted(os.listdir(tmp_path)) == ["grid.h5"]
    assert target.read_bytes() == before


# ----------------------------------------------------------------------------- interpolation

AGE_NODES, Z_NODES = np.meshgrid(SSP_AGES, SSP_METALLICITIES, indexing="ij")


@eqx.filter_jit
def spectra(ssp, age, metallicity):
    """`ssp.spectrum` for many populations (one compilation instead of many eager ops)."""
    return jax.vmap(ssp.spectrum)(age, metallicity)


weights_jit = eqx.filter_jit(rx.ssp.ssp_weights)


def test_weights_structure():
    ssp = make_ssp()
    age = jnp.array([0.2, 0.5, 3.0, 10.0, 50.0])
    z = jnp.array([0.01, 0.004, 0.025, 0.03, 0.019])
    w = weights_jit(ssp, age, z)
    assert w.index.shape == (5, 4) and w.weight.shape == (5, 4) and w.clipped.shape == (5,)
    np.testing.assert_allclose(w.weight.sum(1), 1.0, rtol=1e-14)
    assert np.all(np.asarray(w.weight) >= 0)
    # age 0.2 in cell 0 (0.1-0.5), Z 0.01 in cell 0 (0.004-0.019): nodes (0,0),(1,0),(0,1),(1,1).
    n_z = len(SSP_METALLICITIES)
    np.testing.assert_array_equal(w.index[0], [0 * n_z + 0, 1 * n_z + 0, 0 * n_z + 1, 1 * n_z + 1])
    t_age = np.log10(0.2 / 0.1) / np.log10(0.5 / 0.1)
    t_z = np.log10(0.01 / 0.004) / np.log10(0.019 / 0.004)
    expect = [(1 - t_age) * (1 - t_z), t_age * (1 - t_z), (1 - t_age) * t_z, t_age * t_z]
    np.testing.assert_allclose(w.weight[0], expect, rtol=1e-12)
    np.testing.assert_array_equal(w.clipped, [False, False, False, False, True])


def test_spectrum_at_nodes_equals_template():
    ssp = make_ssp()
    got = spectra(ssp, jnp.asarray(AGE_NODES.ravel()), jnp.asarray(Z_NODES.ravel()))
    templates = np.asarray(ssp.flux).reshape(ssp.n_templates, -1)
    assert max_rel_err(got, templates) <= 1e-6


def test_spectrum_at_nodes_float32_grid():
    ssp = make_ssp(dtype=jnp.float32)
    got = spectra(ssp, jnp.asarray(AGE_NODES.ravel()), jnp.asarray(Z_NODES.ravel()))
    assert max_rel_err(got, np.asarray(ssp.flux).reshape(ssp.n_templates, -1)) <= 1e-6


@pytest.mark.parametrize("i_age, i_z", [(0, 0), (1, 1), (2, 2)])
def test_spectrum_halfway_in_log_age_is_mean(i_age, i_z):
    ssp = make_ssp()
    age = np.sqrt(SSP_AGES[i_age] * SSP_AGES[i_age + 1])
    spec = spectra(ssp, jnp.asarray([age]), jnp.asarray([SSP_METALLICITIES[i_z]]))[0]
    expect = 0.5 * (np.asarray(ssp.flux[i_age, i_z]) + np.asarray(ssp.flux[i_age + 1, i_z]))
    assert max_rel_err(spec, expect) <= 1e-12


def test_clipping_outside_grid():
    ssp = make_ssp()
    age = jnp.array([0.0, 0.01, 20.0, 1.0, 1.0, 1.0, 1e3])
    z = jnp.array([0.019, 0.019, 0.019, 1e-5, 0.5, 0.019, 1.0])
    w = weights_jit(ssp, age, z)
    np.testing.assert_array_equal(w.clipped, [True, True, True, True, True, False, True])
    assert int(w.clipped.sum()) == 6
    got = spectra(ssp, age, z)
    assert np.all(np.isfinite(got))
    edge = spectra(
        ssp,
        jnp.array([0.1, 0.1, 10.0, 1.0, 1.0, 1.0, 10.0]),
        jnp.array([0.019, 0.019, 0.019, 0.004, 0.03, 0.019, 0.03]),
    )
    np.testing.assert_allclose(got, edge, rtol=1e-12)


def test_age_zero_has_finite_zero_gradient():
    ssp = make_ssp()
    g = eqx.filter_jit(jax.grad(lambda a: ssp.spectrum(a, jnp.asarray(0.019)).sum()))(
        jnp.asarray(0.0)
    )
    assert float(g) == 0.0


@pytest.mark.parametrize("age, z", [(0.8, 0.01), (4.0, 0.025)])
def test_gradient_matches_finite_differences(age, z):
    ssp = make_ssp()
    weights = jnp.linspace(0.5, 1.5, ssp.wavelength.shape[0])

    def scalar(a, m):
        return jnp.sum(weights * ssp.spectrum(a, m))

    grad_age, grad_z = jax.grad(scalar, argnums=(0, 1))(jnp.asarray(age), jnp.asarray(z))
    fd_age = central_difference(lambda a: scalar(jnp.asarray(a), jnp.asarray(z)), age)
    fd_z = central_difference(lambda m: scalar(jnp.asarray(age), jnp.asarray(m)), z)
    assert float(grad_age) == pytest.approx(fd_age, rel=1e-6)
    assert float(grad_z) == pytest.approx(fd_z, rel=1e-6)
    assert float(grad_age) != 0 and float(grad_z) != 0


# ------------------------------------------------------------------------------------ MILES

# Bessell (1990, PASP 102, 1181), Table 2: V response, 470-700 nm every 10 nm.
BESSELL_V_WAVE = np.arange(4700.0, 7001.0, 100.0)
BESSELL_V = np.array([
    0.0, 0.030, 0.163, 0.458, 0.780, 0.967, 1.000, 0.973, 0.898, 0.792, 0.684, 0.574,
    0.461, 0.359, 0.270, 0.197, 0.135, 0.081, 0.045, 0.025, 0.017, 0.013, 0.009, 0.0,
])  # fmt: skip
AB_MINUS_VEGA_V = 0.02  # Blanton & Roweis (2007, AJ 133, 734), Table 1
L_SUN = 3.828e33  # erg/s (IAU 2015 nominal)
TEN_PC_CM = 3.0856775814913673e19
C_ANGSTROM = 2.99792458e18  # Angstrom/s
MH = np.array([-1.71, -1.31, -0.71, -0.40, 0.00, 0.22])  # E-MILES file names' [M/H]
# The Padova 2000 isochrones' Z at those labels (Vazdekis et al. 2010, MNRAS 404, 1639).
PADOVA_Z = np.array([0.0004, 0.001, 0.004, 0.008, 0.019, 0.03])


@pytest.fixture(scope="module")
def miles():
    pytest.importorskip("ppxf")
    return rx.SSPGrid.load("miles")


def test_miles_conversion_closes_its_files():
    pytest.importorskip("ppxf")
    from rubix_eqx.ssp._miles import convert_miles, ppxf_miles_dir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_miles(ppxf_miles_dir())
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked


def test_miles_grid(miles):
    assert miles.flux.shape[:2] == (25, 6)
    assert miles.flux.shape[2] == miles.wavelength.shape[0] == miles.fwhm.shape[0]
    assert float(miles.age[0]) == pytest.approx(0.0631, rel=1e-4)
    assert float(miles.age[-1]) == pytest.approx(15.85, rel=1e-3)
    # The nodes are the isochrones' own Z, labelled by [M/H] (not 0.019·10^[M/H], which
    # would put the +0.22 node at Z = 0.0315 and the -1.71 node at 0.00037).
    np.testing.assert_allclose(miles.metallicity, PADOVA_Z, rtol=1e-6)
    np.testing.assert_allclose(miles.metallicity_label, MH, atol=1e-12)
    wave = np.asarray(miles.wavelength, np.float64)
    assert wave[0] == pytest.approx(1680.2, abs=0.01)
    assert wave[-1] == pytest.approx(8950.4, abs=0.01)
    np.testing.assert_allclose(np.diff(wave), 0.9, atol=2e-3)
    fwhm = np.asarray(miles.fwhm)
    np.testing.assert_allclose(fwhm[wave >= 3540.5], 2.51, rtol=1e-6)
    np.testing.assert_allclose(fwhm[wave < 3540.5], 3.0, rtol=1e-6)
    assert np.all(np.asarray(miles.flux) > 0)
    rmf = np.asarray(miles.remaining_mass_fraction)
    assert np.all((rmf > 0.4) & (rmf <= 1.0))
    assert "non-commercial" in miles.licence.lower()
    assert "Vazdekis" in miles.citation


def test_miles_second_load_uses_cache(miles, monkeypatch):
    from rubix_eqx.ssp import _miles

    assert (rx.ssp.cache_dir() / _miles.CACHE_NAME).is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(_miles, "convert_miles", no_conversion)
    assert eqx.tree_equal(rx.SSPGrid.load("miles"), miles)


def test_miles_cache_of_another_version_is_converted_again(miles, tmp_path, monkeypatch):
    """A cache file of another `cache_version` (or none: version 1 had Z = 0.019·10^[M/H]
    nodes) is rebuilt; the rebuilt file is then read without converting."""
    from rubix_eqx.ssp import _miles

    monkeypatch.setenv("RUBIX_EQX_CACHE", str(tmp_path))
    stale = eqx.tree_at(lambda g: g.metallicity, miles, 0.019 * 10.0 ** jnp.asarray(MH))
    stale.to_hdf5(tmp_path / _miles.CACHE_NAME)  # the plain layout: no `cache_version`
    rebuilt = rx.SSPGrid.load("miles")
    np.testing.assert_allclose(rebuilt.metallicity, PADOVA_Z, rtol=1e-6)
    assert rebuilt.metallicity_label == tuple(MH)
    with h5py.File(tmp_path / _miles.CACHE_NAME, "r") as f:
        assert int(f.attrs["cache_version"]) == _miles.CACHE_VERSION >= 2
        np.testing.assert_allclose(f.attrs["metallicity_label"], MH)
    assert _miles.CACHE_NAME.endswith(f"_v{_miles.CACHE_VERSION}.h5")

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(_miles, "convert_miles", no_conversion)
    assert eqx.tree_equal(rx.SSPGrid.load("miles"), rebuilt)


def test_metallicity_labels_are_checked():
    ssp = make_ssp()
    labelled = rx.SSPGrid(**grid_fields(ssp), metallicity_label=(-0.68, 0.0, 0.2))
    assert labelled.metallicity_label == (-0.68, 0.0, 0.2)
    with pytest.raises(ValueError, match=r"`SSPGrid\.metallicity_label` has 2 entries for 3"):
        rx.SSPGrid(**grid_fields(ssp), metallicity_label=(0.0, 0.2))
    with pytest.raises(ValueError, match=r"`SSPGrid\.metallicity_label` must be finite and"):
        rx.SSPGrid(**grid_fields(ssp), metallicity_label=(0.0, -0.5, 0.2))


def test_isochrone_metallicity_rejects_labels_off_the_padova_grid():
    from rubix_eqx.ssp._miles import isochrone_metallicity

    np.testing.assert_allclose(isochrone_metallicity(MH, Path("x")), PADOVA_Z)
    np.testing.assert_allclose(isochrone_metallicity([-2.32], Path("x")), [0.0001])
    with pytest.raises(ValueError, match=r"\[M/H\] = \+0\.06 are not on the Padova 2000"):
        isochrone_metallicity([0.06], Path("basti"))


def _miles_table_v(path: Path, imf=1.30, mh=0.0, age=10.0) -> float:
    header, rows = None, []
    for line in path.read_text().splitlines():
        if line.startswith("#IMFslope"):
            header = line.lstrip("#").split()
        elif line.startswith("UN"):
            rows.append(line.split()[1:])  # drop the IMF-type column ("UN")
    assert header is not None
    col = {name: i for i, name in enumerate(header)}
    for row in rows:
        values = [float(v) for v in row[: len(header)]]
        if (values[col["IMFslope"]], values[col["[M/H]"]], values[col["Age"]]) == (imf, mh, age):
            return values[col["V"]]
    raise LookupError("row not found")


def test_miles_absolute_v_magnitude(miles):
    from rubix_eqx.ssp._miles import ppxf_miles_dir

    table_v = _miles_table_v(ppxf_miles_dir() / "Vazdekis2012_ssp_phot_Padova00_UN_v10.0.txt")
    assert table_v == 7.127
    i_age = int(np.argmin(np.abs(np.asarray(miles.age) - 10.0)))
    i_z = int(np.argmin(np.abs(np.asarray(miles.metallicity) - 0.019)))
    wave = np.asarray(miles.wavelength, np.float64)
    l_lambda = np.asarray(miles.flux[i_age, i_z], np.float64)  # Lsun/A per Msun
    f_lambda = l_lambda * L_SUN / (4 * np.pi * TEN_PC_CM**2)  # erg/s/cm2/A at 10 pc
    f_nu = f_lambda * wave**2 / C_ANGSTROM
    response = np.interp(wave, BESSELL_V_WAVE, BESSELL_V, left=0.0, right=0.0)
    # Photon-weighted mean f_nu: <f_nu> = ∫ f_nu R dλ/λ / ∫ R dλ/λ.
    mean_f_nu = np.trapezoid(f_nu * response / wave, wave) / np.trapezoid(response / wave, wave)
    m_v = -2.5 * np.log10(mean_f_nu) - 48.60 + AB_MINUS_VEGA_V
    assert m_v == pytest.approx(table_v, abs=0.05)


def test_miles_without_ppxf_says_how_to_install(tmp_path, monkeypatch):
    real_files = importlib.resources.files

    def files(package):
        if package == "ppxf":
            raise ModuleNotFoundError("No module named 'ppxf'")
        return real_files(package)

    monkeypatch.setattr(importlib.resources, "files", files)
    monkeypatch.setenv("RUBIX_EQX_CACHE", str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'rubix-eqx\[miles\]'"):
        rx.SSPGrid.load("miles")
    assert os.listdir(tmp_path) == []


def test_unknown_grid_name():
    with pytest.raises(ValueError, match=r"SSPGrid\.load\(name='bc03'\)"):
        rx.SSPGrid.load("bc03")
