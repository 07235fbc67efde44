"""Self-checks of the plain-NumPy reference model (numpy only, fast)."""

import sys
from pathlib import Path

import numpy as np
import pytest


sys.path.insert(0, str(Path(__file__).parent))
from reference import (
    deposit_weights,
    orient,
    pixel_edges,
    rebin,
    reference_cube_direct,
    reference_cube_working_grid,
    ssp_weights,
)


C = 299792.458
LSUN = 3.828e33
MPC = 3.0856775814913673e24
LINES = (3934.0, 4861.0, 5175.0, 6563.0, 8542.0)


def make_ssp():
    """Tiny synthetic SSP grid: 3 ages x 2 Z, 3000-9000 A at 1 A."""
    ages = np.array([0.1, 1.0, 10.0])
    zs = np.array([0.004, 0.02])
    wave = np.arange(3000.0, 9000.5, 1.0)
    flux = np.empty((3, 2, wave.size))
    for a in range(3):
        for z in range(2):
            spec = 1e-4 * (wave / 5000.0) ** (-2.0 + 1.5 * a) * (1.0 + 0.3 * z) / (1 + a)
            for lam in LINES:
                spec *= 1.0 - (0.3 + 0.1 * z) * np.exp(-0.5 * ((wave - lam) / (3.0 + a)) ** 2)
            flux[a, z] = spec
    return dict(ssp_age=ages, ssp_metallicity=zs, ssp_wavelength=wave, ssp_flux=flux)


def base_kwargs(**overrides):
    kw = dict(
        make_ssp(),
        redshift=0.02,
        d_l=90.0,
        d_a=85.0,
        inclination=0.0,
        position_angle=-90.0,
        spaxel_size=0.5,
        n_x=10,
        n_y=10,
        telescope_wavelength=np.arange(2900.0, 9600.0, 1.25),
    )
    kw.update(overrides)
    return kw


def kpc_per_arcsec(d_a):
    return d_a * 1000.0 / (180.0 / np.pi * 3600.0)


def particles(n, seed=0, radius_pix=2.5, spaxel_size=0.5, d_a=85.0):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n, 3))
    pos *= radius_pix * spaxel_size * kpc_per_arcsec(d_a) / np.linalg.norm(pos, axis=1)[:, None]
    pos *= rng.uniform(0, 1, size=(n, 1))
    return dict(
        position=pos,
        velocity=rng.normal(scale=150.0, size=(n, 3)),
        mass=rng.uniform(1e5, 1e6, size=n),
        age=10 ** rng.uniform(-1.5, 1.2, size=n),
        metallicity=10 ** rng.uniform(-2.6, -1.5, size=n),
    )


def brute_rebin(a, f, b):
    ov = np.clip(
        np.minimum(a[1:, None], b[None, 1:]) - np.maximum(a[:-1, None], b[None, :-1]),
        0,
        None,
    )
    return (f * np.diff(a)) @ (ov / np.diff(a)[:, None]) / np.diff(b)


def test_pixel_edges():
    np.testing.assert_allclose(pixel_edges([1.0, 2.0, 3.0]), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(pixel_edges([1.0, 2.0, 4.0]), [0.5, 1.5, 3.0, 5.0])


def test_rebin_conserves_flux_and_identity():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = np.sort(rng.uniform(10, 20, size=rng.integers(5, 60)))
        f = rng.uniform(0, 3, size=a.size - 1)
        b = np.sort(
            np.concatenate(
                [
                    [a[0] - rng.uniform(0, 2), a[-1] + rng.uniform(0, 2)],
                    rng.uniform(5, 25, size=rng.integers(1, 40)),
                ]
            )
        )
        out = rebin(a, f, b)
        np.testing.assert_allclose(np.sum(out * np.diff(b)), np.sum(f * np.diff(a)), rtol=1e-12)
        np.testing.assert_allclose(out, brute_rebin(a, f, b), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rebin(a, f, a), f, rtol=1e-10, atol=1e-12)
    # no coverage -> exactly zero; leading dimensions are broadcast
    assert np.all(rebin([1.0, 2.0], [5.0], [3.0, 4.0, 5.0]) == 0.0)
    ff = rng.uniform(size=(3, 2, 9))
    a, b = np.linspace(0, 1, 10), np.linspace(-0.1, 1.3, 7)
    np.testing.assert_allclose(rebin(a, ff, b)[2, 1], rebin(a, ff[2, 1], b), rtol=1e-14)


def test_ssp_weights():
    ages, zs = np.array([0.1, 1.0, 10.0]), np.array([0.004, 0.02])
    w = {(i, j): v for i, j, v in ssp_weights(1.0, 0.02, ages, zs) if v}
    assert w == {(1, 1): 1.0}
    w = {(i, j): v for i, j, v in ssp_weights(50.0, 1e-5, ages, zs) if v}  # clipped
    assert w == {(2, 0): 1.0}
    wl = ssp_weights(np.sqrt(10.0) * 0.1, np.sqrt(0.004 * 0.02), ages, zs)
    np.testing.assert_allclose(sorted(v for *_, v in wl), [0.25] * 4, rtol=1e-12)
    assert {(i, j) for i, j, _ in wl} == {(0, 0), (1, 0), (0, 1), (1, 1)}


def test_deposit_weights():
    rng = np.random.default_rng(2)
    for px, py in rng.uniform(0.5, 9.5, size=(200, 2)):
        assert sum(w for *_, w in deposit_weights(px, py, 10, 10, "cic")) == pytest.approx(
            1.0, abs=1e-14
        )
        assert deposit_weights(px, py, 10, 10, "nearest") == [(int(px), int(py), 1.0)]
    cells = [c for c in deposit_weights(3.5, 7.5, 10, 10, "cic") if c[2] != 0.0]
    assert cells == [(3, 7, 1.0)]
    assert sum(w for *_, w in deposit_weights(0.25, 5.5, 10, 10, "cic")) == pytest.approx(0.75)
    assert deposit_weights(-0.1, 5.0, 10, 10, "nearest") == []


def test_orient():
    # The galaxy's +z is tilted by i from the direction to the observer: a velocity
    # along it approaches (v_los = -cos i; z is away from the observer).
    for inc in (0.0, 30.0, 60.0, 90.0, 135.0):
        _, v = orient(np.zeros((1, 3)), [[0.0, 0.0, 1.0]], inc, 17.0)
        assert v[0, 2] == pytest.approx(-np.cos(np.deg2rad(inc)), abs=1e-15)
    # i = 90: the disk's z-axis lies in the sky plane, at PA + 90 (here 0: North)
    p, _ = orient([[0.0, 0.0, 1.0]], np.zeros((1, 3)), 90.0, -90.0)
    np.testing.assert_allclose(p[0], [0.0, 1.0, 0.0], atol=1e-15)
    # PA = -90 with i = 0: galaxy x West, y North, z toward the observer (sky z flipped);
    # the map preserves norms and has det -1 ((West, North, away) is left-handed).
    x = np.random.default_rng(3).normal(size=(50, 3))
    np.testing.assert_allclose(orient(x, x, 0.0, -90.0)[0], x * [1.0, 1.0, -1.0], atol=1e-15)
    p, v = orient(x, x, 37.0, 123.0)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), np.linalg.norm(x, axis=1), rtol=1e-13)
    matrix = orient(np.eye(3), np.eye(3), 37.0, 123.0)[0].T
    assert np.linalg.det(matrix) == pytest.approx(-1.0, abs=1e-13)


def single_particle(ix=5, iy=5, age=1.0, z=0.02, vel=(0.0, 0.0, 0.0), mass=1e6, **kw):
    kw = base_kwargs(**kw)
    s = kpc_per_arcsec(kw["d_a"]) * kw["spaxel_size"]
    pos = [[(ix + 0.5 - kw["n_x"] / 2) * s, (iy + 0.5 - kw["n_y"] / 2) * s, 0.3]]
    kw.update(
        position=np.array(pos),
        velocity=np.array([vel]),
        mass=np.array([mass]),
        age=np.array([age]),
        metallicity=np.array([z]),
    )
    return kw


@pytest.mark.parametrize("deposit", ["cic", "nearest"])
def test_single_particle_at_rest(deposit):
    kw = single_particle(ix=6, iy=3, deposit=deposit, redshift=0.05)
    cube = reference_cube_direct(**kw)
    d, mass, tmpl = 1.05, 1e6, kw["ssp_flux"][1, 1]
    scale = mass * LSUN / (4 * np.pi * (kw["d_l"] * MPC) ** 2) / 1e-20
    tel_e = pixel_edges(kw["telescope_wavelength"])
    expected = rebin(pixel_edges(kw["ssp_wavelength"]) * d, tmpl * scale / d, tel_e)
    np.testing.assert_allclose(cube[6, 3], expected, rtol=1e-9, atol=1e-12 * expected.max())
    # total integrated flux = scale * integral of the template (full coverage)
    total = np.sum(cube * np.diff(tel_e))
    np.testing.assert_allclose(total, scale * np.sum(tmpl * 1.0), rtol=1e-10)
    # partial coverage: telescope 4000-8000 A sees rest range [lo, hi] / D
    tel = np.arange(4000.0, 8000.0, 2.0)
    kw["telescope_wavelength"] = tel
    lo, hi = pixel_edges(tel)[[0, -1]] / d
    se = pixel_edges(kw["ssp_wavelength"])
    overlap = np.clip(np.minimum(se[1:], hi) - np.maximum(se[:-1], lo), 0, None)
    total = np.sum(reference_cube_direct(**kw) * np.diff(pixel_edges(tel)))
    np.testing.assert_allclose(total, scale * np.sum(tmpl * overlap), rtol=1e-10)
    # independent brute-force resampling on a coarse grid
    kw["telescope_wavelength"] = np.arange(3200.0, 9800.0, 20.0)
    spec = reference_cube_direct(**kw)[6, 3]
    brute = brute_rebin(se * d, tmpl * scale / d, pixel_edges(kw["telescope_wavelength"]))
    np.testing.assert_allclose(spec, brute, rtol=1e-9, atol=1e-12 * brute.max())


def test_total_flux_invariant_under_position_angle():
    kw = base_kwargs(inclination=55.0, **particles(100, seed=4))
    totals = [
        reference_cube_direct(**dict(kw, position_angle=pa)).sum() for pa in (0.0, 37.0, 123.0)
    ]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-10)


def test_doppler_shift_moves_line():
    kw = single_particle(
        vel=(0.0, 0.0, -400.0),  # i = 0: the galaxy's +z points at the observer
        redshift=0.03,
        telescope_wavelength=np.arange(2900.0, 9600.0, 1.0),
    )
    wave = kw["ssp_wavelength"]
    kw["ssp_flux"] = np.broadcast_to(
        1.0 - 0.5 * np.exp(-0.5 * ((wave - 5000.0) / 2.0) ** 2), (3, 2, wave.size)
    ).copy()
    beta = 400.0 / C
    d = 1.03 * np.sqrt((1 + beta) / (1 - beta))
    spec = reference_cube_direct(**kw)[5, 5]
    tel = kw["telescope_wavelength"]
    window = np.abs(tel - 5000.0 * d) < 40.0
    depth = 1.0 - spec[window] / np.median(spec[window])
    centroid = np.sum(tel[window] * depth) / np.sum(depth)
    assert centroid == pytest.approx(5000.0 * d, abs=0.05)
    assert abs(centroid - 5000.0 * 1.03) > 5.0  # the velocity shift is resolved


def test_direct_and_working_grid_agree():
    kw = base_kwargs(inclination=40.0, position_angle=20.0, **particles(60, seed=5))
    dln = 5e-5  # ~0.25 A at 5000 A
    rest_log = np.arange(np.log(2990.0), np.log(9020.0), dln)
    obs_log = np.arange(np.log(2950.0), np.log(9550.0), dln)
    a = reference_cube_direct(**kw)
    b = reference_cube_working_grid(**kw, rest_log_edges=rest_log, obs_log_edges=obs_log)
    assert a.shape == b.shape == (10, 10, kw["telescope_wavelength"].size)
    width = np.diff(pixel_edges(kw["telescope_wavelength"]))
    np.testing.assert_allclose(np.sum(b * width), np.sum(a * width), rtol=1e-10)
    np.testing.assert_allclose(
        np.sum(b * width, -1), np.sum(a * width, -1), rtol=1e-9, atol=1e-9 * a.max()
    )
    bright = a.sum(-1) > 0.05 * a.sum(-1).max()
    assert np.max(np.abs(b - a)[bright] / a[bright].max(-1, keepdims=True)) < 0.02
