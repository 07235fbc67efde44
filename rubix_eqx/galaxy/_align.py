"""Centring (shrinking spheres) and face-on alignment of star particles (NumPy, eager)."""

import jax.numpy as jnp
import numpy as np

from ._galaxy import Galaxy


def unwrap_periodic(position: np.ndarray, box: float | None) -> np.ndarray:
    """Positions made continuous across a periodic box of side `box` (same unit): the
    minimum-image offsets from the circular mean position along each axis. Unchanged
    if `box` is None."""
    if box is None or not box > 0 or position.shape[0] == 0:
        return position
    angle = 2 * np.pi * position / box
    reference = box * np.arctan2(np.sin(angle).mean(0), np.cos(angle).mean(0)) / (2 * np.pi)
    return reference + (position - reference + box / 2) % box - box / 2


def shrinking_sphere_centre(
    position, mass, *, shrink: float = 0.975, min_particles: int | None = None
) -> np.ndarray:
    """The centre of the densest clump by the shrinking-sphere method (Power et al. 2003,
    MNRAS 338, 14): start from the centre of mass and the sphere holding every particle,
    then repeatedly shrink the radius by `shrink` and re-centre on the particles inside,
    until fewer than `min_particles` remain (default max(20, min(1000, n/100))).

    **Returns:** the centre, (3,), in the unit of `position`.
    """
    position = np.asarray(position, np.float64)
    mass = np.asarray(mass, np.float64)
    n = position.shape[0]
    if n == 0:
        raise ValueError("`shrinking_sphere_centre`: no particles.")
    if not mass.sum() > 0:
        raise ValueError("`shrinking_sphere_centre`: the total mass is not positive.")
    if not 0 < shrink < 1:
        raise ValueError(f"`shrinking_sphere_centre(shrink=...)` must lie in (0, 1); got {shrink}.")
    if min_particles is None:
        min_particles = max(20, min(1000, n // 100))
    centre = np.average(position, axis=0, weights=mass)
    radius = np.sqrt(np.max(np.sum((position - centre) ** 2, axis=1)))
    pos, m = position, mass
    while radius > 0:
        radius *= shrink
        inside = np.sum((pos - centre) ** 2, axis=1) < radius**2
        if inside.sum() < min_particles or not m[inside].sum() > 0:
            break
        pos, m = pos[inside], m[inside]
        centre = np.average(pos, axis=0, weights=m)
    return centre


def half_mass_radius(position, mass) -> float:
    """Radius (about the origin) of the sphere holding half of the total mass."""
    r = np.sqrt(np.sum(np.asarray(position, np.float64) ** 2, axis=1))
    order = np.argsort(r)
    cumulative = np.cumsum(np.asarray(mass, np.float64)[order])
    return float(r[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _default_radius(position, mass, radius):
    if radius is not None:
        if not radius > 0:
            raise ValueError(f"`radius` must be > 0 kpc; got {radius}.")
        return float(radius)
    return 2.0 * max(half_mass_radius(position, mass), 1e-12)


def _replace(galaxy: Galaxy, position: np.ndarray, velocity: np.ndarray) -> Galaxy:
    dtype = galaxy.position.dtype
    return Galaxy(
        position=jnp.asarray(position, dtype),
        velocity=jnp.asarray(velocity, galaxy.velocity.dtype),
        mass=galaxy.mass,
        age=galaxy.age,
        metallicity=galaxy.metallicity,
        smoothing_length=galaxy.smoothing_length,
    )


def centre(galaxy: Galaxy, *, radius: float | None = None, box: float | None = None) -> Galaxy:
    """`galaxy` with positions relative to its shrinking-sphere centre and velocities
    relative to the mass-weighted mean velocity of the particles within `radius` kpc of
    that centre (default: twice the stellar half-mass radius).

    **Arguments:**

    - `galaxy`: a [`rubix_eqx.Galaxy`][] (e.g. straight from a simulation box).
    - `radius`: kpc, for the systemic velocity.
    - `box`: side of a periodic box in kpc (physical), to unwrap positions first.
    """
    position = unwrap_periodic(np.asarray(galaxy.position, np.float64), box)
    velocity = np.asarray(galaxy.velocity, np.float64)
    mass = np.asarray(galaxy.mass, np.float64)
    position = position - shrinking_sphere_centre(position, mass)
    r = _default_radius(position, mass, radius)
    inside = np.sum(position**2, axis=1) < r**2
    if not mass[inside].sum() > 0:
        inside = np.ones_like(inside)
    velocity = velocity - np.average(velocity[inside], axis=0, weights=mass[inside])
    return _replace(galaxy, position, velocity)


def face_on_rotation(position, velocity, mass, radius: float | None = None) -> np.ndarray:
    """The proper rotation matrix R (3, 3) whose rows are the new x, y, z axes: z along the
    stellar angular momentum Σ m r × v of the particles within `radius` kpc of the origin
    (default: twice the half-mass radius). New coordinates are `position @ R.T`."""
    position = np.asarray(position, np.float64)
    velocity = np.asarray(velocity, np.float64)
    mass = np.asarray(mass, np.float64)
    r = _default_radius(position, mass, radius)
    inside = np.sum(position**2, axis=1) < r**2
    spin = np.sum(mass[inside, None] * np.cross(position[inside], velocity[inside]), axis=0)
    norm = np.linalg.norm(spin)
    if not norm > 0:
        raise ValueError(
            "Cannot align face-on: the stellar angular momentum within the radius is zero."
        )
    e_z = spin / norm
    trial = np.eye(3)[np.argmin(np.abs(e_z))]  # the old axis least aligned with e_z
    e_x = trial - (trial @ e_z) * e_z
    e_x /= np.linalg.norm(e_x)
    e_y = np.cross(e_z, e_x)
    return np.stack([e_x, e_y, e_z])


def face_on(galaxy: Galaxy, *, radius: float | None = None) -> Galaxy:
    """`galaxy` rotated so that the angular momentum of its stars within `radius` kpc
    (default: twice the stellar half-mass radius) points along +z, so that it rotates
    counter-clockwise seen from +z. At inclination 0 ([`rubix_eqx.Orient.matrix`][]) the
    observer looks from +z: the angular momentum points at the observer and the disk
    rotates counter-clockwise on the sky shown North up, East left. Assumes it is
    centred (see [`rubix_eqx.galaxy.centre`][])."""
    rot = face_on_rotation(galaxy.position, galaxy.velocity, galaxy.mass, radius)
    position = np.asarray(galaxy.position, np.float64) @ rot.T
    velocity = np.asarray(galaxy.velocity, np.float64) @ rot.T
    return _replace(galaxy, position, velocity)
