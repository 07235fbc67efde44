"""The sparse engine (histogram deposit, then the product over the occupied tiles of the
histogram only) against the NumPy reference and the direct engine, both of its products
(tiles and the dense fallback), its gradients against central finite differences and
forward mode, and the auto engine's choice at full MUSE fields."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx._engine import choose_engine, tile_capacity, tile_shape

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


SPEED = 1000.0  # km/s: one velocity axis (n_shift = 33 on the tiny lattice) for all calls
STEP = 1e-6


@pytest.fixture(scope="module")
def ssp():
    return tiny_ssp()


@pytest.fixture(scope="module")
def galaxy():
    return random_galaxy(3, 400, size_kpc=1.0)


def pipeline(ssp, engine, n=24):
    """A field of n × n spaxels of which the galaxy fills a small part (most tiles empty)."""
    return rx.Pipeline(tiny_telescope(n=n), ssp, engine=engine, lsf=False, dtype=jnp.float64)


def test_tile_shape():
    assert tile_shape(33) == (5, 7) and tile_shape(8) == (1, 8) and tile_shape(9) == (2, 5)
    assert tile_shape(33, tile=3) == (11, 3)
    assert tile_capacity(10, 4, 100, 12, 5) == 320 and tile_capacity(10**6, 4, 10, 12, 5) == 600


@pytest.mark.parametrize(
    "engine",
    [rx.SparseEngine(product="tiles", tile=3), rx.SparseEngine(product="dense", tile=3),
     rx.SparseEngine()],
    ids=["tiles3", "dense3", "auto"],
)  # fmt: skip
def test_matches_direct(ssp, galaxy, engine):
    """Exact (float64 round-off) against the direct engine, in a field where most
    spaxels are empty, with the last tile padded (tile=3: 11 tiles of 3 = 33 shift bins;
    tile 8: 5 of 7 = 35). Against the NumPy reference: tests/test_forward.py."""
    obs = observation()
    direct = np.asarray(pipeline(ssp, "direct")(galaxy, obs, speed_bound=SPEED).flux)
    cube = np.asarray(pipeline(ssp, engine)(galaxy, obs, speed_bound=SPEED).flux)
    assert np.max(direct) > 0
    assert np.max(np.abs(cube - direct)) <= 1e-12 * np.max(direct)


@pytest.fixture(scope="module")
def loss(ssp):
    pipe = pipeline(ssp, rx.SparseEngine(product="tiles", tile=4), n=16)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(16, 16, 601)))

    @eqx.filter_jit
    def loss(galaxy):
        return jnp.sum(pipe(galaxy, observation(), speed_bound=SPEED).flux * weights)

    return loss


@pytest.mark.parametrize(
    "field, index",
    [("age", (3,)), ("metallicity", (5,)), ("mass", (2,)), ("velocity", (4, 2)),
     ("position", (6, 0))],
)  # fmt: skip
def test_gradients(loss, field, index):
    """Reverse mode through the tile product against central differences, and forward
    mode (the deposit's custom JVP) against reverse mode."""
    galaxy = random_galaxy(7, 12, size_kpc=1.0)
    grads = eqx.filter_grad(loss)(galaxy)
    analytic = float(getattr(grads, field)[index])
    x0 = float(getattr(galaxy, field)[index])

    def with_value(x):
        value = getattr(galaxy, field).at[index].set(x)
        return eqx.tree_at(lambda g: getattr(g, field), galaxy, value)

    h = STEP * max(abs(x0), 1.0)
    numeric = (float(loss(with_value(x0 + h))) - float(loss(with_value(x0 - h)))) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8 * abs(float(loss(galaxy))))
    assert analytic != 0.0
    _, forward = jax.jvp(lambda x: loss(with_value(x)), (jnp.asarray(x0),), (jnp.asarray(1.0),))
    assert float(forward) == pytest.approx(analytic, rel=1e-9)


def test_auto_picks_sparse_at_full_fields():
    """MUSE sizes (150 templates, 33 shift bins, 5080 lattice bins): the sparse engine
    for 10⁶ particles at 150 × 150 and 300 × 300 spaxels, the histogram one at 40 × 40
    and for 10⁵ particles on 10 × 10 (its dense product is cheap there), the direct one
    for a few particles or a histogram beyond `SPARSE_MAX_BYTES`; with dust, as before."""
    muse = dict(n_templates=150, n_shift=33, n_work=5080)
    for n in (150, 300):
        assert choose_engine(10**6, n * n, **muse) == "sparse"
    assert choose_engine(10**6, 40 * 40, **muse) == "histogram"
    assert choose_engine(10**5, 10 * 10, **muse) == "histogram"
    assert choose_engine(50, 1600, **muse) == "direct"
    assert choose_engine(10**7, 1000 * 1000, **muse) == "direct"
    assert choose_engine(10**6, 1600, **muse, rank=7) == "histogram"
    assert choose_engine(10**6, 300 * 300, **muse, rank=7) == "direct"


@pytest.mark.parametrize("occupied", [20, 3000])
def test_tile_product_transposes(ssp, occupied):
    """Reverse mode of the tile product (a linear call with its own transpose) against
    the dense product's, with few occupied tiles (the tiles' transpose runs) and many
    (the matrix transpose runs, by the cost model)."""
    from rubix_eqx._engine import tile_product

    grid = pipeline(ssp, "direct", n=16).grid
    shape = (256, grid.templates.shape[0], 35)
    rng = np.random.default_rng(occupied)
    h = np.zeros(shape)
    h.reshape(-1)[rng.choice(h.size, occupied, replace=False)] = rng.random(occupied)
    h = jnp.asarray(h)
    first = jnp.floor(jnp.log1p(0.02) / grid.log_step).astype(jnp.int32) - 16
    cotangent = jnp.asarray(rng.normal(size=(256, grid.n_work)))

    def pullback(product):
        f = lambda h: tile_product(h, grid, first, 33, 7, h.size // 7, product)
        out, vjp = jax.vjp(f, h)
        return np.asarray(out), np.asarray(vjp(cotangent)[0])

    (tiles, d_tiles), (dense, d_dense) = pullback("tiles"), pullback("dense")
    np.testing.assert_allclose(tiles, dense, rtol=1e-12, atol=1e-12 * np.abs(dense).max())
    occupied_tiles = np.any(np.asarray(h).reshape(-1, 7) != 0, axis=1)
    mask = np.repeat(occupied_tiles, 7).reshape(shape)  # tangents live on occupied tiles
    np.testing.assert_allclose(d_tiles[mask], d_dense[mask], rtol=1e-10,
                               atol=1e-12 * np.abs(d_dense).max())  # fmt: skip
    assert np.all(d_tiles[~mask] == 0)


def test_sparse_engine_refuses_dust(ssp, galaxy):
    pipe = pipeline(ssp, "sparse", n=8)
    pipe = pipe.with_stage(rx.UniformScreen.build(pipe.grid, a_v=1.0))
    with pytest.raises(ValueError, match="SparseEngine carries no dust"):
        pipe(galaxy, observation(), speed_bound=SPEED)
    with pytest.raises(ValueError, match="`product` must be"):
        rx.SparseEngine(product="fast")
