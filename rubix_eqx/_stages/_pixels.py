"""The rebin stage: from the ln λ lattice onto the telescope's pixels."""

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._spectral_grid import rebin_to_pixels, SpectralGrid
from ..telescope import Telescope
from ._protocol import AbstractCubeStage, CubeState, Scene


class Rebin(AbstractCubeStage):
    """Cube stage (lattice → pixels): the integrated flux on the observed lattice,
    interpolated (Keys cubic) and integrated exactly over each telescope pixel, divided
    by its width (flux density per Å, flux-conserving); the spaxel axis unfolded to
    (n_x, n_y). The grid's own operator ([`rubix_eqx.SpectralGrid`][]).

    **Attributes:** `start`, `weight` (the operator), `n_x`, `n_y` (spaxels).
    """

    start: Int[Array, " n_wave"]
    weight: Float[Array, "n_wave n_overlap"]
    n_x: int = eqx.field(static=True)
    n_y: int = eqx.field(static=True)
    domain: ClassVar[str] = "rebin"

    @classmethod
    def build(cls, grid: SpectralGrid, telescope: Telescope) -> "Rebin":
        return cls(grid.rebin_start, grid.rebin_weight, telescope.n_x, telescope.n_y)

    def check_scene(self, scene: Scene) -> None:
        pass

    def for_spectrum(self) -> "Rebin":
        """The same operator on one spectrum (a 1 × 1 field)."""
        return dataclasses.replace(self, n_x=1, n_y=1)

    def __call__(self, cube: CubeState, scene: Scene) -> CubeState:
        flux = rebin_to_pixels(cube.flux, self.start, self.weight)
        flux = flux.reshape(self.n_x, self.n_y, flux.shape[-1])
        return dataclasses.replace(cube, flux=flux, variance=jnp.zeros_like(flux), on_lattice=False)
