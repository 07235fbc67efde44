"""Instrument stages: LSF, PSF, noise and aperture, against analytic and brute-force cases."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import rubix_eqx as rx
from jax.scipy.special import ndtr
from rubix_eqx._stages._aperture import Aperture
from rubix_eqx._stages._lsf import LSF, ResolutionError
from rubix_eqx._stages._noise import Noise
from rubix_eqx._stages._psf import enclosed_fraction, PSFConvolution


Z = 0.05
SSP_FWHM = 2.5  # Å, rest
FWHM = 2 * math.sqrt(2 * math.log(2))


def flat_ssp() -> rx.SSPGrid:
    wave = np.arange(3500.0, 7500.5, 1.0)
    return rx.SSPGrid(
        age=jnp.asarray([1.0, 10.0]),
        metallicity=jnp.asarray([0.01, 0.02]),
        wavelength=jnp.asarray(wave),
        flux=jnp.ones((2, 2, wave.size)),
        fwhm=jnp.full(wave.shape, SSP_FWHM),
        remaining_mass_fraction=jnp.ones((2, 2)),
    )


def telescope(
    fwhm=(3.0, 6.0), start=5000.0, stop=5600.0, step=1.0, name="tiny", **kw
) -> rx.Telescope:
    wave = np.arange(start, stop + step / 2, step)
    return rx.Telescope(
        name=name,
        spaxel_size=kw.pop("spaxel_size", 0.5),
        n_x=kw.pop("n_x", 4),
        n_y=kw.pop("n_y", 4),
        wavelength=jnp.asarray(wave),
        lsf_fwhm=jnp.asarray(np.linspace(*fwhm, wave.size)),
        **kw,
    )


def floor_fwhm(tel: rx.Telescope, grid, wave) -> np.ndarray:
    """FWHM (Å) that the templates (2.5 Å, 1 Å pixels) and the numerics bring on their
    own: template σ, native and telescope pixels (1/12 each) and the Doppler
    interpolation (1/6 lattice pixel²)."""
    tel_step = float(np.diff(np.asarray(tel.wavelength))[0])
    lattice = wave * grid.log_step
    var = (SSP_FWHM * (1 + Z) / FWHM) ** 2 + ((1 + Z) ** 2 + tel_step**2) / 12 + lattice**2 / 6
    return FWHM * np.sqrt(var)


def asked_fwhm(tel: rx.Telescope, wave, grid) -> np.ndarray:
    """The kernel's FWHM: what the telescope asks beyond the floor."""
    tel_fwhm = np.interp(wave, np.asarray(tel.wavelength), np.asarray(tel.lsf_fwhm))
    return np.sqrt(tel_fwhm**2 - floor_fwhm(tel, grid, wave) ** 2)


# -- LSF ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssp():
    return flat_ssp()


@pytest.fixture(scope="module")
def lsf_case(ssp):
    tel = telescope(fwhm=(3.5, 6.0))
    grid = rx.SpectralGrid.build(ssp, tel.wavelength, dtype=jnp.float64)
    return tel, grid, LSF.build(tel, ssp, grid)


def test_lsf_conserves_flux(lsf_case, key):
    _, grid, lsf = lsf_case
    assert lsf.sharper_range(Z) is None and int(lsf.n_clipped(jnp.asarray(Z))) == 0
    work = jr.uniform(key, (3, grid.n_work), jnp.float64)
    out = lsf.apply(work, jnp.asarray(Z))
    assert out.shape == work.shape
    np.testing.assert_allclose(out.sum(-1), work.sum(-1), rtol=1e-10)


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_lsf_delta_line_fwhm(lsf_case, where):
    """One lattice bin in, FWHM = 2.35482 × second-moment σ (Å) out = the asked FWHM."""
    tel, grid, lsf = lsf_case
    k = int(where * grid.n_work)
    work = jnp.zeros((1, grid.n_work)).at[0, k].set(1.0)
    out = np.asarray(lsf.apply(work, jnp.asarray(Z)))[0]
    lam = np.asarray(lsf.wavelength)
    mean = np.sum(out * lam) / out.sum()
    measured = FWHM * np.sqrt(np.sum(out * (lam - mean) ** 2) / out.sum())
    assert abs(measured / asked_fwhm(tel, lam[k], grid) - 1) < 0.02  # measured: < 1e-7


def test_lsf_matches_brute_force(lsf_case):
    """Against a float64 brute-force convolution in Å: a spectrum sampled 8× finer than
    the lattice, with features at the templates' resolution, each fine pixel spread by
    the Gaussian σ_diff(λ) (erf over the lattice bins), then summed."""
    tel, grid, lsf = lsf_case
    lsf = dataclasses.replace(lsf, fourth_cumulant=0.0)  # the Gaussian kernel alone
    sub, n = 8, grid.n_work
    fine_edges = np.exp(grid.obs_log_start + grid.log_step * np.arange(n * sub + 1) / sub)
    centre = 0.5 * (fine_edges[1:] + fine_edges[:-1])
    rng = np.random.default_rng(1)
    sigma_ssp = SSP_FWHM / FWHM * (1 + Z)
    density = 1 + 0.3 * np.sin(centre / 37.0)
    for c in rng.uniform(centre[0], centre[-1], 40):
        density -= rng.uniform(0.1, 0.6) * np.exp(-0.5 * ((centre - c) / sigma_ssp) ** 2)
    source = density * np.diff(fine_edges)
    sigma = asked_fwhm(tel, centre, grid) / FWHM
    edges = np.exp(grid.obs_log_edges)
    cdf = np.asarray(ndtr((edges[None, :] - centre[:, None]) / sigma[:, None]))
    expected = source @ np.diff(cdf, axis=1)
    out = np.asarray(lsf.apply(jnp.asarray(source.reshape(n, sub).sum(1))[None], jnp.asarray(Z)))[0]
    inner = slice(2 * lsf.half_width, n - 2 * lsf.half_width)  # edges: mirror boundary
    err = np.max(np.abs(out[inner] - expected[inner])) / np.max(expected)
    assert err < 2e-4  # measured 3.2e-5 (unbroadened: 0.3)


def test_lsf_kernel_carries_the_compensating_fourth_cumulant(lsf_case):
    """Each column: sum 1, variance σ_kernel², and the excess fourth cumulant that undoes
    the flat-topped shape of the numerics (while the kernel is wide enough to hold it)."""
    _, grid, lsf = lsf_case
    w = np.asarray(lsf.weights(jnp.asarray(Z)), np.float64)
    d = np.arange(-lsf.half_width, lsf.half_width + 1)[:, None]
    var = np.asarray(lsf.variance(jnp.asarray(Z)), np.float64)
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose((w * d**2).sum(0), var, rtol=1e-9)
    kappa4 = (w * d**4).sum(0) - 3 * var**2
    wide = var > 0.5
    wide[-lsf.half_width :] = False  # the widest columns: wings capped to fit the band
    assert wide.sum() > 100
    target = lsf.fourth_cumulant - 1 / 120  # less the bins' own flattening
    np.testing.assert_allclose(kappa4[wide], target, rtol=0.05)


def test_lsf_resolution_error(ssp):
    tel = telescope(fwhm=(2.0, 4.0), name="sharp")
    grid = rx.SpectralGrid.build(ssp, tel.wavelength, dtype=jnp.float64)
    lsf = LSF.build(tel, ssp, grid)
    work = jnp.ones((1, grid.n_work))
    # sharper (beyond 2 %) where FWHM_tel · 1.02 < the floor's FWHM
    wave = np.asarray(tel.wavelength)
    excess = np.asarray(tel.lsf_fwhm) * 1.02 - floor_fwhm(tel, grid, wave)
    crossing = np.interp(0.0, excess, wave)
    lo, hi = lsf.sharper_range(Z)
    assert lo < wave[0] + 1 and abs(hi - crossing) < 1.0
    with pytest.raises(
        ResolutionError,
        match=r"telescope 'sharp' LSF FWHM 2\.\d\d Å is sharper than the \d\.\d\d Å",
    ) as info:
        lsf.check(Z)
    message = str(info.value)
    reached = float(message.split("sharper than the ")[1].split(" Å")[0])
    assert abs(reached - floor_fwhm(tel, grid, np.asarray([wave[0]]))[0]) < 0.02
    assert "(1+0.05)" in message and f"–{hi:.0f} Å" in message
    assert "allow_sharper=True" in message
    with pytest.raises(ValueError, match="sharper"):
        lsf.apply(work, jnp.asarray(Z))
    with pytest.raises(eqx.EquinoxRuntimeError, match="sharper"):
        eqx.filter_jit(lambda w, z: lsf.apply(w, z))(work, jnp.asarray(Z))

    clipping = LSF.build(tel, ssp, grid, allow_sharper=True)
    clipping.check(Z)  # no error
    sharper = np.asarray(clipping.sharper(jnp.asarray(Z)))
    n_clipped = eqx.filter_jit(lambda m, z: m.n_clipped(z))(clipping, jnp.asarray(Z))
    assert int(n_clipped) == sharper.sum() > 0
    lam = np.asarray(clipping.wavelength)
    assert (lam[sharper].min(), lam[sharper].max()) == clipping.sharper_range(Z)
    # clipped region: identity (away from where the kernel reaches in)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(1, grid.n_work)))
    out = clipping.apply(x, jnp.asarray(Z))
    inside = np.flatnonzero(sharper)[clipping.half_width : -clipping.half_width]
    np.testing.assert_allclose(out[0, inside], x[0, inside], rtol=1e-12)


def test_lsf_gradients(lsf_case, key):
    _, grid, lsf = lsf_case
    k1, k2, k3 = jr.split(key, 3)
    work = jr.uniform(k1, (2, grid.n_work), jnp.float64)
    direction = jr.normal(k2, work.shape, jnp.float64)
    probe = jr.normal(k3, work.shape, jnp.float64)

    def loss(w, z):
        return jnp.sum(probe * lsf.apply(w, z) ** 2)

    grad_w, grad_z = jax.jit(jax.grad(loss, argnums=(0, 1)))(work, jnp.asarray(Z))
    h = 1e-6
    fd_w = (
        loss(work + h * direction, jnp.asarray(Z)) - loss(work - h * direction, jnp.asarray(Z))
    ) / (2 * h)
    assert abs(float(jnp.sum(grad_w * direction)) / float(fd_w) - 1) < 1e-6
    h = 1e-6
    fd_z = (loss(work, jnp.asarray(Z + h)) - loss(work, jnp.asarray(Z - h))) / (2 * h)
    assert abs(float(grad_z) / float(fd_z) - 1) < 1e-5


# -- PSF ---------------------------------------------------------------------------

PSFS = {
    "gaussian": rx.PSF(kind="gaussian", fwhm=1.0),
    "moffat": rx.PSF(kind="moffat", fwhm=1.0, beta=4.765),
}


def psf_telescope(n=64) -> rx.Telescope:
    return telescope(
        fwhm=(3.0, 3.0), start=4000.0, stop=9000.0, step=2500.0, spaxel_size=0.1, n_x=n, n_y=n
    )


def point_source(n=64, n_wave=3):
    return jnp.zeros((n, n, n_wave)).at[n // 2, n // 2, :].set(1.0)


def half_max_fwhm(image: np.ndarray, centre: int) -> float:
    """FWHM (spaxels) from where the profiles along +x, −x, +y, −y cross half the peak
    (linear interpolation of the spaxel values)."""
    peak = image[centre, centre]
    radii = []
    for profile in (
        image[centre:, centre],
        image[centre::-1, centre],
        image[centre, centre:],
        image[centre, centre::-1],
    ):
        i = int(np.argmax(profile < peak / 2))
        radii.append(i - 1 + (profile[i - 1] - peak / 2) / (profile[i - 1] - profile[i]))
    return 2 * float(np.mean(radii))


@pytest.mark.parametrize("kind", ["gaussian", "moffat"])
def test_psf_point_source(kind):
    tel = psf_telescope()
    psf = PSFS[kind]
    stage = PSFConvolution.build(tel, psf)
    assert stage.method == ("separable" if kind == "gaussian" else "fft") and not stage.truncated
    # the kernel holds >= 99.9 % of the flux (analytic, inscribed circle of the square)
    hx, hy = stage.half_size
    assert enclosed_fraction(psf, (min(hx, hy) + 0.5) * tel.spaxel_size) >= 0.999
    np.testing.assert_allclose(stage.kernels.sum((1, 2)), 1.0, rtol=1e-12)
    source = point_source()
    out = np.asarray(stage.apply(source))
    np.testing.assert_allclose(out.sum((0, 1)), 1.0, rtol=1e-5)  # measured < 1e-12
    image = out[:, :, 0]
    offset = (np.arange(64) - 32)[:, None] * tel.spaxel_size
    if kind == "gaussian":  # 2-D second moment, minus the spaxel-integration term s²/12
        var = np.sum(image * offset**2) / image.sum() - tel.spaxel_size**2 / 12
        measured = FWHM * math.sqrt(var)
    else:
        measured = half_max_fwhm(image, 32) * tel.spaxel_size
    assert abs(measured / psf.fwhm - 1) < 0.02  # measured: 1e-5 (Gaussian), 3e-3 (Moffat)


def test_psf_methods_agree_and_gradient(key):
    tel = psf_telescope(n=24)
    psf = rx.PSF(kind="gaussian", fwhm=0.6)
    separable = PSFConvolution.build(tel, psf)
    fft = PSFConvolution.build(tel, psf, method="fft")
    x = jr.uniform(key, (24, 24, 3), jnp.float64)
    np.testing.assert_allclose(separable.apply(x), fft.apply(x), atol=1e-12)
    probe = jr.normal(jr.fold_in(key, 1), x.shape, jnp.float64)
    direction = jr.normal(jr.fold_in(key, 2), x.shape, jnp.float64)
    for stage in (separable, PSFConvolution.build(tel, PSFS["moffat"])):

        def loss(y, stage=stage):
            return jnp.sum(probe * stage.apply(y) ** 2)

        grad = jax.grad(loss)(x)
        h = 1e-6
        fd = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
        assert abs(float(jnp.sum(grad * direction)) / float(fd) - 1) < 1e-6


def test_psf_wavelength_dependent():
    tel = telescope(
        fwhm=(3.0, 3.0), start=4000.0, stop=9000.0, step=250.0, spaxel_size=0.1, n_x=64, n_y=64
    )
    psf = PSFS["gaussian"]
    stage = PSFConvolution.build(tel, psf, wavelength_dependent=True)
    assert stage.kernels.shape[0] == 8
    out = np.asarray(stage.apply(point_source(n_wave=tel.n_wave)))
    np.testing.assert_allclose(out.sum((0, 1)), 1.0, rtol=1e-5)
    offset = (np.arange(64) - 32)[:, None, None] * tel.spaxel_size
    var = np.sum(out * offset**2, axis=(0, 1)) - tel.spaxel_size**2 / 12
    expected = psf.fwhm * (np.asarray(tel.wavelength) / 5000.0) ** -0.2
    assert np.max(np.abs(FWHM * np.sqrt(var) / expected - 1)) < 0.02


# -- noise -------------------------------------------------------------------------

WAVE = jnp.linspace(6000.0, 6100.0, 101)


def test_noise_snr_and_reproducible(key):
    flux = jnp.full((40, 40, WAVE.size), 3.0)
    noise = Noise(snr=50.0, window=(6020.0, 6060.0))
    jitted = eqx.filter_jit(noise.apply)
    noisy, variance = jitted(flux, WAVE, key)
    window = (WAVE >= 6020.0) & (WAVE <= 6060.0)
    residual = np.asarray(noisy - flux)[:, :, np.asarray(window)]
    snr = 3.0 / residual.std()
    assert abs(snr / 50.0 - 1) < 0.05  # measured: see report
    again, _ = jitted(flux, WAVE, key)  # bit-identical (eager vs jit: last-bit rounding)
    assert np.array_equal(np.asarray(noisy), np.asarray(again))
    other, _ = jitted(flux, WAVE, jr.fold_in(key, 1))
    assert not np.array_equal(np.asarray(noisy), np.asarray(other))


def test_noise_chi2_and_floor(key):
    k1, k2 = jr.split(key)
    spectrum = 1.0 + 0.5 * jnp.sin(WAVE / 7.0)
    amplitude = jr.uniform(k1, (30, 30, 1), jnp.float64) * 10.0
    flux = (amplitude * spectrum[None, None, :]).at[:5].set(0.0)  # empty spaxels
    noise = Noise(snr=20.0, window=(6020.0, 6060.0))
    noisy, variance = noise.apply(flux, WAVE, k2)
    assert np.all(np.isfinite(variance)) and np.all(variance[:5] > 0)
    chi2 = float(jnp.mean((noisy - flux) ** 2 / variance))
    assert 0.95 < chi2 < 1.05


def test_noise_sigma(key):
    flux = jnp.ones((20, 20, WAVE.size))
    sigma = 0.1 + 0.05 * jnp.sin(WAVE / 3.0)
    noisy, variance = Noise(sigma=sigma).apply(flux, WAVE, key)
    np.testing.assert_allclose(variance, jnp.broadcast_to(sigma**2, flux.shape))
    assert 0.95 < float(jnp.mean((noisy - flux) ** 2 / variance)) < 1.05
    _, variance = Noise(sigma=0.2).apply(flux, WAVE, key)
    np.testing.assert_allclose(variance, 0.04)


def test_noise_bad_window():
    with pytest.raises(ValueError, match="window"):
        Noise(snr=10.0, window=(7000.0, 7100.0)).check(WAVE)
    with pytest.raises(ValueError, match="window"):
        Noise(snr=10.0, window=(5990.0, 6050.0)).apply(jnp.ones((2, 2, WAVE.size)), WAVE, jr.key(0))
    with pytest.raises(ValueError, match="window"):
        Noise(snr=10.0, window=(6050.0, 6000.0))
    with pytest.raises(ValueError, match="exactly one"):
        Noise(snr=10.0, sigma=1.0)


# -- aperture ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, area",
    [("hexagon", 3 * math.sqrt(3) / 2 * 5.0**2), ("circle", math.pi * 5.0**2), ("square", 12.0**2)],
)
def test_aperture_area(kind, area):
    diameter = None if kind == "square" else 10.0
    tel = telescope(
        fwhm=(3.0, 3.0), spaxel_size=0.25, n_x=48, n_y=48, aperture=kind, aperture_diameter=diameter
    )
    aperture = Aperture.build(tel)
    assert abs(int(aperture.mask.sum()) * 0.25**2 / area - 1) < 0.03


def test_aperture_presets_and_masking(key):
    manga = Aperture.build(rx.Telescope.preset("MaNGA", wavelength={"stop": 3700.0}))
    assert abs(int(manga.mask.sum()) * 0.25 / (3 * math.sqrt(3) / 2 * 16.0**2) - 1) < 0.03
    mask = np.asarray(manga.mask)
    # corners on the x axis: the x extent (32") exceeds the y extent (flat to flat, 27.7")
    assert np.ptp(np.flatnonzero(mask.any(1))) > np.ptp(np.flatnonzero(mask.any(0)))
    tel = telescope(
        fwhm=(3.0, 3.0), spaxel_size=0.5, n_x=12, n_y=12, aperture="circle", aperture_diameter=4.0
    )
    aperture = Aperture.build(tel)
    flux = jr.uniform(key, (12, 12, 5), jnp.float64) + 1
    flux_out, var_out = aperture.apply(flux, 2 * flux)
    inside = np.asarray(aperture.mask)
    assert np.all(np.asarray(flux_out)[~inside] == 0) and np.all(np.asarray(var_out)[~inside] == 0)
    np.testing.assert_array_equal(np.asarray(flux_out)[inside], np.asarray(flux)[inside])
    np.testing.assert_array_equal(np.asarray(var_out)[inside], 2 * np.asarray(flux)[inside])
