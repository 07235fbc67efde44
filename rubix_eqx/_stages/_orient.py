"""Orientation: place a galaxy on the sky by inclination and position angle."""

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._observation import Observation
from ._protocol import AbstractParticleStage, Particles, Scene


def rotation_matrix(inclination, position_angle) -> Float[Array, "3 3"]:
    """Galaxy frame → sky coordinates: `sky = R @ galaxy` for positions and velocities,
    with x = West, y = North (the cube's axes 0 and 1) and z along the line of sight,
    away from the observer (v_los = v_z, positive = receding). Angles in degrees;
    conventions in [`rubix_eqx.Orient.matrix`][].

    (West, North, away) is **left-handed** as seen by the observer (East × North points
    away), so the physical rotation that places the galaxy on the sky has det R = −1 in
    these coordinates: a proper rotation into the right-handed (West, North, toward the
    observer) frame, then z flipped. A proper R would show every galaxy mirrored (its
    spiral winding and sense of rotation reversed).
    """
    inc = jnp.deg2rad(inclination)
    theta = jnp.deg2rad(position_angle) + jnp.pi / 2
    ci, si, ct, st = jnp.cos(inc), jnp.sin(inc), jnp.cos(theta), jnp.sin(theta)
    one, zero = jnp.ones_like(ci), jnp.zeros_like(ci)
    # In the right-handed (West, North, toward) frame: tilt about the line of nodes
    # (galaxy x), carrying +z from "toward the observer" by i towards +y ...
    tilt = jnp.stack(
        [jnp.stack([one, zero, zero]), jnp.stack([zero, ci, si]), jnp.stack([zero, -si, ci])]
    )
    # ... then turn about the line of sight so that x points to PA (North through East
    # is counter-clockwise seen by the observer: +x at theta = PA + 90° from West).
    turn = jnp.stack(
        [jnp.stack([ct, -st, zero]), jnp.stack([st, ct, zero]), jnp.stack([zero, zero, one])]
    )
    # ... and express "toward the observer" as z = away.
    away = jnp.stack(
        [jnp.stack([one, zero, zero]), jnp.stack([zero, one, zero]), jnp.stack([zero, zero, -one])]
    )
    return away @ turn @ tilt


class Orient(AbstractParticleStage):
    """Particle stage: sky-frame positions (kpc; x West, y North, z away from the observer)
    and line-of-sight velocities (km/s, positive = receding) from the galaxy frame.

    The transform is [`rubix_eqx.Orient.matrix`][]: a rotation followed by the flip of
    the line of sight (det = −1), because (West, North, away) is left-handed as seen by
    the observer; inclination 0 is face-on seen from the galaxy's +z, position angle from
    North through East."""

    def matrix(self, observation: Observation) -> Float[Array, "3 3"]:
        """The 3 × 3 matrix R with `sky = R @ galaxy` (positions and velocities; x West,
        y North, z away). Conventions:

        - `inclination` i: the angle between the galaxy's +z axis (its angular momentum
          once aligned by [`rubix_eqx.galaxy.face_on`][]) and the direction to the
          observer; 0 = face-on seen from +z, so a disk rotating counter-clockwise about
          +z rotates counter-clockwise on the sky (North up, East left); 180 = seen from −z.
        - The galaxy's x axis is the line of nodes (the projected major axis), turned to
          `position_angle` from North (+y) through East (−x). The galaxy's +z axis tips
          from the line of sight towards PA + 90°, so the galaxy's −y side is the near
          side and, for rotation about +z, the +x end of the major axis (at PA) recedes:
          PA is then the kinematic position angle.
        """
        return rotation_matrix(observation.inclination, observation.position_angle)

    def check_scene(self, scene: Scene) -> None:
        pass

    def __call__(self, particles: Particles, scene: Scene) -> Particles:
        """`particles` with sky `position` and `v_los` set from its galaxy."""
        galaxy = particles.galaxy
        rot = self.matrix(scene.observation).astype(galaxy.position.dtype)
        return dataclasses.replace(
            particles, position=galaxy.position @ rot.T, v_los=galaxy.velocity @ rot[2]
        )
