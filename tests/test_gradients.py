"""Gradients through the whole pipeline against central finite differences (float64)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


# Relative steps: small enough to stay inside one CIC cell, SSP cell and lattice pixel
# (the model is piecewise smooth), large enough for float64 round-off.
STEP = 1e-6


@pytest.fixture(scope="module", params=["direct", "histogram"])
def setup(request):
    pipe = rx.Pipeline(tiny_telescope(), tiny_ssp(), engine=request.param, dtype=jnp.float64)
    galaxy = random_galaxy(7, 12, size_kpc=1.0)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(10, 10, 601)))

    @eqx.filter_jit
    def loss(galaxy, obs):
        return jnp.sum(pipe(galaxy, obs).flux * weights)

    return galaxy, loss


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize(
    "field, index",
    [("age", (3,)), ("metallicity", (5,)), ("mass", (2,)), ("velocity", (4, 2)),
     ("velocity", (1, 1)), ("position", (6, 0)), ("position", (0, 2))],
)  # fmt: skip
def test_particle_gradients(setup, field, index):
    galaxy, loss = setup
    obs = observation()
    grads = eqx.filter_grad(loss)(galaxy, obs)
    analytic = float(getattr(grads, field)[index])
    x0 = float(getattr(galaxy, field)[index])

    def f(x):
        value = getattr(galaxy, field).at[index].set(x)
        return float(loss(eqx.tree_at(lambda g: getattr(g, field), galaxy, value), obs))

    h = STEP * max(abs(x0), 1.0)
    numeric = central_difference(f, x0, h)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8 * abs(f(x0)))
    assert analytic != 0.0


@pytest.mark.parametrize("field", ["inclination", "redshift", "position_angle"])
def test_observation_gradients(setup, field):
    galaxy, loss = setup
    obs = observation()
    analytic = float(getattr(eqx.filter_grad(lambda o: loss(galaxy, o))(obs), field))
    x0 = float(getattr(obs, field))

    def f(x):
        return float(loss(galaxy, observation(**{field: x})))

    numeric = central_difference(f, x0, STEP * max(abs(x0), 1.0))
    assert analytic == pytest.approx(numeric, rel=1e-4)
    assert analytic != 0.0
