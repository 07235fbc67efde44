"""Bilinear SSP interpolation in (log10 age, log10 Z), with clipping at the grid edges."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class SSPWeights(eqx.Module):
    """Per particle: the 4 surrounding grid nodes and their bilinear weights.

    **Attributes:**

    - `index`: flat template index `i_age * n_Z + i_Z` of each node.
    - `weight`: bilinear weights (sum to 1 per particle).
    - `clipped`: the particle's age or Z lay outside the grid and was clipped to its edge.
    """

    index: Int[Array, "n 4"]
    weight: Float[Array, "n 4"]
    clipped: Bool[Array, " n"]


def safe_log10(x):
    """log10(x) with -inf (and a zero gradient) at x ≤ 0."""
    positive = x > 0
    return jnp.where(positive, jnp.log10(jnp.where(positive, x, 1.0)), -jnp.inf)


def _axis(grid: Float[Array, " m"], x: Float[Array, " n"]):
    """Lower node index, fractional position in the cell, and out-of-range flag."""
    clipped = (x < grid[0]) | (x > grid[-1])
    xc = jnp.clip(x, grid[0], grid[-1])
    i = jnp.clip(jnp.searchsorted(grid, xc, side="right") - 1, 0, grid.shape[0] - 2)
    t = (xc - grid[i]) / (grid[i + 1] - grid[i])
    return i, t, clipped


def bilinear_weights(
    log_age_grid: Float[Array, " n_age"],
    log_z_grid: Float[Array, " n_Z"],
    age: Float[Array, " n"],
    metallicity: Float[Array, " n"],
) -> SSPWeights:
    """Bilinear interpolation weights in (log10 age, log10 Z) on the nodes `log_age_grid`
    (log10 Gyr) and `log_z_grid` (log10 Z); `age` in Gyr, `metallicity` as Z. Values
    outside are clipped to the edge and flagged (see [`rubix_eqx.ssp.ssp_weights`][])."""
    ia, ta, clip_a = _axis(log_age_grid, safe_log10(age))
    iz, tz, clip_z = _axis(log_z_grid, safe_log10(metallicity))
    n_z = log_z_grid.shape[0]
    index = jnp.stack(
        [ia * n_z + iz, (ia + 1) * n_z + iz, ia * n_z + iz + 1, (ia + 1) * n_z + iz + 1],
        axis=-1,
    )
    weight = jnp.stack([(1 - ta) * (1 - tz), ta * (1 - tz), (1 - ta) * tz, ta * tz], axis=-1)
    return SSPWeights(index=index.astype(jnp.int32), weight=weight, clipped=clip_a | clip_z)
