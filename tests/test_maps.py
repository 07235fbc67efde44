"""Truth maps: weights, moments and consistency with the cube."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


@pytest.fixture(scope="module")
def setup():
    return tiny_ssp(), tiny_telescope(), random_galaxy(2, 400, size_kpc=0.8)


def test_light_weighted_flux_matches_cube(setup):
    ssp, tel, galaxy = setup
    galaxy = eqx.tree_at(lambda g: g.velocity, galaxy, galaxy.velocity * 0)
    obs = observation()
    maps = rx.truth_maps(galaxy, obs, tel, ssp)
    cube = rx.Pipeline(tel, ssp, lsf=False, dtype=jnp.float64)(galaxy, obs)
    per_spaxel = np.asarray(cube.flux).sum(axis=2) * 2.0  # 2 Å pixels
    np.testing.assert_allclose(maps.flux, per_spaxel, rtol=1e-3, atol=1e-6 * per_spaxel.max())


def test_moments_of_two_populations_in_one_spaxel(setup):
    ssp, tel, _ = setup
    young = rx.galaxy.single_population(
        1, age=1.0, metallicity=0.01, velocity=(0, 0, 100.0), dtype=jnp.float64
    )
    old = rx.galaxy.single_population(
        3, age=8.0, metallicity=0.02, velocity=(0, 0, -50.0), dtype=jnp.float64
    )
    both = rx.Galaxy(
        *(
            jnp.concatenate([getattr(young, f), getattr(old, f)])
            for f in ("position", "velocity", "mass", "age", "metallicity")
        )
    )
    obs = observation(inclination=0.0)
    maps = rx.truth_maps(both, obs, tel, ssp, weighting="mass", deposit="nearest")
    ix, iy = np.argwhere(np.asarray(maps.mask))[0]
    assert int(maps.mask.sum()) == 1
    w = np.array([1e6, 1e6 / 3 * 3]) / 2e6  # equal total mass in each population
    v = np.array([100.0, -50.0])
    assert float(maps.velocity[ix, iy]) == pytest.approx(np.sum(w * v))
    assert float(maps.dispersion[ix, iy]) == pytest.approx(
        np.sqrt(np.sum(w * (v - np.sum(w * v)) ** 2))
    )
    assert float(maps.log_age[ix, iy]) == pytest.approx(np.sum(w * np.log10([1e9, 8e9])))
    assert float(maps.metallicity[ix, iy]) == pytest.approx(
        np.sum(w * np.log10(np.array([0.01, 0.02]) / 0.019))
    )
    light = rx.truth_maps(both, obs, tel, ssp, deposit="nearest")
    assert float(light.log_age[ix, iy]) < float(maps.log_age[ix, iy])  # young stars outshine


def test_bad_weighting(setup):
    ssp, tel, galaxy = setup
    with pytest.raises(ValueError, match="weighting"):
        rx.truth_maps(galaxy, observation(), tel, ssp, weighting="number")
