"""The `SSPGrid` pytree: simple-stellar-population spectra on an (age, Z) grid."""

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, jaxtyped

from .._checks import concrete, require, require_finite
from .._typecheck import typechecker


@jaxtyped(typechecker=typechecker)
class SSPGrid(eqx.Module):
    """SSP spectra per unit initial mass on a grid of ages and metallicities.

    **Attributes:**

    - `age`: Gyr, strictly increasing.
    - `metallicity`: metal mass fraction Z, strictly increasing.
    - `wavelength`: rest-frame pixel centres in Angstrom (air), strictly increasing.
    - `flux`: L☉ Å⁻¹ per M☉ formed.
    - `fwhm`: spectral resolution of the templates at each pixel, Angstrom FWHM.
    - `remaining_mass_fraction`: stars + remnants per unit initial mass.
    - `name`, `citation`, `licence`: provenance, carried into every product.
    - `metallicity_label`: the published [M/H] label of each `metallicity` node, or
      `None`. For E-MILES the nodes are the Padova 2000 isochrones' own Z (Vazdekis et
      al. 2010) and these are their [M/H] labels (−1.71 … +0.22); the labels come from
      Z and the isochrones' hydrogen fraction, so they differ from log10(Z/0.019) — the
      [M/H] that maps and fits report — by up to 0.033 dex. Not stored by
      [`rubix_eqx.SSPGrid.to_hdf5`][] (the E-MILES cache keeps it).
    """

    age: Float[Array, " n_age"]
    metallicity: Float[Array, " n_Z"]
    wavelength: Float[Array, " n_wave"]
    flux: Float[Array, "n_age n_Z n_wave"]
    fwhm: Float[Array, " n_wave"]
    remaining_mass_fraction: Float[Array, "n_age n_Z"]
    name: str = eqx.field(static=True, default="custom")
    citation: str = eqx.field(static=True, default="")
    licence: str = eqx.field(static=True, default="")
    metallicity_label: tuple[float, ...] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.metallicity_label is not None:
            labels = np.asarray(self.metallicity_label, np.float64)
            n_z = self.metallicity.shape[0]
            if labels.shape != (n_z,):
                raise ValueError(
                    f"`SSPGrid.metallicity_label` has {labels.size} entries for {n_z} "
                    f"metallicity nodes; got {self.metallicity_label!r}."
                )
            if not (np.all(np.isfinite(labels)) and np.all(np.diff(labels) > 0)):
                raise ValueError(
                    "`SSPGrid.metallicity_label` must be finite and strictly increasing "
                    f"(like the nodes it labels); got {self.metallicity_label!r}."
                )
        for name in ("age", "metallicity", "wavelength"):
            values = concrete(getattr(self, name))
            if values is None:
                continue
            if values.size < 2:
                raise ValueError(f"`SSPGrid.{name}` needs at least 2 entries; got {values.size}.")
            if not np.all(np.diff(values) > 0):
                raise ValueError(f"`SSPGrid.{name}` must be strictly increasing.")
            require(f"SSPGrid.{name}", values, lambda a: a <= 0, "is not positive")
        require_finite("SSPGrid.flux", self.flux)
        require("SSPGrid.flux", self.flux, lambda a: a < 0, "is negative")
        require("SSPGrid.fwhm", self.fwhm, lambda a: ~(np.isfinite(a) & (a > 0)), "is not positive")
        require_finite("SSPGrid.remaining_mass_fraction", self.remaining_mass_fraction)
        require(
            "SSPGrid.remaining_mass_fraction",
            self.remaining_mass_fraction,
            lambda a: a < 0,
            "is negative",
        )

    @property
    def n_templates(self) -> int:
        return self.age.shape[0] * self.metallicity.shape[0]

    @property
    def log_age(self) -> Float[Array, " n_age"]:
        """log10 of the age in Gyr."""
        return jnp.log10(self.age)

    @property
    def log_metallicity(self) -> Float[Array, " n_Z"]:
        """log10 Z."""
        return jnp.log10(self.metallicity)

    def spectrum(self, age, metallicity) -> Float[Array, " n_wave"]:
        """The bilinearly interpolated spectrum (L☉ Å⁻¹ M☉⁻¹) of one population.

        `age` in Gyr and `metallicity` as Z, scalars; clipped to the grid edges.
        """
        from ._interpolate import ssp_weights

        w = ssp_weights(self, jnp.reshape(age, (1,)), jnp.reshape(metallicity, (1,)))
        flat = self.flux.reshape(self.n_templates, -1)
        return jnp.einsum("k,kw->w", w.weight[0], flat[w.index[0]])

    @classmethod
    def load(cls, name: str = "miles", cache_dir: str | Path | None = None) -> "SSPGrid":
        """A named grid. `"miles"`: E-MILES (Vazdekis et al. 2016) from the `miles`
        extra, converted once into the user cache (see `rubix_eqx.ssp.cache_dir`; a cache
        of an older conversion version is rebuilt). Its metallicity nodes are the Padova
        2000 isochrones' Z = 0.0004, 0.001, 0.004, 0.008, 0.019, 0.03, labelled [M/H] =
        −1.71 … +0.22 in `metallicity_label`."""
        if name.lower() in ("miles", "e-miles", "emiles"):
            from ._miles import load_miles

            return load_miles(cache_dir=cache_dir)
        raise ValueError(f"`SSPGrid.load(name={name!r})`: unknown grid; known: 'miles'.")

    @classmethod
    def from_miles_dir(cls, path: str | Path, cache_dir: str | Path | None = None) -> "SSPGrid":
        """Convert a directory of E-MILES FITS files (pPXF naming) and mass table."""
        from ._miles import load_miles

        return load_miles(source_dir=path, cache_dir=cache_dir)

    @classmethod
    def from_hdf5(cls, path: str | Path) -> "SSPGrid":
        """Read a grid written by [`rubix_eqx.SSPGrid.to_hdf5`][] (layout in docs/ssp.md)."""
        from ._io import read_ssp_hdf5

        return read_ssp_hdf5(path)

    def to_hdf5(self, path: str | Path) -> None:
        """Write this grid in the documented HDF5 layout (atomic: temporary name, then rename)."""
        from ._io import write_ssp_hdf5

        write_ssp_hdf5(self, path)
