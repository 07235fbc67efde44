"""Physics recipes for gas and dust: emission lines, attenuation curves, smoothing kernels."""

from ._dust_curves import (
    attenuation_curve as attenuation_curve,
    calzetti00 as calzetti00,
    ccm89 as ccm89,
    charlot_fall_optical_depth as charlot_fall_optical_depth,
    f99 as f99,
    metal_column_to_av as metal_column_to_av,
    transmission as transmission,
)
from ._emission_lines import (
    doublet_ratio as doublet_ratio,
    EmissionLine as EmissionLine,
    line_index as line_index,
    line_luminosities as line_luminosities,
    line_wavelengths as line_wavelengths,
    line_widths as line_widths,
    LINES as LINES,
    oxygen_abundance as oxygen_abundance,
)
from ._kernels import (
    kth_neighbour_distance as kth_neighbour_distance,
    projected_cubic_spline as projected_cubic_spline,
    stencil_fractions as stencil_fractions,
)
