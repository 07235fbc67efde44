"""The physical noise model (`rx.ExposureNoise`): source, sky and detector counts of an
exposure; presets; the run-config forms; and the constant-S/N option kept as it was."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from astropy import constants as _const, units as _u
from rubix_eqx._stages._noise import pixel_widths
from rubix_eqx.config import (
    apply_override,
    build_pipeline,
    build_pipeline_from,
    check_config,
    ConfigError,
    load_config,
)
from rubix_eqx.telescope import Detector, Exposure

from .cases import tiny_ssp, tiny_telescope


DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
H_C = (_const.h * _const.c).to_value(_u.erg * _u.AA)  # erg Å, from astropy
N_SIDE = 24  # spaxels of 0.4" (the default job's sampling); the disk fits well inside
SMALL = [  # the default job, on a smaller field and 6000-6500 Å, face-on, 20 000 stars
    f"telescope.n_x={N_SIDE}", f"telescope.n_y={N_SIDE}", "telescope.wavelength.start=6000",
    "telescope.wavelength.stop=6500", "galaxy.n_stars=20000", "observation.inclination=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def default_job():
    """The default config (`pipeline.noise: telescope`, MUSE-WFM) shrunk: its noisy cube,
    the noiseless cube of the same galaxy, and the pipeline."""
    config = load_config(DEFAULT, SMALL)
    pipe, galaxy, observation = build_pipeline(config)
    clean_pipe, _, _ = build_pipeline(apply_override(config, "pipeline.noise=null"))
    noisy = pipe(galaxy, observation, key=jax.random.key(1))
    clean = clean_pipe(galaxy, observation)
    return pipe, noisy, clean


def radial_profile(values: np.ndarray, n_annuli: int) -> np.ndarray:
    """Median of a (n, n) map in annuli one spaxel wide about the field centre."""
    n = values.shape[0]
    x = np.arange(n) - (n - 1) / 2
    r = np.hypot(x[:, None], x[None, :])
    return np.array([np.median(values[(r >= k) & (r < k + 1)]) for k in range(n_annuli)])


# -- the default job --------------------------------------------------------------------


def test_default_job_is_physical(default_job):
    pipe, noisy, clean = default_job
    assert isinstance(pipe.stage(rx.AbstractNoise), rx.ExposureNoise)
    assert (
        pipe.stage(rx.AbstractNoise).exposure.time == 3600.0
        and pipe.stage(rx.AbstractNoise).exposure.n_exposures == 4
    )
    assert (
        pipe.stage(rx.AbstractNoise).spaxel_size == 0.4
        and pipe.stage(rx.AbstractNoise).flux_unit == pipe.flux_unit
    )
    assert np.all(np.asarray(noisy.variance) > 0)


def test_snr_falls_with_radius(default_job):
    """Median S/N per pixel (noiseless flux / σ) in annuli: strictly decreasing out to
    12 spaxels (4.8″ ≈ 4.7 kpc ≈ 3 scale lengths); the constant-S/N model is flat."""
    pipe, noisy, clean = default_job
    flux, var = np.asarray(clean.flux, np.float64), np.asarray(noisy.variance, np.float64)
    snr_map = np.median(flux / np.sqrt(var), axis=-1)
    profile = radial_profile(snr_map, 12)
    print("\nphysical S/N per 1.25 Å pixel vs radius (0.4″ annuli):", np.round(profile, 3))
    assert np.all(np.diff(profile) < 0), profile
    assert profile[0] / profile[-1] > 10
    constant = rx.Noise(snr=20.0, window=(6000.0, 6500.0))
    var_c = np.asarray(constant.variance(clean.flux, clean.wavelength), np.float64)
    flat = radial_profile(np.median(flux / np.sqrt(var_c), axis=-1), 12)
    print("constant-S/N model (snr=20) vs radius:              ", np.round(flat, 3))
    assert np.max(flat[:8]) / np.min(flat[:8]) < 1.1


def test_chi2_per_dof_is_one(default_job):
    pipe, noisy, clean = default_job
    resid = np.asarray(noisy.flux, np.float64) - np.asarray(clean.flux, np.float64)
    chi2 = float(np.mean(resid**2 / np.asarray(noisy.variance, np.float64)))
    print(f"\nchi2/dof over {resid.size} voxels: {chi2:.4f}")
    assert abs(chi2 - 1) < 0.02


def test_constant_snr_option_gives_requested_snr(default_job):
    """`pipeline.noise: {snr: 30, window: [...]}` still builds `rx.Noise`, whose S/N in the
    window is 30 (the spaxel's window-mean flux over its rms noise): analytic from the
    variance for the disk's bright spaxels, and measured from residuals on a flat cube."""
    _, _, clean = default_job
    config = load_config(DEFAULT, SMALL + ["pipeline.noise={snr: 30, window: [6100, 6300]}"])
    spec = check_config(config)
    assert spec.pipeline["noise"] == {"snr": 30.0, "window": (6100.0, 6300.0)}
    noise = build_pipeline_from(spec, tiny_ssp()).stage(rx.Noise)  # the stage the config builds
    assert isinstance(noise, rx.Noise) and noise.snr == 30.0
    wave = np.asarray(clean.wavelength)
    window = (wave >= 6100.0) & (wave <= 6300.0)
    flux = np.asarray(clean.flux, np.float64)
    var = np.asarray(noise.variance(clean.flux, clean.wavelength), np.float64)
    ref = flux[:, :, window].mean(-1)
    bright = ref > 0.1 * ref.max()
    snr = ref[bright] / np.sqrt(var[:, :, window].mean(-1)[bright])
    assert np.all(np.abs(snr / 30.0 - 1) < 0.01), (snr.min(), snr.max())
    cube = jnp.full((60, 60, wave.size), 7.0)
    noisy, _ = noise.apply(cube, clean.wavelength, jax.random.key(3))
    measured = 7.0 / np.std(np.asarray(noisy - cube)[:, :, window])
    print(f"\nconstant-S/N option: requested 30, measured {measured:.3f}")
    assert abs(measured / 30.0 - 1) < 0.01


# -- the model ------------------------------------------------------------------------------


MUSE_SMALL = {"n_x": 4, "n_y": 4, "wavelength": {"start": 6000.0, "stop": 6500.0}}


def muse_small() -> rx.Telescope:
    return rx.Telescope.preset("MUSE-WFM", **MUSE_SMALL)


def simple_noise(**exposure) -> rx.ExposureNoise:
    detector = Detector(
        collecting_area=50.0, throughput=0.25, read_noise=3.0, dark_current=1e-3,
        pixel_area=0.04, pixel_dispersion=1.25,
    )  # fmt: skip
    exposure = {"sky": 1e-17, "n_exposures": 4} | exposure
    return rx.ExposureNoise(detector, Exposure(**exposure), spaxel_size=0.4)


def test_variance_matches_a_hand_count():
    """Against the documented formula written out in NumPy (float64), photon energies
    from astropy's constants."""
    wave = np.linspace(5000.0, 5100.0, 81)
    flux = np.random.default_rng(0).uniform(0.0, 500.0, (3, 2, wave.size))
    noise = simple_noise(time=1800.0)
    var = np.asarray(noise.variance(jnp.asarray(flux), jnp.asarray(wave)))
    width = np.gradient(wave)  # uniform grid: the pixel widths
    gain = 1e-20 * 50.0e4 * 0.25 * width * wave / H_C * 1800.0  # e⁻ per cube unit
    sky = gain * 1e-17 * 0.4**2 / 1e-20
    n_pix = 0.4**2 * width / (0.04 * 1.25)
    detector = n_pix * (1e-3 * 1800.0 + 3.0**2 * 4)
    expected = (gain * flux + sky + detector) / gain**2
    np.testing.assert_allclose(var, expected, rtol=1e-10)


def test_reference_snr_fixes_the_exposure_time():
    """The time implied by `snr` at (`reference_sb`, `reference_wavelength`) reproduces
    that S/N there, and an exposure of that time gives the same variance."""
    tel = muse_small()
    noise = rx.ExposureNoise.from_telescope(
        tel, snr=10.0, reference_sb=1e-17, reference_wavelength=6250.0
    )
    wave = jnp.asarray(tel.wavelength, jnp.float64)
    time = float(noise.exposure_time_for(wave))
    sb = jnp.asarray([3e-18, 1e-17, 3e-17])[:, None, None]  # erg/s/cm²/Å/arcsec²
    flux = jnp.broadcast_to(sb * tel.spaxel_size**2 / 1e-20, (3, 1, wave.size))
    var = noise.variance(flux, wave)
    at_ref = np.argmin(np.abs(np.asarray(wave) - 6250.0))
    snr = np.asarray(flux / jnp.sqrt(var))[:, 0, at_ref]
    print(f"\nS/N 10 at 1e-17 erg/s/cm²/Å/arcsec², 6250 Å: t = {time:.0f} s; "
          f"S/N at 3e-18, 1e-17, 3e-17: {np.round(snr, 3)}")  # fmt: skip
    assert abs(snr[1] / 10.0 - 1) < 1e-6
    assert snr[0] < 10.0 < snr[2]  # S/N falls with surface brightness
    timed = rx.ExposureNoise.from_telescope(tel, exposure_time=time)
    np.testing.assert_allclose(timed.variance(flux, wave), var, rtol=1e-6)
    deeper = rx.ExposureNoise.from_telescope(
        tel, snr=20.0, reference_sb=1e-17, reference_wavelength=6250.0
    )
    ratio = float(deeper.exposure_time_for(wave)) / time
    # t ∝ snr² when sky-limited; the read noise of a fixed number of reads weighs less in
    # the longer exposure, so doubling the S/N takes a little under 4× the time.
    assert 3.5 < ratio < 4.0


def test_stage_properties(key):
    """Variance > 0 for empty voxels; same key, same noise; jit = eager; differentiable
    in the flux; the pipeline's flux unit changes only the unit."""
    noise = simple_noise(time=900.0)
    wave = jnp.linspace(5000.0, 5100.0, 81)
    flux = jnp.zeros((2, 2, 81)).at[0].set(50.0)
    noisy, var = noise.apply(flux, wave, key)
    assert np.all(np.asarray(var) > 0)
    again, _ = eqx.filter_jit(noise.apply)(flux, wave, key)
    np.testing.assert_allclose(noisy, again, rtol=1e-12)
    grad = jax.grad(lambda f: jnp.sum(noise.apply(f, wave, key)[0] ** 2))(flux + 1.0)
    assert np.all(np.isfinite(np.asarray(grad)))
    fine_unit = eqx.tree_at(lambda n: n.flux_unit, noise, 1e-21)
    np.testing.assert_allclose(
        fine_unit.variance(10 * flux, wave) * 1e-21**2, var * 1e-20**2, rtol=1e-10
    )


def test_pipeline_noise_telescope_and_flux_unit():
    tel = rx.Telescope.preset("SAMI", n_x=6, n_y=6)
    pipe = rx.Pipeline(tel, tiny_ssp(), noise="telescope", flux_unit=1e-19, lsf=False)
    assert (
        isinstance(pipe.stage(rx.AbstractNoise), rx.ExposureNoise)
        and pipe.stage(rx.AbstractNoise).flux_unit == 1e-19
    )
    legacy = tiny_telescope(snr=15.0, snr_window=(5000.0, 5500.0))  # no detector: constant S/N
    pipe = rx.Pipeline(legacy, tiny_ssp(), noise="telescope", lsf=False)
    assert (
        isinstance(pipe.stage(rx.AbstractNoise), rx.Noise)
        and pipe.stage(rx.AbstractNoise).snr == 15.0
    )


@pytest.mark.parametrize("name", rx.telescope.presets())
def test_every_preset_has_a_noise_model(name):
    """Every preset carries a detector and a typical exposure, with references; S/N per
    spaxel and pixel at 1e-17 erg/s/cm²/Å/arcsec² mid-grid, printed for the record."""
    tel = rx.Telescope.preset(name)
    assert tel.detector is not None and tel.exposure is not None
    assert any("Patat" in r for r in tel.references)
    noise = rx.ExposureNoise.from_telescope(tel)
    noise.check(tel.wavelength)
    i = tel.n_wave // 2
    flux = jnp.full((1, 1, tel.n_wave), 1e-17 * tel.spaxel_size**2 / 1e-20)
    snr = float((flux / jnp.sqrt(noise.variance(flux, tel.wavelength)))[0, 0, i])
    n, time = noise.exposure.n_exposures, noise.exposure.time
    print(f"\n{name}: {n} x {time / n:.0f} s, S/N {snr:.2f} at {float(tel.wavelength[i]):.0f} Å")
    assert 0.05 < snr < 100


def test_config_forms_build_the_right_stage():
    base = load_config(DEFAULT, ["telescope.wavelength.stop=5600"])
    ssp = tiny_ssp()
    cases = {
        "pipeline.noise=telescope": (rx.ExposureNoise, 3600.0),
        "pipeline.noise={exposure_time: 7200, n_exposures: 8}": (rx.ExposureNoise, 7200.0),
        "pipeline.noise={snr: 10, reference_sb: 1.0e-17, reference_wavelength: 5250}": (
            rx.ExposureNoise,
            None,
        ),
        "pipeline.noise={snr: 30, window: [5000, 5500]}": (rx.Noise, None),
    }
    for override, (kind, time) in cases.items():
        pipe = build_pipeline_from(check_config(apply_override(base, override)), ssp)
        assert isinstance(pipe.stage(rx.AbstractNoise), kind), override
        if kind is rx.ExposureNoise:
            assert pipe.stage(rx.AbstractNoise).exposure.time == time, override
    pipe = build_pipeline_from(
        check_config(apply_override(base, "pipeline.noise={sky: 2.0e-17, n_exposures: 2}")), ssp
    )
    assert (
        pipe.stage(rx.AbstractNoise).exposure.sky_wavelength is None
        and pipe.stage(rx.AbstractNoise).exposure.n_exposures == 2
    )
    assert float(pipe.stage(rx.AbstractNoise).exposure.sky[0]) == pytest.approx(2e-17)


# -- bad input --------------------------------------------------------------------------

DETECTOR = {"collecting_area": 49.3, "throughput": 0.3}
REF_3000 = {"sky": 1e-17, "snr": 5.0, "reference_sb": 1e-17, "reference_wavelength": 3000.0}
NARROW_SKY = {"sky": {"wavelength": [6000.0, 9400.0], "value": [1e-17, 1e-17]}}


def exposure_noise(spaxel_size=0.2, **exposure) -> rx.ExposureNoise:
    return rx.ExposureNoise(Detector(**DETECTOR), Exposure(**exposure), spaxel_size=spaxel_size)


BAD_STAGES = [
    (lambda: Detector(collecting_area=-1.0, throughput=0.3),
     r"`Detector\.collecting_area` must be finite and > 0 m²; got -1\.0"),
    (lambda: Detector(collecting_area=49.3, throughput=1.5),
     r"`Detector\.throughput` must lie in \(0, 1\] \(a fraction\) for 1 of 1 values .*1\.5"),
    (lambda: Detector(collecting_area=49.3, throughput=[0.2, 0.3]),
     r"`Detector\.throughput` has 2 values: give `throughput_wavelength`"),
    (lambda: Detector(**DETECTOR, pixel_area=0.04),
     r"`Detector\.pixel_area` and `Detector\.pixel_dispersion` must be given together"),
    (lambda: Detector(**DETECTOR, read_noise=-3.0),
     r"`Detector\.read_noise` must be finite and >= 0 e-; got -3\.0"),
    (lambda: Exposure(sky=1e-17), r"`Exposure` needs `time` \(s\) or `snr`"),
    (lambda: Exposure(sky=1e-17, time=100.0, snr=5.0),
     r"give `time` or `snr` .* not both; got time=100\.0 and snr=5\.0"),
    (lambda: Exposure(sky=1e-17, snr=5.0, reference_sb=1e-17),
     r"`Exposure\.reference_wavelength` is required with snr=5\.0, reference_sb=1e-17"),
    (lambda: Exposure(sky=-1e-17, time=100.0), r"`Exposure\.sky` must be finite and >= 0"),
    (lambda: Exposure(sky=1e-17, time=100.0, n_exposures=0),
     r"`Exposure\.n_exposures` must be an integer >= 1; got 0"),
    (lambda: Exposure(sky=1e-17, time=-100.0), r"`Exposure\.time` must be finite and > 0 s"),
    (lambda: exposure_noise(sky=0.0, time=1.0),
     r"the sky is 0 somewhere and the detector has no read noise or dark current"),
    (lambda: exposure_noise(spaxel_size=-0.2, sky=1e-17, time=1.0),
     r"`ExposureNoise\(spaxel_size=\.\.\.\)` must be > 0 arcsec; got -0\.2"),
    (lambda: exposure_noise(**REF_3000).check(muse_small().wavelength),
     r"`Exposure\.reference_wavelength` \(3000 Å\) must lie inside the wavelength range "
     r"6000\.0-6500\.0"),
    (lambda: rx.ExposureNoise.from_telescope(muse_small()).check(jnp.linspace(4e3, 5e3, 11)),
     r"`ExposureNoise\.detector\.throughput_wavelength` covers 4600-9400 Å but the wavelength "
     r"grid spans 4000\.0-5000\.0"),
    (lambda: rx.ExposureNoise.from_telescope(tiny_telescope()),
     r"Telescope 'tiny' has no `detector`"),
    (lambda: rx.ExposureNoise.from_telescope(muse_small(), exposure_time=100.0, snr=5.0),
     r"give `exposure_time` or `snr` .* not both; got exposure_time=100\.0 and snr=5\.0"),
    (lambda: rx.Pipeline(
        muse_small().replace(spaxel_size=0.4), tiny_ssp(), lsf=False,
        noise=rx.ExposureNoise.from_telescope(muse_small())),
     r"`ExposureNoise\(spaxel_size=0\.2\)` must equal the spaxel size of telescope "
     r"'MUSE-WFM' \(0\.4"),
    (lambda: rx.Pipeline(tiny_telescope(), tiny_ssp(), lsf=False, noise="telescope"),
     r"Telescope 'tiny' has no default `snr` and no `detector`/`exposure`"),
    (lambda: rx.Telescope.preset("MUSE-WFM", exposure=NARROW_SKY),
     r"telescope\[MUSE-WFM\]\.exposure\.sky: table covers 6000-9400 Angstrom but the grid "
     r"spans 4750-9350"),
    (lambda: tiny_telescope(detector=Detector(
        collecting_area=1.0, throughput=[0.2, 0.3], throughput_wavelength=[5000.0, 5500.0])),
     r"`Telescope\.detector\.throughput_wavelength` covers 5000-5500 Angstrom but the "
     r"telescope's grid spans 4800-6000"),
]  # fmt: skip


@pytest.mark.parametrize("make, match", BAD_STAGES)
def test_bad_stage_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        make()


TOY = {  # an inline telescope without detector, exposure or S/N
    "name": "toy", "spaxel_size": 0.5, "n_x": 4, "n_y": 4, "lsf_fwhm": 3.0,
    "wavelength": {"start": 4800.0, "stop": 5600.0, "step": 2.0},
}  # fmt: skip
SET_TOY = f"telescope={TOY}".replace("'", "")
REFERENCE_OFF_GRID = [
    "telescope.exposure.time=null", "telescope.exposure.snr=5",
    "telescope.exposure.reference_sb=1.0e-17", "telescope.exposure.reference_wavelength=5000",
    "telescope.wavelength.start=6000",
]  # fmt: skip

BAD_CONFIGS = [
    (["pipeline.noise={snr: 10, reference_sb: 1.0e-17}"],
     r"pipeline\.noise\.reference_wavelength: required with snr, reference_sb"),
    (["pipeline.noise={exposure_time: 7200, snr: 3}"],
     r"pipeline\.noise: give `exposure_time` or `snr` .* not both; got exposure_time=7200 "
     r"and snr=3"),
    (["pipeline.noise={exposure_time: -1}"],
     r"pipeline\.noise\.exposure_time: must be > 0, got -1"),
    (["pipeline.noise={n_exposures: 0}"], r"pipeline\.noise\.n_exposures: must be >= 1, got 0"),
    (["pipeline.noise={exposure_time: 100, window: [6000, 6100]}"],
     r"pipeline\.noise\.window: only for the constant-S/N form"),
    (["pipeline.noise={exposure_tme: 100}"],
     r"pipeline\.noise\.exposure_tme: unknown key\. Did you mean `exposure_time`\?"),
    (["pipeline.noise={sky: {wavelength: [4000, 9000], value: [1.0e-17, -1]}}"],
     r"pipeline\.noise\.sky\.value: must be >= 0, got -1"),
    (["pipeline.noise={snr: 10, reference_sb: 1.0e-17, reference_wavelength: 9300}"],
     r"pipeline\.noise: `Exposure\.reference_wavelength` \(9300 Å\) must lie inside the "
     r"wavelength range 4750\.0-7000\.0"),
    (["telescope.detector.collecting_area=-1"],
     r"telescope\.detector\.collecting_area: must be > 0, got -1"),
    (["telescope.detector.throughput=1.2"],
     r"telescope\.detector\.throughput: must be <= 1, got 1\.2"),
    (["telescope.detector.pixel_dispersion=null"],
     r"telescope\.detector\.pixel_dispersion: required with"),
    (["telescope.detector.read_nois=3"],
     r"telescope\.detector\.read_nois: unknown key\. Did you mean `read_noise`\?"),
    (["telescope.exposure.sky=-1"], r"telescope\.exposure\.sky: must be >= 0, got -1"),
    (["telescope.exposure.n_exposures=2.5"],
     r"telescope\.exposure\.n_exposures: must be an integer"),
    (["telescope.exposure.snr=5"], r"telescope\.exposure: `Exposure`: give `time` or `snr`"),
    (REFERENCE_OFF_GRID,
     r"telescope\.exposure\.reference_wavelength: must lie inside the grid 6000-7000 "
     r"Angstrom, got 5000"),
    ([SET_TOY], r"pipeline\.noise: Telescope 'toy' has no default `snr`"),
    ([SET_TOY, "pipeline.noise={exposure_time: 100}"],
     r"pipeline\.noise: Telescope 'toy' has no `detector`"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, match", BAD_CONFIGS)
def test_bad_config_inputs(overrides, match):
    config = load_config(DEFAULT, ["telescope.wavelength.stop=7000", *overrides])
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_pixel_widths():
    wave = jnp.asarray([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(pixel_widths(wave), [1.0, 1.5, 3.0, 4.0])
