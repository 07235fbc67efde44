"""Small shared test cases: a tiny SSP grid, telescopes and galaxies (no MILES data)."""

import jax.numpy as jnp
import numpy as np
import rubix_eqx as rx


Z_OBS = 0.05
N_X = N_Y = 10
SPAXEL = 0.5  # arcsec


def tiny_ssp(flat: bool = False, metal_slope: float = 0.0) -> rx.SSPGrid:
    """4 ages × 3 Z, 3000–8000 Å at 1 Å: smooth continua with absorption lines."""
    age = np.array([0.5, 2.0, 6.0, 12.0])
    metallicity = np.array([0.004, 0.019, 0.03])
    wave = np.arange(3000.0, 8000.5, 1.0)
    flux = np.empty((age.size, metallicity.size, wave.size))
    for i, a in enumerate(age):
        for j, z in enumerate(metallicity):
            continuum = 1e-3 / a * (wave / 5000.0) ** (0.5 * np.log10(a) + 1.0 + metal_slope * j)
            lines = sum(
                (0.2 + 0.05 * j + 0.02 * i) * np.exp(-0.5 * ((wave - c) / (1.5 + 0.3 * i)) ** 2)
                for c in (3934.0, 4861.0, 5175.0, 5270.0, 5890.0)
            )
            flux[i, j] = continuum * (1 - lines) if not flat else 1e-3
    return rx.SSPGrid(
        age=jnp.asarray(age),
        metallicity=jnp.asarray(metallicity),
        wavelength=jnp.asarray(wave),
        flux=jnp.asarray(flux),
        fwhm=jnp.full(wave.shape, 2.5),
        remaining_mass_fraction=jnp.ones((age.size, metallicity.size)),
    )


def tiny_telescope(
    start=4800.0, stop=6000.0, step=2.0, n=N_X, lsf_fwhm=5.0, psf=None, **kw
) -> rx.Telescope:
    wave = np.arange(start, stop + step / 2, step)
    return rx.Telescope(
        name="tiny",
        spaxel_size=SPAXEL,
        n_x=n,
        n_y=n,
        wavelength=jnp.asarray(wave),
        lsf_fwhm=jnp.full(wave.shape, lsf_fwhm),
        psf=psf,
        **kw,
    )


def random_galaxy(seed: int, n: int, size_kpc: float = 1.5) -> rx.Galaxy:
    rng = np.random.default_rng(seed)
    return rx.Galaxy.from_arrays(
        position=rng.normal(0, size_kpc, (n, 3)),
        velocity=rng.normal(0, 150.0, (n, 3)),
        mass=rng.uniform(1e4, 1e5, n),
        age=10 ** rng.uniform(np.log10(0.6), np.log10(11.0), n),
        metallicity=10 ** rng.uniform(np.log10(0.0045), np.log10(0.028), n),
        dtype=jnp.float64,
    )


def observation(**kw) -> rx.Observation:
    kw = {"redshift": Z_OBS, "inclination": 50.0, "position_angle": 20.0} | kw
    return rx.Observation(**{k: jnp.asarray(v, jnp.float64) for k, v in kw.items()})
