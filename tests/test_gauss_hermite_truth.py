"""Gauss–Hermite truth maps (`rx.gauss_hermite_truth_maps`): V, σ, h3, h4 fitted to the
particles' LOSVD, against particles drawn in NumPy from a known Gauss–Hermite LOSVD, and
the PSF-combined (observed) version against an independent SciPy fit of the combined
histograms."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from .cases import observation, tiny_ssp, tiny_telescope


N_PARTICLES = 200_000
N_SIDE = 5  # spaxels per side; both tests share the telescope and N (one compilation)


def telescope():
    import rubix_eqx as rx

    return tiny_telescope(n=N_SIDE, psf=rx.PSF(kind="gaussian", fwhm=0.8))


TRUE = {"velocity": 40.0, "dispersion": 120.0, "h3": 0.1, "h4": 0.05}


def gauss_hermite(y, h3, h4):
    """exp(−y²/2)/√2π [1 + h3 H3(y) + h4 H4(y)], tabulated directly."""
    herm3 = (2 * math.sqrt(2) * y**3 - 3 * math.sqrt(2) * y) / math.sqrt(6)
    herm4 = (4 * y**4 - 12 * y**2 + 3) / math.sqrt(24)
    return np.exp(-0.5 * y**2) / math.sqrt(2 * math.pi) * (1 + h3 * herm3 + h4 * herm4)


def draw(rng, n, velocity, dispersion, h3, h4):
    """`n` velocities (km/s) from the GH LOSVD by rejection sampling over ±6σ."""
    grid = np.linspace(-6, 6, 4001)
    profile = gauss_hermite(grid, h3, h4)
    assert profile.min() >= 0  # a true density (h4 < 0 GH profiles go negative in the wings)
    top = 1.05 * profile.max()
    out = []
    while sum(a.size for a in out) < n:
        y = rng.uniform(-6, 6, 4 * n)
        out.append(y[rng.uniform(0, top, y.size) < gauss_hermite(y, h3, h4)])
    return velocity + dispersion * np.concatenate(out)[:n]


def galaxy_at(v_los, spaxel, n_side):
    """Particles at the centre of `spaxel` (face-on: v_los = −v_z) of 0.5″ spaxels at
    z = 0.05, one population."""
    import rubix_eqx as rx

    obs = observation(inclination=0.0, position_angle=0.0)
    kpc_per_spaxel = 0.5 * float(obs.angular_diameter_distance()) * 1e3 * math.pi / 180 / 3600
    n = v_los.size
    offset = np.zeros((n, 3))
    # face-on at position angle 0: sky x = −galaxy y, sky y = galaxy x
    offset[:, 1] = -(spaxel[0] + 0.5 - n_side / 2) * kpc_per_spaxel
    offset[:, 0] = (spaxel[1] + 0.5 - n_side / 2) * kpc_per_spaxel
    velocity = np.zeros((n, 3))
    velocity[:, 2] = -v_los
    return rx.Galaxy.from_arrays(
        position=offset, velocity=velocity, mass=np.full(n, 1e4), age=np.full(n, 5.0),
        metallicity=np.full(n, 0.019), dtype=jnp.float64,
    ), obs  # fmt: skip


def test_gauss_hermite_truth_recovers_the_drawn_losvd():
    """One spaxel of 2·10⁵ particles drawn from V = 40, σ = 120 km/s, h3 = 0.1, h4 = 0.05:
    the fitted V and σ within 1 % of σ, h3 and h4 within 0.01; the moment-based h3, h4 of
    `truth_maps` (skewness/kurtosis) are far off, the moment V, σ are not those of the
    profile either."""
    import rubix_eqx as rx

    rng = np.random.default_rng(1)
    v = draw(rng, N_PARTICLES, **TRUE)
    galaxy, obs = galaxy_at(v, (2, 2), N_SIDE)
    ssp, tel = tiny_ssp(), telescope()
    maps = rx.gauss_hermite_truth_maps(galaxy, obs, tel, ssp, deposit="nearest")
    moments = rx.truth_maps(galaxy, obs, tel, ssp, deposit="nearest")
    assert np.array_equal(np.asarray(maps.mask), np.asarray(moments.mask))
    assert bool(maps.mask[2, 2]) and int(np.asarray(maps.mask).sum()) == 1
    got = {k: float(getattr(maps, k)[2, 2]) for k in TRUE}
    print("GH truth", {k: round(x, 4) for k, x in got.items()}, "moments",
          {k: round(float(getattr(moments, k)[2, 2]), 4) for k in TRUE})  # fmt: skip
    sigma = TRUE["dispersion"]
    assert abs(got["velocity"] - TRUE["velocity"]) < 0.01 * sigma
    assert abs(got["dispersion"] / sigma - 1) < 0.01
    assert abs(got["h3"] - TRUE["h3"]) < 0.01 and abs(got["h4"] - TRUE["h4"]) < 0.01
    assert abs(float(moments.h3[2, 2]) - TRUE["h3"]) > 0.02  # why the GH truth is needed
    np.testing.assert_array_equal(np.asarray(maps.log_age), np.asarray(moments.log_age))
    np.testing.assert_array_equal(np.asarray(maps.flux), np.asarray(moments.flux))


def scipy_fit(centres, hist):
    """Independent least-squares GH fit (SciPy, profile at the bin centres)."""
    from scipy.optimize import curve_fit

    density = hist / (hist.sum() * (centres[1] - centres[0]))
    model = lambda x, a, v, s, h3, h4: a * gauss_hermite((x - v) / s, h3, h4) / s  # noqa: E731
    mean = np.sum(density * centres) / density.sum()
    p, _ = curve_fit(model, centres, density, p0=[1.0, mean, 100.0, 0.0, 0.0])
    return p[1:]


def test_observed_gauss_hermite_truth_combines_losvds_through_the_psf():
    """Two spaxels of different LOSVDs (V = −80 and +120 km/s) seen through a Gaussian PSF:
    in each spaxel the observed GH parameters are those SciPy fits to the PSF-weighted sum
    of the two NumPy histograms (weights: the PSF's image of each source spaxel)."""
    import rubix_eqx as rx

    rng = np.random.default_rng(2)
    n_side = N_SIDE
    tel = telescope()
    ssp = tiny_ssp()
    sources = [((2, 1), -80.0, 90.0, 0.0, 0.0), ((2, 3), 120.0, 60.0, -0.05, 0.04)]
    parts, velocities = [], []
    for spaxel, v0, s0, h3, h4 in sources:
        v = draw(rng, N_PARTICLES // 2, v0, s0, h3, h4)
        velocities.append(v)
        parts.append(galaxy_at(v, spaxel, n_side))
    obs = parts[0][1]
    galaxy = rx.Galaxy.from_arrays(
        **{k: np.concatenate([np.asarray(getattr(g, k)) for g, _ in parts])
           for k in ("position", "velocity", "mass", "age", "metallicity")},
        dtype=jnp.float64,
    )  # fmt: skip
    plain = rx.truth_maps(galaxy, obs, tel, ssp, deposit="nearest")
    assert np.asarray(plain.mask).sum() == 2  # each source in its spaxel
    assert all(bool(plain.mask[spaxel]) for spaxel, *_ in sources)
    maps = rx.gauss_hermite_truth_maps(galaxy, obs, tel, ssp, deposit="nearest", observed=True)
    psf = rx.PSFConvolution.build(tel)
    images = []
    for spaxel, *_ in sources:
        delta = np.zeros((n_side, n_side, 1))
        delta[spaxel] = float(plain.flux[spaxel])
        images.append(np.asarray(psf.apply(jnp.asarray(delta)))[..., 0])
    edges = np.arange(-1000.0, 1000.0 + 5, 10.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    hists = [np.histogram(v, edges)[0] / v.size for v in velocities]
    worst = {k: 0.0 for k in TRUE}
    for spaxel in [(2, 1), (2, 2), (2, 3), (1, 2), (3, 1)]:
        combined = images[0][spaxel] * hists[0] + images[1][spaxel] * hists[1]
        want = dict(zip(TRUE, scipy_fit(centres, combined)))
        assert bool(maps.mask[spaxel])
        for k in TRUE:
            worst[k] = max(worst[k], abs(float(getattr(maps, k)[spaxel]) - want[k]))
    print(
        "observed GH truth − SciPy (worst of 5 spaxels):", {k: f"{v:.2g}" for k, v in worst.items()}
    )
    assert worst["velocity"] < 0.5 and worst["dispersion"] < 0.5
    assert worst["h3"] < 0.005 and worst["h4"] < 0.005
    # the mixed spaxel between the sources has a broad, non-Gaussian LOSVD
    assert float(maps.dispersion[2, 2]) > 90.0 and abs(float(maps.h4[2, 2])) > 0.02
    with pytest.raises(ValueError, match="velocity_bin"):
        rx.gauss_hermite_truth_maps(galaxy, obs, tel, ssp, velocity_bin=0.0)
