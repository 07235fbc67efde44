"""Readers of public SSP formats (DSPS HDF5, pPXF 9 .npz), our HDF5 layout's optional
`metallicity_label`, and where E-MILES is found. Every file here is synthetic, written by
the test: no MILES (or other) spectrum is used or stored."""

import dataclasses
import logging
import os

import equinox as eqx
import h5py
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from .helpers import make_ssp


C = 2.99792458e18  # Å/s
LG_AGE = np.log10([0.1, 1.0, 10.0])  # log10(age / Gyr)
LGMET = np.log10([0.004, 0.019])  # log10 Z


def _n_index(vacuum):
    """Refractive index of standard air, Morton (2000) eq. 8 (independent of the package)."""
    s2 = (1e4 / vacuum) ** 2
    return 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)


def _air_to_vacuum(air):
    """Vacuum wavelengths of air wavelengths (fixed point) and dλ_vac/dλ_air (numerical)."""

    def to_vac(a):
        v = a.copy()
        for _ in range(10):
            v = a * _n_index(v)
        return v

    h = 1e-3
    return to_vac(air), (to_vac(air + h) - to_vac(air - h)) / (2 * h)


def _dsps_flux_nu(wave, lg_age=LG_AGE, lgmet=LGMET):
    """L_ν (Lsun/Hz/Msun) of shape (n_met, n_age, n_wave), distinct per (Z, age)."""
    nu = C / wave
    met = np.arange(len(lgmet))[:, None, None]
    age = np.arange(len(lg_age))[None, :, None]
    return 1e-18 * (1 + met + 10 * age) * (nu / 1e15)[None, None, :] ** (-0.5 - 0.1 * age)


def write_dsps(path, wave=None, age_key="ssp_lg_age_gyr", **changes):
    wave = np.linspace(3000.0, 9000.0, 601) if wave is None else wave
    data = {
        "ssp_lgmet": LGMET,
        age_key: LG_AGE,
        "ssp_wave": wave,
        "ssp_flux": _dsps_flux_nu(wave),
    }
    data.update(changes)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


# ----------------------------------------------------------------------------------- DSPS


def test_dsps_axes_and_layout(tmp_path):
    path = write_dsps(tmp_path / "ssp.h5")
    ssp = rx.SSPGrid.from_dsps(path, fwhm=2.5)
    np.testing.assert_allclose(ssp.age, [0.1, 1.0, 10.0], rtol=1e-6)
    np.testing.assert_allclose(ssp.metallicity, [0.004, 0.019], rtol=1e-6)
    assert ssp.flux.shape == (3, 2, 601)  # (n_age, n_Z, n_wave): DSPS's (n_met, n_age) swapped
    np.testing.assert_array_equal(ssp.remaining_mass_fraction, 1.0)
    np.testing.assert_array_equal(ssp.fwhm, 2.5)
    assert ssp.metallicity_label is None
    assert ssp.name == "DSPS: ssp.h5" and "Hearin" in ssp.citation
    # Vacuum → air (3000 Å vacuum is 2999.13 Å in air).
    assert float(ssp.wavelength[0]) == pytest.approx(3000.0 / _n_index(3000.0), abs=1e-3)
    # Template (age i, Z j) is DSPS's (j, i): ratios of L_ν between templates survive.
    f = np.asarray(ssp.flux, np.float64)
    nu_ratio = _dsps_flux_nu(np.linspace(3000.0, 9000.0, 601))
    np.testing.assert_allclose(f[1, 0] / f[0, 1], nu_ratio[0, 1] / nu_ratio[1, 0], rtol=1e-5)
    np.testing.assert_allclose(f[2, 1] / f[1, 0], nu_ratio[1, 2] / nu_ratio[0, 1], rtol=1e-5)


def test_dsps_flux_is_l_lambda_per_angstrom_of_air(tmp_path):
    """L_λ = L_ν c / λ_vac², per Å of air: the luminosity in a band is conserved."""
    wave = np.linspace(3000.0, 9000.0, 6001)
    ssp = rx.SSPGrid.from_dsps(write_dsps(tmp_path / "ssp.h5", wave=wave), fwhm=2.5)
    l_nu = _dsps_flux_nu(wave)[1, 2]  # Z index 1, age index 2
    nu = C / wave
    lum_nu = np.trapezoid(l_nu[::-1], nu[::-1])
    air = np.asarray(ssp.wavelength, np.float64)
    lum_lambda = np.trapezoid(np.asarray(ssp.flux[2, 1], np.float64), air)
    assert lum_lambda == pytest.approx(lum_nu, rel=2e-6)
    # Pointwise, in vacuum (medium="air" means: already air; then λ_vac > λ_air).
    vac = rx.SSPGrid.from_dsps(tmp_path / "ssp.h5", fwhm=2.5, medium="air")
    np.testing.assert_array_equal(vac.wavelength, np.asarray(wave, np.float32))
    vac_wave, dvac_dair = _air_to_vacuum(wave)
    expect = l_nu * C / vac_wave**2 * dvac_dair
    np.testing.assert_allclose(vac.flux[2, 1], expect, rtol=2e-6)
    # and against astropy's f_ν → f_λ (spectral_density), at the vacuum wavelengths
    from astropy import units as u

    per_hz = (l_nu * u.Lsun / u.Hz).to(u.Lsun / u.AA, u.spectral_density(vac_wave * u.AA))
    np.testing.assert_allclose(vac.flux[2, 1], per_hz.value * dvac_dair, rtol=2e-6)


def test_dsps_below_2000_angstrom_stays_vacuum_and_increasing(tmp_path):
    wave = np.arange(1500.0, 3000.0, 0.2)
    ssp = rx.SSPGrid.from_dsps(write_dsps(tmp_path / "ssp.h5", wave=wave), fwhm=3.0)
    air = np.asarray(ssp.wavelength, np.float64)
    assert np.all(np.diff(air) > 0)
    low = wave < 1999.0
    np.testing.assert_allclose(air[: low.sum()], wave[low], rtol=1e-7)
    # The vacuum pixels overlapping the first converted one (~1999.35 Å) are dropped.
    assert wave.size - air.size == pytest.approx(0.65 / 0.2, abs=1)
    # Below 2000 Å: plain L_ν c / λ².
    expect = _dsps_flux_nu(wave)[0, 1] * C / wave**2
    np.testing.assert_allclose(ssp.flux[1, 0, : low.sum()], expect[low], rtol=1e-6)


def test_dsps_older_age_key_range_and_default_fwhm(tmp_path, caplog):
    path = write_dsps(tmp_path / "old.h5", age_key="ssp_lg_age")
    with caplog.at_level(logging.WARNING, logger="rubix_eqx.ssp._formats"):
        ssp = rx.SSPGrid.from_dsps(path, wavelength_range=(4000.0, 6000.0), name="old")
    assert "assuming FWHM = 2 pixels" in caplog.text
    air = np.asarray(ssp.wavelength)
    assert air[0] >= 4000.0 and air[-1] <= 6000.0 and air.size > 100
    np.testing.assert_allclose(ssp.fwhm, 2 * 10.0 / _n_index(5000.0), rtol=1e-3)
    assert ssp.name == "old"
    spec = ssp.spectrum(jnp.asarray(1.0), jnp.asarray(0.019))
    np.testing.assert_allclose(spec, ssp.flux[1, 1], rtol=1e-6)


def _dsps_bad(tmp_path, how):
    path = tmp_path / "bad_dsps.h5"
    wave = np.linspace(3000.0, 9000.0, 601)
    good = _dsps_flux_nu(wave)
    changes = {
        "missing": {"ssp_wave": None},
        "shape": {"ssp_flux": np.transpose(good, (1, 0, 2))},
        "ages": {"ssp_lg_age_gyr": LG_AGE[[0, 2, 1]]},
        "years": {"ssp_lg_age_gyr": LG_AGE + 9.0},
        "lgmet": {"ssp_lgmet": np.array([-0.5, 0.0])},
        "negative": {"ssp_flux": good * np.where(np.arange(601) == 7, -1.0, 1.0)},
        "nan": {"ssp_flux": np.where(np.arange(601) == 3, np.nan, good)},
        "text": {"ssp_lgmet": np.array([b"a", b"b"])},
    }
    if how == "not hdf5":
        path.write_text("not hdf5")
        return path
    return write_dsps(path, wave=wave, **changes[how])


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", r"missing dataset `ssp_wave` \[Angstrom\]"),
        ("shape", r"`ssp_flux` must have shape \(n_met, n_age, n_wave\) = \(2, 3, 601\); got "),
        ("ages", r"`ssp_lg_age_gyr` \[log10 Gyr\] must be strictly increasing; entry 2"),
        ("years", r"`ssp_lg_age_gyr` reaches 10, i.e. an age of 10\^10 Gyr; .*log10\(age / yr\)"),
        ("lgmet", r"`ssp_lgmet` reaches 0, i.e. Z ≥ 1"),
        ("negative", r"`ssp_flux` \[Lsun/Hz/Msun\] is negative for 6 of 3606 values"),
        ("nan", r"`ssp_flux` \[Lsun/Hz/Msun\] is NaN or infinite for 6 of 3606"),
        ("text", r"dataset `ssp_lgmet` must be numeric"),
        ("not hdf5", r"not a readable HDF5 file"),
    ],
)
def test_dsps_bad_files_name_file_field_and_problem(tmp_path, how, message):
    path = _dsps_bad(tmp_path, how)
    with pytest.raises(ValueError, match=rf"bad_dsps\.h5: .*{message}"):
        rx.SSPGrid.from_dsps(path, fwhm=2.5)


def test_dsps_bad_arguments(tmp_path):
    path = write_dsps(tmp_path / "ssp.h5")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        rx.SSPGrid.from_dsps(tmp_path / "nothing.h5")
    with pytest.raises(ValueError, match=r"ssp\.h5: `medium` must be one of"):
        rx.SSPGrid.from_dsps(path, medium="water")
    with pytest.raises(ValueError, match=r"ssp\.h5: `fwhm` must be a scalar or have one value"):
        rx.SSPGrid.from_dsps(path, fwhm=np.ones(3))
    with pytest.raises(ValueError, match=r"ssp\.h5: `fwhm` \[Angstrom\] is not positive"):
        rx.SSPGrid.from_dsps(path, fwhm=0.0)
    with pytest.raises(ValueError, match=r"`wavelength_range=\(1000.0, 1001.0\)` keeps 0"):
        rx.SSPGrid.from_dsps(path, fwhm=2.5, wavelength_range=(1000.0, 1001.0))


# ------------------------------------------------------------------------------ pPXF .npz

AGES = np.array([0.1, 1.0, 10.0])  # Gyr
METALS = np.array([-0.4, 0.0, 0.22])  # [M/H]


def ppxf_arrays(n_wave=200):
    lam = np.linspace(3500.0, 7500.0, n_wave)
    a = np.arange(3)[None, :, None]
    z = np.arange(3)[None, None, :]
    templates = 1e-4 * (1 + a + 10 * z) * (lam[:, None, None] / 5000.0) ** (-1.0 + 0.3 * a)
    masses = 1.0 - 0.1 * np.arange(3)[:, None] - 0.01 * np.arange(3)[None, :]
    return {
        "templates": templates,
        "lam": lam,
        "ages": AGES,
        "metals": METALS,
        "masses": masses,
        "fwhm": np.float64(2.51),
    }


def write_npz(path, **changes):
    arrays = ppxf_arrays()
    arrays.update(changes)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_ppxf_npz_round_trip(tmp_path):
    arrays = ppxf_arrays()
    ssp = rx.SSPGrid.from_ppxf_npz(write_npz(tmp_path / "spectra_test_9.0.npz"))
    np.testing.assert_allclose(ssp.age, AGES, rtol=1e-6)
    np.testing.assert_allclose(ssp.metallicity, 0.019 * 10.0**METALS, rtol=1e-6)
    assert ssp.metallicity_label == tuple(METALS)
    np.testing.assert_array_equal(ssp.wavelength, np.asarray(arrays["lam"], np.float32))
    # (n_wave, n_age, n_Z) → (n_age, n_Z, n_wave), values unchanged (already Lsun/Å/Msun).
    expect = np.transpose(arrays["templates"], (1, 2, 0)).astype(np.float32)
    np.testing.assert_array_equal(ssp.flux, expect)
    np.testing.assert_allclose(ssp.remaining_mass_fraction, arrays["masses"], rtol=1e-7)
    np.testing.assert_allclose(ssp.fwhm, 2.51, rtol=1e-7)
    assert ssp.name == "pPXF: spectra_test_9.0.npz" and "Cappellari" in ssp.citation
    # Our own layout keeps the labels.
    ssp.to_hdf5(tmp_path / "grid.h5")
    assert eqx.tree_equal(rx.SSPGrid.from_hdf5(tmp_path / "grid.h5"), ssp)


def test_ppxf_npz_options(tmp_path):
    lam = ppxf_arrays()["lam"]
    path = write_npz(tmp_path / "t.npz", fwhm=np.linspace(2.0, 3.0, lam.size))
    ssp = rx.SSPGrid.from_ppxf_npz(path, solar_metallicity=0.0142, wavelength_range=(4000, 5000))
    np.testing.assert_allclose(ssp.metallicity, 0.0142 * 10.0**METALS, rtol=1e-6)
    inside = (lam >= 4000) & (lam <= 5000)
    np.testing.assert_allclose(ssp.fwhm, np.linspace(2.0, 3.0, lam.size)[inside], rtol=1e-6)
    # Vacuum files: converted to air, luminosity per band conserved.
    vac = rx.SSPGrid.from_ppxf_npz(path, medium="vacuum")
    t = ppxf_arrays()["templates"][:, 1, 2]
    lum = np.trapezoid(np.asarray(vac.flux[1, 2], np.float64), np.asarray(vac.wavelength))
    assert lum == pytest.approx(np.trapezoid(t, lam), rel=1e-6)
    assert float(vac.wavelength[0]) == pytest.approx(3500.0 / _n_index(3500.0), abs=1e-3)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"masses": None}, r"missing array `masses` \[\(n_age, n_Z\) Msun\]"),
        (
            {"templates": np.ones((200, 3, 2))},
            r"`templates` must have shape \(n_wave, n_age, n_Z\) = \(200, 3, 3\); got \(200, ",
        ),
        ({"ages": AGES[::-1]}, r"`ages` \[Gyr\] must be strictly increasing; entry 1 \(1\.0\)"),
        ({"ages": AGES * 1e9}, r"`ages` reaches 1e\+10 Gyr"),
        ({"metals": np.array([0.0, 0.0, 0.2])}, r"`metals` \[\[M/H\]\] must be strictly"),
        (
            {"templates": -ppxf_arrays()["templates"]},
            r"`templates` \[Lsun/Angstrom/Msun\] is negative for 1800 of 1800",
        ),
        ({"masses": np.full((3, 3), 1.5)}, r"`masses` .* must lie in \(0, 1\]; got 1\.5"),
        ({"masses": np.ones((3, 2))}, r"`masses` must have shape \(n_age, n_Z\) = \(3, 3\)"),
        ({"lam": np.linspace(3500.0, 7500.0, 199)}, r"must have shape \(n_wave, n_age, n_Z\)"),
        ({"fwhm": np.ones(3)}, r"`fwhm` must be a scalar or have one value per pixel"),
    ],
)
def test_ppxf_npz_bad_files_name_file_field_and_problem(tmp_path, changes, message):
    path = write_npz(tmp_path / "bad_templates.npz", **changes)
    with pytest.raises(ValueError, match=rf"bad_templates\.npz: .*{message}"):
        rx.SSPGrid.from_ppxf_npz(path)


def test_ppxf_npz_unreadable(tmp_path):
    (tmp_path / "a.npz").write_text("nope")
    with pytest.raises(ValueError, match=r"a\.npz: not a readable NumPy \.npz file"):
        rx.SSPGrid.from_ppxf_npz(tmp_path / "a.npz")
    np.save(tmp_path / "b.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"b\.npy: a single array"):
        rx.SSPGrid.from_ppxf_npz(tmp_path / "b.npy")
    np.savez(tmp_path / "c.npz", **{**ppxf_arrays(), "ages": np.array([{}, {}, {}])})
    with pytest.raises(ValueError, match=r"c\.npz: array `ages` is not numeric"):
        rx.SSPGrid.from_ppxf_npz(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        rx.SSPGrid.from_ppxf_npz(tmp_path / "nothing.npz")


# ----------------------------------------------------------------- our layout: labels


def test_hdf5_metallicity_label_round_trip(tmp_path):
    ssp = dataclasses.replace(make_ssp(), metallicity_label=(-0.68, 0.0, 0.2))
    ssp.to_hdf5(tmp_path / "grid.h5")
    with h5py.File(tmp_path / "grid.h5", "r") as f:
        np.testing.assert_array_equal(f.attrs["metallicity_label"], [-0.68, 0.0, 0.2])
        assert f.attrs["metallicity_label_name"] == "[M/H]"
    assert rx.SSPGrid.from_hdf5(tmp_path / "grid.h5").metallicity_label == (-0.68, 0.0, 0.2)
    make_ssp().to_hdf5(tmp_path / "plain.h5")
    assert rx.SSPGrid.from_hdf5(tmp_path / "plain.h5").metallicity_label is None


def test_hdf5_bad_metallicity_label(tmp_path):
    path = tmp_path / "bad_grid.h5"
    make_ssp().to_hdf5(path)
    with h5py.File(path, "a") as f:
        f.attrs["metallicity_label"] = np.array([0.0, 0.1])
    with pytest.raises(ValueError, match=r"bad_grid\.h5: .*`SSPGrid\.metallicity_label` has 2"):
        rx.SSPGrid.from_hdf5(path)
    with h5py.File(path, "a") as f:
        f.attrs["metallicity_label"] = "solar"
    with pytest.raises(ValueError, match=r"bad_grid\.h5: attribute `metallicity_label` must be"):
        rx.SSPGrid.from_hdf5(path)


# --------------------------------------------------------------- where E-MILES is found


def write_fake_emiles(directory):
    """Synthetic FITS files with E-MILES names (2 ages x 2 [M/H]); no real spectrum."""
    from astropy.io import fits

    directory.mkdir(parents=True, exist_ok=True)
    n = 50
    for age in (1.0, 10.0):
        for sign, mh in (("m", 0.40), ("p", 0.00)):
            name = f"Eun1.30Z{sign}{mh:.2f}T{age:07.4f}_iPp0.00_baseFe_linear_FWHM_variable.fits"
            hdu = fits.PrimaryHDU(np.full(n, 1e-5 / age, np.float32))
            hdu.header.update(CRVAL1=4000.0, CDELT1=0.9, CRPIX1=1.0)
            hdu.writeto(directory / name)
    return directory


def test_emiles_from_path_and_env(tmp_path, monkeypatch, caplog):
    source = write_fake_emiles(tmp_path / "emiles")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        ssp = rx.SSPGrid.load("miles", path=source, cache_dir=cache)
    np.testing.assert_allclose(ssp.age, [1.0, 10.0])
    np.testing.assert_allclose(ssp.metallicity, [0.008, 0.019], rtol=1e-6)
    assert ssp.metallicity_label == (-0.4, 0.0)
    assert ssp.flux.shape == (2, 2, 50)
    assert len(os.listdir(cache)) == 1
    # The environment variable finds the same directory (and the same cache file).
    monkeypatch.setenv("RUBIX_EQX_MILES_DIR", str(source))
    from rubix_eqx.ssp import _miles

    monkeypatch.setattr(_miles, "convert_miles", lambda *a: pytest.fail("not cached"))
    assert eqx.tree_equal(rx.SSPGrid.load("miles", cache_dir=cache), ssp)
    assert eqx.tree_equal(rx.SSPGrid.from_miles_dir(source, cache_dir=cache), ssp)


def test_emiles_env_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RUBIX_EQX_MILES_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"\$RUBIX_EQX_MILES_DIR.*is not a directory"):
        rx.SSPGrid.load("miles", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"path='.*nowhere'.*is not a directory"):
        rx.SSPGrid.load("miles", path=tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No E-MILES FITS files .*RUBIX_EQX_MILES_DIR"):
        rx.SSPGrid.load("miles", path=tmp_path / "empty", cache_dir=tmp_path / "cache")


def test_emiles_with_ppxf_9_says_what_to_do(tmp_path, monkeypatch):
    """pPXF >= 9 has no `miles_models` folder: the error says so and how to proceed."""
    import importlib.metadata
    import importlib.resources

    fake = tmp_path / "ppxf"
    (fake / "sps_models").mkdir(parents=True)
    real_files, real_version = importlib.resources.files, importlib.metadata.version
    monkeypatch.setattr(
        importlib.resources, "files", lambda p: fake if p == "ppxf" else real_files(p)
    )
    monkeypatch.setattr(
        importlib.metadata, "version", lambda p: "9.5.2" if p == "ppxf" else real_version(p)
    )
    monkeypatch.delenv("RUBIX_EQX_MILES_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        rx.SSPGrid.load("miles", cache_dir=tmp_path / "cache")
    message = str(info.value)
    for part in ("version 9.5.2", "from_ppxf_npz", "rubix-eqx[miles]", "RUBIX_EQX_MILES_DIR"):
        assert part in message
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []
