"""Air and vacuum wavelengths (NumPy, float64, eager).

The refractive index of standard air (dry, 15 °C, 101 325 Pa, 450 ppm CO₂) is the
formula of Ciddor (1996, Appl. Opt. 35, 1566) as quoted by Morton (2000, ApJS 130, 403,
eq. 8), with σ = 10⁴ / λ_vacuum (λ in Å, σ in µm⁻¹):

    n − 1 = 8.34254e-5 + 2.406147e-2 / (130 − σ²) + 1.5998e-4 / (38.9 − σ²)

and λ_air = λ_vacuum / n. The inverse, air → vacuum, solves that equation by fixed-point
iteration (converged to < 1e-10 Å; 6562.80 Å in air is 6564.61 Å in vacuum). Valid above
2000 Å (below, air wavelengths are not used; vacuum is returned unchanged there, as the
IAU convention has it).
"""

import numpy as np


MEDIA = ("air", "vacuum")
_AIR_LIMIT = 2000.0  # Å: below this, wavelengths are quoted in vacuum by convention


def refractive_index(vacuum_wavelength) -> np.ndarray:
    """n of standard air at vacuum wavelengths (Å), Morton (2000) eq. 8."""
    s2 = (1e4 / np.asarray(vacuum_wavelength, np.float64)) ** 2
    return np.asarray(1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2))


def vacuum_to_air(wavelength) -> np.ndarray:
    """Air wavelengths (Å) of vacuum wavelengths (Å); unchanged below 2000 Å."""
    vac = np.asarray(wavelength, np.float64)
    return np.asarray(np.where(vac >= _AIR_LIMIT, vac / refractive_index(vac), vac))


def air_to_vacuum(wavelength) -> np.ndarray:
    """Vacuum wavelengths (Å) of air wavelengths (Å); unchanged below 2000 Å."""
    air = np.asarray(wavelength, np.float64)
    vac = air.copy()
    for _ in range(8):  # contraction factor ~1e-4 per step
        vac = air * refractive_index(vac)
    return np.asarray(np.where(air >= _AIR_LIMIT, vac, air))


def convert(wavelength, source: str, target: str) -> np.ndarray:
    """`wavelength` (Å) from medium `source` to medium `target` ("air" or "vacuum")."""
    for name, value in (("source", source), ("target", target)):
        if value not in MEDIA:
            raise ValueError(f"medium `{name}` must be one of {MEDIA}; got {value!r}.")
    if source == target:
        return np.asarray(wavelength, np.float64)
    return air_to_vacuum(wavelength) if target == "vacuum" else vacuum_to_air(wavelength)
