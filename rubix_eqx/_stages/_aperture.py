"""Aperture: the instrument's footprint on the spaxel grid."""

import dataclasses
import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..telescope import Telescope
from ._protocol import AbstractCubeStage, CubeState, Scene


def footprint(
    kind: str, n_x: int, n_y: int, spaxel_size: float, diameter: float | None
) -> np.ndarray:
    """Boolean (n_x, n_y): spaxel centres inside the footprint (NumPy).

    Spaxel (i, j) has its centre at ((i + ½ − n_x/2)·s, (j + ½ − n_y/2)·s) arcsec from
    the field centre. `"square"`: all. `"circle"`: within `diameter`/2. `"hexagon"`:
    regular hexagon, corner to corner `diameter`, corners on the x axis.
    """
    x = (np.arange(n_x) + 0.5 - n_x / 2) * spaxel_size
    y = (np.arange(n_y) + 0.5 - n_y / 2) * spaxel_size
    ax, ay = np.abs(x)[:, None], np.abs(y)[None, :]
    if kind == "square":
        return np.ones((n_x, n_y), bool)
    if diameter is None or not diameter > 0:
        raise ValueError(
            f"`aperture_diameter` must be > 0 arcsec for a {kind!r} aperture; got {diameter}."
        )
    r = diameter / 2
    if kind == "circle":
        return ax**2 + ay**2 <= r**2
    if kind == "hexagon":
        s3 = math.sqrt(3.0)
        return (ay <= s3 / 2 * r) & (s3 * ax + ay <= s3 * r)
    raise ValueError(f"`aperture` must be 'square', 'circle' or 'hexagon'; got {kind!r}.")


class Aperture(AbstractCubeStage):
    """Cube stage (pixels): zero the flux and variance of spaxels outside the footprint.

    A spaxel is inside if its centre is (no partial spaxels): `"square"` (whole
    field), `"circle"` (within `aperture_diameter`/2 of the field centre) or
    `"hexagon"` (regular, corner-to-corner `aperture_diameter`, corners along x),
    centred on the field centre (pixel (n_x/2, n_y/2)). The in-footprint area is
    `mask.sum()` × spaxel², close to the shape's area (tested within a few %).

    In a pipeline, `aperture(cube, scene)` (it sets the cube's `mask`); on arrays,
    `aperture.apply(flux, variance) -> (flux, variance)`. `mask` is the footprint.

    **Attributes:**

    - `mask`: `True` inside the footprint.
    - `kind`: the telescope's `aperture`.
    """

    mask: Bool[Array, "n_x n_y"]
    kind: str = eqx.field(static=True, default="square")

    @classmethod
    def build(cls, telescope: Telescope) -> "Aperture":
        """The footprint of `telescope` (its `aperture`, `aperture_diameter`, spaxels)."""
        diameter = (
            None if telescope.aperture_diameter is None else float(telescope.aperture_diameter)
        )
        mask = footprint(
            telescope.aperture, telescope.n_x, telescope.n_y, float(telescope.spaxel_size), diameter
        )
        return cls(mask=jnp.asarray(mask), kind=telescope.aperture)

    domain: ClassVar[str] = "pixels"

    def check_scene(self, scene: Scene) -> None:
        pass

    def for_spectrum(self) -> None:
        return None

    def __call__(self, cube: CubeState, scene: Scene) -> CubeState:
        flux, variance = self.apply(cube.flux, cube.variance)
        return dataclasses.replace(cube, flux=flux, variance=variance, mask=self.mask & cube.mask)

    def apply(
        self, flux: Float[Array, "n_x n_y n_wave"], variance: Float[Array, "n_x n_y n_wave"]
    ) -> tuple[Float[Array, "n_x n_y n_wave"], Float[Array, "n_x n_y n_wave"]]:
        """`(flux, variance)` with spaxels outside the footprint set to 0."""
        inside = self.mask[:, :, None]
        return jnp.where(inside, flux, 0), jnp.where(inside, variance, 0)
