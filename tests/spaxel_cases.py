"""Test cases for spaxel fits (no MILES data): a synthetic SSP grid rich in narrow
absorption lines, a telescope, and cubes built from spectra given as NumPy arrays."""

import jax.numpy as jnp
import numpy as np
import rubix_eqx as rx


Z_OBS = 0.05
AGES = (0.5, 1.0, 2.0, 5.0, 10.0)  # Gyr
METALLICITIES = (0.004, 0.019, 0.03)  # Z
SSP_FWHM = 2.5  # Å, declared resolution of the synthetic templates
N_LINES = 200


def lined_ssp(n_lines: int = N_LINES) -> rx.SSPGrid:
    """5 ages × 3 Z, 4300–6500 Å at 1 Å: continua whose slope and level change with age
    and Z, and `n_lines` absorption lines (σ = 1.1 Å) at fixed places whose depths change
    differently with age (Balmer-like) and Z (metal-like)."""
    rng = np.random.default_rng(42)
    centres = np.sort(rng.uniform(4350.0, 6450.0, n_lines))
    kind = rng.uniform(size=n_lines) < 0.3  # True: age-sensitive, False: metal-sensitive
    base = rng.uniform(0.1, 0.4, n_lines)
    age, metallicity = np.asarray(AGES), np.asarray(METALLICITIES)
    wave = np.arange(4300.0, 6500.5, 1.0)
    flux = np.empty((age.size, metallicity.size, wave.size))
    profile = np.exp(-0.5 * ((wave[None, :] - centres[:, None]) / 1.1) ** 2)
    for i, a in enumerate(age):
        la = np.log10(a)
        for j, z in enumerate(metallicity):
            lz = np.log10(z / 0.019)
            depth = np.where(kind, base * (1.2 - 0.5 * la), base * (1.0 + 0.8 * lz + 0.1 * la))
            lines = np.clip(depth, 0.02, 0.8) @ profile
            continuum = 1e-3 / a * (wave / 5000.0) ** (-1.5 + 1.2 * la + 0.5 * lz)
            flux[i, j] = continuum * np.exp(-lines)
    return rx.SSPGrid(
        age=jnp.asarray(age),
        metallicity=jnp.asarray(metallicity),
        wavelength=jnp.asarray(wave),
        flux=jnp.asarray(flux),
        fwhm=jnp.full(wave.shape, SSP_FWHM),
        remaining_mass_fraction=jnp.asarray(0.9 - 0.1 * np.log10(age)[:, None] + 0 * metallicity),
        name="lined",
        citation="none (test grid)",
        licence="public domain (test grid)",
    )


def telescope(n_x: int, n_y: int = 1, start=4800.0, stop=6400.0, step=1.0, lsf_fwhm=2.9):
    """A MUSE-like telescope (1 Å pixels, constant FWHM) of `n_x` × `n_y` spaxels."""
    wave = np.arange(start, stop + step / 2, step)
    return rx.Telescope(
        name="lined-test", spaxel_size=0.5, n_x=n_x, n_y=n_y, wavelength=jnp.asarray(wave),
        lsf_fwhm=jnp.full(wave.shape, lsf_fwhm),
    )  # fmt: skip


def cube_from_spectra(flux, variance, tel: rx.Telescope, redshift: float = Z_OBS) -> rx.Cube:
    """A Cube of spectra (n_x, n_y, n_wave) on `tel`'s pixels, with `tel`'s LSF recorded."""
    flux = jnp.asarray(flux, jnp.float64)
    zero = jnp.asarray(0)
    diagnostics = rx.Diagnostics(
        n_particles=zero, n_clipped=zero, clipped_mass_fraction=jnp.asarray(0.0),
        n_outside=zero, outside_mass_fraction=jnp.asarray(0.0), n_lsf_clipped=zero,
    )  # fmt: skip
    return rx.Cube(
        flux=flux, variance=jnp.asarray(variance, jnp.float64),
        wavelength=jnp.asarray(tel.wavelength, jnp.float64),
        mask=jnp.ones(flux.shape[:2], bool), diagnostics=diagnostics,
        redshift=jnp.asarray(redshift, jnp.float64), spaxel_size=float(tel.spaxel_size),
        ra=0.0, dec=0.0, flux_unit=1e-20, wavelength_sampling="linear",
        telescope=tel.name, lsf_fwhm=jnp.asarray(tel.lsf_fwhm, jnp.float64),
    )  # fmt: skip
