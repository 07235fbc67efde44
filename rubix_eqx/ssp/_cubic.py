"""Smooth (cubic) SSP interpolation in (log10 age, log10 Z), with interpax."""

import interpax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._grid import SSPGrid


def cubic_weights(
    ssp: SSPGrid, age: Float[Array, " n"], metallicity: Float[Array, " n"]
) -> tuple[Float[Array, "n n_template"], Bool[Array, " n"]]:
    """Weights over every template (flat index `i_age * n_Z + i_Z`) of the piecewise-cubic
    interpolant in (log10 age, log10 Z) (interpax `interp2d`, `method="cubic"`: C¹, exact
    at the nodes, weights sum to 1; unlike the bilinear weights of
    [`rubix_eqx.ssp.ssp_weights`][] some may be negative between nodes).

    Ages and Z outside the grid are clipped to its edge **by design**, as by
    `ssp_weights`; the second result flags them.

    **Arguments:** `ssp`; `age` (Gyr) and `metallicity` (mass fraction Z), shape (n,).

    **Returns:** `(weights, clipped)`.
    """
    dtype = jnp.result_type(age.dtype, metallicity.dtype)
    x = jnp.log10(ssp.age).astype(dtype)
    y = jnp.log10(ssp.metallicity).astype(dtype)
    log_age = jnp.log10(jnp.maximum(age, jnp.finfo(dtype).tiny))
    log_z = jnp.log10(jnp.maximum(metallicity, jnp.finfo(dtype).tiny))
    clipped = (log_age < x[0]) | (log_age > x[-1]) | (log_z < y[0]) | (log_z > y[-1])
    n_age, n_z = x.shape[0], y.shape[0]
    basis = jnp.eye(n_age * n_z, dtype=dtype).reshape(n_age, n_z, n_age * n_z)
    with jax.numpy_rank_promotion("allow"):
        weights = interpax.interp2d(
            jnp.clip(log_age, x[0], x[-1]), jnp.clip(log_z, y[0], y[-1]), x, y, basis,
            method="cubic",
        )  # fmt: skip
    return weights, clipped
