"""The instrument stages inside the pipeline: LSF placement, errors, noise, gradients."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from . import reference as ref
from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


@pytest.fixture(scope="module")
def ssp():
    return tiny_ssp()


def brute_force_lsf(wave, flux, sigma):
    """Gaussian broadening of a cube (…, n) on a linear grid by σ (Å, per input pixel),
    each input pixel's flux spread from its centre over the output pixels (float64). A
    pixel's own width already adds Δ²/12 of variance, so σ² is reduced by that."""
    edges = np.concatenate([[wave[0] - (wave[1] - wave[0]) / 2], (wave[1:] + wave[:-1]) / 2,
                            [wave[-1] + (wave[-1] - wave[-2]) / 2]])  # fmt: skip
    # kernel[k, m]: fraction of input pixel m's flux landing in output pixel k
    centres = 0.5 * (edges[1:] + edges[:-1])
    erf = np.vectorize(math.erf)
    s = np.sqrt(sigma**2 - np.diff(edges) ** 2 / 12)[None, :] * np.sqrt(2)
    upper = erf((edges[1:, None] - centres[None, :]) / s)
    lower = erf((edges[:-1, None] - centres[None, :]) / s)
    kernel = 0.5 * (upper - lower)
    widths = np.diff(edges)
    return np.einsum("km,...m->...k", kernel, flux * widths) / widths


@pytest.mark.parametrize("v", [0.0, 500.0])
def test_lsf_on_the_lattice_matches_broadening_the_final_cube(ssp, v):
    """The LSF is applied to the summed cube on the observed lattice, before rebinning.
    Against broadening the finished, LSF-free cube by brute force (on a 4× finer grid,
    then rebinned; the pipeline's lattice oversampled to match): ≤ 1e-3 relative per
    voxel at |V| ≤ 500 km/s. (The lattice's own error is measured in test_forward.)"""
    tel = tiny_telescope(start=4900.0, stop=5900.0, step=1.0, n=2, lsf_fwhm=4.0)
    fine = tiny_telescope(start=4899.625, stop=5900.375, step=0.25, n=2, lsf_fwhm=4.0)
    gal = rx.galaxy.single_population(
        1, age=2.0, metallicity=0.019, velocity=(0, 0, v), dtype=jnp.float64
    )
    obs = observation(inclination=0.0, position_angle=0.0)
    pipe = rx.Pipeline(tel, ssp, oversample=4, dtype=jnp.float64)
    with_lsf = np.asarray(pipe(gal, obs).flux).sum((0, 1))
    plain = np.asarray(rx.Pipeline(fine, ssp, lsf=False, dtype=jnp.float64)(gal, obs).flux).sum(
        (0, 1)
    )
    fine_wave, wave = np.asarray(fine.wavelength), np.asarray(tel.wavelength)
    # The kernel the stage applies (σ_tel² less the templates' and the numerics' own
    # broadening: checked against an exact reference in test_lsf_fidelity.py).
    lattice = np.asarray(pipe.stage(rx.LSF).wavelength)
    kernel = (
        np.asarray(pipe.stage(rx.LSF).variance(obs.redshift)) * (lattice * pipe.grid.log_step) ** 2
    )
    sigma = np.sqrt(np.interp(fine_wave, lattice, kernel))
    broadened = brute_force_lsf(fine_wave, plain, sigma)
    expected = ref.rebin(ref.pixel_edges(fine_wave), broadened, ref.pixel_edges(wave))
    inner = slice(20, -20)  # away from the ends, where the cube's own edge is unknown
    error = np.abs(with_lsf - expected)[inner] / np.abs(expected[inner]).mean()
    assert error.max() < 1e-3, error.max()


def test_sharper_telescope_is_a_named_error_or_reported(ssp):
    tel = tiny_telescope(lsf_fwhm=2.0)  # templates: 2.5 Å × (1+z)
    with pytest.raises(rx.ResolutionError, match="tiny.*sharper"):
        rx.Pipeline(tel, ssp)(random_galaxy(1, 10), observation())
    pipe = rx.Pipeline(tel, ssp, allow_sharper_lsf=True)
    cube = pipe(random_galaxy(1, 10), observation())
    assert int(cube.diagnostics.n_lsf_clipped) == pipe.grid.n_work
    assert pipe.stage(rx.LSF).sharper_range(float(observation().redshift)) is not None


def test_noise_stage_variance_and_determinism(ssp):
    tel = tiny_telescope()
    gal = random_galaxy(3, 300, size_kpc=0.5)
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=30.0, window=(5000.0, 5500.0)))
    with pytest.raises(ValueError, match="key"):
        pipe(gal, observation())
    key = jax.random.key(5)
    a, b = pipe(gal, observation(), key=key), pipe(gal, observation(), key=key)
    assert np.array_equal(np.asarray(a.flux), np.asarray(b.flux))
    clean = rx.Pipeline(tel, ssp)(gal, observation())
    resid = np.asarray(a.flux - clean.flux)
    chi2 = np.mean(resid**2 / np.asarray(a.variance))
    assert 0.95 < chi2 < 1.05
    assert float(jnp.min(a.variance)) > 0


def test_aperture_masks_cube_and_variance(ssp):
    tel = tiny_telescope(n=12, aperture="circle", aperture_diameter=4.0)
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=20.0))
    cube = pipe(random_galaxy(4, 200), observation(), key=jax.random.key(0))
    outside = ~np.asarray(cube.mask)
    assert outside.any() and (~outside).any()
    assert np.all(np.asarray(cube.flux)[outside] == 0) and np.all(
        np.asarray(cube.variance)[outside] == 0
    )


@pytest.mark.parametrize("psf", [rx.PSF("gaussian", 1.0), rx.PSF("moffat", 1.2, 3.0)])
def test_gradients_through_lsf_psf_and_noise(ssp, psf):
    tel = tiny_telescope(psf=psf)
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=25.0), dtype=jnp.float64)
    galaxy = random_galaxy(7, 10, size_kpc=0.8)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(10, 10, 601)))
    key = jax.random.key(2)

    @eqx.filter_jit
    def loss(galaxy):
        return jnp.sum(pipe(galaxy, observation(), key=key).flux * weights)

    grads = eqx.filter_grad(loss)(galaxy)
    for field, index in [("age", (2,)), ("velocity", (4, 2))]:
        x0 = float(getattr(galaxy, field)[index])
        h = 1e-6 * max(abs(x0), 1.0)

        def f(x):
            value = getattr(galaxy, field).at[index].set(x)
            return float(loss(eqx.tree_at(lambda g: getattr(g, field), galaxy, value)))

        numeric = (f(x0 + h) - f(x0 - h)) / (2 * h)
        assert float(getattr(grads, field)[index]) == pytest.approx(numeric, rel=1e-4)
