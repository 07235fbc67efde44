"""Smoothing lengths for galaxies that carry none: the k-th-neighbour distance."""

import jax.numpy as jnp
import numpy as np

from ..physics._kernels import kth_neighbour_distance
from ._galaxy import Galaxy


def with_smoothing_lengths(galaxy: Galaxy, k: int = 32, *, overwrite: bool = False) -> Galaxy:
    """`galaxy` with `smoothing_length` set to each particle's distance (kpc, 3-D) to its
    `k`-th nearest other particle: the support radius h of
    [`rubix_eqx.SmoothedDeposit`][]'s kernel, as SPH codes choose h to hold ~k
    neighbours. Computed once, eagerly, in float64 (exact k-d tree, O(N log N); see
    [`rubix_eqx.physics.kth_neighbour_distance`][]); not differentiable (the lengths are
    data, like masses).

    **Arguments:**

    - `galaxy`: a [`rubix_eqx.Galaxy`][] of at least `k + 1` particles (concrete values).
    - `k`: the neighbour rank, an integer ≥ 1 (default 32).
    - `overwrite`: replace a smoothing length the galaxy already carries (default: keep
      it and return `galaxy` unchanged).

    **Returns:** a [`rubix_eqx.Galaxy`][] with `smoothing_length` (n,) in kpc, in the
    dtype of `galaxy.position`.

    Particles at identical positions (distance 0 to the k-th neighbour) are a
    `ValueError`: a kernel needs a size > 0.
    """
    if galaxy.smoothing_length is not None and not overwrite:
        return galaxy
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`with_smoothing_lengths(k=...)` must be an integer >= 1; got {k!r}.")
    n = galaxy.n_particles
    if n <= k:
        raise ValueError(
            f"`with_smoothing_lengths(k={k})` needs more than k particles; the galaxy has {n}."
        )
    h = kth_neighbour_distance(np.asarray(galaxy.position, np.float64), k)
    if not np.all(h > 0):
        first = int(np.argmin(h > 0))
        raise ValueError(
            f"`with_smoothing_lengths(k={k})`: particle {first} has {k} other particles at "
            "its own position (distance 0): no kernel size; use a larger k."
        )
    return Galaxy(
        position=galaxy.position,
        velocity=galaxy.velocity,
        mass=galaxy.mass,
        age=galaxy.age,
        metallicity=galaxy.metallicity,
        smoothing_length=jnp.asarray(h, galaxy.position.dtype),
    )
