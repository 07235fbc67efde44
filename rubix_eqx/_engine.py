"""The particle → cube sum, in fixed-size chunks so that memory stays flat in N.

Never materialises an (N, n_λ) array: each `lax.scan` step builds the spectra of one
chunk of particles on the observed lattice, weights them by their spatial deposit and
scatter-adds them into the (n_spaxel, n_work) cube. The chunk's contribution is a
`jax.checkpoint`ed function of the chunk's particle terms alone, so the backward pass
keeps only those small per-particle inputs and recomputes the spectra.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._spectral_grid import SpectralGrid


class ParticleTerms(eqx.Module):
    """Everything the sum needs per particle (all arrays have leading axis n)."""

    spaxel_index: Int[Array, "n 4"]
    spaxel_weight: Float[Array, "n 4"]
    template_index: Int[Array, "n 4"]
    template_weight: Float[Array, "n 4"]
    start: Int[Array, " n"]
    fraction: Float[Array, " n"]
    amplitude: Float[Array, " n"]  # flux_unit · bin per (L☉ per M☉ per bin)


def auto_chunk_size(n_particles: int, n_work: int) -> int:
    """A power of two keeping one chunk's working set (4 template windows of n_work
    plus the deposit) near 32 MB, between 16 and 4096, and no larger than N needs."""
    target = 2**21 // max(n_work, 1)
    size = 2 ** int(round(math.log2(max(target, 1))))
    size = min(max(size, 16), 4096)
    return min(size, 2 ** math.ceil(math.log2(max(n_particles, 1))))


def accumulate_cube(
    terms: ParticleTerms, grid: SpectralGrid, n_spaxels: int, chunk_size: int
) -> Float[Array, "n_spaxels n_work"]:
    """Σ_i W_i(spaxel) · amplitude_i · spectrum_i on the observed lattice."""
    n = terms.amplitude.shape[0]
    n_chunks = max(1, -(-n // chunk_size))
    pad = n_chunks * chunk_size - n

    def chunked(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))  # zero amplitude: no flux
        return x.reshape((n_chunks, chunk_size) + x.shape[1:])

    chunks = jax.tree.map(chunked, terms)
    dtype = grid.templates.dtype

    @jax.checkpoint
    def contribution(c: ParticleTerms):
        spectra = grid.spectra(c.template_index, c.template_weight, c.start, c.fraction)
        spectra = spectra * c.amplitude[:, None]
        return (c.spaxel_weight[:, :, None] * spectra[:, None, :]).reshape(-1, grid.n_work)

    def step(cube, c: ParticleTerms):
        return cube.at[c.spaxel_index.reshape(-1)].add(contribution(c)), None

    cube0 = jnp.zeros((n_spaxels, grid.n_work), dtype)
    cube, _ = jax.lax.scan(step, cube0, chunks)
    return cube
