"""The stellar frame of a loaded galaxy (centre, systemic velocity, face-on rotation), applied
to its gas so that stars and gas share one frame."""

from typing import NamedTuple

import numpy as np

from ._align import _default_radius, face_on_rotation, shrinking_sphere_centre, unwrap_periodic


class Frame(NamedTuple):
    """origin (3,) and systemic velocity (3,) in box coordinates (kpc, km/s), rotation (3, 3)
    (rows: new axes), periodic box side (kpc) or None."""

    origin: np.ndarray
    velocity: np.ndarray
    rotation: np.ndarray
    box: float | None


def stellar_frame(position, velocity, mass, *, centre: bool, align: bool, radius, box) -> Frame:
    """The frame `rx.galaxy.centre` and `rx.galaxy.face_on` put star particles in (the same
    steps: periodic unwrap, shrinking-sphere centre, mass-weighted velocity within `radius`,
    rotation to the angular momentum within `radius`)."""
    position = np.asarray(position, np.float64)
    velocity = np.asarray(velocity, np.float64)
    mass = np.asarray(mass, np.float64)
    if align and not centre:
        raise ValueError("`align=True` needs `centre=True` (the rotation is about the centre).")
    if not centre:
        return Frame(np.zeros(3), np.zeros(3), np.eye(3), None)
    unwrapped = unwrap_periodic(position, box)
    origin = shrinking_sphere_centre(unwrapped, mass)
    relative = unwrapped - origin
    r = _default_radius(relative, mass, radius)
    inside = np.sum(relative**2, axis=1) < r**2
    if not mass[inside].sum() > 0:
        inside = np.ones_like(inside)
    v_sys = np.average(velocity[inside], axis=0, weights=mass[inside])
    rotation = face_on_rotation(relative, velocity - v_sys, mass, radius) if align else np.eye(3)
    return Frame(origin, v_sys, rotation, box)


def apply_frame(frame: Frame, position, velocity) -> tuple[np.ndarray, np.ndarray]:
    """Positions (minimum image about the origin in a periodic box) and velocities in `frame`."""
    relative = np.asarray(position, np.float64) - frame.origin
    if frame.box is not None and frame.box > 0:
        relative = (relative + frame.box / 2) % frame.box - frame.box / 2
    moved = np.asarray(velocity, np.float64) - frame.velocity
    return relative @ frame.rotation.T, moved @ frame.rotation.T
