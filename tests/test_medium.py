"""Air and vacuum: templates in air land on a vacuum grid at their vacuum wavelengths."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from astropy.io import fits

from . import exact_reference as ref


H_ALPHA_AIR = 6562.80  # Å
H_ALPHA_VACUUM = 6564.61  # Å (NIST)


def grid_of(wave, spectrum, fwhm) -> rx.SSPGrid:
    """The same spectrum at every node of a 2 × 2 grid."""
    return rx.SSPGrid(
        age=jnp.asarray([1.0, 10.0]),
        metallicity=jnp.asarray([0.01, 0.02]),
        wavelength=jnp.asarray(wave),
        flux=jnp.asarray(np.broadcast_to(spectrum, (2, 2, wave.size)).copy()),
        fwhm=jnp.full(wave.shape, fwhm),
        remaining_mass_fraction=jnp.ones((2, 2)),
    )


def line_grid() -> rx.SSPGrid:
    wave = np.arange(3000.0, 10500.0, 0.5)
    spectrum = ref.line_templates(wave, [H_ALPHA_AIR], line_flux=5.0, continuum=0.1, fwhm=2.0)
    return grid_of(wave, spectrum, 2.0)


def centroid(wave, flux, centre, half=12.0) -> float:
    inside = np.abs(wave - centre) < half
    line = flux[inside] - np.median(flux[inside][[0, 1, -2, -1]])
    return float(np.sum(line * wave[inside]) / np.sum(line))


@pytest.mark.parametrize("preset, expected", [("MaNGA", H_ALPHA_VACUUM), ("MUSE-WFM", H_ALPHA_AIR)])
def test_line_lands_at_the_telescope_medium_wavelength(preset, expected, tmp_path):
    tel = rx.Telescope.preset(preset, n_x=1, n_y=1, spaxel_size=50.0, aperture="square")
    galaxy = rx.galaxy.single_population(1, age=3.0, metallicity=0.015)
    cube = rx.Pipeline(tel, line_grid(), psf=False)(galaxy, rx.Observation(distance=20.0))
    assert float(cube.redshift) == 0.0  # a distance alone: z = 0
    wave = np.asarray(cube.wavelength, np.float64)
    measured = centroid(wave, np.asarray(cube.flux[0, 0], np.float64), expected)
    assert measured == pytest.approx(expected, abs=0.02)
    rx.io.write_cube_fits(cube, tmp_path / "cube.fits")
    ctype = fits.getheader(tmp_path / "cube.fits", "DATA")["CTYPE3"]
    want = {"MaNGA": "WAVE-LOG", "MUSE-WFM": "AWAV"}[preset]
    assert ctype == want and cube.medium == tel.medium


def test_medium_conversion_against_an_independent_formula():
    """Ours (Ciddor 1996 / Morton 2000) against the IAU standard of Edlén (1966) as given
    by Morton (1991): within 0.01 Å over 3000–10000 Å."""
    from rubix_eqx._medium import air_to_vacuum, vacuum_to_air

    vac = np.linspace(3000.0, 10000.0, 50)
    s2 = (1e4 / vac) ** 2
    edlen = vac / (1 + 6.4328e-5 + 2.94981e-2 / (146 - s2) + 2.5540e-4 / (41 - s2))
    np.testing.assert_allclose(vacuum_to_air(vac), edlen, atol=0.01)
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(vac)), vac, atol=1e-8)
    assert float(air_to_vacuum(H_ALPHA_AIR)) == pytest.approx(H_ALPHA_VACUUM, abs=0.005)


def test_bad_medium_is_named():
    with pytest.raises(ValueError, match=r"`Telescope.medium` must be one of .*'water'"):
        rx.Telescope.preset("MUSE-WFM").replace(medium="water")
    cube = rx.Pipeline(
        rx.Telescope.preset("SAMI", n_x=1, n_y=1, aperture="square"), line_grid(), psf=False
    )(rx.galaxy.single_population(1), rx.Observation(distance=20.0))
    with pytest.raises(ValueError, match=r"`Cube.medium` must be 'air' or 'vacuum'; got 'glass'"):
        dataclasses.replace(cube, medium="glass")


def test_crop_to_coverage_leaves_the_lsf_margin():
    """At z = 0 E-MILES-like coverage ends inside MUSE's range: the cropped telescope is
    accepted by an LSF pipeline (before, the LSF margin was ignored and it raised)."""
    wave = np.arange(3000.0, 8950.0, 0.9)
    grid = grid_of(wave, np.ones(wave.size), 1.5)
    tel = rx.Telescope.preset("MUSE-WFM", n_x=2, n_y=2)
    with pytest.raises(rx.CoverageError):
        rx.Pipeline(tel, grid, psf=False).check_coverage(0.0)
    cropped = rx.crop_to_coverage(tel, grid, 0.0)
    pipe = rx.Pipeline(cropped, grid, psf=False)
    pipe.check_coverage(0.0)  # no error
    top = float(cropped.wavelength[-1])
    assert 8800.0 < top < 8950.0 / (1 + 1000.0 / 299792.458)
    cube = pipe(rx.galaxy.single_population(1), rx.Observation(distance=20.0))
    assert np.all(np.isfinite(np.asarray(cube.flux)))
    with pytest.raises(rx.CoverageError, match="fewer than 2 pixels"):
        rx.crop_to_coverage(tel, grid, 3.0)


def test_run_config_can_ask_for_the_crop(tmp_path):
    """`pipeline.crop_to_coverage: true` crops at the observation's redshift (here a
    distance alone, z = 0, where E-MILES stops inside MUSE's range)."""
    from rubix_eqx import config as rc

    config = {
        "galaxy": {"source": "synthetic", "n_stars": 100},
        "observation": {"distance": 20.0},
        "telescope": {"preset": "MUSE-WFM", "n_x": 2, "n_y": 2},
        "pipeline": {"crop_to_coverage": True, "psf": False, "allow_sharper_lsf": True},
        "output": {"directory": str(tmp_path)},
    }
    spec = rc.check_config(config)
    wave = np.arange(3000.0, 8950.0, 0.9)
    grid = grid_of(wave, np.ones(wave.size), 1.5)
    pipe = rc.build_pipeline_from(spec, grid)
    assert pipe.telescope.n_wave < spec.telescope.n_wave
    pipe.check_coverage(0.0)
    config["pipeline"]["crop_to_coverage"] = "yes"
    with pytest.raises(rc.ConfigError, match="pipeline.crop_to_coverage"):
        rc.check_config(config)
