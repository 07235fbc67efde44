"""The `Telescope` pytree: spatial sampling, wavelength grid, LSF, PSF and noise defaults."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, jaxtyped

from .._checks import concrete
from .._config_checks import (
    check_keys,
    choice,
    ConfigError,
    deep_merge,
    integer,
    join,
    number,
    read_yaml,
)
from .._typecheck import typechecker


APERTURES = ("square", "hexagon", "circle")
SAMPLINGS = ("linear", "log")
PSF_KINDS = ("gaussian", "moffat")
MEDIA = ("air", "vacuum")


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

    @property
    def n_wave(self) -> int:
        return self.wavelength.shape[0]

    @property
    def field_of_view(self) -> tuple[float, float]:
        """(x, y) extent in arcsec."""
        return self.n_x * self.spaxel_size, self.n_y * self.spaxel_size

    def replace(self, **changes) -> "Telescope":
        """A copy with some fields replaced (re-validated)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return Telescope(**fields)

    @classmethod
    def preset(cls, name: str, **overrides) -> "Telescope":
        """A preset from `configs/telescopes/<name>.yaml`, with any field overridden,
        e.g. `Telescope.preset("MUSE-WFM", n_x=40, n_y=40)`. Nested keys take mappings:
        `wavelength={"stop": 7000.0}`."""
        from ._presets import preset_path

        data = read_yaml(preset_path(name))
        return cls.from_dict(deep_merge(data, overrides), path=f"telescope[{name}]")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Telescope":
        """A telescope from a YAML file in the preset schema (docs/telescopes.md)."""
        return cls.from_dict(read_yaml(path), path=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "telescope") -> "Telescope":
        """A telescope from a mapping in the preset schema; errors name the key path."""
        keys = (
            "name", "description", "references", "spaxel_size", "n_x", "n_y", "aperture",
            "aperture_diameter", "wavelength", "lsf_fwhm", "psf", "noise", "medium",
        )  # fmt: skip
        check_keys(
            data,
            keys,
            path,
            required=("name", "spaxel_size", "n_x", "n_y", "wavelength", "lsf_fwhm"),
        )
        wave_spec = check_keys(
            data["wavelength"], ("start", "stop", "step", "sampling"), join(path, "wavelength"),
            required=("start", "stop", "step"),
        )  # fmt: skip
        wavelength, sampling = wavelength_grid(wave_spec, join(path, "wavelength"))
        lsf = _lsf_table(data["lsf_fwhm"], wavelength, join(path, "lsf_fwhm"))
        aperture = choice(data.get("aperture", "square"), join(path, "aperture"), APERTURES)
        diameter = data.get("aperture_diameter")
        if aperture != "square" or diameter is not None:
            diameter = number(diameter, join(path, "aperture_diameter"), positive=True)
        psf = None
        if data.get("psf") is not None:
            psf_path = join(path, "psf")
            spec = check_keys(
                data["psf"], ("kind", "fwhm", "beta"), psf_path, required=("kind", "fwhm")
            )
            kind = choice(spec["kind"], join(psf_path, "kind"), PSF_KINDS)
            beta = spec.get("beta")
            if kind == "moffat":
                beta = number(beta, join(psf_path, "beta"), lo=1.0000001)
            psf = PSF(
                kind=kind,
                fwhm=number(spec["fwhm"], join(psf_path, "fwhm"), positive=True),
                beta=beta,
            )
        snr, window = None, None
        if data.get("noise") is not None:
            noise_path = join(path, "noise")
            spec = check_keys(data["noise"], ("snr", "window"), noise_path)
            if spec.get("snr") is not None:
                snr = number(spec["snr"], join(noise_path, "snr"), positive=True)
            if spec.get("window") is not None:
                w = spec["window"]
                if not isinstance(w, list | tuple) or len(w) != 2:
                    raise ConfigError(
                        f"{join(noise_path, 'window')}: must be [start, stop] in Angstrom."
                    )
                window = tuple(number(v, join(noise_path, "window")) for v in w)
                if not window[0] < window[1]:
                    raise ConfigError(
                        f"{join(noise_path, 'window')}: start must be < stop; got {list(window)}."
                    )
        refs = data.get("references") or ()
        return cls(
            name=str(data["name"]),
            spaxel_size=number(data["spaxel_size"], join(path, "spaxel_size"), positive=True),
            n_x=integer(data["n_x"], join(path, "n_x")),
            n_y=integer(data["n_y"], join(path, "n_y")),
            wavelength=jnp.asarray(wavelength, jnp.float32),
            lsf_fwhm=jnp.asarray(lsf, jnp.float32),
            aperture=aperture,
            aperture_diameter=diameter,
            sampling=sampling,
            psf=psf,
            snr=snr,
            snr_window=window,
            description=str(data.get("description", "")),
            references=tuple(str(r) for r in refs),
            medium=choice(data.get("medium", "air"), join(path, "medium"), MEDIA),
        )


def wavelength_grid(spec: Mapping[str, Any], path: str) -> tuple[np.ndarray, str]:
    """Pixel centres (float64, Angstrom) from `{start, stop, step, sampling}`; `step` is in
    Angstrom for linear sampling and in dex (Δlog10 λ) for log sampling."""
    start = number(spec["start"], join(path, "start"), positive=True)
    stop = number(spec["stop"], join(path, "stop"), positive=True)
    step = number(spec["step"], join(path, "step"), positive=True)
    sampling = choice(spec.get("sampling", "linear"), join(path, "sampling"), SAMPLINGS)
    if not stop > start:
        raise ConfigError(f"{join(path, 'stop')}: must be > start ({start:g}); got {stop:g}.")
    if sampling == "linear":
        n = int(round((stop - start) / step)) + 1
        return start + step * np.arange(n), sampling
    n = int(round(np.log10(stop / start) / step)) + 1
    return 10.0 ** (np.log10(start) + step * np.arange(n)), sampling


def _lsf_table(spec: Any, wavelength: np.ndarray, path: str) -> np.ndarray:
    """LSF FWHM (Angstrom) at each pixel from a constant or a `{wavelength, fwhm}` table."""
    if not isinstance(spec, Mapping):
        return np.full(wavelength.shape, number(spec, path, positive=True))
    check_keys(spec, ("wavelength", "fwhm"), path, required=("wavelength", "fwhm"))
    grid = np.asarray([number(v, join(path, "wavelength")) for v in spec["wavelength"]])
    fwhm = np.asarray([number(v, join(path, "fwhm"), positive=True) for v in spec["fwhm"]])
    if grid.size != fwhm.size or grid.size < 2:
        raise ConfigError(f"{path}: `wavelength` and `fwhm` need the same length >= 2.")
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(f"{join(path, 'wavelength')}: must be strictly increasing.")
    if grid[0] > wavelength[0] * (1 + 1e-4) or grid[-1] < wavelength[-1] * (1 - 1e-4):
        raise ConfigError(
            f"{path}: table covers {grid[0]:g}-{grid[-1]:g} Angstrom but the grid spans "
            f"{wavelength[0]:g}-{wavelength[-1]:g} Angstrom."
        )
    return np.interp(wavelength, grid, fwhm)
