"""The particle → cube sum, in fixed-size chunks so that memory stays flat in N.

Two exact evaluations of the same sum, on the observed ln λ lattice of
[`rubix_eqx.SpectralGrid`][] (they agree to float32 round-off, `tests/test_engine.py`):

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
  rather than storing them.

With a dust stage the terms carry a per-particle A_V: the direct engine multiplies each
particle's spectrum by 10^(−0.4 A_V A(λ)/A_V) bin by bin (exact); the histogram engine,
which keeps no per-particle spectra, refuses, and the auto engine then runs the direct one.
Gas emission lines are summed by `line_cube` (pixel-integrated Gaussians, chunked like
the stars) into the same lattice cube.

Never materialises an (N, n_λ) array in the forward or the backward pass, and builds the
per-particle terms chunk by chunk inside the loop, so memory beyond the particle arrays
themselves is flat in N.
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


def _histogram_entries(c: ParticleTerms, first_shift, n_templates: int, n_shift: int):
    """Flat histogram indices and values of a chunk: (chunk · 8k,) each."""
    r = c.shift - first_shift
    index = (
        (c.spaxel_index[:, :, None, None] * n_templates + c.template_index[:, None, :, None])
        * n_shift
        + r[:, None, None, None]
        + jnp.arange(2)[None, None, None, :]
    )
    split = jnp.stack([1 - c.fraction, c.fraction], axis=1) * c.amplitude[:, None]
    value = (
        c.spaxel_weight[:, :, None, None]
        * c.template_weight[:, None, :, None]
        * split[:, None, None, :]
    )
    return index.reshape(-1), value.reshape(-1)


@ft.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _deposit(histogram, c: ParticleTerms, first_shift, n_templates: int, n_shift: int):
    index, value = _histogram_entries(c, first_shift, n_templates, n_shift)
    return histogram.at[index].add(value)


@_deposit.defjvp
def _deposit_jvp(n_templates, n_shift, primals, tangents):
    histogram, c, first_shift = primals
    d_histogram, d_c, _ = tangents

    # Checkpointed, so that reverse mode keeps only the chunk's terms and recomputes the
    # 8k indices per particle instead of storing them for every chunk.
    @jax.checkpoint
    def tangent(d_histogram, c, d_c):
        entries = lambda c: _histogram_entries(c, first_shift, n_templates, n_shift)
        (index, _), (_, d_value) = jax.jvp(entries, (c,), (d_c,))
        return d_histogram.at[index].add(d_value)

    return _deposit(histogram, c, first_shift, n_templates, n_shift), tangent(d_histogram, c, d_c)


def histogram_cube(
    chunks: Chunks,
    terms_fn: TermsFn,
    grid: SpectralGrid,
    n_spaxels: int,
    systemic_shift: Float[Array, ""],
    n_shift: int,
) -> tuple[Float[Array, "n_spaxels n_work"], dict[str, Array]]:
    """The same sum as `direct_cube` via the (spaxel, template,
    shift) histogram and one matrix product. `systemic_shift` is ln(1+z)/Δ; particle
    shifts must lie within ±(n_shift - 3)/2 pixels of it (checked by the caller)."""
    n_templates = grid.templates.shape[0]
    first_shift = jnp.floor(systemic_shift).astype(jnp.int32) - (n_shift - 1) // 2

    def step(histogram, c: ParticleTerms):
        return _deposit(histogram, c, first_shift, n_templates, n_shift)

    histogram0 = jnp.zeros(n_spaxels * n_templates * n_shift, grid.templates.dtype)
    histogram, sums = _scan(step, histogram0, chunks, terms_fn)
    starts = grid.read_offset(first_shift + jnp.arange(n_shift))
    shifted = jax.vmap(
        lambda s: jax.lax.dynamic_slice(grid.templates, (0, s + 1), (n_templates, grid.n_work))
    )(starts)  # (n_shift, n_templates, n_work)
    basis = jnp.transpose(shifted, (1, 0, 2)).reshape(n_templates * n_shift, grid.n_work)
    return histogram.reshape(n_spaxels, n_templates * n_shift) @ basis, sums


# Measured on a 2-core x86-64 CPU, float32 (benchmarks/run.py): the direct engine costs
# ~7.6 ns per particle and lattice bin; the histogram engine ~1 µs per particle plus its
# matrix product at ~60 GFLOP/s.
_DIRECT_SECONDS_PER_UPDATE = 7.6e-9
_HISTOGRAM_SECONDS_PER_PARTICLE = 1e-6
_MATMUL_FLOPS_PER_SECOND = 6e10
HISTOGRAM_MAX_BYTES = 1.5e9


def choose_engine(
    n_particles: int, n_spaxels: int, n_templates: int, n_shift: int, n_work: int
) -> str:
    """`"histogram"` where its cost model beats the direct engine's and its histogram
    and shifted-template basis fit in `HISTOGRAM_MAX_BYTES`; else `"direct"`."""
    columns = n_templates * n_shift
    if 4 * columns * (n_spaxels + n_work) > HISTOGRAM_MAX_BYTES:
        return "direct"
    direct = n_particles * n_work * _DIRECT_SECONDS_PER_UPDATE
    histogram = (
        n_particles * _HISTOGRAM_SECONDS_PER_PARTICLE
        + 2 * n_spaxels * columns * n_work / _MATMUL_FLOPS_PER_SECOND
    )
    return "histogram" if histogram < direct else "direct"


def _attenuated(chunks: Chunks, terms_fn) -> bool:
    """Whether the terms carry a per-particle dust attenuation (traced shapes only)."""
    terms, _ = jax.eval_shape(lambda: terms_fn(chunks.read(0)))
    return terms.attenuation is not None


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
        self, n_particles: int, n_spaxels: int, grid: SpectralGrid, speed_bound: float
    ) -> "AbstractEngine":
        """The concrete engine that runs for these sizes (itself, unless it chooses)."""

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

    def resolve(self, n_particles, n_spaxels, grid, speed_bound):
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
    velocity axis covers |v_los| ≤ `speed_bound`; a faster particle is an error."""

    name: ClassVar[str] = "histogram"
    chunk_size: int | None = eqx.field(static=True, default=None)

    def resolve(self, n_particles, n_spaxels, grid, speed_bound):
        return self

    def __call__(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        chunks = chunked(particles, self.chunk_size or 4096, fill)
        if _attenuated(chunks, terms_fn):
            raise ValueError(
                "HistogramEngine cannot apply per-particle dust attenuation (its histogram "
                "keeps no per-particle spectra): use engine='direct' or 'auto'."
            )
        n_shift = n_shift_bins(grid, speed_bound)
        work, sums = histogram_cube(chunks, terms_fn, grid, n_spaxels, systemic_shift, n_shift)
        work = eqx.error_if(
            work,
            sums["max_speed"] > speed_bound,
            "A particle's line-of-sight speed exceeds Pipeline(velocity_margin=...): "
            "raise the margin, or use engine='direct'.",
        )
        return work, {k: v for k, v in sums.items() if not k.startswith("max_")}


class AutoEngine(AbstractEngine):
    """The faster of [`rubix_eqx.DirectEngine`][] and [`rubix_eqx.HistogramEngine`][]
    for the sizes, by the cost model `choose_engine` (measured on CPU)."""

    name: ClassVar[str] = "auto"
    chunk_size: int | None = eqx.field(static=True, default=None)

    def resolve(self, n_particles, n_spaxels, grid, speed_bound):
        name = choose_engine(
            n_particles, n_spaxels, grid.templates.shape[0],
            n_shift_bins(grid, speed_bound), grid.n_work,
        )  # fmt: skip
        return (HistogramEngine if name == "histogram" else DirectEngine)(self.chunk_size)

    def __call__(self, particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound):
        n = jax.tree.leaves(particles)[0].shape[0]
        engine = self.resolve(n, n_spaxels, grid, speed_bound)
        dusty = _attenuated(chunked(particles, 16, fill), terms_fn)
        if isinstance(engine, HistogramEngine) and dusty:
            engine = DirectEngine(self.chunk_size)  # dust needs per-particle spectra
        return engine(particles, fill, terms_fn, grid, n_spaxels, systemic_shift, speed_bound)


ENGINES = {"auto": AutoEngine, "direct": DirectEngine, "histogram": HistogramEngine}
