"""Galaxies: the `Galaxy` pytree, synthetic galaxies with known truth, and loaders."""

from ._galaxy import Galaxy as Galaxy
from ._synthetic import (
    DiskDraws as DiskDraws,
    disk_from_draws as disk_from_draws,
    draw_disk as draw_disk,
    rotation_curve as rotation_curve,
    single_population as single_population,
    synthetic_disk as synthetic_disk,
    Truth as Truth,
)
