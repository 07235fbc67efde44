"""Telescopes: the `Telescope` pytree, its `PSF`, `Detector` and `Exposure`, and presets
from YAML."""

from ..config._presets import preset_dir as preset_dir, presets as presets
from ._telescope import (
    Detector as Detector,
    Exposure as Exposure,
    PSF as PSF,
    Telescope as Telescope,
    wavelength_grid as wavelength_grid,
)
