"""The `Telescope` pytree: spatial sampling, wavelength grid, LSF, PSF and noise defaults.
Pure containers with value checks; reading them from mappings and YAML is
`rubix_eqx.config`'s (the `preset`/`from_yaml`/`from_dict` front doors delegate there)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, jaxtyped

from .._checks import concrete, require, wavelength_window
from .._typecheck import typechecker
from ..config._checks import join
from ..config._error import ConfigError
from ..config._keys import wavelength_grid as config_wavelength_grid
from ..config._telescope import preset_mapping, telescope_fields
from ..config._vocabulary import (
    APERTURES,
    float_dtype,
    infer_sampling,
    MEDIA,
    PSF_KINDS,
    SAMPLINGS,
)
from ..config._yaml import read_yaml


@jaxtyped(typechecker=typechecker)
class PSF(eqx.Module):
    """A point-spread function: `kind` `"gaussian"` or `"moffat"`, `fwhm` in arcsec,
    Moffat `beta` (unused for a Gaussian)."""

    kind: str = eqx.field(static=True)
    fwhm: float
    beta: float | None = None

    def __check_init__(self):
        if self.kind not in PSF_KINDS:
            raise ValueError(f"`PSF.kind` must be one of {PSF_KINDS}; got {self.kind!r}.")
        if not self.fwhm > 0:
            raise ValueError(f"`PSF.fwhm` must be > 0 arcsec; got {self.fwhm}.")
        if self.kind == "moffat" and (self.beta is None or not self.beta > 1):
            raise ValueError(f"`PSF.beta` must be > 1 for a Moffat PSF; got {self.beta}.")


def _curve(values) -> Array:
    """A float array of at least one dimension (a constant becomes one value)."""
    arr = jnp.asarray(values)
    dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else float
    return jnp.atleast_1d(jnp.asarray(arr, dtype=dtype))  # a strong (not weak) dtype


def _float_array(values) -> Array:
    """A NumPy array or list as a JAX float array (its float dtype kept; else float32)."""
    arr = np.asarray(values)
    return jnp.asarray(arr, float_dtype(arr))


def _optional_curve(values) -> Array | None:
    return None if values is None else _curve(values)


def _check_curve(owner: str, name: str, values, wavelength) -> None:
    """Shape checks of a constant-or-table field `name` with abscissa `name_wavelength`."""
    if values.ndim != 1:
        raise ValueError(f"`{owner}.{name}` must be 1-D; got shape {values.shape}.")
    if wavelength is None:
        if values.size != 1:
            raise ValueError(
                f"`{owner}.{name}` has {values.size} values: give `{name}_wavelength` (Angstrom) "
                "of the same length, or a single constant."
            )
        return
    if wavelength.shape != values.shape or values.size < 2:
        raise ValueError(
            f"`{owner}.{name}_wavelength` and `{owner}.{name}` must have the same length >= 2; "
            f"got {wavelength.shape[0]} and {values.shape[0]}."
        )
    wave = concrete(wavelength)
    if wave is not None and not (np.all(np.isfinite(wave)) and np.all(np.diff(wave) > 0)):
        raise ValueError(f"`{owner}.{name}_wavelength` must be finite and strictly increasing.")
    if wave is not None and not wave[0] > 0:
        raise ValueError(f"`{owner}.{name}_wavelength` must be > 0 Angstrom; got {wave[0]}.")


def _covers(owner: str, name: str, table, wave: np.ndarray) -> None:
    """Raise `ValueError` if a `{name}_wavelength` table does not span the grid `wave`."""
    if table is None:
        return
    grid = concrete(table)
    if grid is None:
        return
    if grid[0] > wave[0] * (1 + 1e-4) or grid[-1] < wave[-1] * (1 - 1e-4):
        raise ValueError(
            f"`{owner}.{name}_wavelength` covers {grid[0]:g}-{grid[-1]:g} Angstrom but the "
            f"telescope's grid spans {wave[0]:g}-{wave[-1]:g} Angstrom."
        )


def _positive(owner: str, name: str, value, unit: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{owner}.{name}` must be finite and {bound}{unit}; got {value}.")


@jaxtyped(typechecker=typechecker)
class Detector(eqx.Module):
    """The light path and detector of an IFU: what turns a flux into photo-electrons
    and what the detector adds, for [`rubix_eqx.ExposureNoise`][].

    **Attributes:**

    - `collecting_area`: effective collecting area of the telescope, m² (primary minus
      central obstruction).
    - `throughput`: total efficiency, a fraction in (0, 1]: atmosphere, telescope,
      instrument and detector QE (for fibre IFUs also the fill factor of the bundle).
      A constant (one value) or a curve sampled at `throughput_wavelength`.
    - `throughput_wavelength`: Angstrom, observed, strictly increasing (linear
      interpolation), or `None` for a constant `throughput`.
    - `read_noise`: e⁻ rms per detector pixel per exposure.
    - `dark_current`: e⁻ s⁻¹ per detector pixel.
    - `pixel_area`, `pixel_dispersion`: the sky area (arcsec²) and wavelength interval (Å)
      one detector pixel samples, so that a voxel of spaxel area Ω and width Δλ sums
      Ω·Δλ/(pixel_area·pixel_dispersion) detector pixels of read noise and dark current;
      both `None` (default): one detector pixel per voxel.
    """

    collecting_area: float
    throughput: Float[Array, " n_throughput"] = eqx.field(converter=_curve)
    throughput_wavelength: Float[Array, " n_throughput"] | None = eqx.field(
        default=None, converter=_optional_curve
    )
    read_noise: float = 0.0
    dark_current: float = 0.0
    pixel_area: float | None = None
    pixel_dispersion: float | None = None

    def __check_init__(self):
        _positive("Detector", "collecting_area", self.collecting_area, " m²")
        _check_curve("Detector", "throughput", self.throughput, self.throughput_wavelength)
        require(
            "Detector.throughput",
            self.throughput,
            lambda t: ~(np.isfinite(t) & (t > 0) & (t <= 1)),
            "must lie in (0, 1] (a fraction)",
        )
        _positive("Detector", "read_noise", self.read_noise, " e-", allow_zero=True)
        _positive("Detector", "dark_current", self.dark_current, " e-/s", allow_zero=True)
        if (self.pixel_area is None) != (self.pixel_dispersion is None):
            raise ValueError(
                "`Detector.pixel_area` and `Detector.pixel_dispersion` must be given together "
                f"(or both None); got {self.pixel_area} and {self.pixel_dispersion}."
            )
        _positive("Detector", "pixel_area", self.pixel_area, " arcsec²")
        _positive("Detector", "pixel_dispersion", self.pixel_dispersion, " Angstrom")


@jaxtyped(typechecker=typechecker)
class Exposure(eqx.Module):
    """An observation's depth and sky, for [`rubix_eqx.ExposureNoise`][]: either a total
    exposure `time`, or a S/N `snr` per spaxel and wavelength pixel reached for a source
    of surface brightness `reference_sb` at `reference_wavelength` (which fixes the time).

    **Attributes:**

    - `sky`: sky surface brightness, erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻² (≥ 0), a constant (one value)
      or a curve sampled at `sky_wavelength`.
    - `sky_wavelength`: Angstrom, observed, strictly increasing, or `None` (constant sky).
    - `time`: total integration time, s (summed over the exposures), or `None`.
    - `n_exposures`: number of exposures (reads) the time is split into (≥ 1).
    - `snr`: S/N per spaxel and pixel at `reference_sb` and `reference_wavelength`, or `None`.
    - `reference_sb`: erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻², or `None`.
    - `reference_wavelength`: Angstrom, observed, or `None`.
    """

    sky: Float[Array, " n_sky"] = eqx.field(converter=_curve)
    sky_wavelength: Float[Array, " n_sky"] | None = eqx.field(
        default=None, converter=_optional_curve
    )
    time: float | None = None
    n_exposures: int = 1
    snr: float | None = None
    reference_sb: float | None = None
    reference_wavelength: float | None = None

    def __check_init__(self):
        _check_curve("Exposure", "sky", self.sky, self.sky_wavelength)
        require(
            "Exposure.sky",
            self.sky,
            lambda s: ~(np.isfinite(s) & (s >= 0)),
            "must be finite and >= 0 (erg/s/cm²/Å/arcsec²)",
        )
        if isinstance(self.n_exposures, bool) or self.n_exposures < 1:
            raise ValueError(
                f"`Exposure.n_exposures` must be an integer >= 1; got {self.n_exposures}."
            )
        reference = {"snr": self.snr, "reference_sb": self.reference_sb,
                     "reference_wavelength": self.reference_wavelength}  # fmt: skip
        given = [k for k, v in reference.items() if v is not None]
        if self.time is not None and given:
            raise ValueError(
                f"`Exposure`: give `time` or `snr` (with `reference_sb` and "
                f"`reference_wavelength`), not both; got time={self.time} and "
                + ", ".join(f"{k}={reference[k]}" for k in given)
                + "."
            )
        if self.time is None:
            if not given:
                raise ValueError(
                    "`Exposure` needs `time` (s) or `snr` at `reference_sb` "
                    "(erg/s/cm²/Å/arcsec²) and `reference_wavelength` (Angstrom)."
                )
            for k, v in reference.items():
                if v is None:
                    raise ValueError(
                        f"`Exposure.{k}` is required with "
                        + ", ".join(f"{g}={reference[g]}" for g in given)
                        + " (a S/N is stated at a surface brightness and a wavelength)."
                    )
        _positive("Exposure", "time", self.time, " s")
        _positive("Exposure", "snr", self.snr, "")
        _positive("Exposure", "reference_sb", self.reference_sb, " erg/s/cm²/Å/arcsec²")
        _positive("Exposure", "reference_wavelength", self.reference_wavelength, " Angstrom")


@jaxtyped(typechecker=typechecker)
class Telescope(eqx.Module):
    """An IFU: spaxels, observed-frame wavelength grid, resolution and defaults.

    **Attributes:**

    - `name`: preset or user name.
    - `spaxel_size`: arcsec (square spaxels).
    - `n_x`, `n_y`: field size in spaxels.
    - `aperture`: `"square"` (whole field), `"hexagon"` or `"circle"` (fibre bundle).
    - `aperture_diameter`: arcsec, for `"hexagon"` (corner to corner) and `"circle"`.
    - `wavelength`: observed pixel centres, Angstrom.
    - `sampling`: `"linear"` or `"log"` (how `wavelength` was generated; pixel edges
      are midpoints either way).
    - `lsf_fwhm`: line-spread-function FWHM at each pixel, Angstrom.
    - `psf`: the [`rubix_eqx.PSF`][], or `None`.
    - `snr`: default continuum S/N per spaxel and pixel in `snr_window`, or `None`.
    - `snr_window`: (start, stop) Angstrom, observed.
    - `medium`: `"air"` or `"vacuum"`, the medium of `wavelength` (MUSE, SAMI, CALIFA,
      Hector, KCWI deliver air wavelengths; MaNGA vacuum). Templates are converted to it.
    - `detector`: the [`rubix_eqx.telescope.Detector`][] (collecting area, throughput,
      read noise, dark current) for physical noise, or `None`.
    - `exposure`: the typical [`rubix_eqx.telescope.Exposure`][] (time or reference S/N,
      number of exposures, sky brightness) for physical noise, or `None`.
    """

    name: str = eqx.field(static=True)
    spaxel_size: float
    n_x: int = eqx.field(static=True)
    n_y: int = eqx.field(static=True)
    wavelength: Float[Array, " n_wave"]
    lsf_fwhm: Float[Array, " n_wave"]
    aperture: str = eqx.field(static=True, default="square")
    aperture_diameter: float | None = None
    sampling: str = eqx.field(static=True, default="linear")
    psf: PSF | None = None
    snr: float | None = None
    snr_window: tuple[float, float] | None = eqx.field(static=True, default=None)
    description: str = eqx.field(static=True, default="")
    references: tuple[str, ...] = eqx.field(static=True, default=())
    medium: str = eqx.field(static=True, default="air")
    detector: Detector | None = None
    exposure: Exposure | None = None

    def __check_init__(self):
        if not (np.isfinite(self.spaxel_size) and self.spaxel_size > 0):
            raise ValueError(f"`Telescope.spaxel_size` must be > 0 arcsec; got {self.spaxel_size}.")
        for name in ("n_x", "n_y"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`Telescope.{name}` must be >= 1 spaxel; got {getattr(self, name)}."
                )
        if self.aperture not in APERTURES:
            raise ValueError(
                f"`Telescope.aperture` must be one of {APERTURES}; got {self.aperture!r}."
            )
        if self.aperture != "square" and not (self.aperture_diameter or 0) > 0:
            raise ValueError(
                f"`Telescope.aperture_diameter` must be > 0 arcsec for a {self.aperture!r} "
                f"aperture; got {self.aperture_diameter}."
            )
        if self.medium not in MEDIA:
            raise ValueError(f"`Telescope.medium` must be one of {MEDIA}; got {self.medium!r}.")
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"`Telescope.sampling` must be one of {SAMPLINGS}; got {self.sampling!r}."
            )
        wave = concrete(self.wavelength)
        if wave is not None:
            if not np.all(np.isfinite(wave)):
                raise ValueError("`Telescope.wavelength` must be finite everywhere.")
            if wave.size < 2 or not np.all(np.diff(wave) > 0):
                raise ValueError(
                    "`Telescope.wavelength` must be strictly increasing with >= 2 pixels."
                )
            if not wave[0] > 0:
                raise ValueError(f"`Telescope.wavelength` must be positive; got {wave[0]}.")
        fwhm = concrete(self.lsf_fwhm)
        if fwhm is not None and not np.all(np.isfinite(fwhm) & (fwhm > 0)):
            raise ValueError("`Telescope.lsf_fwhm` must be finite and > 0 Angstrom at every pixel.")
        if self.aperture_diameter is not None and not np.isfinite(self.aperture_diameter):
            raise ValueError(
                f"`Telescope.aperture_diameter` must be finite; got {self.aperture_diameter}."
            )
        if self.snr is not None and not (np.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"`Telescope.snr` must be > 0; got {self.snr}.")
        if self.snr_window is not None:
            wavelength_window(self.snr_window, "`Telescope.snr_window`")
        if wave is not None and self.detector is not None:
            _covers("Telescope.detector", "throughput", self.detector.throughput_wavelength, wave)
        if wave is not None and self.exposure is not None:
            _covers("Telescope.exposure", "sky", self.exposure.sky_wavelength, wave)
            ref = self.exposure.reference_wavelength
            if ref is not None and not wave[0] <= ref <= wave[-1]:
                raise ValueError(
                    f"`Telescope.exposure.reference_wavelength` must lie inside the grid "
                    f"{wave[0]:g}-{wave[-1]:g} Angstrom; got {ref:g}."
                )

    @property
    def n_wave(self) -> int:
        return self.wavelength.shape[0]

    @property
    def field_of_view(self) -> tuple[float, float]:
        """(x, y) extent in arcsec."""
        return self.n_x * self.spaxel_size, self.n_y * self.spaxel_size

    def replace(self, **changes) -> "Telescope":
        """A copy with some fields replaced (re-validated).

        A new `wavelength` (observed pixel centres, Angstrom) without a new `lsf_fwhm`
        gets this telescope's LSF interpolated onto it (linearly in wavelength); that
        needs the new pixels inside this telescope's grid, unless the LSF is a constant.
        Without a new `sampling`, it is `"linear"` or `"log"` if the new pixels are evenly
        spaced in λ or in log λ, else this telescope's."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for name in ("wavelength", "lsf_fwhm"):
            if isinstance(changes.get(name), np.ndarray | list | tuple):
                changes[name] = _float_array(changes[name])
        if "wavelength" in changes:
            wave = concrete(changes["wavelength"])
            if "lsf_fwhm" not in changes:
                if wave is None:
                    raise ValueError(
                        "`Telescope.replace(wavelength=...)` with a traced wavelength needs "
                        "`lsf_fwhm` as well (the LSF is resampled from concrete values only)."
                    )
                fwhm = resample_lsf(
                    self.wavelength, self.lsf_fwhm, wave, f"telescope {self.name!r}",
                    "`Telescope.replace(wavelength=...)`",
                )  # fmt: skip
                changes["lsf_fwhm"] = jnp.asarray(fwhm, float_dtype(changes["wavelength"]))
            if "sampling" not in changes and wave is not None:
                changes["sampling"] = infer_sampling(wave, self.sampling)
        fields.update(changes)
        return Telescope(**fields)

    @classmethod
    def preset(cls, name: str, **overrides) -> "Telescope":
        """A preset from `configs/telescopes/<name>.yaml`, with any field overridden,
        e.g. `Telescope.preset("MUSE-WFM", n_x=40, n_y=40)`. Nested keys take mappings:
        `wavelength={"stop": 7000.0}`. `wavelength` also takes an array of pixel centres
        (Angstrom, strictly increasing), e.g. `wavelength=np.arange(5000.0, 6000.0, 1.25)`:
        the preset's LSF table is then interpolated onto them (a `ConfigError` if they
        leave the table), and `sampling` is `"log"` if they are evenly spaced in log λ,
        else `"linear"`. Schema: [`rubix_eqx.config.TELESCOPE_KEYS`][]."""
        data, path = preset_mapping(name, overrides)
        return cls.from_dict(data, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Telescope":
        """A telescope from a YAML file in the preset schema (docs/telescopes.md)."""
        return cls.from_dict(read_yaml(path), str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "telescope") -> "Telescope":
        """A telescope from a mapping in the preset schema; errors
        ([`rubix_eqx.config.ConfigError`][]) name the key path, starting with `path`."""
        fields = telescope_fields(data, path)
        psf, detector, exposure = (fields.pop(k) for k in ("psf", "detector", "exposure"))
        try:
            if exposure is not None:
                try:
                    exposure = Exposure(**exposure)
                except ValueError as e:
                    raise ConfigError(f"{join(path, 'exposure')}: {e}") from None
            return cls(
                **fields,
                psf=None if psf is None else PSF(**psf),
                detector=None if detector is None else Detector(**detector),
                exposure=exposure,
            )
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None


def wavelength_grid(spec: Mapping[str, Any], path: str) -> tuple[np.ndarray, str]:
    """Pixel centres (float64, Angstrom) and sampling from `{start, stop, step, sampling}`:
    [`rubix_eqx.config.wavelength_grid`][]."""
    return config_wavelength_grid(spec, path)


def resample_lsf(table_wave, table_fwhm, wavelength, owner: str, where: str) -> np.ndarray:
    """An LSF FWHM curve sampled at `table_wave` interpolated (linearly) onto `wavelength`.
    A constant curve holds anywhere; otherwise `wavelength` must lie inside the table
    (to 1e-6 relative), else `ValueError` naming `where`, both ranges and `owner`."""
    grid = np.asarray(table_wave, np.float64)
    fwhm = np.asarray(table_fwhm, np.float64)
    wave = np.asarray(wavelength, np.float64)
    if np.all(fwhm == fwhm[0]):
        return np.full(wave.shape, fwhm[0])
    if wave.size and (wave[0] < grid[0] * (1 - 1e-6) or wave[-1] > grid[-1] * (1 + 1e-6)):
        raise ValueError(
            f"{where}: the new wavelengths span {wave[0]:g}-{wave[-1]:g} Angstrom but the LSF "
            f"of {owner} is known over {grid[0]:g}-{grid[-1]:g} Angstrom only; give "
            "`lsf_fwhm` (Angstrom at each new pixel) as well, or wavelengths inside that range."
        )
    return np.interp(wave, grid, fwhm)
