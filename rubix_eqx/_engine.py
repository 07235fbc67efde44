"""The particle → cube sum, in fixed-size chunks so that memory stays flat in N.

Three evaluations of the same sum, exact without dust, on the observed ln λ lattice of
[`rubix_eqx.SpectralGrid`][] (they agree to float32 round-off, tests/test_forward.py,
tests/test_large_field.py):

- **direct**: each `lax.scan` step builds the spectra of one chunk of particles (4
  template windows, shifted), weights them by their spatial deposit (k spaxels each: 4
  for CIC, stencil² for a smoothed deposit) and scatter-adds them into the (n_spaxel,
  n_work) cube. Cost ∝ N · (4 + k) · n_work; the chunk holds (chunk · k, n_work) weighted
  spectra, so the automatic chunk size shrinks with k. The chunk's contribution is
  `jax.checkpoint`ed, so the backward pass keeps only the per-particle terms.
- **histogram**: each particle adds k spaxels × 4 templates × 2 velocity shifts = 8k
  scalars (32 for CIC, 200 for a 5 × 5 smoothed deposit) to a histogram H[spaxel,
  template, shift]; the cube is then one matrix product H (n_spaxel, n_template·n_shift)
  @ B (n_template·n_shift, n_work), where B holds every template at every shift. Cost ∝
  N · 8k + n_spaxel · n_template · n_shift · n_work, so independent of N for large N;
  memory per chunk ∝ chunk · 8k indices and values (≈ 10 MB for 4096 particles at
  k = 25). Shifts are counted from the systemic redshift; the number of shift bins
  covers the galaxy's largest line-of-sight speed rounded up to 100 km/s
  (`Pipeline.speed_bound`; `velocity_margin` when the velocities are traced). The
  deposit has a custom JVP (forward and reverse mode both work, as optimistix needs)
  whose tangent is checkpointed, so reverse mode recomputes the 8k indices per particle
  rather than storing them. Each entry is one scatter whose update window spans its two
  shift bins (4k scatters of 2 values per particle: ≈ 3× faster on CPU than 8k scalar
  ones, benchmarks/large_field.py).
- **sparse**: the histogram engine's deposit (shift axis padded to whole tiles), then
  the product over the occupied tiles of H only (`tile_product`): a tile is ≤ 8
  consecutive shift bins of one (spaxel, template); each occupied tile reads one
  template window and adds its ≤ 8-tap sum to its spaxel. Cost ∝ N · 8k + n_spaxel ·
  n_template · n_shift (zeroing and scanning H, ~1 ns per entry) + occupied tiles ·
  n_work (~1.5 ns per bin), where the occupied tiles grow with N but hardly with the
  field: 0.05 per particle at 40 × 40 and 0.4 at 300 × 300 spaxels for 10⁶ particles
  of the synthetic disk, against 4.5 % and 0.6 % of all tiles. Where the occupied
  tiles would cost more than the dense product, the dense product runs (`lax.cond` on
  the count). Tiles are listed template by template in blocks of one template; the
  primal sums each tile's ≤ 8 shifted windows, the tangent is one matrix product per
  block (the block's values × that template's shifted basis), so the reverse pass JAX
  derives is again one matrix product per block. Ordinary JAX (a `jax.custom_jvp`), so
  jit, vmap, grad and jvp all apply. The occupancy is that of the primal H, so tangents
  on entries of exactly zero primal weight (a particle of zero mass) are dropped.
  A low-rank factorisation of the template basis was measured and rejected: the 150
  E-MILES templates on the MUSE lattice, each scaled to its maximum, need all 150
  singular vectors for an entrywise error ≤ 1e-5 (120 give 1.7e-3), so no rank saves
  work at the 1e-5 bound.

With a dust stage the terms carry a per-particle A_V: the direct engine multiplies each
particle's spectrum by 10^(−0.4 A_V A(λ)/A_V) bin by bin (exact, ≈ 1.5× its cost). The
histogram engine keeps no per-particle spectra; for one dust component it expands the
transmission in R separable terms, t ≈ Σ_r c_r(A_V) φ_r(λ) ([`rubix_eqx._dust_basis`]:
an SVD of exp(−κ A_λ) on a Chebyshev grid, R chosen so that |error| ≤ `dust_rtol`, 1e-5,
for every A_λ ≤ `dust_max_attenuation`, 10 mag, which is checked under jit), deposits R
histograms (the values × c_r(A_V) of each particle; the indices are shared) and forms
Σ_r φ_r ⊙ (H_r @ B): R× the deposit values and matrix products, error ≤ `dust_rtol` ×
the unattenuated cube bin by bin. R = 7 at the defaults. Several dust components (a
screen and birth clouds) are refused; the auto engine then runs the direct one, and
for one component compares the costs with the factor R.
Gas emission lines are summed by `line_cube` (pixel-integrated Gaussians, chunked like
the stars) into the same lattice cube.

Never materialises an (N, n_λ) array in the forward or the backward pass, and builds the
per-particle terms chunk by chunk inside the loop, so memory beyond the particle arrays
themselves is flat in N. The histogram engines hold H (n_spaxel · n_template · n_shift
floats: 1.9 GB for 300 × 300 MUSE spaxels, about the lattice cube's size) besides the
cube; the sparse one also a tile list of ≤ H / 7 int32.

Accelerators: no host callbacks and static shapes throughout (the tile list has a static
capacity, and groups of tiles beyond the occupied count are skipped by `lax.cond`), so
the same code runs on a GPU; there scatters are cheap atomics and the dense product
fast, so the cost-model constants (measured on CPU) should be re-measured.
"""

import abc
import functools as ft
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dust_basis import chebyshev_series, dust_basis
from ._spectral_grid import SpectralGrid
from ._stages._protocol import SpectralTerms as ParticleTerms
from ._units import C_KM_S


def auto_chunk_size(n_particles: int, n_work: int, k: int = 4) -> int:
    """A power of two keeping one direct-engine chunk (4 template windows of n_work
    plus the k-spaxel deposit) near 32 MB, between 16 and 4096, and no larger than N
    needs."""
    target = 2**21 // max(n_work * max(k, 4) // 4, 1)
    size = 2 ** int(round(math.log2(max(target, 1))))
    size = min(max(size, 16), 4096)
    return min(size, 2 ** math.ceil(math.log2(max(n_particles, 1))))


TermsFn = Callable[[Any], tuple[ParticleTerms, dict[str, Array]]]
"""(particles, valid) of one chunk → (terms, scalar diagnostics); invalid particles must
get zero amplitude."""


class Chunks(eqx.Module):
    """Fixed-size windows over per-particle arrays, read in place (no padded copy).

    Window i covers particles [i·size, (i+1)·size); the last window is shifted back to
    end at N and flags the particles it repeats as invalid. An empty galaxy reads one
    window of `fill`, all invalid.
    """

    particles: Any
    fill: Any
    n: int = eqx.field(static=True)
    size: int = eqx.field(static=True)

    @property
    def count(self) -> int:
        return max(1, -(-self.n // self.size))

    def read(self, i):
        """(particles, valid) of window `i`."""
        if self.n == 0:
            take = lambda f: jnp.broadcast_to(jnp.asarray(f), (self.size,) + jnp.shape(f))
            return jax.tree.map(take, self.fill), jnp.zeros(self.size, bool)
        start = jnp.minimum(i * self.size, self.n - self.size)
        window = jax.tree.map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, start, self.size), self.particles
        )
        valid = start + jnp.arange(self.size) >= i * self.size
        return window, valid


def chunked(particles, chunk_size: int, fill) -> Chunks:
    """Windows of at most `chunk_size` particles over a pytree of per-particle arrays;
    `fill` is one valid zero-mass particle (used only for an empty galaxy)."""
    n = jax.tree.leaves(particles)[0].shape[0]
    return Chunks(particles, fill, n, max(1, min(chunk_size, n)))


def _scan(step, init, chunks: Chunks, terms_fn: TermsFn):
    """Scan `step(carry, terms)` over particle chunks, building each chunk's terms inside
    the loop (checkpointed: the backward pass recomputes them from the particle arrays).
    `terms_fn` also returns scalar diagnostics per chunk: summed, or maxed for keys
    starting with `max_`."""
    terms_fn = jax.checkpoint(terms_fn)

    def combine(key, a, b):
        return jnp.maximum(a, b) if key.startswith("max_") else a + b

    def body(carry, i):
        acc, sums = carry
        terms, flags = terms_fn(chunks.read(i))
        sums = {k: combine(k, sums[k], flags[k]) for k in sums}
        return (step(acc, terms), sums), None

    shapes = jax.eval_shape(lambda: terms_fn(chunks.read(0))[1])
    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
    (acc, sums), _ = jax.lax.scan(body, (init, zeros), jnp.arange(chunks.count))
    return acc, sums


def direct_cube(
    chunks: Chunks, terms_fn: TermsFn, grid: SpectralGrid, n_spaxels: int
) -> tuple[Float[Array, "n_spaxels n_work"], dict[str, Array]]:
    """Σ_i W_i(spaxel) · amplitude_i · spectrum_i, particle chunk by particle chunk."""

    @jax.checkpoint
    def contribution(c: ParticleTerms):
        spectra = grid.spectra(c.template_index, c.template_weight, c.shift, c.fraction)
        spectra = spectra * c.amplitude[:, None]
        if c.attenuation is not None:
            a_lambda = c.attenuation @ c.attenuation_curve  # (n, n_work) mag
            spectra = spectra * 10.0 ** (-0.4 * a_lambda)
        return (c.spaxel_weight[:, :, None] * spectra[:, None, :]).reshape(-1, grid.n_work)

    def step(cube, c: ParticleTerms):
        return cube.at[c.spaxel_index.reshape(-1)].add(contribution(c))

    cube0 = jnp.zeros((n_spaxels, grid.n_work), grid.templates.dtype)
    return _scan(step, cube0, chunks, terms_fn)


def line_cube(
    chunks: Chunks, terms_fn, n_spaxels: int, n_work: int, half_window: int, dtype
) -> tuple[Float[Array, "n_spaxels n_work"], dict[str, Array]]:
    """Σ over gas elements and lines of W(spaxel) · flux · [Φ((j + 1 − c)/w) − Φ((j − c)/w)]
    on lattice bins j = ⌊c⌋ − `half_window` … ⌊c⌋ + `half_window` (Φ the normal CDF;
    bins off the lattice are dropped), chunk by chunk (`terms_fn` gives a chunk's
    [`rubix_eqx.LineTerms`][]). Cost ∝ n_gas · k · n_lines · (2·half_window + 1)."""
    offsets = jnp.arange(-half_window, half_window + 2)[None, None, :]  # edges ⌊c⌋ + offsets

    @jax.checkpoint
    def contribution(t):
        first = jnp.floor(t.centre)[:, :, None]  # (n, L, 1)
        edges = (first + offsets - t.centre[:, :, None]) / t.width[:, :, None]
        cdf = 0.5 * jax.scipy.special.erfc(-edges / math.sqrt(2.0))
        values = t.flux[:, :, None] * jnp.diff(cdf, axis=-1)  # (n, L, window)
        bins = first.astype(jnp.int32) + offsets[:, :, :-1]
        values = jnp.where((bins >= 0) & (bins < n_work), values, 0)
        index = (
            t.spaxel_index[:, :, None, None] * n_work + jnp.clip(bins, 0, n_work - 1)[:, None]
        )  # (n, k, L, window)
        value = t.spaxel_weight[:, :, None, None] * values[:, None]
        return index.reshape(-1), value.reshape(-1).astype(dtype)

    def step(cube, t):
        index, value = contribution(t)
        return cube.at[index].add(value)

    cube0 = jnp.zeros(n_spaxels * n_work, dtype)
    cube, sums = _scan(step, cube0, chunks, terms_fn)
    return cube.reshape(n_spaxels, n_work), sums


def n_shift_bins(grid: SpectralGrid, velocity_margin: float) -> int:
    """Velocity-shift bins the histogram needs for |v_los| ≤ `velocity_margin` km/s."""
    half = math.ceil(math.atanh(velocity_margin / C_KM_S) / grid.log_step)
    return 2 * half + 3


def _histogram_entries(c: ParticleTerms, first_shift, n_templates: int, n_shift: int, dust=None):
    """Flat histogram indices (chunk · 4k,) of a chunk's (spaxel, template, lower shift)
    entries and their values for the lower and upper shift: (chunk · 4k, 2), or
    (chunk · 4k, 2, R) with `dust` = (table a (K, R), scale C_hi/a_max): each value
    times the particle's c_r(A_V · scale) ([`rubix_eqx._dust_basis`])."""
    r = c.shift - first_shift
    index = (
        c.spaxel_index[:, :, None] * n_templates + c.template_index[:, None, :]
    ) * n_shift + r[:, None, None]
    split = jnp.stack([1 - c.fraction, c.fraction], axis=1) * c.amplitude[:, None]
    value = (
        c.spaxel_weight[:, :, None, None]
        * c.template_weight[:, None, :, None]
        * split[:, None, None, :]
    )
    if dust is None:
        return index.reshape(-1), value.reshape(-1, 2)
    table, scale = dust
    assert c.attenuation is not None
    coefficient = chebyshev_series(c.attenuation[:, 0] * scale, table)  # (chunk, R)
    value = value[..., None] * coefficient[:, None, None, None, :]
    return index.reshape(-1), value.reshape(-1, 2, coefficient.shape[1])


def _add_pairs(histogram, index, value):
    """histogram[index + (0, 1)] += value: one scatter whose update window spans both
    shift bins of an entry (≈ 3× faster on CPU than two scalar scatters, measured);
    entries whose window leaves the histogram are dropped."""
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=tuple(range(1, value.ndim)),
        inserted_window_dims=(),
        scatter_dims_to_operand_dims=(0,),
    )
    return jax.lax.scatter_add(
        histogram, index[:, None], value.astype(histogram.dtype), numbers,
        mode=jax.lax.GatherScatterMode.FILL_OR_DROP,
    )  # fmt: skip


@ft.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _deposit(histogram, c: ParticleTerms, first_shift, dust, n_templates: int, n_shift: int):
    index, value = _histogram_entries(c, first_shift, n_templates, n_shift, dust)
    return _add_pairs(histogram, index, value)


@_deposit.defjvp
def _deposit_jvp(n_templates, n_shift, primals, tangents):
    histogram, c, first_shift, dust = primals
    d_histogram, d_c, _, d_dust = tangents

    # Checkpointed, so that reverse mode keeps only the chunk's terms and recomputes the
    # 4k indices per particle instead of storing them for every chunk.
    @jax.checkpoint
    def tangent(d_histogram, c, d_c, dust, d_dust):
        if dust is None:
            entries = lambda c: _histogram_entries(c, first_shift, n_templates, n_shift)
            (index, _), (_, d_value) = jax.jvp(entries, (c,), (d_c,))
        else:  # the table is a constant; the scale C_hi/a_max follows the curve
            table = dust[0]
            entries = lambda c, scale: _histogram_entries(
                c, first_shift, n_templates, n_shift, (table, scale)
            )
            (index, _), (_, d_value) = jax.jvp(entries, (c, dust[1]), (d_c, d_dust[1]))
        return _add_pairs(d_histogram, index, d_value)

    primal = _deposit(histogram, c, first_shift, dust, n_templates, n_shift)
    return primal, tangent(d_histogram, c, d_c, dust, d_dust)


def histogram_cube(
    chunks: Chunks,
    terms_fn: TermsFn,
    grid: SpectralGrid,
    n_spaxels: int,
    systemic_shift: Float[Array, ""],
    n_shift: int,
    dust: tuple[float, float] | None = None,
    tiles: tuple[int, int, str] | None = None,
) -> tuple[Float[Array, "n_spaxels n_work"], dict[str, Array]]:
    """The same sum as `direct_cube` via the (spaxel, template,
    shift) histogram and one matrix product (or, with `tiles` = (width, capacity,
    product) and no dust, its sum over the occupied tiles, `tile_product`).
    `systemic_shift` is ln(1+z)/Δ; particle shifts must lie within ±(n_shift - 3)/2
    pixels of it (checked by the caller).

    With `dust` = (`rtol`, `a_max`) the terms must carry one dust component: R
    histograms H_r, particle values × c_r(A_V C_hi/a_max), and the cube Σ_r φ_r(C(λ)/C_hi)
    ⊙ (H_r @ B) ([`rubix_eqx._dust_basis`]: |error| ≤ `rtol` × the unattenuated cube
    while every A_λ ≤ `a_max`). The diagnostics then carry `max_dust_attenuation` (the
    largest A_λ, mag) and `max_negative_curve` (> 0 if A(λ)/A_V < 0 somewhere), which
    the caller checks."""
    n_templates = grid.templates.shape[0]
    dtype = grid.templates.dtype
    first_shift = jnp.floor(systemic_shift).astype(jnp.int32) - (n_shift - 1) // 2
    n_columns = n_spaxels * n_templates * n_shift

    if tiles is not None:
        if dust is not None:
            raise ValueError("The tile product carries no dust.")
        width, capacity, product = tiles
        n_padded = -(-n_shift // width) * width

        def step(histogram, c: ParticleTerms):
            return _deposit(histogram, c, first_shift, None, n_templates, n_padded)

        histogram, sums = _scan(
            step, jnp.zeros(n_spaxels * n_templates * n_padded, dtype), chunks, terms_fn
        )
        histogram = histogram.reshape(n_spaxels, n_templates, n_padded)
        work = tile_product(histogram, grid, first_shift, n_shift, width, capacity, product)
        return work, sums
    if dust is None:

        def step(histogram, c: ParticleTerms):
            return _deposit(histogram, c, first_shift, None, n_templates, n_shift)

        histogram, sums = _scan(step, jnp.zeros(n_columns, dtype), chunks, terms_fn)
    else:
        a, b, _ = dust_basis(*dust)
        a_max = dust[1]
        table = jnp.asarray(a, dtype)

        def peak(curve):  # C_hi (differentiated too, so that AD is the derivative of the
            return jnp.maximum(jnp.max(curve), jnp.finfo(dtype).tiny)  # sum computed)

        def dusty_terms_fn(chunk):
            terms, sums = terms_fn(chunk)
            curve = jax.lax.stop_gradient(terms.attenuation_curve[0])
            a_v = jax.lax.stop_gradient(terms.attenuation[:, 0])
            extra = {
                "max_dust_attenuation": jnp.max(jnp.where(chunk[1], a_v, 0)) * jnp.max(curve),
                "max_negative_curve": -jnp.min(curve),
            }
            return terms, sums | extra

        def step(carry, c: ParticleTerms):
            histogram, _ = carry
            curve = c.attenuation_curve[0].astype(dtype)
            scale = peak(curve) / a_max
            histogram = _deposit(histogram, c, first_shift, (table, scale), n_templates, n_shift)
            return histogram, curve

        init = (jnp.zeros((n_columns, a.shape[1]), dtype), jnp.zeros(grid.n_work, dtype))
        (histogram, curve), sums = _scan(step, init, chunks, dusty_terms_fn)
        phi = chebyshev_series(curve / peak(curve), b)  # (n_work, R)
    starts = grid.read_offset(first_shift + jnp.arange(n_shift))
    shifted = jax.vmap(
        lambda s: jax.lax.dynamic_slice(grid.templates, (0, s + 1), (n_templates, grid.n_work))
    )(starts)  # (n_shift, n_templates, n_work)
    basis = jnp.transpose(shifted, (1, 0, 2)).reshape(n_templates * n_shift, grid.n_work)
    if dust is None:
        return histogram.reshape(n_spaxels, n_templates * n_shift) @ basis, sums

    # Σ_r φ_r ⊙ (H_r @ B), one term at a time (memory of one cube).
    def term(cube, x):
        h_r, phi_r = x
        return cube + (h_r.reshape(n_spaxels, n_templates * n_shift) @ basis) * phi_r[None, :], None

    cube0 = jnp.zeros((n_spaxels, grid.n_work), dtype)
    cube, _ = jax.lax.scan(term, cube0, (histogram.T, phi.T))
    return cube, sums


def tile_shape(n_shift: int, tile: int = 8) -> tuple[int, int]:
    """(n_tiles, width): the shift axis of the sparse product cut into `n_tiles` tiles of
    `width` ≤ `tile` bins, n_tiles · width ≥ n_shift (the last tile padded)."""
    n_tiles = -(-n_shift // tile)
    return n_tiles, -(-n_shift // n_tiles)


def tile_capacity(n_particles: int, k: int, n_spaxels: int, n_templates: int, n_tiles: int):
    """Static bound on the occupied tiles: each particle's k spaxels × 4 templates reach
    ≤ 2 tiles (its two shift bins), and there are n_spaxels · n_templates · n_tiles."""
    return max(1, min(8 * k * max(n_particles, 1), n_spaxels * n_templates * n_tiles))


def tile_product(
    histogram: Float[Array, "n_spaxels n_templates n_padded"],
    grid: SpectralGrid,
    first_shift,
    n_shift: int,
    width: int,
    capacity: int,
    product: str = "auto",
    block: int = 64,
    group: int = 64,
) -> Float[Array, "n_spaxels n_work"]:
    """H @ B summed over the occupied tiles of H only: exactly the dense product (to
    float round-off), at a cost ∝ the occupied tiles instead of n_spaxels · n_templates ·
    n_shift.

    A tile is (spaxel, template, j): `width` consecutive shift bins j·width … of one
    spaxel and template (n_padded = n_tiles · width; bins ≥ `n_shift` are zero). The
    occupied tiles (static `capacity`, see `tile_capacity`) are listed template by
    template in blocks of `block` tiles of one template each (a template's last block
    padded with empty slots). The primal reads each tile's template window and sums its
    `width` shifted copies (elementwise FMAs, ≈ 1 ns per tile and bin on CPU). The
    tangent (a `jax.custom_jvp`) is one matrix product per block: its tiles' values, each
    placed at its shift bins in a (block, n_padded) row, times that template's (n_padded,
    n_work) shifted basis, the rows then added to their spaxels; reverse mode is JAX's
    transpose of it, again one matrix product per block (the cube's cotangent rows times
    the basis transposed: ≈ 2 ns per slot and bin). The transpose of the per-tile sum
    would be `width` reductions over n_work per tile (XLA's CPU reductions are
    sequential: ≈ 20 ns per bin). Groups of `group` blocks beyond the used ones are
    skipped (`lax.cond`), so the time follows the occupied tiles, not the capacity.
    Where the tiles would cost more than the dense product (by the cost model), the
    dense product runs instead (`lax.cond`, both exact); `product="tiles"` or `"dense"`
    forces one. Not differentiated with respect to the templates (constants of the grid).

    Ordinary JAX (gathers, matrix products, scatters and `lax.cond` on the primal count;
    the listing is integer; a `jax.custom_jvp` picks the tangent's form), so jit, vmap,
    grad, jvp and their compositions all apply. Tangents on tiles whose primal value is
    exactly 0 (e.g. of a zero-mass particle) are dropped: the occupancy is that of the
    primal H. Under `jax.vmap` the `lax.cond`s become selects: every listed group and
    both products run, ≤ 2× the dense product's cost (the list stops where the dense
    product is cheaper)."""
    n_spaxels, n_templates, n_padded = histogram.shape
    n_tiles = n_padded // width
    n_work = grid.n_work
    dtype = histogram.dtype
    # The cheaper of the two by the cost model (both exact; only the branch taken runs):
    # beyond `most` occupied tiles the dense product is cheaper, so the list stops there.
    dense_seconds = 2 * n_spaxels * n_templates * n_padded * n_work / _MATMUL_FLOPS_PER_SECOND
    slot_seconds = n_work * _TILE_SECONDS_PER_BIN
    tangent_seconds = n_work * _TILE_TANGENT_SECONDS_PER_BIN
    most = capacity if product == "tiles" else min(capacity, int(dense_seconds / slot_seconds))
    most = max(most, 1)
    step = block * group
    # a template's last block may be partly empty: ≤ n_templates · (block − 1) more slots
    n_groups = max(1, -(-(most + n_templates * (block - 1)) // step))
    length = n_groups * step
    n_blocks = n_groups * group

    def listing(histogram):
        """Slots (length,) of the occupied tiles, grouped by template into blocks: the
        tile's flat id (0 in empty slots), whether the slot is used, each block's
        template, the used slots and the occupied count."""
        occupied = jnp.any(histogram.reshape(n_spaxels, n_templates, n_tiles, width) != 0, 3)
        per_template = jnp.sum(occupied, axis=(0, 2), dtype=jnp.int32)
        blocks = (per_template + block - 1) // block
        block_end = jnp.cumsum(blocks)
        first_slot = (block_end - blocks) * block
        first_tile = jnp.cumsum(per_template) - per_template
        count = jnp.sum(per_template)
        order = jnp.transpose(occupied, (1, 0, 2)).reshape(-1)  # (template, spaxel, tile)
        (position,) = jnp.nonzero(order, size=most, fill_value=0)
        position = position.astype(jnp.int32)
        t = position // (n_spaxels * n_tiles)
        s, j = position // n_tiles % n_spaxels, position % n_tiles
        rank = jnp.arange(most, dtype=jnp.int32)
        slot = jnp.where(rank < count, first_slot[t] + rank - first_tile[t], length)  # or dropped
        ids = jnp.zeros(length, jnp.int32).at[slot].set((s * n_templates + t) * n_tiles + j,
                                                        mode="drop")  # fmt: skip
        used = jnp.zeros(length, bool).at[slot].set(True, mode="drop")
        template = jnp.searchsorted(block_end, jnp.arange(n_blocks), side="right")
        template = jnp.minimum(template, n_templates - 1).astype(jnp.int32)
        return ids, used, template, block_end[-1] * block, count

    def shifts_block(cube, x, start, templates):  # Σ_w v_w · window shifted by width − 1 − w
        ids, values, template = x
        offset = start + (n_tiles - 1 - ids % n_tiles) * width
        read = lambda o: jax.lax.dynamic_slice(templates, (template, o), (1, n_work + width - 1))[0]
        rows = jax.vmap(read)(offset)  # (block, n_work + width − 1)
        out = values[:, width - 1 : width] * rows[:, :n_work]
        for w in range(width - 1):
            out = out + values[:, w : w + 1] * rows[:, width - 1 - w : width - 1 - w + n_work]
        return cube.at[ids // (n_tiles * n_templates)].add(out)

    def matmul_block(cube, x, start, templates):  # the block's rows @ its template's basis
        ids, values, template = x
        window = jax.lax.dynamic_slice(templates, (template, start), (1, n_work + n_padded - 1))[0]
        basis = jnp.stack([window[n_padded - 1 - k : n_padded - 1 - k + n_work]
                           for k in range(n_padded)])  # fmt: skip
        at_tile = (ids % n_tiles)[:, None] == jnp.arange(n_tiles)[None, :]
        rows = (at_tile[:, :, None] * values[:, None, :]).reshape(block, n_padded)
        return cube.at[ids // (n_tiles * n_templates)].add(rows @ basis)

    def tiles(block_fn, histogram, listed, start, templates):
        """Scan `block_fn` over the blocks of each group, skipping groups, and blocks
        within a group, beyond the used slots."""
        ids, used, template, n_used, _ = listed
        values = jnp.where(used[:, None], histogram.reshape(-1, width)[ids], 0)

        # Checkpointed per group (not per block: inside the group's `lax.cond` that would
        # stack the templates per group as residuals), so that reverse mode rebuilds a
        # group's bases rather than storing every block's.
        @jax.checkpoint
        def one_group(cube, x):
            g, ids, values, template = x

            def run_block(cube, y):
                b, ids, values, template = y
                run = lambda cube: block_fn(cube, (ids, values, template), start, templates)
                return jax.lax.cond((g * group + b) * block < n_used, run, lambda c: c, cube), None

            xs = (jnp.arange(group), ids, values, template)
            run = lambda cube: jax.lax.scan(run_block, cube, xs)[0]
            return jax.lax.cond(g * step < n_used, run, lambda cube: cube, cube), None

        grouped = [x.reshape((n_groups, group, block) + x.shape[1:]) for x in (ids, values)]
        xs = (jnp.arange(n_groups), *grouped, template.reshape(n_groups, group))
        cube0 = jnp.zeros((n_spaxels, n_work), dtype)
        return jax.lax.scan(one_group, cube0, xs)[0]

    def dense(histogram, start, templates):
        starts = start + n_padded - 1 - jnp.arange(n_padded)
        shifted = jax.vmap(
            lambda s: jax.lax.dynamic_slice(templates, (0, s), (n_templates, n_work))
        )(starts)  # (n_padded, n_templates, n_work)
        basis = jnp.transpose(shifted, (1, 0, 2)).reshape(n_templates * n_padded, n_work)
        return histogram.reshape(n_spaxels, n_templates * n_padded) @ basis

    def choose(block_fn, seconds, histogram, listed, start, templates):
        if product == "dense":
            return dense(histogram, start, templates)
        if product == "tiles":
            return tiles(block_fn, histogram, listed, start, templates)
        cheaper = (listed[4] <= most) & (listed[3] * seconds < dense_seconds)
        by_tiles = lambda h, s, t: tiles(block_fn, h, listed, s, t)
        return jax.lax.cond(cheaper, by_tiles, dense, histogram, start, templates)

    # Everything traced comes in as an argument (a custom_jvp closes over no tracers).
    @jax.custom_jvp
    def linear(histogram, start, templates):
        return choose(shifts_block, slot_seconds, histogram, listing(histogram), start, templates)

    @linear.defjvp
    def linear_jvp(primals, tangents):
        histogram, start, templates = primals
        listed = listing(histogram)
        primal = choose(shifts_block, slot_seconds, histogram, listed, start, templates)
        tangent = choose(matmul_block, tangent_seconds, tangents[0], listed, start, templates)
        return primal, tangent

    # Template windows are read from `width` zero bins further left, so that the reads of
    # padded shift bins never clamp; B[k] = templates[t, start + n_padded − 1 − k : … +
    # n_work], one shift per bin k.
    templates = jnp.pad(jax.lax.stop_gradient(grid.templates), ((0, 0), (width, 0)))
    return linear(histogram, grid.read_offset(first_shift + n_padded - 1) + 1 + width, templates)


# Measured on a 2-core x86-64 CPU, float32 (benchmarks/run.py): the direct engine costs
# ~7.6 ns per particle and lattice bin; the histogram engine ~1 µs per particle plus its
# matrix product at ~60 GFLOP/s. With dust the direct engine also evaluates
# 10^(−0.4 A_λ) per particle and bin (benchmarks/dust_engines.py: ≈ 1.5× its cost), and
# the histogram engine deposits R values per entry and runs R matrix products.
_DIRECT_SECONDS_PER_UPDATE = 7.6e-9
_DIRECT_DUST_FACTOR = 1.5
_HISTOGRAM_SECONDS_PER_PARTICLE = 1e-6
_MATMUL_FLOPS_PER_SECOND = 6e10
_TILE_SECONDS_PER_BIN = 1.5e-9  # one tile slot: a window read, `width` FMAs, an add; per bin
_TILE_TANGENT_SECONDS_PER_BIN = 2.5e-9  # its tangent or transpose (block matrix product;
# 1.8e-9 measured in the reverse pass, 10⁵ particles, 40 × 40 spaxels)
_SPARSE_SECONDS_PER_ENTRY = 1e-9  # zeroing the histogram, its occupancy and nonzero list
HISTOGRAM_MAX_BYTES = 1.5e9
SPARSE_MIN_DENSE_SECONDS = 1.0  # auto runs the sparse engine where H @ B would take longer
SPARSE_MAX_BYTES = 4e9  # the sparse engine's histogram, tile list and dense-branch basis
DUST_RTOL = 1e-5
DUST_MAX_ATTENUATION = 10.0  # mag, the largest A_λ the dust expansion covers


def choose_engine(
    n_particles: int, n_spaxels: int, n_templates: int, n_shift: int, n_work: int,
    rank: int = 0,
) -> str:  # fmt: skip
    """The engine the cost model picks: without dust (`rank` 0) the cheapest of
    `"direct"`, `"histogram"` (where its histogram and shifted-template basis fit
    `HISTOGRAM_MAX_BYTES`) and `"sparse"` (where its histogram fits `SPARSE_MAX_BYTES`);
    with one dust component (`rank` R: R histograms and products) `"histogram"` where
    its cost beats the direct engine's and its R histograms and shifted-template basis
    fit in `HISTOGRAM_MAX_BYTES`, else `"direct"`.

    The sparse engine's product is modelled as the cheaper of the dense product and
    2 occupied tiles per particle (measured on synthetic disks: 0.05–1.4 per particle
    from 40 × 40 to 300 × 300 spaxels, 10⁵–10⁶ particles); it picks the cheaper itself
    at run time from the actual count, so where it is offered it replaces the histogram
    engine (its fallback is the histogram engine's dense product). It is offered only
    where the dense product would take ≥ `SPARSE_MIN_DENSE_SECONDS` (40 × 40 MUSE
    spaxels and up), for speed: there it beats the histogram engine in the forward and
    the gradient (40 × 40, 10⁶ particles: forward 0.58 s against 0.97 s, gradient 1.76 s
    against 2.01 s; 10⁵: 0.21 against 0.80 s CPU, gradient 1.08 against 1.96 s), while
    on small fields the dense product is cheap and the histogram engine, without the
    sparse one's bookkeeping (occupancy, tile list; under `jax.vmap` its `lax.cond`s run
    both branches), wins (10⁵ particles, 10 × 10 spaxels: forward 0.14–0.18 s vs
    0.24–0.28 s, gradient 0.56 vs 0.77–0.91 s). The sparse engine itself works under
    every transformation (jit, vmap, grad, jvp)."""
    direct = n_particles * n_work * _DIRECT_SECONDS_PER_UPDATE
    if not rank:
        costs = {"direct": direct}
        columns = n_templates * n_shift
        dense = 2 * n_spaxels * columns * n_work / _MATMUL_FLOPS_PER_SECOND
        if 4 * columns * (n_spaxels + n_work) <= HISTOGRAM_MAX_BYTES:
            costs["histogram"] = n_particles * _HISTOGRAM_SECONDS_PER_PARTICLE + dense
        n_tiles, width = tile_shape(n_shift)
        entries = n_spaxels * n_templates * n_tiles * width
        # offered on large fields only (`SPARSE_MIN_DENSE_SECONDS`), for speed: on small
        # fields the histogram engine's dense product is cheap; where offered, it replaces
        # the histogram engine (it falls back to the same dense product at run time)
        if dense >= SPARSE_MIN_DENSE_SECONDS and 4 * (
            entries + entries // width + n_templates * n_tiles * width * n_work
        ) <= SPARSE_MAX_BYTES:
            costs.pop("histogram", None)
            dense = 2 * entries * n_work / _MATMUL_FLOPS_PER_SECOND
            tiles = min(2 * n_particles, entries // width) * n_work * _TILE_SECONDS_PER_BIN
            costs["sparse"] = (
                n_particles * _HISTOGRAM_SECONDS_PER_PARTICLE
                + entries * _SPARSE_SECONDS_PER_ENTRY
                + min(dense, tiles)
            )
        return min(costs, key=costs.get)
    columns = n_templates * n_shift
    if 4 * columns * (n_spaxels * rank + n_work) > HISTOGRAM_MAX_BYTES:
        return "direct"
    direct *= _DIRECT_DUST_FACTOR
    histogram = rank * (
        n_particles * _HISTOGRAM_SECONDS_PER_PARTICLE
        + 2 * n_spaxels * columns * n_work / _MATMUL_FLOPS_PER_SECOND
    )
    return "histogram" if histogram < direct else "direct"


def _dust_components(chunks: Chunks, terms_fn) -> int:
    """How many dust components the terms carry, 0 without dust (traced shapes only)."""
    terms, _ = jax.eval_shape(lambda: terms_fn(chunks.read(0)))
    return 0 if terms.attenuation is None else terms.attenuation.shape[1]


class AbstractEngine(eqx.Module):
    """How the sum over particles is evaluated: `engine(particles, fill, terms_fn, grid,
    n_spaxels, systemic_shift, speed_bound) -> (work, sums)`.

    `particles` is a pytree of per-particle arrays (leading axis N; a
    [`rubix_eqx.Galaxy`][]), `fill` one valid zero-mass particle (read only for an empty
    galaxy), `terms_fn(chunk, valid)` gives a chunk's [`rubix_eqx.SpectralTerms`][] and
    its scalar diagnostics (summed; keys starting `max_` are maxed, and
    `max_speed` must be the chunk's largest |v_los|). Returns the (n_spaxels, n_work)
    lattice cube and the summed diagnostics (without the `max_` keys).
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def resolve(
        self, n_particles: int, n_spaxels: int, grid: SpectralGrid, speed_bound: float,
        n_dust: int = 0,
    ) -> "AbstractEngine":  # fmt: skip
        """The concrete engine that runs for these sizes and `n_dust` dust components
        (itself, unless it chooses)."""

    @abc.abstractmethod
    def __call__(self, particles, fill, terms_fn: TermsFn, grid: SpectralGrid,
                 n_spaxels: int, systemic_shift, speed_bound: float):  # fmt: skip
        """The lattice cube of these particles and the diagnostic sums."""


def _deposit_entries(particles, fill, terms_fn: TermsFn) -> int:
    """k, the spaxel entries per particle of the deposit (from the terms' shape; traced
    abstractly, nothing is computed)."""
    terms, _ = jax.eval_shape(terms_fn, chunked(particles, 1, fill).read(0))
    return terms.spaxel_index.shape[1]


class DirectEngine(AbstractEngine):
    """The direct sum (`direct_cube`), in chunks of `chunk_size` particles (default:
    `auto_chunk_size`)."""

    name: ClassVar[str] = "direct"
    chunk_size: int | None = eqx.field(static=True, default=None)

    def resolve(self, n_particles, n_spaxels, grid, speed_bound, n_dust=0):
        return self

    def __call__(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        n = jax.tree.leaves(particles)[0].shape[0]
        size = self.chunk_size or auto_chunk_size(n, grid.n_work, _deposit_entries(
            particles, fill, terms_fn
        ))  # fmt: skip
        work, sums = direct_cube(chunked(particles, size, fill), terms_fn, grid, n_spaxels)
        return work, {k: v for k, v in sums.items() if not k.startswith("max_")}


class HistogramEngine(AbstractEngine):
    """The (spaxel, template, shift) histogram and one matrix product
    (`histogram_cube`), in chunks of `chunk_size` particles (default 4096). The
    velocity axis covers |v_los| ≤ `speed_bound`; a faster particle is an error.

    With one dust component (one dust stage) it deposits R histograms, one per term of
    a low-rank expansion of the transmission ([`rubix_eqx._dust_basis`]), accurate to
    `dust_rtol` × the unattenuated cube in every bin while every particle's A_λ (at any
    lattice bin) is ≤ `dust_max_attenuation` mag (checked: an error otherwise). Several
    dust components (e.g. a screen and birth clouds) are refused: use the direct or
    auto engine."""

    name: ClassVar[str] = "histogram"
    chunk_size: int | None = eqx.field(static=True, default=None)
    dust_rtol: float = eqx.field(static=True, default=DUST_RTOL)
    dust_max_attenuation: float = eqx.field(static=True, default=DUST_MAX_ATTENUATION)

    def __check_init__(self):
        dust_basis(self.dust_rtol, self.dust_max_attenuation)  # named errors

    def resolve(self, n_particles, n_spaxels, grid, speed_bound, n_dust=0):
        return self

    @property
    def dust_rank(self) -> int:
        """R, the histograms (and matrix products) a dust component costs."""
        return dust_basis(self.dust_rtol, self.dust_max_attenuation)[0].shape[1]

    def _tiles(self, particles, fill, terms_fn, n_spaxels, n_templates, n_shift):
        return None

    def sums(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        """The lattice cube and all diagnostic sums (with the `max_` keys), unchecked;
        with dust, also whether every A_λ lies in the expansion's range."""
        chunks = chunked(particles, self.chunk_size or 4096, fill)
        n_dust = _dust_components(chunks, terms_fn)
        n_shift = n_shift_bins(grid, speed_bound)
        tiles = self._tiles(particles, fill, terms_fn, n_spaxels, grid.templates.shape[0], n_shift)
        if n_dust and tiles is not None:
            raise ValueError(
                "SparseEngine carries no dust: use engine='histogram', 'direct' or 'auto'."
            )
        if n_dust > 1:
            raise ValueError(
                f"HistogramEngine carries one dust component; these terms have {n_dust} "
                "(several dust stages, e.g. a screen and birth clouds): use "
                "engine='direct' or 'auto'."
            )
        dust = (self.dust_rtol, self.dust_max_attenuation) if n_dust else None
        work, sums = histogram_cube(
            chunks, terms_fn, grid, n_spaxels, systemic_shift, n_shift, dust, tiles
        )
        work = eqx.error_if(
            work,
            sums["max_speed"] > speed_bound,
            "A particle's line-of-sight speed exceeds Pipeline(velocity_margin=...): "
            "raise the margin, or use engine='direct'.",
        )
        in_range = None
        if dust is not None:
            in_range = (sums["max_dust_attenuation"] <= self.dust_max_attenuation * (1 + 1e-6)) & (
                sums["max_negative_curve"] <= 0
            )
        return work, sums, in_range

    def __call__(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        work, sums, in_range = self.sums(
            particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound
        )
        if in_range is not None:
            work = eqx.error_if(
                work,
                ~in_range,
                f"A particle's dust attenuation A_λ exceeds HistogramEngine("
                f"dust_max_attenuation={self.dust_max_attenuation:g}) mag at some lattice "
                "wavelength (or the curve A(λ)/A_V < 0 somewhere): raise it, or use "
                "engine='direct' or 'auto'.",
            )
        return work, {k: v for k, v in sums.items() if not k.startswith("max_")}


class SparseEngine(HistogramEngine):
    """The histogram engine's deposit, then its matrix product over the occupied tiles
    of the histogram only (`tile_product`; a tile is `tile` ≤ 8 consecutive shift bins
    of one spaxel and template): exact like the dense product, at a cost ∝ the
    occupied tiles, which grow with N but hardly with the field (most spaxels of a
    large field hold few particles, few templates and a narrow range of velocities).
    Without dust only. Tangents on histogram entries whose primal value is exactly 0
    (a particle of zero mass) are dropped."""

    name: ClassVar[str] = "sparse"
    tile: int = eqx.field(static=True, default=8)
    product: str = eqx.field(static=True, default="auto")

    def __check_init__(self):
        super().__check_init__()
        if self.product not in ("auto", "tiles", "dense"):
            raise ValueError(f"`product` must be 'auto', 'tiles' or 'dense'; got {self.product!r}.")
        if not 1 <= self.tile:
            raise ValueError(f"`tile` must be ≥ 1; got {self.tile}.")

    def _tiles(self, particles, fill, terms_fn, n_spaxels, n_templates, n_shift):
        n = jax.tree.leaves(particles)[0].shape[0]
        k = _deposit_entries(particles, fill, terms_fn)
        n_tiles, width = tile_shape(n_shift, self.tile)
        return width, tile_capacity(n, k, n_spaxels, n_templates, n_tiles), self.product


class AutoEngine(AbstractEngine):
    """The fastest of [`rubix_eqx.DirectEngine`][] and [`rubix_eqx.SparseEngine`][]
    (without dust) or [`rubix_eqx.HistogramEngine`][] (with one dust component) for the
    sizes, by the cost model `choose_engine` (measured on CPU). With one dust
    component the histogram engine's cost counts its R dust terms, and if some A_λ
    exceeds its `dust_max_attenuation` the direct engine reruns the sum (`lax.cond`:
    exact, never an error; both are compiled); with several the direct engine runs."""

    name: ClassVar[str] = "auto"
    chunk_size: int | None = eqx.field(static=True, default=None)
    dust_rtol: float = eqx.field(static=True, default=DUST_RTOL)
    dust_max_attenuation: float = eqx.field(static=True, default=DUST_MAX_ATTENUATION)

    def __check_init__(self):
        dust_basis(self.dust_rtol, self.dust_max_attenuation)  # named errors

    def resolve(self, n_particles, n_spaxels, grid, speed_bound, n_dust=0):
        if n_dust > 1:
            return DirectEngine(self.chunk_size)
        rank = dust_basis(self.dust_rtol, self.dust_max_attenuation)[0].shape[1] if n_dust else 0
        name = choose_engine(
            n_particles, n_spaxels, grid.templates.shape[0],
            n_shift_bins(grid, speed_bound), grid.n_work, rank,
        )  # fmt: skip
        if name == "direct":
            return DirectEngine(self.chunk_size)
        if name == "sparse":
            return SparseEngine(self.chunk_size)
        return HistogramEngine(self.chunk_size, self.dust_rtol, self.dust_max_attenuation)

    def __call__(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        n = jax.tree.leaves(particles)[0].shape[0]
        n_dust = _dust_components(chunked(particles, 16, fill), terms_fn)
        engine = self.resolve(n, n_spaxels, grid, speed_bound, n_dust)
        args = (particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound)
        if not (n_dust and isinstance(engine, HistogramEngine)):
            return engine(*args)
        # Dust beyond the expansion's range: the direct engine sums again, exactly (both
        # branches are compiled; only the one taken runs).
        work, sums, in_range = engine.sums(*args)
        work = jax.lax.cond(in_range, lambda: work, lambda: DirectEngine(self.chunk_size)(*args)[0])
        return work, {k: v for k, v in sums.items() if not k.startswith("max_")}


ENGINES = {
    "auto": AutoEngine, "direct": DirectEngine, "histogram": HistogramEngine,
    "sparse": SparseEngine,
}  # fmt: skip
