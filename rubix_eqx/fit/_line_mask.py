"""Masking the gas emission lines of a cube before fitting its stellar continuum."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool

from .._cube import Cube
from .._units import C_KM_S
from ..physics._emission_lines import line_wavelengths


def emission_line_mask(
    wavelength, redshift: float, medium: str = "air", half_width: float = 800.0
) -> Bool[Array, " n_wave"]:
    """`True` for the pixels of `wavelength` (Å, observed) within ±`half_width` km/s of any
    line of [`rubix_eqx.physics.LINES`][] at `redshift` (rest wavelengths in `medium`), as
    pPXF's `goodpixels` leaves out: the default 800 km/s covers a rotating disk's lines
    (±300 km/s) broadened by the LSF."""
    if not half_width > 0:
        raise ValueError(
            f"`emission_line_mask(half_width=...)` must be > 0 km/s; got {half_width}."
        )
    wave = np.asarray(wavelength, np.float64)
    centres = np.asarray(line_wavelengths(medium), np.float64) * (1 + float(redshift))
    near = np.abs(wave[:, None] / centres[None, :] - 1) * C_KM_S <= half_width
    return jnp.asarray(np.any(near, axis=1))


def mask_emission_lines(cube: Cube, half_width: float = 800.0) -> Cube:
    """`cube` with infinite variance at the pixels of [`rubix_eqx.fit.emission_line_mask`][]
    (at the cube's redshift and medium), so that a fit of the stellar continuum
    (`fit_spaxels`) gives them zero weight."""
    mask = emission_line_mask(cube.wavelength, float(cube.redshift), cube.medium, half_width)
    variance = jnp.where(mask[None, None, :], jnp.inf, cube.variance)
    return eqx.tree_at(lambda c: c.variance, cube, variance.astype(cube.variance.dtype))
