"""Memory is flat in N apart from the particle arrays: compiled temporaries grow by about
one copy of the particle arrays (36 bytes per particle in float32: XLA copies the
non-donated inputs into the loop state) and a few scalars, never by N × n_λ (checked on
the compiled program, without running it)."""

import jax
import jax.numpy as jnp
import pytest
import rubix_eqx as rx
from rubix_eqx._pipeline import _forward

from .cases import tiny_ssp, tiny_telescope


def temp_bytes(pipe, n, grad):
    obs = rx.Observation(redshift=0.05)

    def flux_sum(position, velocity, mass, age, metallicity):
        galaxy = rx.Galaxy(position, velocity, mass, age, metallicity)
        return _forward(pipe, galaxy, obs, None).flux.sum()

    f = jax.grad(flux_sum, argnums=(3, 4)) if grad else flux_sum
    vec = jax.ShapeDtypeStruct((n,), jnp.float32)
    mat = jax.ShapeDtypeStruct((n, 3), jnp.float32)
    compiled = jax.jit(f).lower(mat, mat, vec, vec, vec).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("engine", ["direct", "histogram"])
@pytest.mark.parametrize("grad", [False, True])
def test_temporaries_flat_in_particles(grad, engine):
    pipe = rx.Pipeline(tiny_telescope(), tiny_ssp(), engine=engine)
    small, large = 10_000, 1_000_000
    per_particle = (temp_bytes(pipe, large, grad) - temp_bytes(pipe, small, grad)) / (large - small)
    spectrum_bytes = 4 * pipe.grid.n_work  # what an (N, n_λ) intermediate would cost
    particle_bytes = 4 * 9  # position, velocity, mass, age, metallicity in float32
    assert per_particle < (4 if grad else 1.5) * particle_bytes, per_particle
    assert per_particle < spectrum_bytes / 10
