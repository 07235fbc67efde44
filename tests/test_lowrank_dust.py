"""The histogram engine with dust (a low-rank expansion of the transmission,
`rubix_eqx._dust_basis`) against the direct engine, which applies 10^(−0.4 A_λ) exactly
per particle and bin: the stated bound |Δ| ≤ `dust_rtol` × the unattenuated cube, at a
spread of A_V and at the worst τ; gradients against central finite differences; the
named errors; and the auto engine's choice."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx._dust_basis import chebyshev_series, dust_basis, KAPPA
from rubix_eqx._engine import choose_engine, DUST_MAX_ATTENUATION, DUST_RTOL

from .cases import random_galaxy, tiny_ssp
from .test_dust import observation, telescope


class SpreadScreen(rx.AbstractDust):
    """A test screen: A_V = `scale` · (1 + `spread` · tanh(z_sky / 1 kpc)): with spread 1,
    over 0 … 2·scale mag with depth, smooth in positions and in `scale`; with spread 0,
    uniform (one compilation for both: the fields are arrays)."""

    scale: jax.Array
    spread: jax.Array
    r_v: jax.Array
    lattice_wavelength: jax.Array
    curve: str = eqx.field(static=True, default="ccm89")

    def a_v(self, particles, scene):
        return self.scale * (1 + self.spread * jnp.tanh(particles.position[:, 2]))


def spread_screen(grid, scale=1.5, spread=1.0, curve="ccm89", r_v=3.1):
    lattice = rx.UniformScreen.build(grid, a_v=0.0).lattice_wavelength
    return SpreadScreen(jnp.asarray(scale), jnp.asarray(spread), jnp.asarray(r_v), lattice, curve)


def screened(pipe, scale, spread=1.0):
    """`pipe` with its SpreadScreen at this scale and spread (no recompilation)."""
    stage = pipe.stage(SpreadScreen)
    new = eqx.tree_at(lambda s: (s.scale, s.spread), stage,
                      (jnp.asarray(scale), jnp.asarray(spread)))  # fmt: skip
    return replace_stage(pipe, SpreadScreen, new)


def replace_stage(pipe, kind, new):
    old = pipe.stage(kind)
    return eqx.tree_at(lambda p: p.stages, pipe, tuple(new if s is old else s for s in pipe.stages))


def with_engine(pipe, engine):
    return eqx.tree_at(lambda p: p.engine, pipe, engine)


SPEED = 1000.0  # km/s: one velocity axis for every call


@pytest.fixture(scope="module")
def base():
    return rx.Pipeline(telescope(4800.0, 6000.0, n=6, step=2.0), tiny_ssp(), lsf=False,
                       psf=False, aperture=False, dtype=jnp.float64,
                       engine="direct")  # fmt: skip


@pytest.fixture(scope="module")
def galaxy():
    return random_galaxy(3, 200, size_kpc=1.0)


def cube(pipe, galaxy, obs=None):
    return np.asarray(pipe(galaxy, obs or observation(), speed_bound=SPEED).flux)


@pytest.fixture(scope="module")
def engines(base, galaxy):
    """(direct, histogram) pipelines behind a SpreadScreen, and the unattenuated cube
    (the direct one at A_V = 0: exactly transmission 1)."""
    direct = base.with_stage(spread_screen(base.grid))
    histogram = with_engine(direct, rx.HistogramEngine())
    return direct, histogram, cube(screened(direct, 0.0), galaxy)


def test_histogram_dust_matches_direct_within_the_bound(engines, galaxy):
    """A_V spread over 0–3 mag (CCM89): |histogram − direct| ≤ dust_rtol × the
    unattenuated cube in every pixel (float64), and the spread really is 0–3 mag."""
    direct, histogram, clear = engines
    exact, approx = cube(direct, galaxy), cube(histogram, galaxy)
    a_v = 1.5 * (1 + np.tanh(np.asarray(galaxy.position[:, 2])))  # inclination 0: z_sky = z
    error = np.abs(approx - exact)
    ratio = np.max(error / np.maximum(clear, 1e-300))
    print(f"\nA_V {a_v.min():.2f}–{a_v.max():.2f} mag: max |Δ| / unattenuated = {ratio:.2e} "
          f"(bound {DUST_RTOL:g}, rank {rx.HistogramEngine().dust_rank})")  # fmt: skip
    assert a_v.min() < 0.2 and a_v.max() > 2.8
    assert np.max(np.abs(exact - clear)) > 0.5 * np.max(clear)  # dust matters
    assert np.all(error <= DUST_RTOL * clear + 1e-12 * np.max(clear))


def test_bound_holds_at_the_worst_tau(engines, galaxy):
    """The expansion on the lattice's own curve, on a fine τ grid up to the largest
    A_V the table allows: max |t̃ − t| ≤ dust_rtol; then every particle at the worst τ,
    histogram against direct, within the bound pixel by pixel."""
    direct, histogram, clear = engines
    a, b, table_error = dust_basis(DUST_RTOL, DUST_MAX_ATTENUATION)
    curve = direct.stage(SpreadScreen).curve_on_lattice(jnp.asarray(0.02))
    peak = float(jnp.max(curve))
    tau = jnp.linspace(0.0, DUST_MAX_ATTENUATION / peak, 4001)
    coefficient = chebyshev_series(tau * peak / DUST_MAX_ATTENUATION, a)  # (n_τ, R)
    phi = chebyshev_series(curve / peak, b)  # (n_work, R)
    exact = jnp.exp(-KAPPA * tau[:, None] * curve[None, :])
    error = np.max(np.abs(np.asarray(coefficient @ phi.T - exact)), axis=1)
    worst = float(tau[np.argmax(error)])
    print(f"\nrank {a.shape[1]}: table error {table_error:.2e}, on the lattice "
          f"{error.max():.2e} at A_V = {worst:.3f} mag")  # fmt: skip
    assert error.max() <= DUST_RTOL
    exact = cube(screened(direct, worst, 0.0), galaxy)
    approx = cube(screened(histogram, worst, 0.0), galaxy)
    ratio = np.max(np.abs(approx - exact) / np.maximum(clear, 1e-300))
    print(f"cube at A_V = {worst:.3f}: max |Δ| / unattenuated = {ratio:.2e}")
    assert np.all(np.abs(approx - exact) <= DUST_RTOL * clear + 1e-12 * np.max(clear))


def test_gradients_match_central_differences(base):
    """d(Σ w · cube)/d(A_V scale, R_V, a shift of all positions along z and x, the
    redshift), histogram engine with dust, forward and reverse mode, against central
    differences of the same function: ≤ 1e-4 relative (float64). And against the direct
    engine's gradient: within the expansion's accuracy."""
    galaxy = random_galaxy(4, 60, size_kpc=1.0)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(6, 6, 600)))
    screen = spread_screen(base.grid)
    dusty = base.with_stage(screen)
    histogram = with_engine(dusty, rx.HistogramEngine())

    def loss_with(pipe):
        def loss(params):
            scale, r_v, dz, dx, z = params
            stage = eqx.tree_at(lambda s: (s.scale, s.r_v), screen, (scale, r_v))
            shift = jnp.stack([dx, jnp.zeros_like(dx), dz])
            g = eqx.tree_at(lambda g: g.position, galaxy, galaxy.position + shift[None, :])
            obs = observation(inclination=30.0, redshift=z)
            flux = replace_stage(pipe, SpreadScreen, stage)(g, obs, speed_bound=SPEED).flux
            return jnp.sum(weights * flux)

        return loss

    loss = jax.jit(loss_with(histogram))
    params = tuple(jnp.asarray(v) for v in (1.5, 3.1, 0.05, 0.02, 0.02))
    reverse = jax.jit(jax.grad(loss))(params)
    forward = jax.jit(jax.jacfwd(loss))(params)
    exact = jax.jit(jax.grad(loss_with(dusty)))(params)
    for i, h in enumerate((1e-5, 1e-5, 1e-5, 1e-5, 1e-7)):
        plus = tuple(p + h if j == i else p for j, p in enumerate(params))
        minus = tuple(p - h if j == i else p for j, p in enumerate(params))
        fd = float((loss(plus) - loss(minus)) / (2 * h))
        rev, fwd, direct = float(reverse[i]), float(forward[i]), float(exact[i])
        print(f"\nparam {i}: reverse {rev:.9e} forward {fwd:.9e} fd {fd:.9e} direct "
              f"{direct:.9e}; |rev − fd|/|fd| {abs(rev - fd) / abs(fd):.1e}, |rev − direct|"
              f"/|direct| {abs(rev - direct) / abs(direct):.1e}")  # fmt: skip
        assert fd != 0.0
        assert abs(rev - fd) <= 1e-4 * abs(fd) and abs(fwd - fd) <= 1e-4 * abs(fd)
        assert abs(rev - direct) <= 1e-3 * abs(direct)


def test_dust_beyond_the_table_is_a_named_error(engines, base, galaxy):
    """A_λ above `dust_max_attenuation` somewhere on the lattice (the check is under jit:
    an EquinoxRuntimeError); several components are refused eagerly; bad settings named."""
    direct, histogram, _ = engines
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"dust_max_attenuation=10\) mag"):
        cube(screened(histogram, 5.0), galaxy)  # A_V up to 10 mag: A_λ ≈ 12 in the blue
    two = histogram.with_stage(rx.BirthCloud.build(base.grid))
    with pytest.raises(ValueError, match="HistogramEngine carries one dust component"):
        cube(two, galaxy)
    with pytest.raises(ValueError, match=r"`dust_rtol` must lie in \(0, 1\)"):
        rx.HistogramEngine(dust_rtol=0.0)
    with pytest.raises(ValueError, match=r"`dust_max_attenuation` must lie in"):
        rx.AutoEngine(dust_max_attenuation=-1.0)


def test_auto_engine_counts_the_dust_rank(base):
    """The cost model with R histograms and products: at MUSE-like sizes the histogram
    wins for many particles, the direct engine for few; with several dust components
    the auto engine runs the direct one."""
    rank = rx.HistogramEngine().dust_rank
    muse = dict(n_spaxels=1600, n_templates=12, n_shift=17, n_work=3700)
    assert choose_engine(10**6, **muse, rank=rank) == "histogram"
    assert choose_engine(100, **muse, rank=rank) == "direct"
    big = 10**5
    assert choose_engine(big, **muse) == "histogram"
    auto = base.with_stage(spread_screen(base.grid))
    auto = with_engine(auto, rx.AutoEngine())
    assert auto.engine_for(10**6) == "histogram" and auto.engine_for(10) == "direct"
    two = auto.with_stage(rx.BirthCloud.build(base.grid))
    assert two.engine_for(10**6) == "direct"


def test_auto_engine_falls_back_to_direct_beyond_the_table():
    """With 3000 lattice bins and 2000 particles the auto engine picks the histogram for
    one dust component; A_λ within the table: within the bound of the direct engine;
    beyond it (A_V = 9, A_λ ≈ 12 mag): the direct engine's cube, exactly (no error)."""
    tel = telescope(4800.0, 7800.0, n=4, step=1.0)
    base = rx.Pipeline(tel, tiny_ssp(), lsf=False, psf=False, aperture=False,
                       dtype=jnp.float64, engine="direct")  # fmt: skip
    direct = base.with_stage(rx.UniformScreen.build(base.grid, a_v=1.0))
    auto = with_engine(direct, rx.AutoEngine())
    galaxy = random_galaxy(5, 2000, size_kpc=0.5)
    assert auto.engine_for(2000, SPEED) == "histogram"
    for a_v, tol in ((1.0, DUST_RTOL), (9.0, 1e-12)):
        stage = eqx.tree_at(lambda s: s.a_v_screen, direct.stage(rx.UniformScreen),
                            jnp.asarray(a_v))  # fmt: skip
        exact = cube(replace_stage(direct, rx.UniformScreen, stage), galaxy)
        approx = cube(replace_stage(auto, rx.UniformScreen, stage), galaxy)
        clear = cube(replace_stage(direct, rx.UniformScreen, eqx.tree_at(
            lambda s: s.a_v_screen, stage, jnp.asarray(0.0))), galaxy)  # fmt: skip
        ratio = np.max(np.abs(approx - exact) / np.maximum(clear, 1e-300))
        print(f"\nauto, A_V = {a_v}: max |Δ| / unattenuated = {ratio:.2e}")
        assert np.all(np.abs(approx - exact) <= tol * clear + 1e-12 * np.max(clear))
