"""Gauss–Hermite kinematics (`fit_spaxels(moments=4)`) and non-negative SSP mixtures
(`fit_mixture`) on spectra made by the independent NumPy reference.

The spectra come from tests/exact_reference.py: each native template sample is an
impulse, shifted by every velocity of an explicitly tabulated Gauss–Hermite LOSVD (a
5 km/s grid over ±6σ, each sample a Doppler factor exp(v/c) with weight L(v) Δv), spread
by the Gaussian LSF kernel and integrated over the real output pixels. No Fourier
transform and no ln λ lattice: nothing of `SpectrumModel`.

The SSP grid is synthetic (no MILES data) with features that are not linear in log age
or log Z: a Balmer-like set peaking at 1 Gyr, a forest of metal lines saturating with
age and growing as Z^0.6, lines fading with age and lines appearing late (∝ Z^1.5), a
continuum slope in tanh(log age), mass-to-light rising with age.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from . import exact_reference as ref
from .foreign_files import write_muse_drp_cube
from .test_papercuts import count_compilations


Z_OBS = 0.03
LSF_FWHM = 3.2  # Å on the pixels (templates: 2.5 Å at rest)
SNR = 100.0
AGES = np.array([0.5, 1.0, 2.0, 4.0, 7.0, 10.0, 13.0])  # Gyr
METALS = np.array([0.004, 0.01, 0.019, 0.03])
SIGMA = 150.0  # km/s
GH = [(0.1, 0.1), (0.1, -0.1), (-0.1, 0.1), (-0.1, -0.1)]  # (h3, h4) per spaxel
VELOCITIES = [-60.0, 25.0, 80.0, -10.0]


def synthetic_ssp() -> rx.SSPGrid:
    wave = np.arange(4400.0, 6000.5, 1.0)
    rng = np.random.default_rng(7)
    balmer = np.array([4861.3, 4340.5, 4101.7])
    metal_a = np.sort(rng.uniform(4500.0, 5900.0, 300))  # a dense forest, as real spectra
    strength_a = rng.uniform(0.3, 1.5, metal_a.size)
    young = np.sort(rng.uniform(4500.0, 5900.0, 40))  # fade with age
    old = np.sort(rng.uniform(4500.0, 5900.0, 40))  # grow late, steeply with Z
    metal_b = np.array([5167.3, 5172.7, 5183.6, 5270.0, 5335.0, 5406.0, 5709.0, 5782.0])
    sig_line = 2.5 / ref.FWHM_PER_SIGMA
    flux = np.empty((AGES.size, METALS.size, wave.size))
    for i, age in enumerate(AGES):
        la = math.log10(age)
        for j, z in enumerate(METALS):
            lz = math.log10(z / 0.019)
            depth_balmer = 0.55 * math.exp(-0.5 * (la / 0.3) ** 2) + 0.05
            depth_a = (0.5 * (z / 0.019) ** 0.6 * (1 - math.exp(-age / 2.5)) + 0.05) * strength_a
            depth_b = 0.08 + 0.12 * (1 + math.tanh(2 * (la - 0.4))) * (z / 0.019) ** 0.3
            depth_young = 0.6 * math.exp(-age / 1.2)
            depth_old = 0.5 * (1 - math.exp(-((age / 6.0) ** 2))) * (z / 0.019) ** 1.5
            tau = np.zeros_like(wave)
            for centres, depth, width in (
                (young, depth_young, sig_line),
                (old, depth_old, sig_line),
                (balmer, depth_balmer, 3.0 * sig_line),
                (metal_a, depth_a, sig_line),
                (metal_b, depth_b, 1.3 * sig_line),
            ):
                for c, d in zip(centres, np.broadcast_to(depth, centres.shape)):
                    tau += d * np.exp(-0.5 * ((wave - c) / width) ** 2)
            slope = -2.0 + 1.5 * math.tanh(la + 0.3) + 0.4 * lz
            flux[i, j] = 1e-3 / age**0.8 * (wave / 5000.0) ** slope * np.exp(-tau)
    return rx.SSPGrid(
        age=jnp.asarray(AGES),
        metallicity=jnp.asarray(METALS),
        wavelength=jnp.asarray(wave),
        flux=jnp.asarray(flux),
        fwhm=jnp.full(wave.shape, 2.5),
        remaining_mass_fraction=jnp.ones((AGES.size, METALS.size)),
    )


def telescope(n_x: int, n_y: int) -> rx.Telescope:
    wave = np.arange(4700.0, 6000.0, 1.25)
    return rx.Telescope(
        name="gh-test", spaxel_size=0.2, n_x=n_x, n_y=n_y, wavelength=jnp.asarray(wave),
        lsf_fwhm=jnp.full(wave.shape, LSF_FWHM),
    )  # fmt: skip


def gauss_hermite(y, h3, h4):
    """The normalised Gauss–Hermite LOSVD shape of y = (v − V)/σ (van der Marel & Franx
    1993), tabulated directly: exp(−y²/2)/√2π [1 + h3 H3(y) + h4 H4(y)]."""
    herm3 = (2 * math.sqrt(2) * y**3 - 3 * math.sqrt(2) * y) / math.sqrt(6)
    herm4 = (4 * y**4 - 12 * y**2 + 3) / math.sqrt(24)
    return np.exp(-0.5 * y**2) / math.sqrt(2 * math.pi) * (1 + h3 * herm3 + h4 * herm4)


def reference_spectrum(ssp, template, wave, velocity, sigma, h3=0.0, h4=0.0, step=5.0):
    """One template (rest native samples) through a tabulated GH LOSVD, the LSF and the
    pixels, by the exact reference (no Fourier transform, no lattice)."""
    dv = np.arange(-6 * sigma, 6 * sigma + step / 2, step)
    weight = gauss_hermite(dv / sigma, h3, h4) * step / sigma
    spectrum, clipped = ref.exact_spectra(
        np.asarray(ssp.wavelength, np.float64), np.broadcast_to(template, (dv.size, template.size)),
        np.asarray(ssp.fwhm, np.float64), weight, velocity + dv, Z_OBS, wave,
        np.full(wave.size, LSF_FWHM),
    )  # fmt: skip
    assert not clipped.any()
    return spectrum


def noisy_cube(path, spectra, seed):
    """(n_x, n_y, n_wave) spectra + Gaussian noise at S/N `SNR` as a MUSE-DRP-style file,
    read back (a cube no part of this library made)."""
    rng = np.random.default_rng(seed)
    noise = np.median(spectra, axis=-1, keepdims=True) / SNR
    flux = spectra + noise * rng.normal(size=spectra.shape)
    wave = np.asarray(telescope(1, 1).wavelength)
    write_muse_drp_cube(path, flux, np.broadcast_to(noise**2, spectra.shape), wave[0], 1.25, 0.2)
    return rx.io.read_cube(path)


@pytest.fixture(scope="module")
def ssp():
    return synthetic_ssp()


@pytest.fixture(scope="module")
def gh_spectra(ssp):
    """Four spaxels (2×2): V, σ = 150 km/s and (h3, h4) = (±0.1, ±0.1); a 4 Gyr,
    Z = 0.019 template (a node)."""
    wave = np.asarray(telescope(1, 1).wavelength, np.float64)
    template = np.asarray(ssp.flux[3, 2], np.float64)
    t0 = time.perf_counter()
    spectra = np.stack([
        reference_spectrum(ssp, template, wave, v, SIGMA, h3, h4)
        for v, (h3, h4) in zip(VELOCITIES, GH)
    ]).reshape(2, 2, wave.size) * 1e4  # fmt: skip
    print(f"reference GH spectra: {time.perf_counter() - t0:.2f} s")
    return spectra


@pytest.fixture(scope="module")
def gh_fit(ssp, gh_spectra, tmp_path_factory):
    cube = noisy_cube(tmp_path_factory.mktemp("gh") / "DATACUBE_FINAL.fits", gh_spectra, 1)
    obs = rx.Observation(redshift=Z_OBS)
    with count_compilations() as count:
        t0 = time.perf_counter()
        fit = jax.block_until_ready(rx.fit.fit_spaxels(cube, ssp, telescope(2, 2), obs, moments=4))
        seconds = time.perf_counter() - t0
    print(f"fit_spaxels(moments=4), 2×2: {seconds:.2f} s, {count()} compilations")
    return cube, obs, fit


def test_gauss_hermite_recovery(gh_fit):
    """V within 2 km/s, σ within 3 %, h3 and h4 within 0.02 at S/N 100."""
    _, _, fit = gh_fit
    assert np.asarray(fit.converged).all()
    maps = fit.maps
    got = {
        k: np.asarray(getattr(maps, k)).reshape(-1) for k in ("velocity", "dispersion", "h3", "h4")
    }
    dv = got["velocity"] - np.array(VELOCITIES)
    ds = got["dispersion"] / SIGMA - 1
    dh3 = got["h3"] - np.array([g[0] for g in GH])
    dh4 = got["h4"] - np.array([g[1] for g in GH])
    print("ΔV", np.round(dv, 2), "Δσ/σ", np.round(ds, 4), "Δh3", np.round(dh3, 4),
          "Δh4", np.round(dh4, 4))  # fmt: skip
    print("errors: V", np.asarray(fit.velocity_err).reshape(-1).round(2),
          "h3", np.asarray(fit.h3_err).reshape(-1).round(4),
          "h4", np.asarray(fit.h4_err).reshape(-1).round(4))  # fmt: skip
    assert np.all(np.abs(dv) < 2.0)
    assert np.all(np.abs(ds) < 0.03)
    assert np.all(np.abs(dh3) < 0.02) and np.all(np.abs(dh4) < 0.02)
    assert np.all(np.asarray(fit.h3_err) > 0) and np.all(np.asarray(fit.h4_err) > 0)


YOUNG, OLD, SOLAR = 1, 5, 2  # grid indices: 1 Gyr, 10 Gyr, Z = 0.019
FRACTIONS = [0.2, 0.4, 0.6, 0.8]  # light of the 1 Gyr population over the pixels


@pytest.fixture(scope="module")
def two_populations(ssp):
    """2×2 spaxels: 1 Gyr + 10 Gyr (Z = 0.019) at young light fractions 0.2–0.8, one
    Gaussian LOSVD (σ = 120 km/s), by the exact reference."""
    wave = np.asarray(telescope(1, 1).wavelength, np.float64)
    parts = [
        reference_spectrum(ssp, np.asarray(ssp.flux[i, SOLAR], np.float64), wave, 30.0, 120.0)
        for i in (YOUNG, OLD)
    ]
    parts = [p / p.mean() for p in parts]  # unit mean flux: light fractions are amplitudes
    return np.stack([f * parts[0] + (1 - f) * parts[1] for f in FRACTIONS]).reshape(2, 2, -1)


def young_fraction(fit):
    light = np.asarray(fit.light_weights)  # (n_x, n_y, n_age, n_Z)
    return light[:, :, AGES < 4.0].sum(axis=(2, 3)).reshape(-1)


@pytest.fixture(scope="module")
def mixture_fit(ssp, two_populations, tmp_path_factory):
    cube = noisy_cube(tmp_path_factory.mktemp("mix") / "DATACUBE_FINAL.fits", two_populations, 2)
    obs = rx.Observation(redshift=Z_OBS)
    with count_compilations() as count:
        t0 = time.perf_counter()
        fit = jax.block_until_ready(rx.fit.fit_mixture(cube, ssp, telescope(2, 2), obs, moments=4))
        seconds = time.perf_counter() - t0
    print(f"fit_mixture(moments=4), 2×2: {seconds:.2f} s, {count()} compilations")
    return cube, obs, fit


def test_mixture_recovers_two_populations(mixture_fit):
    """Light fraction of the young population within 0.05, light-weighted mean log age
    within 0.05 dex (and [M/H] of the mixture near solar)."""
    _, _, fit = mixture_fit
    assert np.asarray(fit.converged).all()
    frac = young_fraction(fit)
    truth_age = np.array([f * 9.0 + (1 - f) * 10.0 for f in FRACTIONS])
    d_age = np.asarray(fit.log_age).reshape(-1) - truth_age
    d_mh = np.asarray(fit.metallicity).reshape(-1)
    print("young fraction", frac.round(4), "Δlog age", d_age.round(4), "[M/H]", d_mh.round(4))
    print("NNLS iterations", np.asarray(fit.iterations).reshape(-1), "χ²",
          np.asarray(fit.chi2).reshape(-1).round(3))  # fmt: skip
    assert np.all(np.abs(frac - np.array(FRACTIONS)) < 0.05)
    assert np.all(np.abs(d_age) < 0.05)
    assert np.all(np.abs(d_mh) < 0.1)
    np.testing.assert_allclose(np.asarray(fit.light_weights).sum(axis=(2, 3)), 1.0, rtol=1e-10)
    assert np.all(np.asarray(fit.weights) >= 0)
    # mass-weighted: the old population has 10^0.8·(10)^... more mass per light here
    assert np.all(np.asarray(fit.log_age_mass) > np.asarray(fit.log_age))
    assert np.all(np.abs(np.asarray(fit.chi2) - 1) < 0.2)


def test_fits_compile_once_per_shape(ssp, gh_spectra, two_populations, gh_fit, mixture_fit,
                                     tmp_path):  # fmt: skip
    """A second call on a same-shaped cube (other data) compiles nothing, for
    `fit_spaxels(moments=4)` and for `fit_mixture`."""
    obs = rx.Observation(redshift=Z_OBS)
    tel = telescope(2, 2)
    for name, spectra, call in (
        ("fit_spaxels", gh_spectra, lambda c: rx.fit.fit_spaxels(c, ssp, tel, obs, moments=4)),
        ("fit_mixture", two_populations, lambda c: rx.fit.fit_mixture(c, ssp, tel, obs, moments=4)),
    ):
        cube = noisy_cube(tmp_path / f"{name}.fits", spectra, 11)
        with count_compilations() as count:
            t0 = time.perf_counter()
            plain = jax.block_until_ready(call(cube))
            seconds = time.perf_counter() - t0
        print(f"{name} again: {seconds:.2f} s, {count()} compilations")
        assert count() == 0
    # regularisation is an argument of the same compiled solve, and smooths the weights
    with count_compilations() as count:
        smooth = rx.fit.fit_mixture(cube, ssp, tel, obs, moments=4, regul=30.0)
    assert count() == 0
    diff = rx.fit.second_differences(AGES.size, METALS.size)

    def rough(fit):  # ‖D w‖ of the mass fractions per spaxel
        w = np.asarray(fit.weights).reshape(4, -1)
        return np.linalg.norm((w / w.sum(axis=1, keepdims=True)) @ diff.T, axis=1)

    print("roughness ‖D w‖ regul=0:", rough(plain).round(3), "regul=30:", rough(smooth).round(3))
    assert np.all(rough(smooth) < rough(plain))
    assert np.all(np.abs(np.asarray(smooth.log_age) - np.asarray(plain.log_age)) < 0.2)


def test_nnls_matches_scipy():
    """The Lawson–Hanson solve against scipy.optimize.nnls on random problems with
    active constraints."""
    from scipy.optimize import nnls as scipy_nnls

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 80, 12))
    d = 0.3 * rng.normal(size=(6, 80)) + a @ rng.normal(size=12)  # some weights < 0
    gram = np.einsum("bmi,bmj->bij", a, a)
    rhs = np.einsum("bmi,bm->bi", a, d)
    solve = jax.jit(jax.vmap(lambda g, c: rx.fit.nnls(g, c, 36)))
    w, it, ok = solve(jnp.asarray(gram), jnp.asarray(rhs))
    assert np.asarray(ok).all()
    for k in range(6):
        expected, _ = scipy_nnls(a[k], d[k])
        assert (expected == 0).any()
        np.testing.assert_allclose(np.asarray(w[k]), expected, atol=1e-9)
    print("iterations", np.asarray(it))
    # warm starts (the solution of a perturbed problem, or a wrong support) reach the same
    # solution; from a nearby problem's solution in fewer iterations
    near = d + 0.01 * rng.normal(size=d.shape)
    w_near = np.stack([scipy_nnls(a[k], near[k])[0] for k in range(6)])
    wrong = np.where(w_near > 0, 0.0, 1.0)
    warm = jax.jit(jax.vmap(lambda g, c, w0: rx.fit.nnls(g, c, 36, w0=w0)))
    for w0 in (w_near, wrong):
        w_warm, it_warm, ok_warm = warm(jnp.asarray(gram), jnp.asarray(rhs), jnp.asarray(w0))
        assert np.asarray(ok_warm).all()
        np.testing.assert_allclose(np.asarray(w_warm), np.asarray(w), atol=1e-9)
        print("warm-start iterations", np.asarray(it_warm))
    assert np.all(np.asarray(warm(jnp.asarray(gram), jnp.asarray(rhs), jnp.asarray(w_near))[1])
                  < np.asarray(it))  # fmt: skip


def test_bad_moments_and_regul(ssp, gh_fit):
    cube, obs, _ = gh_fit
    with pytest.raises(ValueError, match=r"moments=.*got 3"):
        rx.fit.fit_spaxels(cube, ssp, telescope(2, 2), obs, moments=3)
    with pytest.raises(ValueError, match=r"fit_mixture\(moments=.*got 6"):
        rx.fit.fit_mixture(cube, ssp, telescope(2, 2), obs, moments=6)
    with pytest.raises(ValueError, match=r"regul=.*got -1"):
        rx.fit.fit_mixture(cube, ssp, telescope(2, 2), obs, regul=-1.0)
    with pytest.raises(ValueError, match="regul"):
        rx.fit.fit_mixture(cube, ssp, telescope(2, 2), obs, regul=float("nan"))


def log_rebin(lam, spec, velscale):
    """Flux-conserving rebinning of step-function spectra (axis 0; pixel edges at the
    midpoints) onto ln λ pixels of `velscale` km/s (pPXF 8.2.6's own `log_rebin` fails with
    a given `velscale` under NumPy 2.3). Returns (flux density, ln λ centres)."""
    edges = ref.pixel_edges(lam)
    cumulative = np.concatenate([np.zeros((1,) + spec.shape[1:]), np.cumsum(
        spec * np.diff(edges).reshape((-1,) + (1,) * (spec.ndim - 1)), axis=0)])  # fmt: skip
    step = velscale / ref.C_KMS
    n = int(math.log(edges[-1] / edges[0]) / step)
    new = edges[0] * np.exp(step * np.arange(n + 1))
    at = np.stack([np.interp(new, edges, c) for c in cumulative.reshape(edges.size, -1).T], 1)
    flux = np.diff(at, axis=0) / np.diff(new)[:, None]
    return flux.reshape((n,) + spec.shape[1:]), np.log(np.sqrt(new[1:] * new[:-1]))


def test_mixture_agrees_with_ppxf(ssp, mixture_fit):
    """pPXF 8.2.6 on the same spectra with the same templates (broadened to the cube's
    LSF, log-rebinned), moments=4, no polynomials, regul=0: the light-weighted mean log age
    and [M/H] agree with `fit_mixture` within 0.05 dex."""
    ppxf_mod = pytest.importorskip("ppxf.ppxf")
    util = pytest.importorskip("ppxf.ppxf_util")
    cube, _, fit = mixture_fit
    one_z = 1 + Z_OBS
    lam_gal = np.asarray(cube.wavelength, np.float64) / one_z  # rest frame, as pPXF
    fwhm_diff = math.sqrt((LSF_FWHM / one_z) ** 2 - 2.5**2)  # Å; templates at 1 Å steps
    lam_tpl = np.asarray(ssp.wavelength, np.float64)
    flux_tpl = np.asarray(ssp.flux, np.float64).reshape(-1, lam_tpl.size)
    smooth = np.stack(
        [
            util.gaussian_filter1d(f, np.full(f.size, fwhm_diff / ref.FWHM_PER_SIGMA))
            for f in flux_tpl
        ]
    )
    n_age, n_z = AGES.size, METALS.size
    ages, mh = np.meshgrid(np.log10(AGES) + 9, np.log10(METALS / 0.019), indexing="ij")
    t0 = time.perf_counter()
    for ix in range(2):
        for iy in range(2):
            spec = np.asarray(cube.flux[ix, iy], np.float64)
            noise = np.sqrt(np.asarray(cube.variance[ix, iy], np.float64))
            galaxy, ln_lam, velscale = util.log_rebin(lam_gal, spec)
            noise_log = util.log_rebin(lam_gal, noise)[0]
            templates, ln_lam_tpl = log_rebin(lam_tpl, smooth.T, velscale)
            templates = templates / np.median(templates)
            scale = np.median(galaxy)
            pp = ppxf_mod.ppxf(
                templates.reshape(-1, n_age, n_z), galaxy / scale, noise_log / scale, velscale,
                [0.0, 150.0], moments=4, degree=-1, lam=np.exp(ln_lam), lam_temp=np.exp(ln_lam_tpl),
                quiet=True,
            )  # fmt: skip
            inside = (ln_lam_tpl >= ln_lam[0]) & (ln_lam_tpl <= ln_lam[-1])
            light = pp.weights * templates[inside].mean(axis=0)
            light = (light / light.sum()).reshape(n_age, n_z)
            d_age = float(np.sum(light * ages)) - float(fit.log_age[ix, iy])
            d_mh = float(np.sum(light * mh)) - float(fit.metallicity[ix, iy])
            print(f"pPXF − ours ({ix},{iy}): log age {d_age:+.4f}, [M/H] {d_mh:+.4f}; "
                  f"pPXF V {pp.sol[0]:.2f} σ {pp.sol[1]:.2f}")  # fmt: skip
            assert abs(d_age) < 0.05 and abs(d_mh) < 0.05
    print(f"pPXF: {time.perf_counter() - t0:.2f} s for 4 spectra")


def test_queue_slots():
    """About n/8 spaxels side by side, at least 8 (or n), at most 256."""
    from rubix_eqx.fit._spaxels import queue_slots

    got = [queue_slots(n) for n in (1, 4, 8, 9, 64, 100, 2048, 10**5)]
    assert got == [1, 4, 8, 8, 8, 12, 256, 256]


def queue_problem(ssp, cube, obs):
    """`fit_spaxels`' model, data and starting points for the 2×2 GH cube (moments 4)."""
    from rubix_eqx.fit import _spaxels as fs

    model, flux, var, _, active = fs.prepare(cube, ssp, telescope(2, 2), obs, None, 3.0)
    start = fs._starting_points(model, ssp, flux, var, 80.0, (-600.0, 600.0, 40.0))
    bounds = fs._bounds(ssp)
    p_start = jax.vmap(lambda *s: fs._initial(*s, 7, bounds))(*start[:4])
    return model, flux, var, start, active, bounds, p_start


def queue_solve(ssp, cube, obs, max_steps, slots):
    """`_queue` (jitted; `max_steps` traced: one compilation per `slots`) on the GH cube:
    (physical values (7 arrays of (4,)), converged, steps, retried)."""
    import equinox as eqx
    import optimistix as optx
    from rubix_eqx.fit import _spaxels as fs

    model, flux, var, start, active, bounds, p_start = queue_problem(ssp, cube, obs)
    solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
    p, ok, steps, retried = eqx.filter_jit(fs._queue)(
        model, flux, var, start[4], p_start, active, bounds, solver,
        jnp.asarray(max_steps, jnp.int32), slots,
    )  # fmt: skip
    theta = jax.vmap(lambda q, a: jnp.stack(fs._physical(q, a, bounds)))(p, start[4])
    return np.asarray(theta).T, np.asarray(ok), np.asarray(steps), np.asarray(retried)


@pytest.fixture(scope="module")
def vmapped_gh_fit(ssp, gh_fit):
    """optimistix's vmapped `least_squares` (`_run`, max_steps 200) on the GH cube:
    (physical values (7, 4), status, χ²)."""
    import optimistix as optx
    from rubix_eqx.fit import _spaxels as fs

    cube, obs, _ = gh_fit
    model, flux, var, start, active, bounds, _ = queue_problem(ssp, cube, obs)
    solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
    theta, _, status, chi2 = fs._run(model, flux, var, start, active, bounds, solver, 200, 4)
    return np.stack([np.asarray(t) for t in theta]), np.asarray(status), np.asarray(chi2)


def assert_same_fit(theta, reference):
    """(log age, log Z, V, σ, mass, h3, h4) equal to well within the 1σ errors (GH test:
    0.5 km/s in V, 0.003 in h3, h4)."""
    np.testing.assert_allclose(theta[:2], reference[:2], atol=1e-5)  # dex
    np.testing.assert_allclose(theta[2:4], reference[2:4], atol=1e-3)  # km/s
    np.testing.assert_allclose(theta[4], reference[4], rtol=1e-6)
    np.testing.assert_allclose(theta[5:], reference[5:], atol=1e-6)


def test_queue_matches_vmapped_solve(ssp, gh_fit, vmapped_gh_fit):
    """The work queue with 1 slot, and with 1 slot per spaxel (`fit_spaxels` on 4 spaxels),
    gives optimistix's vmapped `least_squares` fit (the same solver from the same starts)."""
    cube, obs, fit = gh_fit
    reference, status, chi2 = vmapped_gh_fit
    assert np.all(status == 0)
    maps = fit.maps
    ours = np.stack([np.asarray(x).reshape(-1) for x in (
        maps.log_age - 9, maps.metallicity + math.log10(0.019), maps.velocity,
        maps.dispersion, maps.flux, maps.h3, maps.h4)])  # fmt: skip
    assert_same_fit(ours, reference)
    np.testing.assert_allclose(np.asarray(fit.chi2).reshape(-1), chi2, rtol=1e-8)
    theta, ok, steps, retried = queue_solve(ssp, cube, obs, 200, 1)
    print("queue steps (1 slot)", steps)
    assert ok.all() and not retried.any() and np.all(steps < 200)
    assert_same_fit(theta, reference)


def test_queue_retries_only_unconverged_spaxels(ssp, gh_fit, vmapped_gh_fit):
    """With max_steps = 20, the spaxels that need more steps (optimistix's own solve: 42,
    32, 18 and 8) end their first pass unconverged and go back to the queue, alone: the
    two that converged keep their first-pass solution, the same as with max_steps = 200;
    the retried ones continue from where they stopped and only improve."""
    from rubix_eqx.fit import _spaxels as fs

    cube, obs, _ = gh_fit
    reference, _, _ = vmapped_gh_fit
    full, _, full_steps, _ = queue_solve(ssp, cube, obs, 200, 1)
    theta, ok, steps, retried = queue_solve(ssp, cube, obs, 20, 1)
    print("steps to converge", full_steps, "max_steps 20: retried", retried, "steps", steps, ok)
    np.testing.assert_array_equal(retried, full_steps > 20)
    assert retried.any() and not retried.all()
    # converged in the first pass: untouched by the retries
    assert ok[~retried].all()
    np.testing.assert_array_equal(steps[~retried], full_steps[~retried])
    assert_same_fit(theta[:, ~retried], reference[:, ~retried])
    # retried: a second pass of ≤ 20 steps from the first pass's end, closer to the solution
    assert np.all(steps[retried] <= 20)
    model, flux, var, start, active, bounds, _ = queue_problem(ssp, cube, obs)

    @jax.jit
    def chi2(theta):
        r = jax.vmap(lambda t, d, v: fs._residual_physical(model, tuple(t), (d, v)))
        return jnp.sum(r(jnp.asarray(theta).T, flux, var) ** 2, axis=1)

    p0 = queue_problem(ssp, cube, obs)[-1]
    at_start = jax.vmap(lambda q, a: jnp.stack(fs._physical(q, a, bounds)))(p0, start[4]).T
    got, before, best = (np.asarray(chi2(t)) for t in (theta, at_start, full))
    print("χ² start", before.round(2), "max_steps 20", got.round(2), "converged", best.round(2))
    assert np.all(got[retried] < before[retried])
    assert np.all(got[retried] >= best[retried] * (1 - 1e-6))


def test_queue_with_more_slots_than_active_spaxels_takes_the_retries(ssp, gh_fit):
    """A batch padded with masked spaxels (as `rubix-eqx fit` pads its last batch) has
    fewer active spaxels than slots: the retries appended to the queue are still taken
    (the queue used to start past them and never end), and each spaxel's fit is the one
    of the unpadded batch with a slot per spaxel."""
    import equinox as eqx
    import optimistix as optx
    from rubix_eqx.fit import _spaxels as fs

    cube, obs, _ = gh_fit
    model, flux, var, start, active, bounds, p_start = queue_problem(ssp, cube, obs)
    pad = lambda x, value: jnp.concatenate([x, jnp.full((4, *x.shape[1:]), value, x.dtype)])
    solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
    p, ok, steps, retried = eqx.filter_jit(fs._queue)(
        model, pad(flux, 0.0), pad(var, 1.0), pad(start[4], 1.0), pad(p_start, 0.0),
        pad(active, False), bounds, solver, jnp.asarray(20, jnp.int32), 8,
    )  # fmt: skip
    theta = jax.vmap(lambda q, a: jnp.stack(fs._physical(q, a, bounds)))(p[:4], start[4])
    alone, ok_alone, steps_alone, retried_alone = queue_solve(ssp, cube, obs, 20, 4)
    assert np.asarray(retried[:4]).any() and not np.asarray(retried[4:]).any()
    np.testing.assert_array_equal(np.asarray(retried[:4]), retried_alone)
    np.testing.assert_array_equal(np.asarray(steps[:4]), steps_alone)
    np.testing.assert_array_equal(np.asarray(ok[:4]), ok_alone)
    np.testing.assert_allclose(np.asarray(theta).T, alone, rtol=1e-9, atol=1e-9)
