"""Orientation: rotate a galaxy by inclination and position angle onto the sky."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._observation import Observation
from ..galaxy import Galaxy


def rotation_matrix(inclination, position_angle) -> Float[Array, "3 3"]:
    """Galaxy frame → sky frame (x, y on the sky, z along the line of sight, away from
    the observer). Inclination (degrees) tilts the disk about x (0 = face-on); then the
    projected major axis (the galaxy's x axis) is turned to `position_angle` degrees
    from North (+y) through East (-x)."""
    inc = jnp.deg2rad(inclination)
    theta = jnp.deg2rad(position_angle) + jnp.pi / 2
    ci, si, ct, st = jnp.cos(inc), jnp.sin(inc), jnp.cos(theta), jnp.sin(theta)
    one, zero = jnp.ones_like(ci), jnp.zeros_like(ci)
    tilt = jnp.stack(
        [jnp.stack([one, zero, zero]), jnp.stack([zero, ci, -si]), jnp.stack([zero, si, ci])]
    )
    turn = jnp.stack(
        [jnp.stack([ct, -st, zero]), jnp.stack([st, ct, zero]), jnp.stack([zero, zero, one])]
    )
    return turn @ tilt


class Orient(eqx.Module):
    """Stage 1: sky-frame positions (kpc) and line-of-sight velocities (km/s, positive
    = receding) from the galaxy frame."""

    def __call__(
        self, galaxy: Galaxy, observation: Observation
    ) -> tuple[Float[Array, "n 3"], Float[Array, " n"]]:
        rot = rotation_matrix(observation.inclination, observation.position_angle)
        rot = rot.astype(galaxy.position.dtype)
        position = galaxy.position @ rot.T
        v_los = galaxy.velocity @ rot[2]
        return position, v_los
