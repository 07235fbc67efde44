"""Physical constants and unit conversions (CGS), as Python floats."""

import math


L_SUN_ERG_S = 3.828e33  # nominal solar luminosity, IAU 2015 Resolution B3
MPC_CM = 3.0856775814913673e24
C_KM_S = 299792.458
H_C_ERG_ANGSTROM = 6.62607015e-27 * 2.99792458e18  # h·c (exact SI values), erg·Å


def dimming_constant(flux_unit: float) -> float:
    """L☉ / (4π (1 Mpc)²) in `flux_unit` erg s⁻¹ cm⁻²: multiply by (L in L☉) / (d_L in Mpc)²."""
    return L_SUN_ERG_S / (4 * math.pi * MPC_CM**2) / flux_unit
