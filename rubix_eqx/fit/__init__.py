"""Recovery of galaxy properties from cubes by least squares (optimistix)."""

from ._galaxy_model import (
    AbstractPrior as AbstractPrior,
    galaxy_model as galaxy_model,
    GalaxyModel as GalaxyModel,
    Normal as Normal,
    PARAMETERS as PARAMETERS,
    PriorRangeError as PriorRangeError,
    Uniform as Uniform,
)
from ._line_mask import (
    emission_line_mask as emission_line_mask,
    mask_emission_lines as mask_emission_lines,
)
from ._mixture import (
    fit_mixture as fit_mixture,
    MixtureFit as MixtureFit,
    nnls as nnls,
    second_differences as second_differences,
)
from ._output import plot_maps as plot_maps, write_maps_fits as write_maps_fits
from ._particles import (
    fit_galaxy as fit_galaxy,
    fit_particles as fit_particles,
    GalaxyFit as GalaxyFit,
    ParticleFit as ParticleFit,
)
from ._posterior import (
    chain_diagnostics as chain_diagnostics,
    corner_plot as corner_plot,
    format_table as format_table,
    GridMismatchError as GridMismatchError,
    laplace as laplace,
    LaplacePosterior as LaplacePosterior,
    nuts as nuts,
    NUTSPosterior as NUTSPosterior,
    PoorFitWarning as PoorFitWarning,
    Posterior as Posterior,
    posterior as posterior,
    posterior_summary as posterior_summary,
    screen_starts as screen_starts,
    write_samples_hdf5 as write_samples_hdf5,
)
from ._spaxels import (
    fit_spaxels as fit_spaxels,
    SpaxelFit as SpaxelFit,
    STATUS as STATUS,
    telescope_for_cube as telescope_for_cube,
)
from ._spectrum_model import SpectrumModel as SpectrumModel
from ._voronoi import (
    bin_spectra as bin_spectra,
    BinningError as BinningError,
    fit_voronoi as fit_voronoi,
    unbin as unbin,
    voronoi_bins as voronoi_bins,
    VoronoiBins as VoronoiBins,
    VoronoiFit as VoronoiFit,
)
