"""Projection and spatial deposit of particles onto spaxels."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._units import ARCSEC_PER_RADIAN


def sky_pixels(position_kpc, angular_diameter_distance_mpc, spaxel_size, n_x, n_y):
    """Continuous pixel coordinates (pixel `i` spans [i, i+1)) of sky positions in kpc
    (x West, y North: x pixels grow to the West, so East is left when shown with x to the
    right); the field centre is at (n_x/2, n_y/2)."""
    arcsec = position_kpc[:, :2] / (angular_diameter_distance_mpc * 1e3) * ARCSEC_PER_RADIAN
    px = arcsec[:, 0] / spaxel_size + n_x / 2
    py = arcsec[:, 1] / spaxel_size + n_y / 2
    return px, py


class Deposit(eqx.Module):
    """Stage 2: spatial deposit weights of each particle on up to 4 spaxels.

    `method="cic"` (default) is bilinear cloud-in-cell: the cube is continuous and
    differentiable in positions, inclination and position angle. `method="nearest"`
    puts each particle in one spaxel. Weights falling outside the field are 0 (the
    flat index then points at spaxel 0 with weight 0: shapes stay static).
    """

    method: str = eqx.field(static=True, default="cic")

    def __check_init__(self):
        if self.method not in ("cic", "nearest"):
            raise ValueError(
                f"`Deposit(method=...)` must be 'cic' or 'nearest'; got {self.method!r}."
            )

    def __call__(
        self, px: Float[Array, " n"], py: Float[Array, " n"], n_x: int, n_y: int
    ) -> tuple[Int[Array, "n 4"], Float[Array, "n 4"], Bool[Array, " n"]]:
        """Flat spaxel indices `ix * n_y + iy`, weights, and an outside-the-field flag."""
        outside = (px < 0) | (px >= n_x) | (py < 0) | (py >= n_y)
        px, py = jnp.clip(px, -2.0, n_x + 2.0), jnp.clip(py, -2.0, n_y + 2.0)  # int-safe
        if self.method == "nearest":
            ix = jnp.floor(px).astype(jnp.int32)
            iy = jnp.floor(py).astype(jnp.int32)
            ix_all = jnp.stack([ix, ix, ix, ix], 1)
            iy_all = jnp.stack([iy, iy, iy, iy], 1)
            one = jnp.ones_like(px)
            zero = jnp.zeros_like(px)
            weight = jnp.stack([one, zero, zero, zero], 1)
        else:
            gx, gy = px - 0.5, py - 0.5
            x0, y0 = jnp.floor(gx), jnp.floor(gy)
            fx, fy = gx - x0, gy - y0
            x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
            ix_all = jnp.stack([x0, x0 + 1, x0, x0 + 1], 1)
            iy_all = jnp.stack([y0, y0, y0 + 1, y0 + 1], 1)
            weight = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
        inside = (ix_all >= 0) & (ix_all < n_x) & (iy_all >= 0) & (iy_all < n_y)
        index = jnp.where(inside, ix_all * n_y + iy_all, 0)
        return index, jnp.where(inside, weight, 0), outside
