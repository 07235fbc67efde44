"""Physical constants and unit conversions (CGS unless the name says otherwise), as
Python floats: the one place each is defined."""

import math


C_M_S = 299792458.0  # speed of light, m/s (exact, SI)
C_KM_S = C_M_S / 1e3  # 299792.458 km/s
C_ANGSTROM_S = C_M_S * 1e10  # 2.99792458e18 Å/s
L_SUN_ERG_S = 3.828e33  # nominal solar luminosity, IAU 2015 Resolution B3
MPC_CM = 3.0856775814913673e24
H_C_ERG_ANGSTROM = 6.62607015e-27 * C_ANGSTROM_S  # h·c (exact SI values), erg·Å
SOLAR_METALLICITY = 0.019  # Z☉ of the Padova isochrones behind MILES: [M/H] = log10(Z / Z☉)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.35482, of a Gaussian
ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0  # 206264.806...


def dimming_constant(flux_unit: float) -> float:
    """L☉ / (4π (1 Mpc)²) in `flux_unit` erg s⁻¹ cm⁻²: multiply by (L in L☉) / (d_L in Mpc)²."""
    return L_SUN_ERG_S / (4 * math.pi * MPC_CM**2) / flux_unit
