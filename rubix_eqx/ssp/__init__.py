"""SSP grids: the `SSPGrid` pytree, interpolation weights, E-MILES conversion and cache, and
readers of DSPS and pPXF 9 files (`SSPGrid.from_dsps`, `SSPGrid.from_ppxf_npz`)."""

from ._cache import cache_dir as cache_dir
from ._cubic import cubic_weights as cubic_weights
from ._grid import ssp_weights as ssp_weights, SSPGrid as SSPGrid
from ._interpolate import SSPWeights as SSPWeights
