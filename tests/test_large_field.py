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
    for 10⁵ and 10⁶ particles at 40 × 40, 150 × 150 and 300 × 300 spaxels, the histogram
    one for 10⁵ particles on 10 × 10 (its dense product is cheap there), the direct one
    for a few particles or a histogram beyond `SPARSE_MAX_BYTES`; with dust, as before."""
    muse = dict(n_templates=150, n_shift=33, n_work=5080)
    for n in (40, 150, 300):
        assert choose_engine(10**6, n * n, **muse) == "sparse"
        assert choose_engine(10**5, n * n, **muse) == "sparse"
    assert choose_engine(10**5, 10 * 10, **muse) == "histogram"
    assert choose_engine(50, 1600, **muse) == "direct"
    assert choose_engine(10**7, 1000 * 1000, **muse) == "direct"
    assert choose_engine(10**6, 1600, **muse, rank=7) == "histogram"
    assert choose_engine(10**6, 300 * 300, **muse, rank=7) == "direct"


@pytest.mark.parametrize("occupied", [20, 3000])
def test_tile_product_transposes(ssp, occupied):
    """Reverse mode of the tile product (JAX's transpose of its tangent) against
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


def test_vmap_over_galaxies(ssp):
    """`jax.vmap` over two galaxies on the sparse engine (its tiles forced, and its own
    choice: under vmap its `lax.cond`s become selects) equals the two separate calls and
    the direct engine to float64 round-off."""
    obs = observation()
    singles = random_galaxy(3, 400, size_kpc=1.0), random_galaxy(4, 400, size_kpc=1.0)
    both = jax.tree.map(lambda *x: jnp.stack(x), *singles)
    direct = [np.asarray(pipeline(ssp, "direct")(g, obs, speed_bound=SPEED).flux) for g in singles]
    for engine in (rx.SparseEngine(product="tiles", tile=4), rx.SparseEngine()):
        pipe = pipeline(ssp, engine)
        flux = lambda g: pipe(g, obs, speed_bound=SPEED).flux
        batched = np.asarray(eqx.filter_jit(eqx.filter_vmap(flux))(both))
        for i, g in enumerate(singles):
            scale = np.max(direct[i])
            assert np.max(np.abs(batched[i] - direct[i])) <= 1e-12 * scale
            assert np.max(np.abs(batched[i] - np.asarray(flux(g)))) <= 1e-12 * scale


def test_vmap_of_gradients_and_jacfwd(loss):
    """vmap of reverse mode over two galaxies equals the separate gradients, and
    `jax.jacfwd` (a vmap of forward mode) equals reverse mode."""
    singles = random_galaxy(7, 12, size_kpc=1.0), random_galaxy(8, 12, size_kpc=1.0)
    both = jax.tree.map(lambda *x: jnp.stack(x), *singles)
    batched = eqx.filter_vmap(eqx.filter_grad(loss))(both)
    for i, g in enumerate(singles):
        grads = eqx.filter_grad(loss)(g)
        for field in ("age", "metallicity", "velocity"):
            a, b = np.asarray(getattr(batched, field)[i]), np.asarray(getattr(grads, field))
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
    g = singles[0]
    with_ages = lambda ages: loss(eqx.tree_at(lambda g: g.age, g, ages))
    forward = jax.jacfwd(with_ages)(g.age)
    reverse = eqx.filter_grad(loss)(g).age
    np.testing.assert_allclose(forward, reverse, rtol=1e-9, atol=1e-12 * np.abs(reverse).max())


def test_fit_particles_on_the_sparse_engine():
    """`fit_particles` (least squares, and `jax.jacfwd` for the standard errors: a vmap
    of forward mode) runs on the sparse engine: the RUBIX paper's one particle in one
    spaxel at S/N = 100 (tests/test_fit.py) from one start."""
    ssp = tiny_ssp(metal_slope=0.3)
    tel, obs = tiny_telescope(n=1), observation(inclination=0.0)
    truth = rx.galaxy.single_population(1, age=3.0, metallicity=0.012, dtype=jnp.float64)
    cube = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=100.0), dtype=jnp.float64)(
        truth, obs, key=jax.random.key(3)
    )
    start = eqx.tree_at(lambda g: (g.age, g.metallicity), truth,
                        (jnp.array([2.0]), jnp.array([0.015])))  # fmt: skip
    model = rx.Pipeline(tel, ssp, engine="sparse", dtype=jnp.float64)
    fit = rx.fit.fit_particles(cube, model, start, obs)
    assert abs(np.log10(float(fit.age[0]) / 3.0)) < 0.02
    assert abs(np.log10(float(fit.metallicity[0]) / 0.012)) < 0.02
    assert np.isfinite(float(fit.log_age_err[0])) and float(fit.log_age_err[0]) > 0
