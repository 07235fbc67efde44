"""rubix_eqx: differentiable mock IFU cubes of simulated galaxies, in JAX and Equinox."""

import importlib.metadata as _metadata

from . import (
    config as config,
    cosmology as cosmology,
    fit as fit,
    galaxy as galaxy,
    io as io,
    physics as physics,
    sharding as sharding,
    ssp as ssp,
    telescope as telescope,
)
from ._compile import compiler_options as compiler_options
from ._cube import Cube as Cube, Diagnostics as Diagnostics
from ._engine import (
    AbstractEngine as AbstractEngine,
    AutoEngine as AutoEngine,
    DirectEngine as DirectEngine,
    HistogramEngine as HistogramEngine,
    SparseEngine as SparseEngine,
)
from ._gas_maps import gas_truth_maps as gas_truth_maps, GasMaps as GasMaps
from ._gauss_hermite_truth import (
    gauss_hermite_truth_maps as gauss_hermite_truth_maps,
    losvd_histograms as losvd_histograms,
)
from ._maps import Maps as Maps, truth_maps as truth_maps
from ._observation import Observation as Observation
from ._observed_maps import observed_truth_maps as observed_truth_maps
from ._pipeline import (
    crop_to_coverage as crop_to_coverage,
    FieldWarning as FieldWarning,
    Pipeline as Pipeline,
)
from ._quicklook import halpha_image as halpha_image, quicklook as quicklook
from ._spectral_grid import SpectralGrid as SpectralGrid
from ._stages._aperture import Aperture as Aperture
from ._stages._build import telescope_stages as telescope_stages
from ._stages._deposit import (
    AbstractDeposit as AbstractDeposit,
    CICDeposit as CICDeposit,
    NearestDeposit as NearestDeposit,
    SmoothedDeposit as SmoothedDeposit,
)
from ._stages._dust import (
    AbstractDust as AbstractDust,
    BirthCloud as BirthCloud,
    GasScreen as GasScreen,
    UniformScreen as UniformScreen,
)
from ._stages._lines import EmissionLines as EmissionLines
from ._stages._lsf import LSF as LSF, ResolutionError as ResolutionError
from ._stages._noise import (
    AbstractNoise as AbstractNoise,
    ExposureNoise as ExposureNoise,
    Noise as Noise,
)
from ._stages._orient import Orient as Orient
from ._stages._pixels import Rebin as Rebin
from ._stages._protocol import (
    AbstractCubeStage as AbstractCubeStage,
    AbstractLineStage as AbstractLineStage,
    AbstractParticleStage as AbstractParticleStage,
    AbstractSpectraStage as AbstractSpectraStage,
    AbstractStage as AbstractStage,
    CubeState as CubeState,
    FitModelError as FitModelError,
    LineTerms as LineTerms,
    Particles as Particles,
    Scene as Scene,
    SpectralTerms as SpectralTerms,
)
from ._stages._psf import PSFConvolution as PSFConvolution
from ._stages._spectra import CoverageError as CoverageError, Spectra as Spectra
from .galaxy import Galaxy as Galaxy
from .sharding import shard as shard
from .ssp import SSPGrid as SSPGrid
from .telescope import PSF as PSF, Telescope as Telescope


__version__ = _metadata.version("rubix-eqx")
