"""Projection and spatial deposit of particles onto spaxels."""

import abc
import dataclasses
import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._units import ARCSEC_PER_RADIAN
from ..physics._kernels import KERNELS, stencil_fractions
from ._protocol import AbstractParticleStage, Particles, Scene


# Pixel coordinates are clipped to [-CLIP, n + CLIP] before they become integers (int32
# safe); a deposit block of a clipped particle then lies wholly outside the field for
# any stencil narrower than CLIP.
CLIP = 2.0**16


def sky_pixels(position_kpc, angular_diameter_distance_mpc, spaxel_size, n_x, n_y):
    """Continuous pixel coordinates (pixel `i` spans [i, i+1)) of sky positions in kpc
    (x West, y North: x pixels grow to the West, so East is left when shown with x to the
    right); the field centre is at (n_x/2, n_y/2)."""
    arcsec = position_kpc[:, :2] / (angular_diameter_distance_mpc * 1e3) * ARCSEC_PER_RADIAN
    px = arcsec[:, 0] / spaxel_size + n_x / 2
    py = arcsec[:, 1] / spaxel_size + n_y / 2
    return px, py


def sky_size(size_kpc, angular_diameter_distance_mpc, spaxel_size):
    """A length on the sky (kpc, physical, at the galaxy) in pixels of `spaxel_size`
    arcsec, through the angular-diameter distance (Mpc)."""
    arcsec = size_kpc / (angular_diameter_distance_mpc * 1e3) * ARCSEC_PER_RADIAN
    return arcsec / spaxel_size


class AbstractDeposit(AbstractParticleStage):
    """Particle stage: project the oriented particles through d_A onto the telescope's
    spaxels and give each its spatial deposit (k flat spaxel indices `ix·n_y + iy` and
    weights; k = 4 for CIC and nearest, stencil² for the smoothed deposit). Weights
    falling outside the field are 0 (the index then points at spaxel 0 with weight 0:
    shapes stay static; that light is lost); the flag `"outside"` marks particles whose
    centre lies outside the field."""

    @abc.abstractmethod
    def weights(
        self, px: Float[Array, " n"], py: Float[Array, " n"], size: Float[Array, " n"] | None
    ) -> tuple[Int[Array, "n k"], Int[Array, "n k"], Float[Array, "n k"]]:
        """(ix, iy, weight) of the k deposit entries of particles at pixel coordinates
        (px, py), clipped to [-`CLIP`, n + `CLIP`] (inside-the-field masking follows).
        `size` is the galaxy's `smoothing_length` in pixels, or `None` if it has none
        (point-like deposits ignore it)."""

    def check_scene(self, scene: Scene) -> None:
        pass

    def __call__(self, particles: Particles, scene: Scene) -> Particles:
        tel = scene.telescope
        if particles.position is None:
            raise ValueError("The deposit stage needs oriented particles: put `Orient()` first.")
        dtype = particles.position.dtype
        d_a = scene.observation.angular_diameter_distance().astype(dtype)
        px, py = sky_pixels(particles.position, d_a, tel.spaxel_size, tel.n_x, tel.n_y)
        h = particles.galaxy.smoothing_length
        size = None if h is None else sky_size(h.astype(dtype), d_a, tel.spaxel_size)
        index, weight, outside = deposit_weights(self, px, py, tel.n_x, tel.n_y, size)
        flags = dict(particles.flags, outside=outside)
        return dataclasses.replace(particles, spaxel_index=index, spaxel_weight=weight, flags=flags)


def deposit_weights(
    deposit: AbstractDeposit, px, py, n_x: int, n_y: int, size=None
) -> tuple[Int[Array, "n k"], Float[Array, "n k"], Bool[Array, " n"]]:
    """Flat spaxel indices, weights (0 outside the field) and an outside flag (the
    particle's centre is outside the field)."""
    outside = (px < 0) | (px >= n_x) | (py < 0) | (py >= n_y)
    px, py = jnp.clip(px, -CLIP, n_x + CLIP), jnp.clip(py, -CLIP, n_y + CLIP)  # int-safe
    ix, iy, weight = deposit.weights(px, py, size)
    inside = (ix >= 0) & (ix < n_x) & (iy >= 0) & (iy < n_y)
    index = jnp.where(inside, ix * n_y + iy, 0)
    return index, jnp.where(inside, weight, 0), outside


class CICDeposit(AbstractDeposit):
    """Bilinear cloud-in-cell deposit (the default): the cube is continuous and
    differentiable in positions, inclination and position angle."""

    def weights(self, px, py, size):
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

    def weights(self, px, py, size):
        ix = jnp.floor(px).astype(jnp.int32)
        iy = jnp.floor(py).astype(jnp.int32)
        one, zero = jnp.ones_like(px), jnp.zeros_like(px)
        return (
            jnp.stack([ix, ix, ix, ix], 1),
            jnp.stack([iy, iy, iy, iy], 1),
            jnp.stack([one, zero, zero, zero], 1),
        )


GAUSSIAN_SIGMA_PER_H = math.sqrt(3 / 40)
"""σ of the Gaussian kernel per smoothing length h: the Gaussian then has the same
second moment as the cubic spline of support h (⟨r²⟩ = 9 h²/40 in 3-D, so σ² = 3 h²/40
per axis, also after projection): σ ≈ 0.274 h."""


class SmoothedDeposit(AbstractDeposit):
    """Each particle spread over a 2-D kernel of its own size, integrated over the pixels
    of a `stencil` × `stencil` block centred on its pixel (k = stencil² deposit entries):
    flux-conserving, differentiable in position and smoothing length.

    The size comes from the galaxy's `smoothing_length` h (kpc; from the loader or
    [`rubix_eqx.galaxy.with_smoothing_lengths`][]), in pixels through d_A and the spaxel
    size. `kernel="cubic_spline"` (default): the M4 cubic spline of support radius h
    (Monaghan & Lattanzio 1985) projected along the line of sight; `"gaussian"`: a
    Gaussian of σ = `GAUSSIAN_SIGMA_PER_H`·h ≈ 0.274 h (the cubic spline's second
    moment). A kernel wider than the block (cubic spline: h > (stencil − 1)/2 pixels;
    Gaussian: 3σ > (stencil − 1)/2 keeps the truncation below 0.3 %) is truncated at the
    block's edge and renormalised (flux still conserved, shape not): choose the stencil
    for the largest h in pixels. Light of the block falling outside the field is lost (as
    for CIC); the flag `"outside"` still means "centre outside the field".

    **Attributes:**

    - `kernel`: `"cubic_spline"` or `"gaussian"`.
    - `stencil`: odd integer ≥ 1, pixels per side of the block (default 5: k = 25).
    """

    kernel: str = eqx.field(static=True, default="cubic_spline")
    stencil: int = eqx.field(static=True, default=5)

    def __check_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(
                f"`SmoothedDeposit(kernel=...)` must be one of {', '.join(map(repr, KERNELS))}; "
                f"got {self.kernel!r}."
            )
        stencil = self.stencil
        if isinstance(stencil, bool) or not isinstance(stencil, int) or stencil < 1:
            raise ValueError(
                f"`SmoothedDeposit(stencil=...)` must be an odd integer >= 1; got {stencil!r}."
            )
        if stencil % 2 == 0:
            raise ValueError(
                f"`SmoothedDeposit(stencil=...)` must be odd (the block is centred on the "
                f"particle's pixel); got {stencil}."
            )

    def weights(self, px, py, size):
        if size is None:
            raise ValueError(
                "`SmoothedDeposit` needs the galaxy's `smoothing_length` (kpc); this galaxy "
                "has none: use `rx.galaxy.with_smoothing_lengths(galaxy, k=32)` (or a loader "
                "that reads it)."
            )
        size = eqx.error_if(
            size,
            ~(size > 0) | ~jnp.isfinite(size),
            "`Galaxy.smoothing_length` has values that are NaN, infinite or not positive "
            "(SmoothedDeposit needs a kernel size > 0 kpc).",
        )
        if self.kernel == "gaussian":
            size = GAUSSIAN_SIGMA_PER_H * size
        corner, fractions = stencil_fractions(
            jnp.stack([px, py], 1), size, self.stencil, self.kernel
        )
        steps = jnp.arange(self.stencil)
        ix = corner[:, 0, None, None] + steps[None, :, None]
        iy = corner[:, 1, None, None] + steps[None, None, :]
        shape = fractions.shape
        ix, iy = jnp.broadcast_to(ix, shape), jnp.broadcast_to(iy, shape)
        n = px.shape[0]
        return ix.reshape(n, -1), iy.reshape(n, -1), fractions.reshape(n, -1)


DEPOSITS = {"cic": CICDeposit, "nearest": NearestDeposit, "smoothed": SmoothedDeposit}
