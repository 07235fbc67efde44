"""`fit_spaxels` on a cube no part of this library made.

The spectra are the exact float64 reference (tests/exact_reference.py: an E-MILES
population, a Gaussian LOSVD and the declared LSF, integrated over the pixels, no
lattice), with Gaussian noise at S/N 80, written as a MUSE-DRP-style FITS file with
astropy alone (tests/foreign_files.py: CD matrix, DATA/STAT, no keyword of ours). The
fitter knows only the redshift and the telescope's declared LSF.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx

from . import exact_reference as ref
from .foreign_files import write_muse_drp_cube


Z = 0.05
SIGMAS = (40.0, 80.0, 150.0)  # km/s, one row of 9 spaxels each
N_COLUMNS = 9
LSF_FWHM = 3.6  # Å, declared: broader than E-MILES × (1+z) plus the pixels everywhere
SNR = 80.0
AGE, METALLICITY = 5.0, 0.008  # Gyr, Z: near a node of the grid


@pytest.fixture(scope="module")
def foreign_fit(tmp_path_factory):
    pytest.importorskip("ppxf")
    ssp = rx.SSPGrid.load("miles")
    ages, metals = np.asarray(ssp.age), np.asarray(ssp.metallicity)
    i_age = int(np.argmin(np.abs(np.log(ages / AGE))))
    i_z = int(np.argmin(np.abs(np.log(metals / METALLICITY))))
    template = np.asarray(ssp.flux[i_age, i_z], np.float64)
    tel = rx.Telescope.preset(
        "MUSE-WFM", n_x=N_COLUMNS, n_y=len(SIGMAS), wavelength={"stop": 7000.0}
    )
    tel = tel.replace(lsf_fwhm=jnp.full(tel.n_wave, LSF_FWHM))
    wave = np.asarray(tel.wavelength, np.float64)
    rng = np.random.default_rng(3)
    velocity = rng.uniform(-150.0, 150.0, (N_COLUMNS, len(SIGMAS)))
    flux = np.zeros((N_COLUMNS, len(SIGMAS), wave.size))
    variance = np.zeros_like(flux)
    for iy, sigma in enumerate(SIGMAS):
        for ix in range(N_COLUMNS):
            spectrum, clipped = ref.exact_spectra(
                np.asarray(ssp.wavelength, np.float64), template[None],
                np.asarray(ssp.fwhm, np.float64), [1e4], [velocity[ix, iy]], Z, wave,
                np.full(wave.size, LSF_FWHM), losvd_sigma=sigma,
            )  # fmt: skip
            assert not clipped.any()
            noise = np.median(spectrum) / SNR
            flux[ix, iy] = spectrum + noise * rng.normal(size=wave.size)
            variance[ix, iy] = noise**2
    path = tmp_path_factory.mktemp("foreign") / "DATACUBE_FINAL.fits"
    write_muse_drp_cube(path, flux, variance, wave[0], wave[1] - wave[0], 0.2)
    cube = rx.io.read_cube(path)
    assert cube.spaxel_size == pytest.approx(0.2) and cube.lsf_fwhm is None
    fit = rx.fit.fit_spaxels(cube, ssp, tel, rx.Observation(redshift=Z))
    truth = {
        "log_age": math.log10(ages[i_age]) + 9,
        "metallicity": math.log10(metals[i_z] / 0.019),
    }
    return fit, velocity, truth


@pytest.mark.parametrize("row, sigma", list(enumerate(SIGMAS)))
def test_foreign_cube_recovers_kinematics_and_population(foreign_fit, row, sigma):
    fit, velocity, truth = foreign_fit
    assert np.asarray(fit.converged)[:, row].all()
    maps = fit.maps
    disp = np.median(np.asarray(maps.dispersion)[:, row])
    dv = np.median(np.abs(np.asarray(maps.velocity)[:, row] - velocity[:, row]))
    d_age = np.median(np.asarray(maps.log_age)[:, row]) - truth["log_age"]
    d_z = np.median(np.asarray(maps.metallicity)[:, row]) - truth["metallicity"]
    print(f"σ={sigma:g}: fitted σ {disp:.2f} ({disp / sigma - 1:+.2%}), |ΔV| {dv:.2f} km/s, "
          f"Δlog age {d_age:+.3f}, Δ[M/H] {d_z:+.3f}")  # fmt: skip
    assert abs(disp / sigma - 1) < (0.05 if sigma < 80 else 0.03)
    assert dv < 2.0
    assert abs(d_age) < 0.05 and abs(d_z) < 0.05
