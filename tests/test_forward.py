"""The forward model against the independent NumPy reference and analytic cases."""

import astropy.cosmology
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from . import reference as ref
from .cases import (
    N_X,
    N_Y,
    observation,
    random_galaxy,
    SPAXEL,
    tiny_ssp,
    tiny_telescope,
    Z_OBS,
)


@pytest.fixture(scope="module")
def ssp():
    return tiny_ssp()


@pytest.fixture(scope="module")
def pipe(ssp):
    return rx.Pipeline(tiny_telescope(), ssp, lsf=False, dtype=jnp.float64)


@pytest.fixture(scope="module")
def pipe_nearest(ssp):
    return rx.Pipeline(tiny_telescope(), ssp, deposit="nearest", lsf=False, dtype=jnp.float64)


def reference_inputs(gal, ssp, obs, tel, deposit="cic"):
    z = float(obs.redshift)
    return dict(
        position=np.asarray(gal.position), velocity=np.asarray(gal.velocity),
        mass=np.asarray(gal.mass), age=np.asarray(gal.age), metallicity=np.asarray(gal.metallicity),
        ssp_age=np.asarray(ssp.age), ssp_metallicity=np.asarray(ssp.metallicity),
        ssp_wavelength=np.asarray(ssp.wavelength), ssp_flux=np.asarray(ssp.flux),
        redshift=z,
        d_l=astropy.cosmology.Planck18.luminosity_distance(z).value,
        d_a=astropy.cosmology.Planck18.angular_diameter_distance(z).value,
        inclination=float(obs.inclination), position_angle=float(obs.position_angle),
        spaxel_size=tel.spaxel_size, n_x=tel.n_x, n_y=tel.n_y,
        telescope_wavelength=np.asarray(tel.wavelength), deposit=deposit,
    )  # fmt: skip


@pytest.fixture(scope="module")
def galaxy():
    return random_galaxy(1, 1000)


@pytest.mark.parametrize("engine", ["direct", "histogram", "sparse"])
@pytest.mark.parametrize("deposit", ["cic", "nearest"])
def test_matches_numpy_reference(deposit, engine, galaxy, ssp):
    pipeline = rx.Pipeline(
        tiny_telescope(), ssp, deposit=deposit, engine=engine, lsf=False, dtype=jnp.float64
    )
    obs = observation()
    cube = np.asarray(pipeline(galaxy, obs).flux)
    expected = ref.reference_cube_working_grid(
        **reference_inputs(galaxy, ssp, obs, pipeline.telescope, deposit),
        rest_log_edges=pipeline.grid.rest_log_edges,
        obs_log_edges=pipeline.grid.obs_log_edges,
    )
    assert expected.max() > 0
    np.testing.assert_allclose(cube, expected, rtol=1e-5, atol=1e-9 * expected.max())


@pytest.mark.parametrize("oversample", [1, 4])
def test_working_grid_approximation(oversample, galaxy, ssp):
    """The ln λ lattice versus rebinning each particle straight onto the telescope
    pixels: the error (relative to each spaxel's mean flux) is bounded and falls
    with oversampling. Measured: see docs/physics.md."""
    tel = tiny_telescope()
    pipeline = rx.Pipeline(tel, ssp, oversample=oversample, lsf=False, dtype=jnp.float64)
    obs = observation()
    sub = galaxy.select(slice(0, 200))
    cube = np.asarray(pipeline(sub, obs).flux)
    direct = ref.reference_cube_direct(**reference_inputs(sub, ssp, obs, tel))
    mean = direct.mean(axis=2, keepdims=True)
    bright = mean[..., 0] > 0.05 * mean.max()
    error = np.abs(cube - direct)[bright] / mean[bright]
    np.testing.assert_allclose(cube.sum(), direct.sum(), rtol=1e-6)
    bound = {1: 0.05, 4: 0.01}[oversample]
    assert error.max() < bound, error.max()


def test_single_particle_on_node(ssp, pipe):
    """One particle on a grid node at rest at a spaxel centre: all its flux is in that
    spaxel and its integral is mass × ∫S dλ × L☉/(4π d_L²)."""
    d_a = astropy.cosmology.Planck18.angular_diameter_distance(Z_OBS).value
    kpc_per_spaxel = SPAXEL / ref.ARCSEC_PER_RAD * d_a * 1e3
    gal = rx.galaxy.single_population(
        1, age=2.0, metallicity=0.019, total_mass=1e6,
        position=(0.5 * kpc_per_spaxel, 1.5 * kpc_per_spaxel, 0.0), dtype=jnp.float64,
    )  # fmt: skip
    cube = np.asarray(pipe(gal, observation(inclination=0.0, position_angle=-90.0)).flux)
    spectrum = cube[N_X // 2, N_Y // 2 + 1]
    assert spectrum.sum() == pytest.approx(cube.sum(), rel=1e-5)  # d_A: ours vs astropy
    edges = ref.pixel_edges(np.asarray(pipe.telescope.wavelength))
    rest_edges = edges / (1 + Z_OBS)
    template = np.asarray(ssp.flux)[1, 1]
    rest_integral = ref.rebin(ref.pixel_edges(np.asarray(ssp.wavelength)), template, rest_edges)
    d_l = astropy.cosmology.Planck18.luminosity_distance(Z_OBS).value * ref.MPC_CM
    expected = (
        1e6 * np.sum(rest_integral * np.diff(rest_edges)) * ref.L_SUN / (4 * np.pi * d_l**2) / 1e-20
    )
    assert np.sum(spectrum * np.diff(edges)) == pytest.approx(expected, rel=1e-4)
    # and the shape is the template's, redshifted (to the lattice resolution)
    model = ref.rebin(ref.pixel_edges(np.asarray(ssp.wavelength)) * (1 + Z_OBS), template, edges)
    model *= expected / np.sum(model * np.diff(edges))
    assert np.max(np.abs(spectrum - model)) < 0.05 * model.mean()  # lattice: see test below


def line_centroid(wave, spectrum, centre, half_width=12.0):
    """Centroid of the flux deficit of an absorption line around `centre` (Å)."""
    window = np.abs(wave - centre) < half_width
    continuum = np.interp(wave[window], wave[window][[0, -1]], spectrum[window][[0, -1]])
    deficit = continuum - spectrum[window]
    return np.sum(wave[window] * deficit) / np.sum(deficit)


def test_doppler_shift_of_a_line(ssp):
    tel = tiny_telescope(start=5000.0, stop=5300.0, step=0.25)
    pipeline = rx.Pipeline(tel, ssp, lsf=False, dtype=jnp.float64)
    wave = np.asarray(tel.wavelength)
    obs = observation(inclination=0.0)
    rest_line = 4861.0
    centroids = []
    for v in (0.0, 300.0):
        # At inclination 0 the galaxy's +z points at the observer: v_z = -v recedes at v.
        gal = rx.galaxy.single_population(
            1, age=2.0, metallicity=0.019, velocity=(0, 0, -v), dtype=jnp.float64
        )
        spectrum = np.asarray(pipeline(gal, obs).flux).sum(axis=(0, 1))
        centroids.append(
            line_centroid(wave, spectrum, rest_line * (1 + Z_OBS) * (1 + v / ref.C_KMS))
        )
    beta = 300.0 / ref.C_KMS
    observed = rest_line * (1 + Z_OBS)
    expected = observed * np.sqrt((1 + beta) / (1 - beta)) - observed
    assert abs((centroids[1] - centroids[0]) - expected) < 0.05


def test_inverse_square_dimming(galaxy):
    """Flat templates: total flux × d_L² × (1+z) is the same at every redshift, and
    at fixed redshift the flux scales as 1/distance²."""
    tel = tiny_telescope(n=40)
    pipeline = rx.Pipeline(tel, tiny_ssp(flat=True), lsf=False, dtype=jnp.float64)
    sub = galaxy.select(slice(0, 100))
    sub = eqx.tree_at(lambda g: g.position, sub, sub.position * 0.2)  # inside the field
    totals = []
    for z in (0.02, 0.05, 0.1):
        flux = float(pipeline(sub, observation(redshift=z)).flux.sum())
        d_l = astropy.cosmology.Planck18.luminosity_distance(z).value
        totals.append(flux * d_l**2 * (1 + z))
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)
    near = float(pipeline(sub, observation(distance=300.0)).flux.sum())
    far = float(pipeline(sub, observation(distance=600.0)).flux.sum())
    assert near / far == pytest.approx(4.0, rel=1e-9)


def test_total_flux_invariances(galaxy, pipe, pipe_nearest):
    """Optically thin: the total is the same from every side (velocities off, so that no
    flux is Doppler-shifted across the ends of the wavelength range)."""
    compact = eqx.tree_at(
        lambda g: (g.position, g.velocity),
        galaxy,
        (galaxy.position * 0.3, galaxy.velocity * 0),
    )
    totals = [
        float(pipe(compact, observation(inclination=i, position_angle=pa)).flux.sum())
        for i, pa in [(0.0, 0.0), (50.0, 20.0), (85.0, 140.0)]
    ]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-10)
    nearest = float(
        pipe_nearest(compact, observation(inclination=85.0, position_angle=140.0)).flux.sum()
    )
    assert nearest == pytest.approx(totals[0], rel=1e-10)


def test_permutation_changes_nothing(galaxy, pipe):
    perm = np.random.default_rng(3).permutation(galaxy.n_particles)
    a = pipe(galaxy, observation()).flux
    b = pipe(galaxy.select(perm), observation()).flux
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * float(a.max()))


def test_coverage_error(pipe, galaxy):
    with pytest.raises(rx.CoverageError, match="covers only"):
        pipe(galaxy, observation(redshift=0.7))


def test_coverage_error_under_jit(pipe, galaxy):
    @eqx.filter_jit
    def run(z):
        return pipe(galaxy, observation(redshift=z)).flux.sum()

    assert np.isfinite(run(jnp.asarray(Z_OBS)))
    with pytest.raises(eqx.EquinoxRuntimeError, match="outside the SSP grid"):
        run(jnp.asarray(0.7))


def test_galaxy_outside_field_warns_and_gives_zero(pipe, galaxy):
    far = eqx.tree_at(lambda g: g.position, galaxy, galaxy.position + 500.0)
    with pytest.warns(rx.FieldWarning, match="outside the field"):
        cube = pipe(far, observation())
    assert float(jnp.abs(cube.flux).max()) == 0.0
    assert int(cube.diagnostics.n_outside) == galaxy.n_particles


def test_clipped_particles_are_reported(pipe, galaxy, caplog):
    old = eqx.tree_at(lambda g: g.age, galaxy, galaxy.age.at[:7].set(50.0))
    cube = pipe(old, observation())
    assert int(cube.diagnostics.n_clipped) == 7
    expected = float(old.mass[:7].sum() / old.mass.sum())
    assert float(cube.diagnostics.clipped_mass_fraction) == pytest.approx(expected)
    assert "clipped" in caplog.text


def test_empty_galaxy_gives_zero_cube(pipe):
    empty = rx.Galaxy.from_arrays(np.zeros((0, 3)), np.zeros((0, 3)), [], [], [], dtype=jnp.float64)
    cube = pipe(empty, observation())
    assert cube.flux.shape == (N_X, N_Y, pipe.telescope.n_wave)
    assert float(jnp.abs(cube.flux).max()) == 0.0


def test_crop_to_coverage(pipe, galaxy, ssp):
    cropped = rx.crop_to_coverage(pipe.telescope, ssp, 0.7)
    wave = np.asarray(cropped.wavelength)
    assert 0 < wave.size < pipe.telescope.n_wave
    rx.Pipeline(cropped, ssp, lsf=False).check_coverage(0.7)  # no error after cropping
    with pytest.raises(rx.CoverageError, match="fewer than 2 pixels"):
        rx.crop_to_coverage(pipe.telescope, ssp, 3.0)
