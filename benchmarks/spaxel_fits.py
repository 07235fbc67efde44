"""Spaxel-fit throughput: `rx.fit.fit_spaxels` (moments 2 and 4) and `rx.fit.fit_mixture`
against pPXF 8.2.6 on the same spectra, in the same run.

    python benchmarks/spaxel_fits.py [--n-side 8] [--n-ppxf 16] [--repeats 2] [--out DIR]

Setup: MUSE-WFM spaxels (0.2″) on 4750–5800 Å (841 pixels of 1.25 Å; the MUSE LSF, or
E-MILES' own where MUSE is sharper, as the cube records it in `lsf_fwhm`), E-MILES (25
ages × 6 Z = 150 templates), a synthetic disk of 10⁴ stars at z = 0.05, inclination 60°,
constant S/N 50 per pixel, float64 (x64, as the tests). A first cube
compiles our fits; a second noise realisation of the same shape is timed (median of
`--repeats` calls): spectra per second after compilation, batch = all n_side² spaxels in
one call (as the CLI's `--batch-size`); wall and CPU (`time.process_time`, all threads)
times, pPXF timed right after each of our modes (the machine may be shared: the CPU-time
ratio is the steadier one).

pPXF 8.2.6 fits the first `--n-ppxf` spectra of the timed cube: the 150 templates
broadened to the cube's recorded LSF (the difference to the E-MILES FWHM, per pixel) and
log-rebinned at the galaxy's velscale (our own flux-conserving rebinning: pPXF 8.2.6's
`log_rebin` with a given velscale fails under NumPy ≥ 2.3), the spectrum log-rebinned by
`ppxf_util.log_rebin`, `moments` 2 or 4, `degree=-1`, `mdegree=0` (no polynomials: our
model has none), no regularisation; only the `ppxf()` calls are timed. pPXF always fits
the non-negative mixture of all templates: it is the reference for both of our modes
(our single-SSP fit solves a different, smaller problem — one interpolated SSP). The
150×150 time is a projection from the measured throughput (22 500 spectra), not a run.
Prints a table and writes `<out>/spaxel_fits.json`.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np


HERE = Path(__file__).resolve().parent
C_KMS = 299792.458
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))
Z = 0.05


def pixel_edges(lam):
    mid = 0.5 * (lam[1:] + lam[:-1])
    return np.concatenate([[lam[0] - (mid[0] - lam[0])], mid, [lam[-1] + (lam[-1] - mid[-1])]])


def log_rebin(lam, spec, velscale):
    """Flux-conserving rebinning of `spec` (pixels along axis 0, step-function pixels with
    edges at the midpoints) onto ln λ pixels of `velscale` km/s from the first edge.
    Returns (flux density, ln λ centres)."""
    edges = pixel_edges(lam)
    widths = np.diff(edges)[:, None]
    cumulative = np.concatenate([np.zeros((1, spec.shape[1])), np.cumsum(spec * widths, 0)])
    step = velscale / C_KMS
    n = int(math.log(edges[-1] / edges[0]) / step)
    new = edges[0] * np.exp(step * np.arange(n + 1))
    at = np.stack([np.interp(new, edges, c) for c in cumulative.T], 1)
    return np.diff(at, axis=0) / np.diff(new)[:, None], np.log(np.sqrt(new[1:] * new[:-1]))


def make_cubes(n_side):
    import jax
    import jax.numpy as jnp
    import rubix_eqx as rx

    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset("MUSE-WFM", n_x=n_side, n_y=n_side, wavelength={"stop": 5800.0})
    obs = rx.Observation(redshift=Z, inclination=60.0, position_angle=30.0)
    stars, _ = rx.galaxy.synthetic_disk(jax.random.key(0), n_stars=10_000, dtype=jnp.float64)
    # MUSE is sharper than E-MILES redwards of 5240 Å: the cube records the FWHM reached
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=50.0), psf=False, allow_sharper_lsf=True)
    cubes = [pipe(stars, obs, key=jax.random.key(k)) for k in (1, 2)]
    return ssp, tel, obs, cubes


def time_ours(name, call, cubes, repeats):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(call(cubes[0]))
    first = time.perf_counter() - t0
    seconds, cpu, fit = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = jax.block_until_ready(call(cubes[1]))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return first, statistics.median(seconds), statistics.median(cpu), fit


def ppxf_setup(ssp, tel, cube):
    """Templates for pPXF (broadened to the LSF, log-rebinned) and the rebinned spectra."""
    from ppxf import ppxf_util as util

    one_z = 1 + Z
    wave = np.asarray(cube.wavelength, np.float64)
    lam_gal = wave / one_z
    n_x, n_y, n_wave = cube.flux.shape
    flux = np.asarray(cube.flux, np.float64).reshape(-1, n_wave)
    noise = np.sqrt(np.asarray(cube.variance, np.float64)).reshape(-1, n_wave)
    galaxy, ln_lam, velscale = util.log_rebin(lam_gal, flux[0])
    velscale = float(np.atleast_1d(velscale)[0])
    lam_tpl = np.asarray(ssp.wavelength, np.float64)
    keep = (lam_tpl > lam_gal[0] - 150) & (lam_tpl < lam_gal[-1] + 150)
    lam_tpl = lam_tpl[keep]
    templates = np.asarray(ssp.flux, np.float64).reshape(-1, keep.size)[:, keep]
    step = np.gradient(lam_tpl)
    lsf_rest = np.interp(lam_tpl, lam_gal, np.asarray(cube.lsf_fwhm, np.float64) / one_z)
    fwhm_tpl = np.asarray(ssp.fwhm, np.float64)[keep]
    fwhm_diff = np.sqrt(np.clip(lsf_rest**2 - fwhm_tpl**2, 1e-6, None))
    sigma_pix = fwhm_diff / FWHM_PER_SIGMA / step
    smooth = np.stack([util.gaussian_filter1d(t, sigma_pix) for t in templates])
    rebinned, ln_lam_tpl = log_rebin(lam_tpl, smooth.T, velscale)
    rebinned = rebinned / np.median(rebinned)
    spectra = []
    for f, s in zip(flux, noise):
        g = util.log_rebin(lam_gal, f)[0]
        e = util.log_rebin(lam_gal, s)[0]
        scale = np.median(g)
        spectra.append((g / scale, e / scale))
    n_age, n_z = ssp.age.shape[0], ssp.metallicity.shape[0]
    return rebinned.reshape(-1, n_age, n_z), ln_lam_tpl, ln_lam, velscale, spectra


def time_ppxf(setup, moments, n):
    from ppxf.ppxf import ppxf

    templates, ln_lam_tpl, ln_lam, velscale, spectra = setup
    seconds, cpu, sols = [], [], []
    for galaxy, noise in spectra[:n]:
        t0, c0 = time.perf_counter(), time.process_time()
        pp = ppxf(
            templates, galaxy, noise, velscale, [0.0, 100.0], moments=moments, degree=-1,
            mdegree=0, lam=np.exp(ln_lam), lam_temp=np.exp(ln_lam_tpl), quiet=True,
        )  # fmt: skip
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        sols.append(np.asarray(pp.sol, np.float64)[:moments])
    return sum(seconds), sum(cpu), np.asarray(sols)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-side", type=int, default=8, help="spaxels per side (default 8)")
    parser.add_argument("--n-ppxf", type=int, default=16, help="spectra pPXF fits (default 16)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of ours (default 2)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import rubix_eqx as rx

    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    ssp, tel, obs, cubes = make_cubes(args.n_side)
    n = args.n_side**2
    modes = {
        "fit_spaxels_moments2": (2, lambda c: rx.fit.fit_spaxels(c, ssp, tel, obs, moments=2)),
        "fit_spaxels_moments4": (4, lambda c: rx.fit.fit_spaxels(c, ssp, tel, obs, moments=4)),
        "fit_mixture_moments2": (2, lambda c: rx.fit.fit_mixture(c, ssp, tel, obs, moments=2)),
    }
    setup = ppxf_setup(ssp, tel, cubes[1])
    rows = {}
    load_start = os.getloadavg()[0]
    for name, (moments, call) in modes.items():
        first, seconds, cpu, fit = time_ours(name, call, cubes, args.repeats)
        # pPXF right after ours, so that both see the same load
        ppxf_seconds, ppxf_cpu, sols = time_ppxf(setup, moments, args.n_ppxf)
        ours_rate, ppxf_rate = n / seconds, args.n_ppxf / ppxf_seconds
        kin = fit.kinematics if hasattr(fit, "kinematics") else fit
        v = np.asarray(kin.maps.velocity).reshape(-1)[: args.n_ppxf]
        s = np.asarray(kin.maps.dispersion).reshape(-1)[: args.n_ppxf]
        converged = np.asarray(fit.converged).reshape(-1)
        rows[name] = {
            "moments": moments,
            "spectra": n,
            "first_call_s_incl_compilation": round(first, 3),
            "call_s_after_compilation": round(seconds, 3),
            "ours_spectra_per_s": round(ours_rate, 3),
            "ppxf_spectra": args.n_ppxf,
            "ppxf_s": round(ppxf_seconds, 3),
            "ppxf_spectra_per_s": round(ppxf_rate, 3),
            "ratio_ours_over_ppxf": round(ours_rate / ppxf_rate, 2),
            "ours_cpu_s": round(cpu, 3),
            "ppxf_cpu_s": round(ppxf_cpu, 3),
            "ratio_cpu_time_ours_over_ppxf": round((n / cpu) / (args.n_ppxf / ppxf_cpu), 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "converged_fraction": round(float(converged.mean()), 3),
            "median_abs_dV_vs_ppxf_kms": round(float(np.median(np.abs(v - sols[:, 0]))), 3),
            "median_sigma_ratio_vs_ppxf": round(float(np.median(s / sols[:, 1])), 4),
            "projected_150x150_min_ours": round(22500 / ours_rate / 60, 1),
            "projected_150x150_min_ppxf": round(22500 / ppxf_rate / 60, 1),
        }
        r = rows[name]
        print(f"{name:22s} ours {r['ours_spectra_per_s']:7.2f}/s (first call "
              f"{r['first_call_s_incl_compilation']:.1f} s)  pPXF {r['ppxf_spectra_per_s']:6.2f}/s"
              f"  ratio {r['ratio_ours_over_ppxf']:5.2f}x (CPU time "
              f"{r['ratio_cpu_time_ours_over_ppxf']:5.2f}x, load {r['load_average_1min']})  "
              f"150x150: ours "
              f"{r['projected_150x150_min_ours']} min, pPXF {r['projected_150x150_min_ppxf']} min",
              flush=True)  # fmt: skip

    header = (
        "| mode | ours (spectra/s) | pPXF (spectra/s) | ours/pPXF | ours/pPXF, CPU time | "
        "150×150 ours (min, projected) | 150×150 pPXF (min, projected) | "
        "median \\|V−V_pPXF\\| | σ/σ_pPXF |"
    )
    print("\n" + header + "\n|" + "---|" * 9)
    for name, r in rows.items():
        print(f"| {name} | {r['ours_spectra_per_s']} | {r['ppxf_spectra_per_s']} | "
              f"{r['ratio_ours_over_ppxf']} | {r['ratio_cpu_time_ours_over_ppxf']} | "
              f"{r['projected_150x150_min_ours']} | "
              f"{r['projected_150x150_min_ppxf']} | {r['median_abs_dV_vs_ppxf_kms']} | "
              f"{r['median_sigma_ratio_vs_ppxf']} |")  # fmt: skip
    import ppxf

    result = {
        "benchmark": "spaxel_fits",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min_start": round(load_start, 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },  # fmt: skip
        "versions": {
            "rubix_eqx": rx.__version__,
            "jax": jax.__version__,
            "ppxf": getattr(ppxf, "__version__", "8.2.6"),
            "numpy": np.__version__,
        },  # fmt: skip
        "setup": {
            "telescope": "MUSE-WFM, 0.2 arcsec spaxels, 4750-5800 A (841 pixels)",
            "ssp": "E-MILES 25 ages x 6 Z = 150 templates",
            "galaxy": "synthetic disk, 1e4 stars, z = 0.05, inclination 60 deg",
            "noise": "constant S/N 50 per pixel",
            "dtype": "float64 (x64)",
            "batch": f"{n} spectra per call ({args.n_side}x{args.n_side})",
            "ppxf": "same spectra and templates (LSF-matched, log-rebinned), degree=-1, "
            "mdegree=0, regul=0; pPXF always fits the mixture of all 150 templates",
            "projection": "150x150 = 22500 spectra / measured spectra per s (a projection, "
            "not a run)",
        },
        "results": rows,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "spaxel_fits.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path} ({result['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
