"""The `Cube` pytree: flux, variance, axes, units and diagnostics of a mock observation."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int


class Diagnostics(eqx.Module):
    """What the forward model had to clip or drop (0-d arrays).

    **Attributes:**

    - `n_particles`: particles in the galaxy.
    - `n_clipped`, `clipped_mass_fraction`: particles whose age or Z lay outside the SSP
      grid and were clipped to its edge (by design), and their share of the mass.
    - `n_outside`, `outside_mass_fraction`: particles outside the field of view.
    - `n_lsf_clipped`: lattice bins where the telescope's LSF is sharper than the
      templates and the extra broadening was clipped to 0 (only with
      `Pipeline(allow_sharper_lsf=True)`; otherwise that is an error).
    """

    n_particles: Int[Array, ""]
    n_clipped: Int[Array, ""]
    clipped_mass_fraction: Float[Array, ""]
    n_outside: Int[Array, ""]
    outside_mass_fraction: Float[Array, ""]
    n_lsf_clipped: Int[Array, ""]


class Cube(eqx.Module):
    """A spectral data cube. Written by [`rubix_eqx.io.write_cube_fits`][] and
    [`rubix_eqx.io.write_cube_hdf5`][], read by [`rubix_eqx.io.read_cube`][].

    **Attributes:**

    - `flux`: flux density per spaxel in units of `flux_unit` erg s⁻¹ cm⁻² Å⁻¹.
    - `variance`: variance of `flux` (same unit squared); zero for a noiseless cube.
    - `wavelength`: observed-frame pixel centres, Å.
    - `mask`: `True` for spaxels inside the instrument's aperture.
    - `diagnostics`: a [`rubix_eqx.Diagnostics`][].
    - `redshift`: of the observation.
    - `spaxel_size`: arcsec; axis 0 of `flux` runs along x (West, RA decreasing) and
      axis 1 along y (North); the field centre is at pixel (n_x/2, n_y/2).
    - `ra`, `dec`: sky position of the field centre, degrees.
    - `flux_unit`: e.g. 1e-20 (as MUSE cubes).
    - `wavelength_sampling`: `"linear"` or `"log"`.
    - `telescope`: the telescope's name.
    - `lsf_fwhm`: the line-spread FWHM (Å) actually on the cube's pixels, per pixel, as
      a Gaussian fit to the pixel values would measure it (the telescope's declared FWHM,
      or more where the templates are broader; see docs/physics.md), or `None` (unknown,
      e.g. a file without an LSF record).
    - `medium`: `"air"` or `"vacuum"`, the medium of `wavelength`.
    """

    flux: Float[Array, "n_x n_y n_wave"]
    variance: Float[Array, "n_x n_y n_wave"]
    wavelength: Float[Array, " n_wave"]
    mask: Bool[Array, "n_x n_y"]
    diagnostics: Diagnostics
    redshift: Float[Array, ""]
    spaxel_size: float
    ra: float
    dec: float
    flux_unit: float = eqx.field(static=True)
    wavelength_sampling: str = eqx.field(static=True)
    telescope: str = eqx.field(static=True)
    lsf_fwhm: Float[Array, " n_wave"] | None = None
    medium: str = eqx.field(static=True, default="air")

    def __check_init__(self):
        if self.medium not in ("air", "vacuum"):
            raise ValueError(f"`Cube.medium` must be 'air' or 'vacuum'; got {self.medium!r}.")

    @property
    def unit(self) -> str:
        """The unit of `flux`, as a FITS `BUNIT` string."""
        return f"{self.flux_unit:g} erg / (s cm2 Angstrom)"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.flux.shape
