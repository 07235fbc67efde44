"""Gauss–Hermite LOSVDs: the analytic Fourier transform, and `fit_spaxels(moments=4)` on
spectra made by an independent reference (direct convolution in velocity space on real
pixels, tests/gauss_hermite_reference.py; no lattice, no FFT)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx.fit._losvd import gauss_hermite_ft

from . import gauss_hermite_reference as ghr, spaxel_cases as sc
from .test_papercuts import count_compilations


SNR = 100.0
# (V km/s, σ km/s, h3, h4): h3, h4 = ±0.1 with both signs of each
CASES = ((120.0, 200.0, 0.1, -0.1), (-80.0, 200.0, -0.1, 0.1))
N_NOISE = 3  # noise realisations per case


@pytest.mark.parametrize("h3, h4", [(0.1, -0.1), (-0.1, 0.1), (0.0, 0.0), (0.25, 0.2)])
def test_fourier_transform_matches_fft_of_sampled_losvd(h3, h4):
    """L̂(ω) against Δu Σ L(u_n) e^{−iω u_n} of the sampled function (NumPy FFT)."""
    velocity, sigma, du, n = 3.7, 2.3, 0.01, 1 << 14  # pixels
    u = du * (np.arange(n) - n // 2)
    sampled = ghr.gauss_hermite_losvd(u, velocity, sigma, h3, h4)
    assert np.sum(sampled) * du == pytest.approx(1.0, abs=1e-12)  # unit integral
    omega = 2 * np.pi * np.fft.fftfreq(n, du)
    numeric = du * np.fft.fft(np.fft.ifftshift(sampled))  # u_0 = 0 first
    analytic = np.asarray(gauss_hermite_ft(jnp.asarray(omega), velocity, sigma, h3, h4))
    assert np.max(np.abs(analytic - numeric)) < 1e-12
    if h3 == h4 == 0:  # moments=2: the plain Gaussian
        gauss = np.exp(-1j * omega * velocity - 0.5 * (omega * sigma) ** 2)
        assert np.max(np.abs(np.asarray(gauss_hermite_ft(omega, velocity, sigma)) - gauss)) < 1e-15


@pytest.fixture(scope="module")
def reference_spectra():
    ssp, tel = sc.lined_ssp(), sc.telescope(len(CASES) * N_NOISE)
    wave = np.asarray(tel.wavelength)
    clean = [
        ghr.gauss_hermite_spectrum(
            np.asarray(ssp.wavelength),
            np.asarray(ssp.flux[3, 1]),
            sc.SSP_FWHM,
            sc.Z_OBS,
            wave,
            np.asarray(tel.lsf_fwhm),
            v,
            s,
            h3,
            h4,
        )  # fmt: skip
        for v, s, h3, h4 in CASES
    ]
    return ssp, tel, clean


def noisy_cube(clean, tel, seed):
    rng = np.random.default_rng(seed)
    flux, var = [], []
    for spectrum in clean:
        noise = np.median(spectrum) / SNR
        for _ in range(N_NOISE):
            flux.append(spectrum + noise * rng.normal(size=spectrum.size))
            var.append(np.full(spectrum.size, noise**2))
    return sc.cube_from_spectra(np.array(flux)[:, None], np.array(var)[:, None], tel)


def test_moments_4_recovers_reference_losvds(reference_spectra):
    """S/N 100: V within 2 km/s, σ within 3 %, h3, h4 within 0.02 (issue #16), errors
    consistent with the scatter; a second call on a same-shaped cube compiles nothing."""
    ssp, tel, clean = reference_spectra
    obs = rx.Observation(redshift=sc.Z_OBS)
    fits, counts = [], []
    for seed in (1, 2):
        with count_compilations() as count:
            fits.append(jax.block_until_ready(
                rx.fit.fit_spaxels(noisy_cube(clean, tel, seed), ssp, tel, obs, moments=4)
            ))  # fmt: skip
        counts.append(count())
    assert counts[1] == 0, counts
    got = {
        k: np.concatenate([np.asarray(getattr(f.maps, k))[:, 0].reshape(len(CASES), N_NOISE)
                           for f in fits], axis=1)
        for k in ("velocity", "dispersion", "h3", "h4")
    }  # fmt: skip
    err = {
        k: np.concatenate([np.asarray(getattr(f, f"{k}_err"))[:, 0].reshape(len(CASES), N_NOISE)
                           for f in fits], axis=1)
        for k in got
    }  # fmt: skip
    for fit in fits:
        assert np.all(np.asarray(fit.status) == 0)
        assert np.median(np.asarray(fit.chi2)) == pytest.approx(1.0, abs=0.1)
    for c, (v, s, h3, h4) in enumerate(CASES):
        med = {k: np.median(got[k][c]) for k in got}
        print(f"case {c}: V {med['velocity']:.2f} ({v:g}), σ {med['dispersion']:.2f} ({s:g}), "
              f"h3 {med['h3']:+.4f} ({h3:+g}), h4 {med['h4']:+.4f} ({h4:+g}); 1σ: "
              + ", ".join(f"{k} {np.median(e[c]):.3g}" for k, e in err.items()))  # fmt: skip
        # the thresholds, on the median of the 2 × N_NOISE realisations
        assert abs(med["velocity"] - v) < 2.0
        assert abs(med["dispersion"] / s - 1) < 0.03
        assert abs(med["h3"] - h3) < 0.02
        assert abs(med["h4"] - h4) < 0.02
        # every realisation within 4σ of its error (the errors mean something)
        for k, t in zip(got, (v, s, h3, h4)):
            assert np.all(np.abs(got[k][c] - t) < 4 * err[k][c]), (k, got[k][c], err[k][c])


def test_moments_must_be_2_or_4(reference_spectra):
    ssp, tel, clean = reference_spectra
    with pytest.raises(ValueError, match="moments"):
        rx.fit.fit_spaxels(noisy_cube(clean, tel, 0), ssp, tel, moments=6)
