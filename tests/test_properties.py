"""Property-based tests (hypothesis) of the forward model.

Shapes are fixed (N = 32 particles, and N = 16 for the halves of the additivity test) and
values vary, so each jitted function compiles once per shape: `TRACES` counts the traces
and every test checks that no example recompiled. Float64 throughout.
"""

import collections
import tempfile

import equinox as eqx
import hypothesis.configuration
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from hypothesis import given, HealthCheck, settings, strategies as st
from hypothesis.extra import numpy as hnp

from .cases import tiny_ssp, tiny_telescope


# Hypothesis caches constants found in the source under `.hypothesis/` even without an
# example database: keep that out of the repository.
hypothesis.configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="rubix-eqx-hypothesis-"))

N = 32
HALF = N // 2
SETTINGS = dict(
    deadline=None,
    database=None,  # write nothing into the repository
    derandomize=True,  # the same examples on every run (a test suite, not a fuzzer)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRACES: collections.Counter = collections.Counter()
# On a failure hypothesis imports libcst, which warns (DeprecationWarning from
# mypy_extensions) inside the report hook: under filterwarnings=error that would hide
# the falsifying example behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)


@eqx.filter_jit
def cube_of(pipe: rx.Pipeline, galaxy: rx.Galaxy, obs: rx.Observation, key=None) -> rx.Cube:
    TRACES[
        (
            "cube",
            pipe.stage(rx.LSF) is not None,
            pipe.stage(rx.AbstractNoise) is not None,
            galaxy.n_particles,
        )
    ] += 1  # at trace time only
    return pipe(galaxy, obs, key=key)


def _loss(inputs, pipe, weights):
    galaxy, obs = inputs
    return jnp.sum(pipe(galaxy, obs).flux * weights)


@eqx.filter_jit
def loss_and_grad(galaxy, obs, pipe, weights):
    TRACES[("grad", galaxy.n_particles)] += 1
    return eqx.filter_value_and_grad(_loss)((galaxy, obs), pipe, weights)


def assert_compiled_once(*keys):
    for key in keys:
        assert TRACES[key] == 1, f"{key} traced {TRACES[key]} times"


_PIPES: dict = {}


def pipeline(which: str = "no LSF") -> rx.Pipeline:
    """One pipeline of each kind per module, built on first use. (Not fixtures: hypothesis
    prints every argument of a failing example, and a pipeline's repr is ~50 kB.)"""
    if which not in _PIPES:
        if "ssp" not in _PIPES:
            _PIPES["ssp"] = tiny_ssp()
        ssp, tel = _PIPES["ssp"], tiny_telescope()
        kwargs = {
            "no LSF": dict(lsf=False),
            "LSF": dict(lsf=True),
            "noise": dict(lsf=False, noise=rx.Noise(snr=20.0)),
        }[which]
        _PIPES[which] = rx.Pipeline(tel, ssp, dtype=jnp.float64, **kwargs)
    return _PIPES[which]


# --------------------------------------------------------------------------------------
# Strategies: fixed shapes, bounded values.


def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def field(shape, lo, hi):
    return hnp.arrays(np.float64, shape, elements=floats(lo, hi))


@st.composite
def galaxies(
    draw,
    n=N,
    position=50.0,
    velocity=800.0,
    age=(0.0, 20.0),
    metallicity=(1e-5, 0.1),
    mass=(0.0, 1e6),
):
    """Any valid galaxy: ages 0-20 Gyr (the tiny grid spans 0.5-12, so many are clipped),
    Z 1e-5-0.1 (grid 0.004-0.03), positions within ±`position` kpc, velocities ±`velocity`
    km/s per component."""
    arrays = dict(
        position=draw(field((n, 3), -position, position)),
        velocity=draw(field((n, 3), -velocity, velocity)),
        mass=draw(field((n,), *mass)),
        age=draw(field((n,), *age)),
        metallicity=draw(field((n,), *metallicity)),
    )
    return rx.Galaxy(**{k: jnp.asarray(v) for k, v in arrays.items()})


def observations(redshift=(0.01, 0.15)):  # the LSF pipeline needs z < 0.17 (3 Å vs 2.5 Å (1+z))
    return st.builds(
        lambda z, inc, pa: rx.Observation(
            redshift=jnp.asarray(z), inclination=jnp.asarray(inc), position_angle=jnp.asarray(pa)
        ),
        floats(*redshift),
        floats(0.0, 180.0),
        floats(-360.0, 360.0),
    )


# Galaxies whose light lands in the field: the tiny telescope is 10 × 0.5" = 5" across,
# and 1 kpc is < 2.25" (the CIC-safe half-width) for z >= 0.03.
compact = galaxies(
    position=0.55, velocity=300.0, age=(0.6, 11.0), metallicity=(0.005, 0.028), mass=(1e3, 1e6)
)


def close(actual, expected, rtol=1e-10):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------------------
# Properties.


@settings(max_examples=20, **SETTINGS)
@given(gal=galaxies(position=1.0), obs=observations(), perm=st.permutations(range(N)))
def test_permutation_invariance(gal, obs, perm):
    pipe = pipeline()
    index = jnp.asarray(perm)
    a = cube_of(pipe, gal, obs)
    b = cube_of(pipe, gal.select(index), obs)
    close(b.flux, a.flux)
    assert eqx.tree_equal(a.diagnostics, b.diagnostics, rtol=1e-12, atol=0)
    assert_compiled_once(("cube", False, False, N))


@settings(max_examples=20, **SETTINGS)
@given(
    first=galaxies(n=HALF, position=1.0), second=galaxies(n=HALF, position=1.0), obs=observations()
)
def test_flux_additivity(first, second, obs):
    pipe = pipeline()
    union = rx.Galaxy(
        **{
            k: jnp.concatenate([getattr(first, k), getattr(second, k)])
            for k in ("position", "velocity", "mass", "age", "metallicity")
        }
    )
    whole = cube_of(pipe, union, obs)
    parts = cube_of(pipe, first, obs).flux + cube_of(pipe, second, obs).flux
    close(whole.flux, parts)
    assert_compiled_once(("cube", False, False, N), ("cube", False, False, HALF))


@pytest.mark.parametrize("which", ["no LSF", "LSF"])
@settings(max_examples=15, **SETTINGS)
@given(
    gal=galaxies(position=1.0),
    other=field((N,), 0.0, 1e6),
    a=floats(0.0, 10.0),
    b=floats(0.0, 10.0),
    obs=observations(),
)
def test_linearity_in_mass(which, gal, other, a, b, obs):
    pipe = pipeline(which)
    with_mass = lambda m: eqx.tree_at(lambda g: g.mass, gal, m)  # noqa: E731
    m1, m2 = gal.mass, jnp.asarray(other)
    combined = cube_of(pipe, with_mass(a * m1 + b * m2), obs).flux
    separate = (
        a * cube_of(pipe, with_mass(m1), obs).flux + b * cube_of(pipe, with_mass(m2), obs).flux
    )
    close(combined, separate, rtol=1e-9)
    assert_compiled_once(("cube", which == "LSF", False, N))


@settings(max_examples=20, **SETTINGS)
@given(gal=compact, z=floats(0.03, 0.3), inc=floats(0.0, 180.0), pa=floats(-360.0, 360.0))
def test_total_flux_invariant_under_orientation(gal, z, inc, pa):
    pipe = pipeline()
    gal = eqx.tree_at(lambda g: g.velocity, gal, jnp.zeros_like(gal.velocity))
    obs = lambda i, p: rx.Observation(
        redshift=jnp.asarray(z),
        inclination=jnp.asarray(i),  # noqa: E731
        position_angle=jnp.asarray(p),
    )
    reference = cube_of(pipe, gal, obs(0.0, 0.0))
    turned = cube_of(pipe, gal, obs(inc, pa))
    assert int(turned.diagnostics.n_outside) == 0 and int(reference.diagnostics.n_outside) == 0
    close(
        turned.flux.sum((0, 1)), reference.flux.sum((0, 1))
    )  # every wavelength, not only the total
    close(turned.flux.sum(), reference.flux.sum(), rtol=1e-12)
    assert_compiled_once(("cube", False, False, N))


@settings(max_examples=20, **SETTINGS)
@given(gal=galaxies(), obs=observations(), seed=st.integers(0, 2**31 - 1))
def test_cube_and_gradients_finite_for_any_valid_input(gal, obs, seed):
    pipe = pipeline()
    weights = jax.random.uniform(jax.random.key(seed), (10, 10, pipe.telescope.n_wave), jnp.float64)
    cube = cube_of(pipe, gal, obs)
    assert np.all(np.isfinite(np.asarray(cube.flux)))
    assert np.all(np.asarray(cube.flux) >= 0)
    clipped = (np.asarray(gal.age) < 0.5) | (np.asarray(gal.age) > 12.0)
    clipped |= (np.asarray(gal.metallicity) < 0.004) | (np.asarray(gal.metallicity) > 0.03)
    assert int(cube.diagnostics.n_clipped) == int(clipped.sum())
    value, (g_gal, g_obs) = loss_and_grad(gal, obs, pipe, weights)
    assert np.isfinite(float(value))
    for name in ("position", "velocity", "mass", "age", "metallicity"):
        assert np.all(np.isfinite(np.asarray(getattr(g_gal, name)))), name
    for name in ("redshift", "inclination", "position_angle"):
        assert np.isfinite(float(getattr(g_obs, name))), name
    # Clipped particles sit on the grid edge: zero gradient in the clipped coordinate.
    g_age = np.asarray(g_gal.age)
    outside_age = (np.asarray(gal.age) < 0.5) | (np.asarray(gal.age) > 12.0)
    assert np.all(g_age[outside_age] == 0)
    assert_compiled_once(("cube", False, False, N), ("grad", N))


@settings(max_examples=15, **SETTINGS)
@given(gal=galaxies(position=3.0), obs=observations(), seed=st.integers(0, 2**31 - 1))
def test_noise_is_deterministic_for_a_fixed_key(gal, obs, seed):
    pipe = pipeline("noise")
    key = jax.random.key(seed)
    a = cube_of(pipe, gal, obs, key)
    b = cube_of(pipe, gal, obs, key)
    np.testing.assert_array_equal(np.asarray(a.flux), np.asarray(b.flux))  # bit-identical
    np.testing.assert_array_equal(np.asarray(a.variance), np.asarray(b.variance))
    c = cube_of(pipe, gal, obs, jax.random.fold_in(key, 1))
    assert not np.array_equal(np.asarray(a.flux), np.asarray(c.flux))
    np.testing.assert_array_equal(
        np.asarray(a.variance), np.asarray(c.variance)
    )  # variance: key-free
    assert_compiled_once(("cube", False, True, N))
