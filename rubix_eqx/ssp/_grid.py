"""The `SSPGrid` pytree: simple-stellar-population spectra on an (age, Z) grid."""

import dataclasses
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, jaxtyped, TypeCheckError

from .._checks import concrete, require, require_finite
from .._typecheck import typechecker
from .._units import SOLAR_METALLICITY
from ._formats import DSPS_CITATION, PPXF_CITATION, read_dsps, read_ppxf_npz
from ._interpolate import bilinear_weights, SSPWeights
from ._io import read_ssp_hdf5, write_ssp_hdf5
from ._miles import load_miles


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
      [M/H] that maps and fits report — by up to 0.033 dex. Stored by
      [`rubix_eqx.SSPGrid.to_hdf5`][] as the root attribute `metallicity_label`.
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
        w = ssp_weights(self, jnp.reshape(age, (1,)), jnp.reshape(metallicity, (1,)))
        flat = self.flux.reshape(self.n_templates, -1)
        return jnp.einsum("k,kw->w", w.weight[0], flat[w.index[0]])

    @classmethod
    def load(
        cls,
        name: str = "miles",
        cache_dir: str | Path | None = None,
        *,
        path: str | Path | None = None,
    ) -> "SSPGrid":
        """A named grid, converted once into the user cache.

        `"miles"`: E-MILES (Vazdekis et al. 2016; Salpeter IMF, Padova 2000 isochrones,
        base [α/Fe]). The FITS files are taken from, first match wins, `path`; the
        directory in `$RUBIX_EQX_MILES_DIR`; the `miles_models` folder of an installed
        pPXF 8.x (`pip install "rubix-eqx[miles]"`). pPXF ≥ 9 ships no templates: then
        use `path`, the environment variable, or [`rubix_eqx.SSPGrid.from_ppxf_npz`][].
        A cache of an older conversion version is rebuilt. The metallicity nodes are the
        Padova 2000 isochrones' Z = 0.0004, 0.001, 0.004, 0.008, 0.019, 0.03, labelled
        [M/H] = −1.71 … +0.22 in `metallicity_label`.

        **Arguments:**

        - `name`: `"miles"` (also `"e-miles"`, `"emiles"`).
        - `cache_dir`: where the converted grid is kept (default
          `rubix_eqx.ssp.cache_dir()`).
        - `path`: a directory of E-MILES FITS files (pPXF naming) and, optionally, the
          Vazdekis et al. mass table.
        """
        if name.lower() in ("miles", "e-miles", "emiles"):
            return _build(cls, load_miles(source_dir=path, cache_dir=cache_dir), "E-MILES grid")
        raise ValueError(f"`SSPGrid.load(name={name!r})`: unknown grid; known: 'miles'.")

    @classmethod
    def from_miles_dir(cls, path: str | Path, cache_dir: str | Path | None = None) -> "SSPGrid":
        """Convert a directory of E-MILES FITS files (pPXF naming) and mass table; the
        same as `SSPGrid.load("miles", path=path)`."""
        return _build(cls, load_miles(source_dir=path, cache_dir=cache_dir), "E-MILES grid")

    @classmethod
    def from_dsps(
        cls,
        path: str | Path,
        *,
        fwhm=None,
        medium: str = "vacuum",
        wavelength_range: tuple[float, float] | None = None,
        name: str | None = None,
        citation: str | None = None,
        licence: str = "",
    ) -> "SSPGrid":
        """Read a DSPS SSP file (HDF5; Hearin et al. 2023), e.g. the default
        `ssp_data_fsps_v3.2_lgmet_age.h5`.

        Datasets: `ssp_lgmet` log10 Z; `ssp_lg_age_gyr` (older files `ssp_lg_age`)
        log10(age / Gyr); `ssp_wave` Å; `ssp_flux` (n_met, n_age, n_wave) in L☉ Hz⁻¹ per
        M☉ formed, converted to L☉ Å⁻¹ by L_λ = L_ν c / λ_vac². Wavelengths are
        converted to air (Morton 2000) above 2000 Å, with the flux per Å of air. DSPS
        files carry neither resolution nor remaining mass: `remaining_mass_fraction` is 1.

        **Arguments:**

        - `path`: the HDF5 file.
        - `fwhm`: the templates' resolution, Å FWHM (scalar or one per file pixel).
          Default: twice the pixel spacing (logged as a warning) — pass the real value
          (FSPS with MILES: 2.5 Å over 3525–7500 Å).
        - `medium`: `"vacuum"` (FSPS, the DSPS default) or `"air"`: the file's wavelengths.
        - `wavelength_range`: `(min, max)` in Å (air) to keep, e.g. `(3000, 10000)`.
        - `name`, `citation`, `licence`: provenance (defaults name DSPS and the file).
        """
        fields = read_dsps(
            path,
            fwhm=fwhm,
            medium=medium,
            wavelength_range=wavelength_range,
            name=name,
            citation=DSPS_CITATION if citation is None else citation,
            licence=licence,
        )
        return _build(cls, fields, str(path))

    @classmethod
    def from_ppxf_npz(
        cls,
        path: str | Path,
        *,
        solar_metallicity: float = SOLAR_METALLICITY,
        medium: str = "air",
        wavelength_range: tuple[float, float] | None = None,
        name: str | None = None,
        citation: str | None = None,
        licence: str = "",
    ) -> "SSPGrid":
        """Read a pPXF ≥ 9 SSP template file (`np.savez`), e.g. `spectra_emiles_9.0.npz`.

        Arrays: `templates` (n_wave, n_age, n_Z) L☉ Å⁻¹ per M☉ formed (stored
        unnormalised); `lam` Å; `ages` Gyr; `metals` [M/H], converted to Z =
        `solar_metallicity` · 10^[M/H] and kept as `metallicity_label`; `masses` (n_age,
        n_Z), living stars + remnants per M☉ formed, which becomes
        `remaining_mass_fraction` (must lie in (0, 1]); `fwhm` Å (per pixel or scalar).

        **Arguments:**

        - `path`: the `.npz` file.
        - `solar_metallicity`: Z☉ for [M/H] → Z. The default 0.019 is the Z☉ behind the
          [M/H] = log10(Z / 0.019) that maps and fits report, so they report the file's
          [M/H] labels.
        - `medium`: `"air"` (E-MILES) or `"vacuum"`: the file's wavelengths.
        - `wavelength_range`: `(min, max)` in Å (air) to keep.
        - `name`, `citation`, `licence`: provenance.
        """
        fields = read_ppxf_npz(
            path,
            solar_metallicity=solar_metallicity,
            medium=medium,
            wavelength_range=wavelength_range,
            name=name,
            citation=PPXF_CITATION if citation is None else citation,
            licence=licence,
        )
        return _build(cls, fields, str(path))

    @classmethod
    def from_hdf5(cls, path: str | Path) -> "SSPGrid":
        """Read a grid written by [`rubix_eqx.SSPGrid.to_hdf5`][] (layout in docs/ssp.md)."""
        fields = read_ssp_hdf5(path)
        shapes = ", ".join(
            f"`{k}` {tuple(v.shape)}" for k, v in fields.items() if hasattr(v, "shape")
        )
        return _build(cls, fields, f"{path}: inconsistent or invalid datasets ({shapes})")

    def to_hdf5(self, path: str | Path) -> None:
        """Write this grid in the documented HDF5 layout (atomic: temporary name, then rename)."""
        write_ssp_hdf5(grid_fields(self), path)


def grid_fields(ssp: SSPGrid) -> dict:
    """The fields of `ssp` by name: what the readers return and the writer takes."""
    return {f.name: getattr(ssp, f.name) for f in dataclasses.fields(ssp)}


def _build(cls, fields: dict, where: str) -> SSPGrid:
    """`cls(**fields)`; a construction error becomes a `ValueError` naming `where`."""
    try:
        return cls(**fields)
    except (ValueError, TypeCheckError) as e:
        raise ValueError(f"{where}: {str(e).splitlines()[0]}") from None


def ssp_weights(
    ssp: SSPGrid, age: Float[Array, " n"], metallicity: Float[Array, " n"]
) -> SSPWeights:
    """Bilinear interpolation weights in (log10 age, log10 Z).

    Values outside the grid are clipped to its edge **by design** (the spectrum of the
    nearest edge population is used and the gradient there is zero); `clipped` flags
    them so that callers report how many and how much mass.

    **Arguments:**

    - `ssp`: the grid.
    - `age`: Gyr.
    - `metallicity`: mass fraction Z.

    **Returns:** an [`rubix_eqx.ssp.SSPWeights`][].
    """
    log_age_grid = jnp.log10(ssp.age).astype(age.dtype)
    log_z_grid = jnp.log10(ssp.metallicity).astype(metallicity.dtype)
    return bilinear_weights(log_age_grid, log_z_grid, age, metallicity)
