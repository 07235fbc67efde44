"""Spectra per second of `rx.fit.fit_spaxels` (moments 2 and 4) and `rx.fit.fit_mixture`
against pPXF itself (`ppxf.ppxf.ppxf`, installed with the `miles` extra), on the same
spectra, the same templates, moments and polynomial degree, timed in the same run; and
pPXF's regularised fit against ours on two-population spectra.

    python benchmarks/spaxel_fits.py [--n-spectra 24]

The spectra are the independent references of the tests (tests/gauss_hermite_reference.py,
tests/exact_reference.py: no lattice, no FFT) on the synthetic line-rich grid of
tests/spaxel_cases.py (5 ages × 3 Z, 1 Å MUSE-like pixels 4800–6400 Å, S/N 100).
pPXF gets the standard preparation (its own `log_rebin` of the de-redshifted spectrum,
the templates broadened to the galaxy's resolution and log-rebinned at the same
velscale), every template at once (its only mode), `degree=-1, mdegree=0` (ours fit no
polynomial), and only its `ppxf()` calls are timed. Ours are timed after a first,
compiling call on a same-shaped cube. Prints a table and writes
benchmarks/results/spaxel_fits.json.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np


jax.config.update("jax_enable_x64", True)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rubix_eqx as rx  # noqa: E402
from tests import (
    exact_reference as ref,  # noqa: E402
    gauss_hermite_reference as ghr,  # noqa: E402
    spaxel_cases as sc,  # noqa: E402
)


SNR = 100.0
I_AGE, I_Z = 3, 1  # the single-population template (5 Gyr, Z = 0.019)


def gh_spectra(ssp, tel, n, rng):
    """n noisy spectra with random Gauss–Hermite LOSVDs; returns flux, var, truths."""
    wave = np.asarray(tel.wavelength)
    flux, var, truth = [], [], []
    n_clean = max(1, n // 4)
    for k in range(n_clean):
        v, s = rng.uniform(-150, 150), rng.uniform(100, 220)
        h3, h4 = rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        clean = ghr.gauss_hermite_spectrum(
            np.asarray(ssp.wavelength), np.asarray(ssp.flux[I_AGE, I_Z]), sc.SSP_FWHM,
            sc.Z_OBS, wave, np.asarray(tel.lsf_fwhm), v, s, h3, h4,
        )  # fmt: skip
        for _ in range(math.ceil(n / n_clean)):
            noise = np.median(clean) / SNR
            flux.append(clean + noise * rng.normal(size=wave.size))
            var.append(np.full(wave.size, noise**2))
            truth.append((v, s, h3, h4))
    return np.array(flux[:n]), np.array(var[:n]), np.array(truth[:n])


def two_population_spectra(ssp, tel, fractions, rng):
    wave = np.asarray(tel.wavelength)

    def component(i_age):
        f, _ = ref.exact_spectra(
            np.asarray(ssp.wavelength), np.asarray(ssp.flux[i_age, I_Z]), sc.SSP_FWHM, 1.0,
            60.0, sc.Z_OBS, wave, np.asarray(tel.lsf_fwhm), losvd_sigma=120.0,
        )  # fmt: skip
        return f / f.mean()

    young, old = component(1), component(4)
    flux, var = [], []
    for f in fractions:
        clean = f * young + (1 - f) * old
        noise = np.median(clean) / SNR
        flux.append(clean + noise * rng.normal(size=wave.size))
        var.append(np.full(wave.size, noise**2))
    return np.array(flux), np.array(var)


def log_rebin_at(lam, flux, velscale):
    """Flux-conserving rebinning of a linear-λ spectrum onto ln λ pixels of `velscale`
    km/s (mean density per pixel), as `ppxf_util.log_rebin(..., velscale=...)`, which
    fails with NumPy 2 in ppxf 8.2.6 (`int()` of a 1-element array)."""
    edges = np.concatenate([[lam[0] - 0.5 * (lam[1] - lam[0])], 0.5 * (lam[1:] + lam[:-1]),
                            [lam[-1] + 0.5 * (lam[-1] - lam[-2])]])  # fmt: skip
    cumulative = np.concatenate([[0.0], np.cumsum(flux * np.diff(edges))])
    c = 299792.458
    m = int(np.log(edges[-1] / edges[0]) / (velscale / c))
    new = edges[0] * np.exp(velscale / c * np.arange(m + 1))
    out = np.diff(np.interp(new, edges, cumulative)) / np.diff(new)
    return out, np.log(np.sqrt(new[1:] * new[:-1]))


class PPXFSetup:
    """pPXF's inputs for spectra on `tel`'s linear pixels at redshift z."""

    def __init__(self, ssp, tel, regul_norm=True):
        from ppxf import ppxf_util

        self.util = ppxf_util
        z = sc.Z_OBS
        wave = np.asarray(tel.wavelength)
        self.rest = wave / (1 + z)
        self.range = self.rest[[0, -1]]
        _, self.ln_lam, velscale = ppxf_util.log_rebin(self.range, np.ones(wave.size))
        self.velscale = float(np.squeeze(velscale))
        fwhm_gal = float(np.asarray(tel.lsf_fwhm)[0]) / (1 + z)  # Å at rest
        sigma_diff = math.sqrt(fwhm_gal**2 - sc.SSP_FWHM**2) / ref.FWHM_PER_SIGMA  # Å
        lam_t = np.asarray(ssp.wavelength)
        step = lam_t[1] - lam_t[0]
        temps = []
        for i in range(ssp.age.shape[0]):
            for j in range(ssp.metallicity.shape[0]):
                t = ppxf_util.gaussian_filter1d(np.asarray(ssp.flux[i, j]), sigma_diff / step)
                t_log, ln_lam_t = log_rebin_at(lam_t, t, self.velscale)
                temps.append(t_log)
        temps = np.array(temps).T  # (n_pix_t, n_template), age-major
        inside = (np.exp(ln_lam_t) > self.range[0]) & (np.exp(ln_lam_t) < self.range[1])
        temps /= np.mean(temps[inside], axis=0)  # unit mean over the fitted range: light fractions
        self.templates = temps
        self.grid_shape = (ssp.age.shape[0], ssp.metallicity.shape[0])
        self.c = 299792.458
        self.vsyst = self.c * (ln_lam_t[0] - self.ln_lam[0])

    def galaxy(self, flux, var):
        g, _, _ = self.util.log_rebin(self.range, flux)
        n, _, _ = self.util.log_rebin(self.range, np.sqrt(var))
        scale = np.median(g)
        return g / scale, n / scale

    def fit(self, flux, var, moments, regul=0.0):
        from ppxf.ppxf import ppxf

        g, n = self.galaxy(flux, var)
        start = [0.0, 150.0] + ([0.0, 0.0] if moments == 4 else [])
        templates = self.templates.reshape(-1, *self.grid_shape) if regul else self.templates
        kw = {"reg_dim": self.grid_shape, "regul": regul} if regul else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ppxf(templates, g, n, self.velscale, start, moments=moments, degree=-1,
                        mdegree=0, vsyst=self.vsyst, quiet=True, plot=False, **kw)  # fmt: skip


def timed(f, repeat=1):
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = jax.block_until_ready(f())
    return out, (time.perf_counter() - t0) / repeat


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-spectra", type=int, default=24)
    parser.add_argument("--regul", type=float, default=10.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ssp = sc.lined_ssp()
    n = args.n_spectra
    tel = sc.telescope(n)
    obs = rx.Observation(redshift=sc.Z_OBS)
    flux, var, truth = gh_spectra(ssp, tel, 2 * n, rng)
    cubes = [sc.cube_from_spectra(flux[k * n:(k + 1) * n, None], var[k * n:(k + 1) * n, None], tel)
             for k in range(2)]  # fmt: skip
    rows, results = [], {"n_spectra": n, "n_pixels": int(flux.shape[1]),
                         "n_templates": int(ssp.age.size * ssp.metallicity.size),
                         "cpu_count": os.cpu_count(), "snr": SNR}  # fmt: skip
    ppxf_setup = PPXFSetup(ssp, tel)
    for label, call in (
        ("fit_spaxels moments=2", lambda c: rx.fit.fit_spaxels(c, ssp, tel, obs, moments=2)),
        ("fit_spaxels moments=4", lambda c: rx.fit.fit_spaxels(c, ssp, tel, obs, moments=4)),
        ("fit_mixture moments=2", lambda c: rx.fit.fit_mixture(c, ssp, tel, obs, moments=2)),
        ("fit_mixture moments=4", lambda c: rx.fit.fit_mixture(c, ssp, tel, obs, moments=4)),
    ):
        moments = 4 if "4" in label else 2
        _, first = timed(lambda: call(cubes[0]))
        fit, seconds = timed(lambda: call(cubes[1]))
        _, ppxf_seconds = timed(
            lambda: [ppxf_setup.fit(flux[n + k], var[n + k], moments) for k in range(n)]
        )
        ours, theirs = n / seconds, n / ppxf_seconds
        dv = float(np.median(np.abs(np.asarray(fit.maps.velocity)[:, 0] - truth[n:, 0])))
        rows.append((label, first, ours, theirs, ours / theirs, dv))
        results[label] = {"first_call_seconds": first, "spectra_per_s": ours,
                          "ppxf_spectra_per_s": theirs, "speedup": ours / theirs,
                          "median_abs_dv_kms": dv}  # fmt: skip
    # Regularised two-population fits: ours vs pPXF
    fractions = (0.2, 0.3, 0.5, 0.7)
    f2, v2 = two_population_spectra(ssp, tel, fractions, rng)
    cube2 = sc.cube_from_spectra(f2[:, None], v2[:, None], sc.telescope(len(fractions)))
    mix = rx.fit.fit_mixture(cube2, ssp, sc.telescope(len(fractions)), obs, regul=args.regul)
    log_age = np.log10(np.asarray(ssp.age)) + 9
    mh = np.log10(np.asarray(ssp.metallicity) / 0.019)
    compare = []
    for k, f in enumerate(fractions):
        pp = ppxf_setup.fit(f2[k], v2[k], 2, regul=args.regul)
        w = pp.weights.reshape(ppxf_setup.grid_shape)
        w = w / w.sum()
        pp_age = float(np.sum(w.sum(axis=1) * log_age))
        pp_mh = float(np.sum(w.sum(axis=0) * mh))
        ours_age = float(np.asarray(mix.maps.log_age)[k, 0])
        ours_mh = float(np.asarray(mix.maps.metallicity)[k, 0])
        truth_age = f * 9.0 + (1 - f) * 10.0
        compare.append({"young_fraction": f, "truth_log_age": truth_age, "ours_log_age": ours_age,
                        "ppxf_log_age": pp_age, "ours_mh": ours_mh, "ppxf_mh": pp_mh})  # fmt: skip
    results["regularised"] = {"regul": args.regul, "spaxels": compare}

    print(f"\n{n} spectra of {flux.shape[1]} pixels, {results['n_templates']} templates, "
          f"S/N {SNR:g}, {os.cpu_count()} CPUs (shared)\n")  # fmt: skip
    print(
        "| fit | first call (s, compiles) | ours (spectra/s) | pPXF (spectra/s) | ratio "
        "| median |ΔV| (km/s) |"
    )
    print("|---|---|---|---|---|---|")
    for label, first, ours, theirs, ratio, dv in rows:
        print(f"| {label} | {first:.1f} | {ours:.1f} | {theirs:.1f} | {ratio:.2f}× | {dv:.2f} |")
    print(f"\nregul = {args.regul:g}: mean log age (yr) and [M/H], light-weighted")
    print("| young fraction | truth log age | ours | pPXF | ours [M/H] | pPXF [M/H] |")
    print("|---|---|---|---|---|---|")
    for c in compare:
        print(f"| {c['young_fraction']:.1f} | {c['truth_log_age']:.3f} | {c['ours_log_age']:.3f} | "
              f"{c['ppxf_log_age']:.3f} | {c['ours_mh']:+.3f} | {c['ppxf_mh']:+.3f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "spaxel_fits.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
