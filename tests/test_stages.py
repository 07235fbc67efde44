"""The stage protocol: toy stages added to a pipeline, and the fitter picking them up
(docs/architecture.md)."""

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from jaxtyping import Array, Float

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


class Dimmed(rx.AbstractParticleStage):
    """Toy particle stage: particles beyond `radius` kpc (sky plane) shine `factor` as
    bright (needs oriented particles: goes after `Orient`)."""

    radius: float
    factor: float

    def check_scene(self, scene):
        pass

    def __call__(self, particles, scene):
        r = jnp.hypot(particles.position[:, 0], particles.position[:, 1])
        factor = jnp.where(r > self.radius, self.factor, 1.0)
        if particles.luminosity_factor is not None:
            factor = factor * particles.luminosity_factor
        return dataclasses.replace(particles, luminosity_factor=factor)


class Throughput(rx.AbstractCubeStage):
    """Toy cube stage: a throughput curve on the telescope pixels; a single spectrum
    sees it too, so `for_spectrum` is the stage itself."""

    curve: Float[Array, " n_wave"]
    domain: ClassVar[str] = "pixels"

    def check_scene(self, scene):
        if self.curve.shape != scene.telescope.wavelength.shape:
            raise ValueError("`Throughput.curve` must match the telescope's wavelengths.")

    def for_spectrum(self):
        return self

    def __call__(self, cube, scene):
        return dataclasses.replace(cube, flux=cube.flux * self.curve[None, None, :])


class Unmodelled(rx.AbstractCubeStage):
    """A cube stage a single-spectrum model cannot represent."""

    domain: ClassVar[str] = "pixels"

    def check_scene(self, scene):
        pass

    def for_spectrum(self):
        raise rx.FitModelError("Unmodelled mixes spaxels in a way no spectrum model can.")

    def __call__(self, cube, scene):
        return cube


@pytest.fixture(scope="module")
def setup():
    ssp = tiny_ssp()
    tel = tiny_telescope(n=6)
    galaxy = random_galaxy(3, 300)
    obs = observation()
    base = rx.Pipeline(tel, ssp, dtype=jnp.float64)
    return ssp, tel, galaxy, obs, base


def test_default_stages_in_order(setup):
    ssp, tel, _, _, base = setup
    kinds = [type(s) for s in base.stages]
    assert kinds == [rx.Orient, rx.CICDeposit, rx.Spectra, rx.LSF, rx.Rebin]
    assert eqx.tree_equal(base.stages, rx.telescope_stages(tel, ssp, dtype=jnp.float64))
    assert base.stage(rx.LSF) is base.stages[3] and base.stage(rx.AbstractNoise) is None


def test_toy_particle_stage(setup):
    """Particles beyond 1 kpc dimmed by half: the cube is the sum of the inner cube and
    half the outer one, computed as two separate galaxies."""
    ssp, tel, galaxy, obs, base = setup
    pipe = base.with_stage(Dimmed(radius=1.0, factor=0.5), after=rx.Orient)
    assert [type(s) for s in pipe.stages][:3] == [rx.Orient, Dimmed, rx.CICDeposit]
    cube = pipe(galaxy, obs)
    sky = np.asarray(galaxy.position) @ np.asarray(rx.Orient().matrix(obs)).T
    outer = np.hypot(sky[:, 0], sky[:, 1]) > 1.0
    assert 0 < outer.sum() < galaxy.n_particles
    split = jax.tree.map(lambda x: x[np.nonzero(~outer)[0]], galaxy)
    rest = jax.tree.map(lambda x: x[np.nonzero(outer)[0]], galaxy)
    expected = np.asarray(base(split, obs).flux) + 0.5 * np.asarray(base(rest, obs).flux)
    np.testing.assert_allclose(cube.flux, expected, rtol=1e-10, atol=1e-12 * expected.max())


def test_toy_cube_stage_reaches_the_cube_and_the_fitter(setup):
    ssp, tel, galaxy, obs, base = setup
    curve = jnp.linspace(0.6, 1.0, tel.n_wave)
    pipe = base.with_stage(Throughput(curve))
    assert type(pipe.stages[-1]) is Throughput
    expected = np.asarray(base(galaxy, obs).flux) * np.asarray(curve)
    np.testing.assert_allclose(pipe(galaxy, obs).flux, expected, rtol=1e-12)
    plain = rx.fit.SpectrumModel(base, obs)
    through = rx.fit.SpectrumModel(pipe, obs)
    args = (jnp.log10(3.0), jnp.log10(0.012), jnp.asarray(40.0), jnp.asarray(90.0))
    np.testing.assert_allclose(through(*args), plain(*args) * curve, rtol=1e-12)
    with pytest.raises(ValueError, match="Throughput.curve"):
        base.with_stage(Throughput(curve[:-1]))(galaxy, obs)


def test_unrepresentable_stage_is_a_named_fit_error(setup):
    _, _, _, obs, base = setup
    with pytest.raises(rx.FitModelError, match="Unmodelled"):
        rx.fit.SpectrumModel(base.with_stage(Unmodelled()), obs)


def test_stage_order_and_kinds_are_checked(setup):
    ssp, tel, _, _, base = setup
    stages = list(base.stages)
    with pytest.raises(ValueError, match="particle → spectra → lattice → rebin → pixels"):
        rx.Pipeline(tel, ssp, stages=[stages[0], stages[2], stages[1]] + stages[3:])
    with pytest.raises(ValueError, match="exactly one spectra stage"):
        rx.Pipeline(tel, ssp, stages=stages[:2] + stages[3:])
    with pytest.raises(ValueError, match="not a stage"):
        rx.Pipeline(tel, ssp, stages=stages + [eqx.nn.Identity()])
    with pytest.raises(ValueError, match="takes no switches"):
        rx.Pipeline(tel, ssp, stages=stages, lsf=False)
    with pytest.raises(ValueError, match="no stage of kind NearestDeposit"):
        base.with_stage(Unmodelled(), after=rx.NearestDeposit)
    before_rebin = base.with_stage(rx.LSF.build(tel, ssp, base.grid, allow_sharper=True))
    assert [type(s) for s in before_rebin.stages][3:] == [rx.LSF, rx.LSF, rx.Rebin]


def test_cubic_ssp_interpolation(setup):
    """interpax's cubic weights: exact at the nodes, sum to 1, clipped like the bilinear
    ones; the cubic spectrum model's gradient in log age matches central differences and
    is continuous across a node (the bilinear one jumps there)."""
    ssp, _, _, obs, base = setup
    ages = jnp.asarray([2.0, 3.0, 0.1, 20.0])
    zs = jnp.asarray([0.019, 0.01, 0.019, 0.019])
    weights, clipped = rx.ssp.cubic_weights(ssp, ages, zs)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(weights[0], np.eye(12)[1 * 3 + 1], atol=1e-12)  # a node
    assert clipped.tolist() == [False, False, True, True]
    assert clipped.tolist() == rx.ssp.ssp_weights(ssp, ages, zs).clipped.tolist()
    cubic = rx.fit.SpectrumModel(base, obs, interpolation="cubic")
    bilinear = rx.fit.SpectrumModel(base, obs)
    rest = (jnp.log10(0.012), jnp.asarray(0.0), jnp.asarray(80.0))
    flux = lambda m, a: jnp.sum(m(a, *rest) ** 2)
    node = float(np.log10(2.0))
    for model, jumps in ((cubic, False), (bilinear, True)):
        left, right = (jax.grad(lambda a: flux(model, a))(node + d) for d in (-1e-7, 1e-7))
        assert (abs(right - left) > 1e-3 * abs(left)) == jumps
    a = node + 0.13
    h = 1e-5
    fd = (flux(cubic, a + h) - flux(cubic, a - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(lambda a: flux(cubic, a))(a), fd, rtol=1e-6)
    with pytest.raises(ValueError, match="interpolation"):
        rx.fit.SpectrumModel(base, obs, interpolation="spline")
