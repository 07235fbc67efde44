"""The fields of a telescope from a mapping in the preset schema (`TELESCOPE_KEYS`), and the
presets of `configs/telescopes/`, checked with errors naming the key path. Plain values:
the containers (`Telescope.from_dict`, `Telescope.preset`) build themselves from them, so
this module imports none of them."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._checks import ConfigError, join
from ._keys import checked, Curve
from ._presets import preset_dir, presets
from ._vocabulary import float_dtype, infer_sampling
from ._yaml import deep_merge, read_yaml


def preset_file(name: str) -> Path:
    """The YAML file of preset `name` (case-insensitive), else `ValueError` listing them."""
    names = presets()
    for known in names:
        if known.lower() == name.lower():
            return preset_dir() / f"{known}.yaml"
    raise ValueError(f"Unknown telescope preset {name!r}; available: {', '.join(names)}.")


def covers(path: str, grid: np.ndarray | None, wavelength: np.ndarray) -> None:
    """Raise `ConfigError` if a table sampled at `grid` (Angstrom) does not span the
    telescope's pixel centres `wavelength` (to 1e-4 relative)."""
    if grid is None:
        return
    if grid[0] > wavelength[0] * (1 + 1e-4) or grid[-1] < wavelength[-1] * (1 - 1e-4):
        raise ConfigError(
            f"{path}: table covers {grid[0]:g}-{grid[-1]:g} Angstrom but the grid spans "
            f"{wavelength[0]:g}-{wavelength[-1]:g} Angstrom."
        )


def _lsf_on_grid(lsf: Curve, wavelength: np.ndarray, path: str) -> np.ndarray:
    """The checked `lsf_fwhm` value at each pixel (Angstrom)."""
    if lsf.wavelength is not None:
        covers(path, lsf.wavelength, wavelength)
        return np.interp(wavelength, lsf.wavelength, lsf.values)
    if lsf.values.ndim == 0:
        return np.full(wavelength.shape, float(lsf.values))
    if lsf.values.ndim != 1 or lsf.values.size != wavelength.size:
        raise ConfigError(
            f"{path}: an array of FWHM values must have one value per pixel "
            f"({wavelength.size}); got shape {lsf.values.shape}."
        )
    return lsf.values


def _as_array(values: np.ndarray | None):
    return None if values is None else jnp.atleast_1d(jnp.asarray(values, jnp.float32))


def _psf(spec: dict | None, path: str) -> dict | None:
    if spec is None:
        return None
    if spec["kind"] == "moffat" and spec["beta"] is None:
        raise ConfigError(f"{join(path, 'beta')}: must be a number, got None (Moffat β > 1).")
    return dict(kind=spec["kind"], fwhm=spec["fwhm"], beta=spec["beta"])


def _detector(spec: dict | None, wavelength: np.ndarray, path: str) -> dict | None:
    if spec is None:
        return None
    throughput = spec["throughput"]
    covers(join(path, "throughput"), throughput.wavelength, wavelength)
    if (spec["pixel_area"] is None) != (spec["pixel_dispersion"] is None):
        missing = "pixel_dispersion" if spec["pixel_area"] is not None else "pixel_area"
        raise ConfigError(
            f"{join(path, missing)}: required with `{path}.pixel_area`/`pixel_dispersion` "
            "(give both, or neither for one detector pixel per voxel)."
        )
    return dict(
        collecting_area=spec["collecting_area"],
        throughput=_as_array(throughput.values),
        throughput_wavelength=_as_array(throughput.wavelength),
        read_noise=spec["read_noise"],
        dark_current=spec["dark_current"],
        pixel_area=spec["pixel_area"],
        pixel_dispersion=spec["pixel_dispersion"],
    )


def _exposure(spec: dict | None, wavelength: np.ndarray, path: str) -> dict | None:
    if spec is None:
        return None
    sky = spec["sky"]
    covers(join(path, "sky"), sky.wavelength, wavelength)
    ref = spec["reference_wavelength"]
    if ref is not None and not wavelength[0] <= ref <= wavelength[-1]:
        raise ConfigError(
            f"{join(path, 'reference_wavelength')}: must lie inside the grid "
            f"{wavelength[0]:g}-{wavelength[-1]:g} Angstrom, got {ref:g}."
        )
    kw = {k: spec[k] for k in ("time", "n_exposures", "snr", "reference_sb")}
    return dict(
        sky=_as_array(sky.values), sky_wavelength=_as_array(sky.wavelength),
        reference_wavelength=ref, **kw,
    )  # fmt: skip


def telescope_fields(data: Mapping[str, Any], path: str = "telescope") -> dict[str, Any]:
    """The checked fields of a [`rubix_eqx.Telescope`][] (`psf`, `detector`, `exposure` as
    mappings of their fields, or `None`) from a mapping in the preset schema
    ([`rubix_eqx.config.TELESCOPE_KEYS`][]); errors ([`rubix_eqx.config.ConfigError`][])
    name the key path, starting with `path`."""
    spec = checked(data, "", path)
    wavelength, sampling, given = spec["wavelength"]
    if given is None:  # from {start, stop, step, sampling}
        dtype = jnp.float32
    else:  # pixel centres given as an array
        sampling = infer_sampling(wavelength, "linear")
        dtype = float_dtype(np.asarray(given))
    lsf = _lsf_on_grid(spec["lsf_fwhm"], wavelength, join(path, "lsf_fwhm"))
    diameter = spec["aperture_diameter"]
    if spec["aperture"] != "square" and diameter is None:
        raise ConfigError(
            f"{join(path, 'aperture_diameter')}: must be a number, got None (arcsec, for a "
            f"{spec['aperture']!r} aperture)."
        )
    noise = spec["noise"] or {"snr": None, "window": None}
    return dict(
        name=spec["name"],
        spaxel_size=spec["spaxel_size"],
        n_x=spec["n_x"],
        n_y=spec["n_y"],
        wavelength=jnp.asarray(wavelength, dtype),
        lsf_fwhm=jnp.asarray(lsf, dtype),
        aperture=spec["aperture"],
        aperture_diameter=diameter,
        sampling=sampling,
        psf=_psf(spec["psf"], join(path, "psf")),
        snr=noise["snr"],
        snr_window=noise["window"],
        description=spec["description"],
        references=spec["references"],
        medium=spec["medium"],
        detector=_detector(spec["detector"], wavelength, join(path, "detector")),
        exposure=_exposure(spec["exposure"], wavelength, join(path, "exposure")),
    )


def preset_mapping(name: str, overrides: Mapping[str, Any]) -> tuple[dict, str]:
    """The mapping of preset `configs/telescopes/<name>.yaml` (name case-insensitive) with
    `overrides` merged in (nested mappings merge), and its key path for errors."""
    data = read_yaml(preset_file(name))
    return deep_merge(data, dict(overrides)), f"telescope[{name}]"
