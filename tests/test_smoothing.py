"""The smoothed deposit (`rx.SmoothedDeposit`) in the cube: one particle's image against an
independent NumPy quadrature of the textbook kernel, flux conservation against CIC,
gradients against finite differences, both engines, one compilation per shape, named
errors, and the galaxy's optional `smoothing_length` (k-NN helper, HDF5)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from scipy.special import erf

from .cases import tiny_ssp, tiny_telescope
from .test_papercuts import count_compilations


N_PIX = 10
SPAXEL = 0.5  # arcsec
D_A = 180.0 / math.pi * 3.6  # Mpc: 1 arcsec = 1 kpc, so one pixel = 0.5 kpc
SPEED = 1000.0  # km/s, histogram velocity axis (fixed: one compilation)


# --- independent references (NumPy float64, textbook formulas) ------------------------


def m4_kernel_3d(r, h):
    """Monaghan & Lattanzio (1985) cubic spline, support radius h (Springel 2005 form):
    W = 8/(π h³) · {1 − 6q² + 6q³ (q ≤ ½); 2(1 − q)³ (½ < q ≤ 1); 0}, q = r/h."""
    q = np.asarray(r, np.float64) / h
    w = np.where(q <= 0.5, 1 - 6 * q**2 + 6 * q**3, np.where(q <= 1, 2 * (1 - q) ** 3, 0.0))
    return 8 / (np.pi * h**3) * w


def projected_m4(big_r, h, nodes=20):
    """Σ(R) = ∫ W(√(R² + z²)) dz, per unit area, by Gauss–Legendre in z on each smooth
    piece (0 → the q = ½ shell → the support), vectorised over R (any shape)."""
    big_r = np.asarray(big_r, np.float64)
    g, w = np.polynomial.legendre.leggauss(nodes)
    z_max = np.sqrt(np.clip(h * h - big_r**2, 0, None))
    z_mid = np.sqrt(np.clip(h * h / 4 - big_r**2, 0, None))
    total = np.zeros_like(big_r)
    for lo, hi in ((np.zeros_like(big_r), z_mid), (z_mid, z_max)):
        half = (hi - lo) / 2
        z = lo[..., None] + half[..., None] * (g + 1)
        total += half * np.sum(w * m4_kernel_3d(np.sqrt(big_r[..., None] ** 2 + z**2), h), -1)
    return 2 * total


def pixel_integrals(sigma, x0, y0, h, n_pix, nodes=16, split=2):
    """∫∫ of the surface density `sigma(R)` (R in pixels, zero beyond h) centred at
    (x0, y0) over every pixel [i, i+1) × [j, j+1) of an n_pix × n_pix field:
    Gauss–Legendre on `split`² sub-cells of each pixel that the support reaches."""
    g, w = np.polynomial.legendre.leggauss(nodes)
    u = ((np.arange(split)[:, None] + 0.5 * (g + 1)) / split).ravel()  # in [0, 1)
    wu = np.tile(w / (2 * split), split)
    weight = wu[:, None] * wu[None, :]
    image = np.zeros((n_pix, n_pix))
    for i in range(n_pix):
        for j in range(n_pix):
            near_x = min(max(x0, i), i + 1) - x0
            near_y = min(max(y0, j), j + 1) - y0
            if math.hypot(near_x, near_y) >= h:
                continue  # the pixel lies beyond the kernel's support
            r = np.hypot(i + u[:, None] - x0, j + u[None, :] - y0)
            image[i, j] = np.sum(weight * sigma(r))
    return image


def sky_pixel(position_kpc):
    """Pixel coordinates of a galaxy-frame position for inclination 0, position angle 0
    (sky West = −y, North = +x of the galaxy) at 1 arcsec = 1 kpc, 0.5" pixels."""
    x, y = position_kpc[0], position_kpc[1]
    return -y / SPAXEL + N_PIX / 2, x / SPAXEL + N_PIX / 2


# --- shared setup: one compiled function for the whole file (compiles are slow) ------


def make_galaxy(position, h, mass=None):
    n = len(position)
    return rx.Galaxy(
        position=jnp.asarray(position, jnp.float64),
        velocity=jnp.asarray(np.tile([30.0, -20.0, 40.0], (n, 1))),
        mass=jnp.asarray(np.ones(n) if mass is None else mass, jnp.float64),
        age=jnp.full(n, 3.0),
        metallicity=jnp.full(n, 0.019),
        smoothing_length=jnp.asarray(h, jnp.float64),
    )


# Four particles well inside the field: kernels (h ≤ 0.95 kpc = 1.9 pixels) inside their
# 5 × 5 blocks and inside the field.
POSITION = np.array([[0.13, -0.41, 0.2], [-0.62, 0.37, -0.1], [0.48, 0.71, 0.0], [-0.2, -0.9, 0.3]])
H = np.array([0.83, 0.61, 0.95, 0.4])
OBSERVATION = dict(redshift=0.05, distance=D_A, inclination=0.0, position_angle=0.0)


def observation():
    return rx.Observation(**{k: jnp.asarray(v) for k, v in OBSERVATION.items()})


@pytest.fixture(scope="module")
def run():
    """`run(galaxy, t_position, t_h)` (4 particles): the cubes of the smoothed deposit
    with both engines and of CIC (histogram), the JVP of a weighted sum of the smoothed
    direct cube along a position and a smoothing-length direction, and the deposit of
    three other smoothed stages, all in one jitted call."""
    ssp = tiny_ssp(flat=True)
    tel = tiny_telescope(start=5000.0, stop=5060.0, step=2.0, n=N_PIX)
    obs = observation()
    common = dict(lsf=False, psf=False, aperture=False, dtype=jnp.float64)
    pipes = {
        "direct": rx.Pipeline(tel, ssp, deposit="smoothed", engine="direct", **common),
        "histogram": rx.Pipeline(tel, ssp, deposit="smoothed", engine="histogram", **common),
        "cic": rx.Pipeline(tel, ssp, deposit="cic", engine="histogram", **common),
    }
    assert pipes["direct"].stage(rx.AbstractDeposit) == rx.SmoothedDeposit()
    stages = {
        "gaussian": rx.SmoothedDeposit(kernel="gaussian", stencil=7),
        "stencil3": rx.SmoothedDeposit(stencil=3),
        "default": rx.SmoothedDeposit(),
    }
    scene = rx.Scene(obs, tel, None, 1e-20)
    probe = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, (N_PIX, N_PIX, 1)))

    @eqx.filter_jit
    def cubes(galaxy, t_position, t_h):
        run = lambda name, g: pipes[name](g, obs, speed_bound=SPEED).flux
        out = {name: run(name, galaxy) for name in pipes}
        scalar = lambda g: jnp.sum(run("direct", g) * probe)
        with_pos = lambda p: scalar(eqx.tree_at(lambda g: g.position, galaxy, p))
        with_h = lambda h: scalar(eqx.tree_at(lambda g: g.smoothing_length, galaxy, h))
        out["scalar"], out["d_position"] = jax.jvp(with_pos, (galaxy.position,), (t_position,))
        _, out["d_h"] = jax.jvp(with_h, (galaxy.smoothing_length,), (t_h,))
        oriented = rx.Orient()(rx.Particles(galaxy), scene)
        out["stages"] = {name: stage(oriented, scene) for name, stage in stages.items()}
        return out

    zero_p, zero_h = jnp.zeros(POSITION.shape), jnp.zeros(H.shape)
    return lambda galaxy, tp=zero_p, th=zero_h: cubes(galaxy, tp, th)


def test_one_particle_image_is_the_pixel_integrated_kernel(run):
    """Particle 0 alone (the others massless): its wavelength-summed cube, over the CIC
    cube's total (the same light, all inside), is the projected cubic spline integrated
    over the real pixels, from the textbook formula by quadrature."""
    out = run(make_galaxy(POSITION, H, [1.0, 0.0, 0.0, 0.0]))
    image = np.asarray(out["direct"]).sum(-1)
    total = float(np.asarray(out["cic"]).sum())
    x0, y0 = sky_pixel(POSITION[0])
    h_pix = H[0] / SPAXEL
    want = pixel_integrals(lambda r: projected_m4(r, h_pix), x0, y0, h_pix, N_PIX)
    assert want.sum() == pytest.approx(1.0, abs=1e-7)  # the reference is normalised
    assert np.count_nonzero(want > 1e-12) > 9  # really spread (h = 1.66 pixels)
    assert np.max(np.abs(image / total - want)) <= 1e-5
    np.testing.assert_allclose(image.sum(), total, rtol=1e-12)


def test_gaussian_image_is_the_pixel_integrated_gaussian(run):
    """The Gaussian kernel (σ = √(3/40)·h): the deposit weights of a particle are the
    products of erf differences over the pixel edges (7 × 7 block; truncation < 1e-6)."""
    particles = run(make_galaxy(POSITION, H))["stages"]["gaussian"]
    assert particles.spaxel_index.shape == (4, 49)
    for p in range(4):
        image = np.zeros(N_PIX * N_PIX)
        np.add.at(image, np.asarray(particles.spaxel_index[p]),
                  np.asarray(particles.spaxel_weight[p]))  # fmt: skip
        x0, y0 = sky_pixel(POSITION[p])
        s = math.sqrt(3 / 40) * H[p] / SPAXEL
        edges = np.arange(N_PIX + 1.0)
        cx = np.diff(0.5 * erf((edges - x0) / (s * math.sqrt(2))))
        cy = np.diff(0.5 * erf((edges - y0) / (s * math.sqrt(2))))
        np.testing.assert_allclose(image.reshape(N_PIX, N_PIX), np.outer(cx, cy), atol=1e-6)


def test_flux_is_conserved_and_engines_agree(run):
    out = run(make_galaxy(POSITION, H, np.array([1.0, 2.0, 0.5, 1.5])))
    direct, histogram, cic = (np.asarray(out[k]) for k in ("direct", "histogram", "cic"))
    assert cic.sum() > 0
    np.testing.assert_allclose(direct.sum(), cic.sum(), rtol=1e-12)
    np.testing.assert_allclose(histogram.sum(), cic.sum(), rtol=1e-12)
    assert np.max(np.abs(direct - histogram)) <= 1e-5 * np.max(np.abs(direct))
    assert np.max(np.abs(direct - cic)) > 1e-2 * np.max(np.abs(cic))  # not the CIC image


def test_cube_gradients_match_finite_differences(run):
    galaxy = make_galaxy(POSITION, H)
    rng = np.random.default_rng(5)
    t_position, t_h = rng.normal(0, 1, POSITION.shape), rng.normal(0, 1, H.shape)
    out = run(galaxy, jnp.asarray(t_position), jnp.asarray(t_h))
    eps = 1e-6
    scalar_at = lambda position, h: float(run(make_galaxy(position, h))["scalar"])
    fd_position = (
        scalar_at(POSITION + eps * t_position, H) - scalar_at(POSITION - eps * t_position, H)
    ) / (2 * eps)
    fd_h = (scalar_at(POSITION, H + eps * t_h) - scalar_at(POSITION, H - eps * t_h)) / (2 * eps)
    scale = abs(float(out["scalar"]))
    assert abs(fd_position) > 1e-2 * scale and abs(fd_h) > 1e-2 * scale  # real dependences
    assert float(out["d_position"]) == pytest.approx(fd_position, rel=1e-4)
    assert float(out["d_h"]) == pytest.approx(fd_h, rel=1e-4)


def test_compiles_once_per_shape(run):
    """Other positions, masses and smoothing lengths of the same shape compile nothing
    (the pipeline's graph depends on shapes only)."""
    first = run(make_galaxy(POSITION, H))
    with count_compilations() as count:
        second = run(make_galaxy(POSITION * 0.9, H * 1.1, np.arange(1.0, 5.0)))
    assert count() == 0
    assert not np.allclose(np.asarray(first["direct"]), np.asarray(second["direct"]))


def test_stencil_entries_edge_light_and_outside_flag(run):
    """k = stencil² entries. A particle just inside the field's edge keeps only the part
    of its kernel inside (the rest is lost, as for CIC) and is not flagged; one just
    outside is flagged but still puts light into the field."""
    # sky pixel x = -y/0.5 + 5: y = -2.4 → x = 9.8 (inside), y = -2.55 → x = 10.1 (outside)
    position = np.array([[0.0, -2.4, 0.0], [0.0, -2.55, 0.0], [0.0, 0.0, 0.0], [0.3, 0.2, 0.0]])
    out = run(make_galaxy(position, [0.8, 0.8, 0.8, 0.8]))
    assert out["stages"]["stencil3"].spaxel_weight.shape == (4, 9)
    particles = out["stages"]["default"]
    assert particles.spaxel_index.shape == particles.spaxel_weight.shape == (4, 25)
    kept = np.asarray(particles.spaxel_weight).sum(1)
    assert 0.3 < kept[0] < 0.9 and 0.0 < kept[1] < 0.5
    np.testing.assert_allclose(kept[2:], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(
        np.asarray(particles.flags["outside"]), [False, True, False, False]
    )
    # the cube holds exactly the kept light: Σ kept × one whole particle's light
    one = np.asarray(run(make_galaxy(position, [0.8] * 4, [0.0, 0.0, 1.0, 0.0]))["direct"]).sum()
    np.testing.assert_allclose(np.asarray(out["direct"]).sum(), one * kept.sum(), rtol=1e-10)


def test_named_errors(run):
    with pytest.raises(ValueError, match=r"`SmoothedDeposit\(kernel=...\)` must be one of"):
        rx.SmoothedDeposit(kernel="tophat")
    with pytest.raises(ValueError, match=r"`SmoothedDeposit\(stencil=...\)` must be odd.*got 4"):
        rx.SmoothedDeposit(stencil=4)
    with pytest.raises(ValueError, match=r"odd integer >= 1; got 0"):
        rx.SmoothedDeposit(stencil=0)
    with pytest.raises(ValueError, match=r"`Galaxy.smoothing_length` is not positive.*-0.5"):
        make_galaxy(POSITION, [0.5, -0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"`Galaxy.smoothing_length` is NaN or infinite"):
        make_galaxy(POSITION, [0.5, np.nan, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"`Pipeline\(deposit=...\)` must be 'cic', 'nearest', "):
        rx.Pipeline(tiny_telescope(n=2), tiny_ssp(), deposit="sph")
    # a galaxy without smoothing lengths: the stage says where to get them
    galaxy = make_galaxy(POSITION, H)
    plain = rx.Galaxy(galaxy.position, galaxy.velocity, galaxy.mass, galaxy.age, galaxy.metallicity)
    scene = rx.Scene(observation(), tiny_telescope(n=N_PIX), None, 1e-20)
    with pytest.raises(ValueError, match=r"needs the galaxy's `smoothing_length`.*with_smoothing"):
        rx.SmoothedDeposit()(rx.Orient()(rx.Particles(plain), scene), scene)
    # bad values set past the constructor's checks fail at run time, naming the field
    bad = eqx.tree_at(lambda g: g.smoothing_length, galaxy, jnp.asarray([0.5, 0.0, 0.5, 0.5]))
    with pytest.raises(RuntimeError, match="`Galaxy.smoothing_length` has values that are"):
        jax.block_until_ready(run(bad)["direct"])


def test_with_smoothing_lengths_is_the_kth_neighbour_distance(tmp_path):
    rng = np.random.default_rng(2)
    pos = rng.normal(0, 1.0, (150, 3))
    plain = rx.Galaxy.from_arrays(pos, np.zeros((150, 3)), np.ones(150), np.full(150, 2.0),
                                  np.full(150, 0.02), dtype=jnp.float64)  # fmt: skip
    assert plain.smoothing_length is None
    smoothed = rx.galaxy.with_smoothing_lengths(plain, k=8)
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    np.testing.assert_allclose(np.asarray(smoothed.smoothing_length), np.sort(d, 1)[:, 8],
                               rtol=1e-12)  # fmt: skip
    assert rx.galaxy.with_smoothing_lengths(smoothed, k=3) is smoothed  # kept unless overwrite
    with pytest.raises(ValueError, match=r"`with_smoothing_lengths\(k=...\)` must be an integer"):
        rx.galaxy.with_smoothing_lengths(plain, k=0)
    # the field survives select, HDF5 and reading back; files without it read as None
    np.testing.assert_array_equal(np.asarray(smoothed.select(slice(3, 7)).smoothing_length),
                                  np.asarray(smoothed.smoothing_length)[3:7])  # fmt: skip
    rx.galaxy.to_hdf5(smoothed, tmp_path / "g.h5")
    back = rx.galaxy.from_hdf5(tmp_path / "g.h5")
    np.testing.assert_array_equal(np.asarray(back.smoothing_length),
                                  np.asarray(smoothed.smoothing_length))  # fmt: skip
    rx.galaxy.to_hdf5(plain, tmp_path / "p.h5")
    assert rx.galaxy.from_hdf5(tmp_path / "p.h5").smoothing_length is None
    # sharded in memory and read sharded from the file (one device here)
    for sharded in (
        rx.sharding.shard(smoothed),
        rx.sharding.load_sharded_galaxy(tmp_path / "g.h5", dtype=jnp.float64),
    ):
        np.testing.assert_array_equal(np.asarray(sharded.smoothing_length),
                                      np.asarray(smoothed.smoothing_length))  # fmt: skip
    assert rx.sharding.shard(plain).smoothing_length is None


def test_run_config_keys(tmp_path):
    from rubix_eqx import config as rc

    smoothing = {"kernel": "gaussian", "stencil": 7}
    spec = rc.check_config({"pipeline": {"deposit": "smoothed", "smoothing": smoothing}})
    assert spec.pipeline["smoothing"] == {"kernel": "gaussian", "stencil": 7, "neighbours": 32}
    assert spec.galaxy["smoothing_neighbours"] == 32
    with pytest.raises(rc.ConfigError, match=r"pipeline.smoothing.stencil: must be odd, got 4"):
        rc.check_config({"pipeline": {"deposit": "smoothed", "smoothing": {"stencil": 4}}})
    with pytest.raises(rc.ConfigError, match=r"pipeline.smoothing: only with `deposit: smoothed`"):
        rc.check_config({"pipeline": {"smoothing": {"stencil": 5}}})
    with pytest.raises(rc.ConfigError, match=r"pipeline.smoothing.kernel: must be one of"):
        rc.check_config({"pipeline": {"deposit": "smoothed", "smoothing": {"kernel": "box"}}})
    # `build_galaxy` gives a galaxy without smoothing lengths the k-th-neighbour distance
    rng = np.random.default_rng(4)
    plain = rx.Galaxy.from_arrays(
        rng.normal(0, 1, (40, 3)), np.zeros((40, 3)), np.ones(40), np.full(40, 2.0),
        np.full(40, 0.02), dtype=jnp.float64,
    )  # fmt: skip
    rx.galaxy.to_hdf5(plain, tmp_path / "g.h5")
    spec = rc.check_config({
        "galaxy": {"source": "file", "path": str(tmp_path / "g.h5")},
        "pipeline": {"deposit": "smoothed", "smoothing": {"neighbours": 8}},
    })  # fmt: skip
    galaxy, info = rc.build_galaxy(spec.galaxy, spec.seed)
    want = rx.galaxy.with_smoothing_lengths(plain, k=8).smoothing_length
    np.testing.assert_array_equal(np.asarray(galaxy.smoothing_length), np.asarray(want))
    assert info["smoothing_length"] == "distance to the 8-th neighbour"
    assert isinstance(rc.build_pipeline_from(spec, tiny_ssp()).stage(rx.AbstractDeposit),
                      rx.SmoothedDeposit)  # fmt: skip
