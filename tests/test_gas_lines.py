"""Emission lines of star-forming gas (`rx.EmissionLines`), against a plain NumPy float64
reference written from the textbook definition: each line a Gaussian in wavelength at
λ_rest·(1+z)·sqrt((1+β)/(1−β)) of variance (λσ_gas/c)² plus the telescope's LSF,
integrated over the real telescope pixels; luminosities from the published numbers
(Kennicutt & Evans 2012; case B; Storey & Zeippen 2000), fluxes L / (4π d_L²)."""


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
    ref = reference_spectrum(gas, observation(), wave, published_luminosities(gas), LSF_FWHM / 2.35482)
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


def test_stars_and_gas_add(halpha):
    """The cube of stars and gas is the stars' cube (the same gas without star formation)
    plus the gas-only cube."""
    pipe, gas = halpha
    galaxy, _ = rx.galaxy.synthetic_disk(jax.random.key(3), n_stars=50, dtype=jnp.float64)
    obs = observation()
    both = np.asarray(pipe(galaxy, obs, gas=gas).flux)
    stars = np.asarray(pipe(galaxy, obs, gas=eqx_replace(gas, sfr=0 * gas.sfr)).flux)
    lines = np.asarray(pipe(None, obs, gas=gas).flux)
    assert np.max(stars) > 0.1 * np.max(lines)  # both contribute
    assert np.max(np.abs(both - stars - lines)) <= 1e-12 * np.max(np.abs(both))


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
    with pytest.raises(ValueError, match=r"`Gas.sfr` has 1 .*negative"):
        Gas(**{f: getattr(gas, f) for f in rx.galaxy._gas.FIELDS} | {"sfr": gas.sfr.at[0].set(-1.0)})
    hot = eqx_replace(gas, temperature=gas.temperature.at[0].set(1e8))
    with pytest.raises(Exception, match=r"broader than EmissionLines\(max_sigma=100\)"):
        pipe(None, observation(), gas=hot)
