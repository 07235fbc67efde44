"""Small shared helpers: a tiny synthetic SSP grid (no MILES data) and finite differences."""

import jax.numpy as jnp
import numpy as np
import rubix_eqx as rx


SSP_AGES = (0.1, 0.5, 2.0, 10.0)  # Gyr
SSP_METALLICITIES = (0.004, 0.019, 0.03)  # Z


def make_ssp(n_wave: int = 64, dtype=jnp.float64) -> rx.SSPGrid:
    """A tiny (4 ages x 3 Z x `n_wave`) positive SSP grid, 4000-6000 A, whose spectra vary
    smoothly and differently with age, Z and wavelength (so that interpolation errors show)."""
    age = np.asarray(SSP_AGES)
    z = np.asarray(SSP_METALLICITIES)
    wave = np.linspace(4000.0, 6000.0, n_wave)
    la = np.log10(age)[:, None, None]
    lz = np.log10(z / 0.019)[None, :, None]
    x = (wave - 5000.0)[None, None, :] / 1000.0
    flux = 1e-3 * np.exp(-0.8 * la + 0.3 * lz - (0.5 + 0.2 * la - 0.1 * lz) * x)
    flux = flux * (1 + 0.1 * np.sin(3 * x + la) * (1 + lz))
    remaining = 0.9 - 0.1 * la[..., 0] + 0.0 * lz[..., 0]
    return rx.SSPGrid(
        age=jnp.asarray(age, dtype),
        metallicity=jnp.asarray(z, dtype),
        wavelength=jnp.asarray(wave, dtype),
        flux=jnp.asarray(flux, dtype),
        fwhm=jnp.full((n_wave,), 2.5, dtype),
        remaining_mass_fraction=jnp.asarray(remaining, dtype),
        name="synthetic",
        citation="none (test grid)",
        licence="public domain (test grid)",
    )


def central_difference(f, x: float, rel_step: float = 1e-6) -> float:
    """(f(x + h) - f(x - h)) / 2h with h = `rel_step` * |x|, in float64."""
    h = rel_step * abs(x)
    return (float(f(x + h)) - float(f(x - h))) / (2 * h)


def max_rel_err(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y) / np.abs(y)))
