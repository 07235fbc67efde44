"""The quicklook PNG: rendered from a tiny-SSP cube and its truth maps."""

import struct

import jax
import numpy as np
import pytest

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


def test_quicklook_png(tmp_path):
    import matplotlib.image
    import rubix_eqx as rx
    from rubix_eqx._quicklook import quicklook

    # the same pipeline, galaxy shape and sky position as tests/test_io.py: when both run
    # in one session the compiled forward model is reused
    ssp, tel = tiny_ssp(), tiny_telescope().replace(n_x=6, n_y=8)
    pipe = rx.Pipeline(tel, ssp, psf=False, noise=rx.Noise(snr=1e5))
    obs = observation(inclination=0.0, position_angle=0.0)
    obs = rx.Observation(redshift=obs.redshift, inclination=obs.inclination,
                         position_angle=obs.position_angle, ra=150.0, dec=30.0)  # fmt: skip
    galaxy = random_galaxy(1, 300, size_kpc=1.0)
    cube = pipe(galaxy, obs, key=jax.random.key(2))
    maps = rx.truth_maps(galaxy, obs, tel, ssp)
    path = tmp_path / "quicklook.png"
    fig = quicklook(cube, path, maps=maps, observation=obs)
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1200, 750)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (750, 1200) and image[..., :3].std() > 0.05  # not blank
    assert fig.get_suptitle() == "tiny   z = 0.05   i = 0°   PA = 0°"
    spectrum = fig.axes[-1]
    assert spectrum.get_xlabel() == "observed wavelength (Å)" and "erg" in spectrum.get_ylabel()
    np.testing.assert_allclose(spectrum.lines[0].get_ydata(), np.asarray(cube.flux)[3, 4])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


@pytest.mark.parametrize(
    "wave, want",
    [
        ((4800.0, 6000.0), (5000.0, 5800.0)),  # covers the V-like band
        ((5500.0, 9000.0), (5500.0, 5800.0)),  # partly
        ((6000.0, 9000.0), (6000.0, 6800.0)),  # redward: the closest window of 800 Å
        ((3000.0, 4500.0), (3700.0, 4500.0)),  # blueward
        ((6000.0, 6300.0), (6000.0, 6300.0)),  # narrower than the band: everything
    ],
)
def test_band_window(wave, want):
    from rubix_eqx._quicklook import band_window

    assert band_window(np.array(wave)) == want
