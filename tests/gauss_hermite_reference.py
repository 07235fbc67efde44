"""Independent float64 NumPy reference: spectra with a Gauss–Hermite LOSVD on real pixels.

Test-support module (not a test file). It imports nothing from ``rubix_eqx`` and uses no
lattice and no FFT. The LOSVD (van der Marel & Franx 1993), in the velocity u = c ln(λ/λ₀):

    L(u) = exp(−y²/2)/(σ√(2π)) [1 + h3 H3(y) + h4 H4(y)] / (1 + h4 √6/4),
    y = (u − V)/σ,  H3 = (2y³ − 3y)/√3,  H4 = (4y⁴ − 12y² + 3)/√24,

(normalised to unit integral, as the fitter's amplitude is). The spectrum is the direct
convolution in velocity space: L is sampled on a fine grid u_j (trapezoid rule, step
a quarter of the smaller of σ and the LSF's σ in km/s, over ±8σ: for integrands that
are Gaussians times polynomials and pixel boxes, the rule's error is
~exp(−2π²·16) relative), and each sample is a copy of the template shifted
by u_j with weight L(u_j) Δu, spread by the LSF and integrated exactly over the telescope
pixels by ``exact_reference.exact_spectra`` (the textbook reference of the pipeline's
LSF convention, also independent of rubix_eqx).
"""

import math

import numpy as np

from . import exact_reference as ref


def hermite3(y):
    return (2.0 * y**3 - 3.0 * y) / math.sqrt(3.0)


def hermite4(y):
    return (4.0 * y**4 - 12.0 * y**2 + 3.0) / math.sqrt(24.0)


def gauss_hermite_losvd(u, velocity, sigma, h3, h4):
    """L(u) (per km/s) with unit integral; u, V, σ in km/s."""
    y = (np.asarray(u, np.float64) - velocity) / sigma
    poly = 1.0 + h3 * hermite3(y) + h4 * hermite4(y)
    return (
        np.exp(-0.5 * y * y) / (sigma * math.sqrt(2 * math.pi)) * poly / (1 + h4 * math.sqrt(6) / 4)
    )


def gauss_hermite_spectrum(
    ssp_wavelength, template, ssp_fwhm, redshift, tel_wavelength, tel_lsf_fwhm,
    velocity, sigma, h3, h4, amplitude=1.0,
):  # fmt: skip
    """Flux density on the telescope pixels of `amplitude` × template (rest frame, with
    its declared FWHM) at `redshift`, broadened by the Gauss–Hermite LOSVD (km/s) and the
    declared LSF (Å, total on the pixels)."""
    lsf_sigma_kms = (
        np.min(np.asarray(tel_lsf_fwhm, np.float64)) / ref.FWHM_PER_SIGMA
        / np.max(np.asarray(tel_wavelength, np.float64)) * ref.C_KMS
    )  # fmt: skip
    step = min(sigma, lsf_sigma_kms) / 4.0
    n = int(math.ceil(8.0 * sigma / step))
    u = velocity + step * np.arange(-n, n + 1)
    weight = gauss_hermite_losvd(u, velocity, sigma, h3, h4) * step
    flux, clipped = ref.exact_spectra(
        ssp_wavelength, np.broadcast_to(np.asarray(template, np.float64), (u.size, len(template))),
        ssp_fwhm, amplitude * weight, u, redshift, tel_wavelength, tel_lsf_fwhm,
    )  # fmt: skip
    if clipped.any():
        raise ValueError("the telescope's LSF is sharper than the redshifted templates")
    return flux
