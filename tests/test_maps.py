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
    # At inclination 0 the galaxy's +z points at the observer: v_z = +100 km/s approaches.
    v = -np.array([100.0, -50.0])
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


def test_age_zero_and_out_of_grid_particles_are_clipped_and_reported(setup, caplog):
    """Snapshot loaders give age-0 stars: log age would be -inf. The maps average them
    at the grid edge, as the cube does, and report how many and how much mass."""
    import logging

    ssp, tel, _ = setup
    kw = dict(velocity=(0, 0, 0.0), dtype=jnp.float64)
    newborn = rx.galaxy.single_population(2, age=0.0, metallicity=0.01, total_mass=1e6, **kw)
    metal_rich = rx.galaxy.single_population(1, age=4.0, metallicity=0.08, total_mass=1e6, **kw)
    normal = rx.galaxy.single_population(1, age=4.0, metallicity=0.01, total_mass=2e6, **kw)
    both = rx.Galaxy(
        *(
            jnp.concatenate([getattr(g, f) for g in (newborn, metal_rich, normal)])
            for f in ("position", "velocity", "mass", "age", "metallicity")
        )
    )
    obs = observation(inclination=0.0)
    log_age_edge, log_z_edge = np.log10(np.asarray(ssp.age)[[0, -1]]), np.log10(0.03 / 0.019)
    for weighting in ("mass", "light"):
        with caplog.at_level(logging.WARNING, logger="rubix_eqx"):
            maps = rx.truth_maps(both, obs, tel, ssp, weighting=weighting, deposit="nearest")
        assert "3 particles (50% of the mass) lie outside the SSP grid" in caplog.text
        caplog.clear()
        for name in ("log_age", "metallicity", "velocity", "dispersion", "h3", "h4", "flux"):
            assert np.all(np.isfinite(np.asarray(getattr(maps, name)))), name
        assert int(maps.n_clipped) == 3
        assert float(maps.clipped_mass_fraction) == pytest.approx(0.5)
        cube = rx.Pipeline(tel, ssp, lsf=False, dtype=jnp.float64)(both, obs)
        assert int(maps.n_clipped) == int(cube.diagnostics.n_clipped)
        assert float(maps.clipped_mass_fraction) == pytest.approx(
            float(cube.diagnostics.clipped_mass_fraction)
        )
    ix, iy = np.argwhere(np.asarray(maps.mask))[0]
    mass_maps = rx.truth_maps(both, obs, tel, ssp, weighting="mass", deposit="nearest")
    w = np.array([1.0, 1.0, 2.0]) / 4  # newborn, metal-rich, normal
    # age 0 enters as the youngest node (0.5 Gyr); Z = 0.08 as the richest node (0.03)
    want_age = np.sum(w * (np.array([log_age_edge[0], np.log10(4.0), np.log10(4.0)]) + 9))
    want_mh = np.sum(w * np.array([np.log10(0.01 / 0.019), log_z_edge, np.log10(0.01 / 0.019)]))
    assert float(mass_maps.log_age[ix, iy]) == pytest.approx(want_age, rel=1e-12)
    assert float(mass_maps.metallicity[ix, iy]) == pytest.approx(want_mh, rel=1e-12)


def test_no_report_inside_the_grid(setup, caplog):
    import logging

    ssp, tel, galaxy = setup
    with caplog.at_level(logging.WARNING, logger="rubix_eqx"):
        maps = rx.truth_maps(galaxy, observation(), tel, ssp, weighting="mass")
    assert int(maps.n_clipped) == 0 and float(maps.clipped_mass_fraction) == 0.0
    assert "outside the SSP grid" not in caplog.text
