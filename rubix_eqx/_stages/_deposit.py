"""Projection and spatial deposit of particles onto spaxels."""

import abc
import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._units import ARCSEC_PER_RADIAN
from ._protocol import AbstractParticleStage, Particles, Scene


def sky_pixels(position_kpc, angular_diameter_distance_mpc, spaxel_size, n_x, n_y):
    """Continuous pixel coordinates (pixel `i` spans [i, i+1)) of sky positions in kpc
    (x West, y North: x pixels grow to the West, so East is left when shown with x to the
    right); the field centre is at (n_x/2, n_y/2)."""
    arcsec = position_kpc[:, :2] / (angular_diameter_distance_mpc * 1e3) * ARCSEC_PER_RADIAN
    px = arcsec[:, 0] / spaxel_size + n_x / 2
    py = arcsec[:, 1] / spaxel_size + n_y / 2
    return px, py


class AbstractDeposit(AbstractParticleStage):
    """Particle stage: project the oriented particles through d_A onto the telescope's
    spaxels and give each its spatial deposit (4 flat spaxel indices `ix·n_y + iy` and
    weights). Weights falling outside the field are 0 (the index then points at spaxel 0
    with weight 0: shapes stay static); the flag `"outside"` marks particles outside."""

    @abc.abstractmethod
    def weights(
        self, px: Float[Array, " n"], py: Float[Array, " n"]
    ) -> tuple[Int[Array, "n 4"], Int[Array, "n 4"], Float[Array, "n 4"]]:
        """(ix, iy, weight) of the 4 deposit entries of particles at pixel coordinates
        (px, py), clipped to [-2, n + 2] (inside-the-field masking follows)."""

    def check_scene(self, scene: Scene) -> None:
        pass

    def __call__(self, particles: Particles, scene: Scene) -> Particles:
        tel = scene.telescope
        if particles.position is None:
            raise ValueError("The deposit stage needs oriented particles: put `Orient()` first.")
        d_a = scene.observation.angular_diameter_distance().astype(particles.position.dtype)
        px, py = sky_pixels(particles.position, d_a, tel.spaxel_size, tel.n_x, tel.n_y)
        index, weight, outside = deposit_weights(self, px, py, tel.n_x, tel.n_y)
        flags = dict(particles.flags, outside=outside)
        return dataclasses.replace(particles, spaxel_index=index, spaxel_weight=weight, flags=flags)


def deposit_weights(
    deposit: AbstractDeposit, px, py, n_x: int, n_y: int
) -> tuple[Int[Array, "n 4"], Float[Array, "n 4"], Bool[Array, " n"]]:
    """Flat spaxel indices, weights (0 outside the field) and an outside flag."""
    outside = (px < 0) | (px >= n_x) | (py < 0) | (py >= n_y)
    px, py = jnp.clip(px, -2.0, n_x + 2.0), jnp.clip(py, -2.0, n_y + 2.0)  # int-safe
    ix, iy, weight = deposit.weights(px, py)
    inside = (ix >= 0) & (ix < n_x) & (iy >= 0) & (iy < n_y)
    index = jnp.where(inside, ix * n_y + iy, 0)
    return index, jnp.where(inside, weight, 0), outside


class CICDeposit(AbstractDeposit):
    """Bilinear cloud-in-cell deposit (the default): the cube is continuous and
    differentiable in positions, inclination and position angle."""

    def weights(self, px, py):
        gx, gy = px - 0.5, py - 0.5
        x0, y0 = jnp.floor(gx), jnp.floor(gy)
        fx, fy = gx - x0, gy - y0
        x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
        ix = jnp.stack([x0, x0 + 1, x0, x0 + 1], 1)
        iy = jnp.stack([y0, y0, y0 + 1, y0 + 1], 1)
        weight = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
        return ix, iy, weight


class NearestDeposit(AbstractDeposit):
    """Each particle in the one spaxel it falls in (piecewise constant in position)."""

    def weights(self, px, py):
        ix = jnp.floor(px).astype(jnp.int32)
        iy = jnp.floor(py).astype(jnp.int32)
        one, zero = jnp.ones_like(px), jnp.zeros_like(px)
        return (
            jnp.stack([ix, ix, ix, ix], 1),
            jnp.stack([iy, iy, iy, iy], 1),
            jnp.stack([one, zero, zero, zero], 1),
        )


DEPOSITS = {"cic": CICDeposit, "nearest": NearestDeposit}
