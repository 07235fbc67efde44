"""Gas truth maps (`rx.gas_truth_maps`) against references we did not write: the published
luminosities (Kennicutt & Evans 2012, case B) for the Hα total, the moments of the lines
measured in the cube's own pixels as an observer would (centroid, second moment minus the
declared LSF, window sums) for the kinematics and ratios, `dust_extinction` for the dust;
and the FITS / HDF5 round trip."""

import dust_extinction.parameter_averages as dep
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from rubix_eqx.galaxy import synthetic_gas_disk

from .cases import tiny_ssp
from .test_gas_lines import AIR, C, LSF_FWHM, MPC_CM, observation, published_luminosities, Z
from .test_gas_lines import STEP, telescope
from .test_papercuts import count_compilations


LINES = ("Hbeta", "[OIII]5007", "Halpha", "[NII]6583", "[SII]6716", "[SII]6731")


@pytest.fixture(scope="module")
def mock():
    """Six lines, 4820–6900 Å, a 200-element disk at 40° on 10 × 10 spaxels of 3″."""
    tel = telescope(4820.0, 6900.0, n=10, spaxel=3.0)
    base = rx.Pipeline(tel, tiny_ssp(), psf=False, aperture=False, dtype=jnp.float64)
    pipe = base.with_stage(rx.EmissionLines.build(base.grid, base.ssp, tel.medium, lines=LINES))
    gas = synthetic_gas_disk(jax.random.key(7), 200, sf_radius=6.0, dtype=jnp.float64)
    cube = pipe(None, observation(), gas=gas)
    return pipe, gas, cube, rx.gas_truth_maps(pipe, gas, observation())


def window_moments(cube, rest, half=9.0, span=0.0):
    """Per spaxel, as an observer measures a line: the centroid in ±8 Å of the systemic
    position, then the flux (Σ f Δλ), centroid and second moment of the pixels within
    `half` Å of that centroid (to `span`·(1+z) Å beyond it, for a doublet summed)."""
    wave = np.asarray(cube.wavelength)
    flux = np.asarray(cube.flux)

    def moments(low, high):
        near = (wave >= low[..., None]) & (wave <= high[..., None])
        f = np.where(near, flux, 0.0)
        total = f.sum(-1)
        safe = np.where(total > 0, total, 1)
        mean = np.where(total > 0, (f * wave).sum(-1) / safe, rest * (1 + Z))
        var = (f * (wave - mean[..., None]) ** 2).sum(-1) / safe
        return total * STEP, mean, var

    systemic = np.full(flux.shape[:2], rest * (1 + Z))
    _, centre, _ = moments(systemic - 8.0, systemic + 8.0)
    return moments(centre - half, centre + span * (1 + Z) + half)


def test_total_intrinsic_halpha_is_sfr_times_calibration(mock):
    pipe, gas, _, maps = mock
    d_l = float(observation().luminosity_distance()) * MPC_CM
    want = published_luminosities(gas)["Halpha"].sum() / (4 * np.pi * d_l**2) / pipe.flux_unit
    got = float(np.sum(maps.halpha_intrinsic))
    print(f"\nΣ Hα map {got:.6e}, Σ SFR·10^41.27/4πd² {want:.6e}")
    assert abs(got / want - 1) < 1e-6
    assert np.array_equal(maps.halpha, maps.halpha_intrinsic)  # no dust
    assert np.all(np.asarray(maps.a_v) == 0)


def test_kinematics_match_the_line_moments_in_the_cube(mock):
    """Map V = the Hα centroid of each spaxel's spectrum (relativistic Doppler) within
    0.5 km/s; map σ = c·sqrt(σ_pix² − σ_LSF²)/λ within 1 km/s, for bright spaxels."""
    _, _, cube, maps = mock
    flux, mean, var = window_moments(cube, AIR["Halpha"])
    bright = np.asarray(maps.mask) & (flux > 1e-3 * flux.max())
    ratio = (mean / (AIR["Halpha"] * (1 + Z))) ** 2
    v_cube = C * (ratio - 1) / (ratio + 1)
    sigma_lsf = LSF_FWHM / (2 * np.sqrt(2 * np.log(2)))
    s_cube = C * np.sqrt(np.maximum(var - sigma_lsf**2, 0)) / mean
    dv = np.abs(v_cube - np.asarray(maps.velocity))[bright]
    ds = np.abs(s_cube - np.asarray(maps.dispersion))[bright]
    print(f"\n{bright.sum()} spaxels: |ΔV| ≤ {dv.max():.3f} km/s, |Δσ| ≤ {ds.max():.3f} km/s")
    assert bright.sum() >= 20 and np.ptp(np.asarray(maps.velocity)[bright]) > 100
    assert dv.max() < 0.5 and ds.max() < 1.0


def test_line_ratios_and_halpha_match_the_cube(mock):
    """Window sums of the cube's lines: Hα within 1e-4, each log ratio within 1e-3 dex."""
    _, _, cube, maps = mock
    flux = {name: window_moments(cube, AIR[name])[0] for name in LINES if "SII" not in name}
    flux["[SII]"] = window_moments(
        cube, AIR["[SII]6716"], span=AIR["[SII]6731"] - AIR["[SII]6716"]
    )[0]
    bright = np.asarray(maps.mask) & (flux["Halpha"] > 1e-3 * flux["Halpha"].max())
    flux = {name: value[bright] for name, value in flux.items()}
    err_ha = np.abs(flux["Halpha"] / np.asarray(maps.halpha)[bright] - 1).max()
    pairs = {
        "log_nii_halpha": flux["[NII]6583"] / flux["Halpha"],
        "log_oiii_hbeta": flux["[OIII]5007"] / flux["Hbeta"],
        "log_sii_halpha": flux["[SII]"] / flux["Halpha"],
    }
    print(f"\nHα map vs cube ≤ {err_ha:.2e}")
    assert err_ha < 1e-4
    for field, ratio in pairs.items():
        err = np.abs(np.log10(ratio) - np.asarray(getattr(maps, field))[bright]).max()
        print(f"{field}: ≤ {err:.2e} dex")
        assert err < 1e-3
    decrement = flux["Halpha"] / flux["Hbeta"]
    assert np.allclose(np.asarray(maps.balmer_decrement)[bright], 2.86, rtol=1e-9)
    assert np.allclose(decrement, 2.86, rtol=2e-3)


def test_dust_maps_behind_a_uniform_screen(mock):
    """A_V map = 1 where there is gas; Hα dimmed by 10^(−0.4 k(Hα)) and Hα/Hβ raised by
    10^(0.4 (k(Hβ) − k(Hα))), CCM89 from dust_extinction."""
    pipe, gas, _, _ = mock
    dusty = pipe.with_stage(rx.UniformScreen.build(pipe.grid, a_v=1.0))
    maps = rx.gas_truth_maps(dusty, gas, observation())
    mask = np.asarray(maps.mask)
    k = dep.CCM89(Rv=3.1)(np.array([AIR["Hbeta"], AIR["Halpha"]]) * u.AA)
    dim = np.asarray(maps.halpha)[mask] / np.asarray(maps.halpha_intrinsic)[mask]
    assert np.allclose(np.asarray(maps.a_v)[mask], 1.0, rtol=1e-12)
    assert np.allclose(dim, 10 ** (-0.4 * k[1]), rtol=1e-5)
    want = 2.86 * 10 ** (0.4 * (k[0] - k[1]))
    assert np.allclose(np.asarray(maps.balmer_decrement)[mask], want, rtol=1e-5)


def test_gas_screen_and_birth_clouds_add_up(mock):
    """With the gas screen and birth clouds, A_V ≥ the clouds' 0.76 mag everywhere, and
    the Balmer decrement of each bright spaxel matches the cube's own Hα/Hβ to 2e-3."""
    pipe, gas, _, _ = mock
    dusty = pipe.with_stage(rx.GasScreen.build(pipe.grid)).with_stage(
        rx.BirthCloud.build(pipe.grid)
    )
    maps = rx.gas_truth_maps(dusty, gas, observation())
    cube = dusty(None, observation(), gas=gas)
    ha, hb = (window_moments(cube, AIR[name])[0] for name in ("Halpha", "Hbeta"))
    mask = np.asarray(maps.mask)
    bright = mask & (ha > 1e-3 * ha.max())
    a_v = np.asarray(maps.a_v)[mask]
    err = np.abs(ha[bright] / hb[bright] / np.asarray(maps.balmer_decrement)[bright] - 1).max()
    print(f"\nA_V map {a_v.min():.3f}–{a_v.max():.3f} mag; Hα/Hβ map vs cube ≤ {err:.2e}")
    assert a_v.min() >= 0.76 - 1e-6 and a_v.max() > 0.8
    assert err < 2e-3


def test_same_shape_compiles_once(mock):
    pipe, gas, _, _ = mock
    other = synthetic_gas_disk(jax.random.key(8), 200, sf_radius=6.0, dtype=jnp.float64)
    with count_compilations() as count:
        jax.block_until_ready(rx.gas_truth_maps(pipe, other, observation()))
    assert count() == 0


def test_files_round_trip_and_carry_the_wcs(mock, tmp_path):
    pipe, gas, cube, maps = mock
    fits_path, h5_path = tmp_path / "c.fits", tmp_path / "c.h5"
    rx.io.write_cube_fits(cube, fits_path, gas_truth=maps)
    rx.io.write_cube_hdf5(cube, h5_path, gas_truth=maps)
    for path in (fits_path, h5_path):
        back = rx.io.read_truth(path)["gas_truth"]
        for field in rx.GasMaps.__dataclass_fields__:
            assert np.array_equal(
                np.asarray(getattr(back, field)), np.asarray(getattr(maps, field))
            )
    with fits.open(fits_path) as hdus:
        ha = hdus["GAS_HA"]
        assert ha.header["BUNIT"] == "10**(-20)*erg/s/cm**2"
        assert ha.data.shape == (10, 10)
        assert np.isnan(ha.data[~np.asarray(maps.mask).T]).all()
        image, data = WCS(ha.header), WCS(hdus["DATA"].header).celestial
        assert np.allclose(image.pixel_to_world_values(3, 4), data.pixel_to_world_values(3, 4))


def test_bad_inputs_are_named(mock):
    pipe, gas, cube, maps = mock
    with pytest.raises(ValueError, match="has no line stage"):
        rx.gas_truth_maps(pipe.without(rx.EmissionLines), gas, observation())
    with pytest.raises(TypeError, match="must be a `rubix_eqx.galaxy.Gas`"):
        rx.gas_truth_maps(pipe, np.zeros(3), observation())
    with pytest.raises(TypeError, match="must be a `rubix_eqx.GasMaps`"):
        rx.io.write_cube_hdf5(cube, "x.h5", gas_truth=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="needs `layout='muse'`"):
        rx.io.write_cube_fits(cube, "x.fits", layout="muse-drp", gas_truth=maps)


def test_run_command_writes_gas_truth_and_reports_it(tmp_path, capsys):
    """`rubix-eqx run` with a gas section and dust: GAS_* extensions and the `gas_truth`
    group hold the same maps, and the summary reports the Hα totals."""
    import json

    from rubix_eqx.cli import main

    from .cases import random_galaxy
    from .test_cli import DEFAULT

    ssp_path, galaxy_path = tmp_path / "tiny_ssp.h5", tmp_path / "galaxy.h5"
    tiny_ssp().to_hdf5(ssp_path)
    rx.galaxy.to_hdf5(random_galaxy(0, 200), galaxy_path)
    out = tmp_path / "out"
    overrides = [
        f"ssp={ssp_path}", f"galaxy={{source: file, path: {galaxy_path}}}", "telescope.n_x=6",
        "telescope.n_y=6", "telescope.wavelength.start=6300", "telescope.wavelength.stop=6700",
        "pipeline.noise=null", "output.quicklook=null", "gas={n_gas: 60, sf_radius: 3.0}",
        "pipeline.dust=gas", "pipeline.birth_clouds=true", "pipeline.allow_sharper_lsf=true",
    ]  # fmt: skip
    argv = ["run", str(DEFAULT), "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    capsys.readouterr()
    from_fits, from_hdf5 = rx.io.read_truth(out / "cube.fits"), rx.io.read_truth(out / "cube.h5")
    assert "gas_truth" in from_fits and "gas_truth" in from_hdf5
    gas_fits, gas_h5 = from_fits["gas_truth"], from_hdf5["gas_truth"]
    for field in rx.GasMaps.__dataclass_fields__:
        assert np.array_equal(
            np.asarray(getattr(gas_fits, field)), np.asarray(getattr(gas_h5, field))
        )
    summary = json.loads((out / "summary.json").read_text())["gas"]
    assert summary["halpha_flux"] == pytest.approx(float(np.sum(gas_h5.halpha)), rel=1e-6)
    assert 0 < summary["halpha_flux"] < summary["halpha_flux_intrinsic"]
    assert summary["halpha_weighted_a_v_mag"] > 0.76
