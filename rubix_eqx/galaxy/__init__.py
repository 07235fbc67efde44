"""Galaxies: `Galaxy` (stars) and `Gas` pytrees, synthetic galaxies with truth, loaders."""

from ._align import (
    centre as centre,
    face_on as face_on,
    shrinking_sphere_centre as shrinking_sphere_centre,
)
from ._eagle import from_eagle as from_eagle, from_eagle_gas as from_eagle_gas
from ._galaxy import Galaxy as Galaxy
from ._gas import Gas as Gas
from ._io import from_hdf5 as from_hdf5, hdf5_metadata as hdf5_metadata, to_hdf5 as to_hdf5
from ._smoothing import with_smoothing_lengths as with_smoothing_lengths
from ._synthetic import (
    disk_from_draws as disk_from_draws,
    DiskDraws as DiskDraws,
    draw_disk as draw_disk,
    rotation_curve as rotation_curve,
    single_population as single_population,
    synthetic_disk as synthetic_disk,
    Truth as Truth,
)
from ._synthetic_gas import synthetic_gas_disk as synthetic_gas_disk
from ._tng import from_tng as from_tng, from_tng_gas as from_tng_gas
from ._warnings import MassFallbackWarning as MassFallbackWarning
