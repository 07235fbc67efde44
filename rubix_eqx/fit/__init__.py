"""Recovery of galaxy properties from cubes by least squares (optimistix)."""

from ._output import plot_maps as plot_maps, write_maps_fits as write_maps_fits
from ._particles import (
    fit_galaxy as fit_galaxy,
    fit_particles as fit_particles,
    GalaxyFit as GalaxyFit,
    ParticleFit as ParticleFit,
)
from ._spaxels import (
    fit_spaxels as fit_spaxels,
    SpaxelFit as SpaxelFit,
    STATUS as STATUS,
    telescope_for_cube as telescope_for_cube,
)
from ._spectrum_model import SpectrumModel as SpectrumModel
