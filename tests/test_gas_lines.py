"""Emission lines of star-forming gas (`rx.EmissionLines`), against a plain NumPy float64
reference written from the textbook definition: each line a Gaussian in wavelength at
λ_rest·(1+z)·sqrt((1+β)/(1−β)) of variance (λσ_gas/c)² plus the telescope's LSF,
integrated over the real telescope pixels; luminosities from the published numbers
(Kennicutt & Evans 2012; case B; Storey & Zeippen 2000), fluxes L / (4π d_L²)."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx.galaxy import Gas, synthetic_gas_disk

from .cases import tiny_ssp
from .exact_reference import normal_cdf
from .test_papercuts import count_compilations


C = 299792.458  # km/s
MPC_CM = 3.0856775814913673e24
K_B, AMU = 1.380649e-16, 1.66053906660e-24  # erg/K, g
Z = 0.02
STEP = 1.25  # Å, MUSE sampling
LSF_FWHM = 3.5  # Å
AIR = {"Hbeta": 4861.33, "[OIII]4959": 4958.91, "[OIII]5007": 5006.84, "[OI]6300": 6300.30,
       "[NII]6548": 6548.05,
       "Halpha": 6562.80, "[NII]6583": 6583.45, "[SII]6716": 6716.44, "[SII]6731": 6730.82}  # fmt: skip


def observation(**kw):
    kw = {"redshift": Z, "inclination": 40.0, "position_angle": 30.0} | kw
    return rx.Observation(**{k: jnp.asarray(v, jnp.float64) for k, v in kw.items()})


def telescope(start, stop, n=20, spaxel=2.0):
    wave = np.arange(start, stop, STEP)
    return rx.Telescope(
        name="gas-test", spaxel_size=spaxel, n_x=n, n_y=n, wavelength=jnp.asarray(wave),
        lsf_fwhm=jnp.full(wave.shape, LSF_FWHM),
    )  # fmt: skip


@pytest.fixture(scope="module")
def broad():
    """All lines, 4800–7100 Å, a 300-element star-forming gas disk, float64."""
    pipe = rx.Pipeline(
        telescope(4800.0, 7100.0), tiny_ssp(), emission_lines=True, psf=False, aperture=False,
        dtype=jnp.float64,
    )  # fmt: skip
    gas = synthetic_gas_disk(jax.random.key(1), 300, sf_radius=6.0, dtype=jnp.float64)
    return pipe, gas, pipe(None, observation(), gas=gas)


@pytest.fixture(scope="module")
def halpha():
    """Hα only, 6600–6800 Å, 40 elements, a 12 × 12 field: for totals and gradients."""
    tel = telescope(6600.0, 6800.0, n=12, spaxel=3.0)
    base = rx.Pipeline(tel, tiny_ssp(), psf=False, aperture=False, dtype=jnp.float64)
    lines = rx.EmissionLines.build(base.grid, base.ssp, tel.medium, lines=("Halpha",))
    pipe = base.with_stage(lines)
    gas = synthetic_gas_disk(jax.random.key(2), 40, sf_radius=5.0, dtype=jnp.float64)
    return pipe, gas


def v_los(gas, obs):
    rot = np.asarray(rx.Orient().matrix(obs), np.float64)
    return np.asarray(gas.velocity, np.float64) @ rot[2]


def reference_spectrum(gas, obs, wave, luminosity: dict, sigma_tel):
    """Σ over elements and lines of the pixel-integrated Gaussian, in erg/s/cm²/Å."""
    edges = np.concatenate([[wave[0] - STEP / 2], wave + STEP / 2])
    beta = v_los(gas, obs) / C
    doppler = (1 + Z) * np.sqrt((1 + beta) / (1 - beta))
    d_l = float(obs.luminosity_distance()) * MPC_CM
    temperature = np.asarray(gas.temperature, np.float64)
    out = np.zeros(wave.size)
    for name, lum in luminosity.items():
        mass = {"H": 1.008, "N": 14.007, "O": 15.999, "S": 32.06}[name.strip("[")[0]]
        sigma_v = np.sqrt(K_B * temperature / (mass * AMU) / 1e10 + 10.0**2)  # σ_turb 10
        centre = AIR[name] * doppler
        # the declared LSF is the second moment of the pixel values: the continuous
        # Gaussian has σ_tel² − δ²/12 (Sheppard), the pixel integration adds δ²/12
        sigma = np.sqrt((centre * sigma_v / C) ** 2 + sigma_tel**2 - STEP**2 / 12)
        cdf = normal_cdf((edges[None, :] - centre[:, None]) / sigma[:, None])
        out += np.sum(lum[:, None] * np.diff(cdf, axis=1), axis=0) / (4 * np.pi * d_l**2) / STEP
    return out


def published_luminosities(gas, electron_density=100.0):
    """Hα = SFR·10^41.27 (Kennicutt & Evans 2012), Hβ = Hα/2.86 (case B), [OIII] and
    [NII] 6548 from the Curti et al. (2020) ratios and 2.98 / 2.94 (Storey & Zeippen),
    [SII] split by Sanders et al. (2016), [OI]/Hα = 10^−1.6 (the placeholder of
    docs/physics.md) — written out here from the papers."""
    sfr = np.asarray(gas.sfr, np.float64)
    x = np.clip(8.69 + np.log10(np.asarray(gas.metallicity) / 0.0134), 7.6, 8.9) - 8.69
    poly = lambda c: sum(ci * x**i for i, ci in enumerate(c))
    ha = sfr * 10**41.27
    hb = ha / 2.86
    n2 = ha * 10 ** poly((-0.489, 1.513, -2.554, -5.293, -2.867))
    o3 = hb * 10 ** poly((-0.277, -3.549, -3.593, -0.981))
    s2 = ha * 10 ** poly((-0.442, -0.360, -6.271, -8.339, -3.559))
    r = 0.4315 * (2107.0 + electron_density) / (627.1 + electron_density)
    return {"Hbeta": hb, "[OIII]4959": o3 / 2.98, "[OIII]5007": o3, "[NII]6548": n2 / 2.94,
            "[OI]6300": ha * 10**-1.6, "Halpha": ha, "[NII]6583": n2, "[SII]6716": s2 * r / (1 + r),
            "[SII]6731": s2 / (1 + r)}  # fmt: skip


def test_spectrum_matches_the_pixel_integrated_reference(broad):
    """The cube's total spectrum (all spaxels) against the NumPy reference: every line at
    its Doppler-shifted wavelength, with the published luminosities and σ_gas ⊕ LSF."""
    pipe, gas, cube = broad
    wave = np.asarray(cube.wavelength, np.float64)
    got = np.asarray(cube.flux, np.float64).sum((0, 1)) * pipe.flux_unit
    ref = reference_spectrum(
        gas, observation(), wave, published_luminosities(gas), LSF_FWHM / 2.35482
    )
    err = np.max(np.abs(got - ref)) / np.max(ref)
    print(f"\ngas lines vs reference: max |Δ| / peak = {err:.2e}")
    assert err < 2e-3, err
    for name in ("Hbeta", "[OIII]5007", "Halpha", "[SII]6731"):
        win = np.abs(wave - AIR[name] * (1 + Z)) < 6.0
        centroid = lambda f: np.sum(wave[win] * f[win]) / np.sum(f[win])
        assert abs(centroid(got) - centroid(ref)) < 0.05, name


def test_line_ratios_before_dust(broad):
    """Integrated fluxes: Hα/Hβ = 2.86 (case B, 10⁴ K), [OIII] 5007/4959 = 2.98,
    [NII] 6583/6548 = 2.94, [SII] 6716/6731 = Sanders et al. (2016) at 100 cm⁻³."""
    pipe, gas, cube = broad
    wave = np.asarray(cube.wavelength, np.float64)
    total = np.asarray(cube.flux, np.float64).sum((0, 1))
    # the neighbours' tails inside each ±10 Å window, from the reference, are removed
    lum = published_luminosities(gas)
    ref_all = reference_spectrum(gas, observation(), wave, lum, LSF_FWHM / 2.35482)

    def line_flux(name):
        win = np.abs(wave - AIR[name] * (1 + Z)) < 10.0
        alone = reference_spectrum(gas, observation(), wave, {name: lum[name]}, LSF_FWHM / 2.35482)
        tails = (ref_all - alone)[win].sum() / pipe.flux_unit
        return total[win].sum() - tails

    r_sii = 0.4315 * (2107.0 + 100.0) / (627.1 + 100.0)
    for (a, b), want in {("Halpha", "Hbeta"): 2.86, ("[OIII]5007", "[OIII]4959"): 2.98,
                         ("[NII]6583", "[NII]6548"): 2.94, ("[SII]6716", "[SII]6731"): r_sii}.items():  # fmt: skip
        assert abs(line_flux(a) / line_flux(b) / want - 1) < 1e-3, (a, b)


def test_total_halpha_flux_is_sfr_times_calibration(halpha):
    """Σ cube · δλ = Σ SFR × 10^41.27 erg/s / (4π d_L²) within 1e-4 (no PSF, field holds
    the whole star-forming disk), and a gas-only cube is zero away from the line."""
    pipe, gas = halpha
    obs = observation()
    cube = pipe(None, obs, gas=gas)
    total = float(np.sum(np.asarray(cube.flux, np.float64))) * STEP * pipe.flux_unit
    d_l = float(obs.luminosity_distance()) * MPC_CM
    want = float(np.sum(gas.sfr)) * 10**41.27 / (4 * np.pi * d_l**2)
    print(f"\nHα total / (Σ SFR · 10^41.27 / 4π d_L²) = {total / want:.8f}")
    assert abs(total / want - 1) < 1e-4
    far = np.abs(np.asarray(cube.wavelength) - 6562.8 * (1 + Z)) > 40
    assert np.max(np.abs(np.asarray(cube.flux)[:, :, far])) < 1e-6 * np.max(cube.flux)


def test_gradients_match_central_differences(halpha):
    """d(Σ w · cube)/d(gas x position, temperature, turbulent σ) against central finite
    differences (float64), ≤ 1e-4 relative."""
    pipe, gas = halpha
    obs = observation()
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(12, 12, 160)))

    def loss(params):
        dx, log_t, turb = params
        g = eqx_replace(gas, position=gas.position.at[:, 0].add(dx),
                        temperature=gas.temperature * jnp.exp(log_t))  # fmt: skip
        stage = pipe.line_stage
        p = eqx_replace_stage(pipe, stage, turb)
        return jnp.sum(weights * p(None, obs, gas=g).flux)

    params = (jnp.asarray(0.3), jnp.asarray(0.2), jnp.asarray(12.0))
    grad = jax.grad(loss)(params)
    for i, h in enumerate((1e-4, 1e-4, 1e-4)):
        plus = tuple(p + h if j == i else p for j, p in enumerate(params))
        minus = tuple(p - h if j == i else p for j, p in enumerate(params))
        fd = (loss(plus) - loss(minus)) / (2 * h)
        assert abs(float(grad[i]) - float(fd)) <= 1e-4 * abs(float(fd)), (i, grad[i], fd)


def eqx_replace(gas, **fields):
    return eqx.tree_at(lambda g: [getattr(g, k) for k in fields], gas, list(fields.values()))


def eqx_replace_stage(pipe, stage, turbulent_sigma):
    new = eqx.tree_at(lambda s: s.turbulent_sigma, stage, turbulent_sigma)
    stages = tuple(new if s is stage else s for s in pipe.stages)
    return eqx.tree_at(lambda p: p.stages, pipe, stages)


def test_same_shape_compiles_once(halpha):
    pipe, gas = halpha
    obs = observation()
    pipe(None, obs, gas=gas)
    other = eqx_replace(gas, sfr=gas.sfr * 2.0)
    with count_compilations() as count:
        pipe(None, observation(inclination=60.0), gas=other).flux.block_until_ready()
    assert count() == 0


def test_bad_inputs_are_named(halpha):
    pipe, gas = halpha
    plain = pipe.without(rx.EmissionLines)
    with pytest.raises(ValueError, match="no line stage .* `emission_lines=True`"):
        plain(None, observation(), gas=gas)
    with pytest.raises(TypeError, match="`gas` must be a `rubix_eqx.galaxy.Gas`"):
        pipe(None, observation(), gas={"sfr": 1})
    with pytest.raises(ValueError, match="Unknown emission line 'Hepsilon'"):
        rx.EmissionLines.build(pipe.grid, pipe.ssp, "air", lines=("Hepsilon",))
    with pytest.raises(ValueError, match=r"turbulent_sigma=...\)` must be finite and >= 0; got -1"):
        rx.EmissionLines.build(pipe.grid, pipe.ssp, "air", turbulent_sigma=-1.0)
    with pytest.raises(ValueError, match=r"`Gas.sfr` is negative for 1 of 40"):
        Gas(
            **{f: getattr(gas, f) for f in rx.galaxy._gas.FIELDS} | {"sfr": gas.sfr.at[0].set(-1.0)}
        )
    hot = eqx_replace(gas, temperature=gas.temperature.at[0].set(1e8), sfr=gas.sfr.at[0].set(0.01))
    with pytest.raises(Exception, match=r"broader than EmissionLines\(max_sigma=100\)"):
        pipe(None, observation(), gas=hot)


# -- run config ---------------------------------------------------------------------------

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def test_config_gas_section_builds_lines():
    """`gas: {...}` builds a synthetic gas disk and turns the line stage on; the
    `pipeline.emission_lines` mapping reaches `EmissionLines.build`."""
    from rubix_eqx.config import build_gas, build_pipeline_from, check_config, load_config

    config = load_config(DEFAULT, [
        "gas={n_gas: 50, total_sfr: 1.5}", "telescope.wavelength.start=6400",
        "telescope.wavelength.stop=6900", "telescope.n_x=8", "telescope.n_y=8",
        "pipeline.emission_lines={turbulent_sigma: 20, lines: [Halpha, '[NII]6583']}",
        "pipeline.dust={curve: f99, dust_to_metal: 0.3}",
    ])  # fmt: skip
    spec = check_config(config)
    assert spec.gas == {"source": "synthetic", "n_gas": 50, "total_sfr": 1.5}
    gas = build_gas(spec.gas, spec.galaxy, spec.seed)
    assert gas.n_particles == 50 and abs(float(np.sum(gas.sfr)) - 1.5) < 1e-9
    stage = build_pipeline_from(spec, tiny_ssp()).line_stage
    assert isinstance(stage, rx.EmissionLines) and stage.lines == ("Halpha", "[NII]6583")
    assert float(stage.turbulent_sigma) == 20.0
    screen = build_pipeline_from(spec, tiny_ssp()).stage(rx.GasScreen)
    assert screen.curve == "f99" and float(screen.dust_to_metal) == 0.3
    plain = check_config(load_config(DEFAULT, []))
    assert plain.gas is None and "emission_lines" not in plain.pipeline


@pytest.mark.parametrize("overrides, message", [
    (["gas={n_gas: 10, colour: red}"], r"gas\.colour: unknown key"),
    (["gas={total_sfr: -1}"], r"gas\.total_sfr: must be >= 0"),
    (["gas={source: file}"], r"gas\.source: `file` reads the gas of the galaxy's snapshot"),
    (["gas={n_gas: 10}", "pipeline.emission_lines=false"],
     r"pipeline\.emission_lines: a `gas` section needs emission lines"),
    (["pipeline.dust=gas"], r"pipeline\.dust: the dust screen is the gas .* add a `gas` section"),
    (["gas={n_gas: 10}", "pipeline.dust={curve: smc}"], r"pipeline\.dust\.curve: "),
    (["pipeline.emission_lines={lines: [Hepsilon]}"],
     r"pipeline\.emission_lines\.lines: unknown line\(s\) \['Hepsilon'\]"),
])  # fmt: skip
def test_config_gas_errors_name_the_key(overrides, message):
    from rubix_eqx.config import check_config, ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        check_config(load_config(DEFAULT, overrides))


def test_star_forming_config_checks():
    """configs/star_forming.yaml (stars, gas lines, gas dust screen) passes the checks."""
    from rubix_eqx.config import check_config, load_config

    spec = check_config(load_config(DEFAULT.parent / "star_forming.yaml", []))
    assert spec.gas["source"] == "synthetic" and spec.pipeline["dust"] == {"curve": "ccm89"}
    assert spec.pipeline["emission_lines"] == {"turbulent_sigma": 15.0}


def test_continuum_fit_with_lines_masked_recovers_stellar_velocity():
    """pPXF-style: stars at V = +120 km/s and gas lines at −100 km/s, S/N 100; the
    one-SSP continuum fit of each spaxel with the emission lines masked
    (`rx.fit.mask_emission_lines`, pPXF's goodpixels) recovers the stars' V within 5 km/s."""
    tel = telescope(4800.0, 6300.0, n=2, spaxel=1.0)
    ssp = tiny_ssp(metal_slope=0.3)
    pipe = rx.Pipeline(tel, ssp, emission_lines=True, psf=False, aperture=False,
                       noise=rx.Noise(snr=100.0), dtype=jnp.float64)  # fmt: skip
    obs = observation(inclination=0.0, position_angle=0.0)
    los = np.asarray(rx.Orient().matrix(obs), np.float64)[2]  # v_los = velocity · los
    rng = np.random.default_rng(7)
    d_a = float(obs.angular_diameter_distance())
    half = 1.0 / 206264.806 * d_a * 1e3  # kpc: half the 2" field
    n = 4000
    velocity = 120.0 * los + rng.normal(0, 50.0, (n, 3))
    stars = rx.Galaxy.from_arrays(
        position=np.column_stack([rng.uniform(-half, half, (n, 2)) * 0.9, rng.normal(0, 0.2, n)]),
        velocity=velocity, mass=np.full(n, 1e5), age=np.full(n, 5.0),
        metallicity=np.full(n, 0.019), dtype=jnp.float64,
    )  # fmt: skip
    m = 200
    gas = Gas(
        position=np.column_stack([rng.uniform(-half, half, (m, 2)) * 0.9, np.zeros(m)]),
        velocity=np.tile(-100.0 * los, (m, 1)), mass=np.full(m, 1e6),
        metallicity=np.full(m, 0.0134), sfr=np.full(m, 2e-3), temperature=np.full(m, 1e4),
        smoothing_length=np.full(m, 0.1),
    )  # fmt: skip
    cube = pipe(stars, obs, gas=gas, key=jax.random.key(0))
    wave = np.asarray(cube.wavelength)
    centre = np.asarray(cube.flux).sum((0, 1))
    lines = rx.fit.emission_line_mask(wave, Z)
    assert centre[np.asarray(lines)].max() > 2 * np.median(centre)  # the lines stand out
    truth = np.asarray(rx.truth_maps(stars, obs, tel, ssp).velocity)  # light-weighted V
    fitted = rx.fit.fit_spaxels(rx.fit.mask_emission_lines(cube), ssp, tel, obs)
    unmasked = rx.fit.fit_spaxels(cube, ssp, tel, obs)
    v, v_raw = np.asarray(fitted.maps.velocity), np.asarray(unmasked.maps.velocity)
    print(
        f"\nstellar V: truth {truth.ravel()}, lines masked {v.ravel()}, unmasked {v_raw.ravel()}"
    )
    assert np.all(np.asarray(fitted.status) == 0)
    assert np.max(np.abs(v - truth)) < 5.0
