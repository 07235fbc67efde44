"""Posterior inference of a synthetic disk, and a simulation-based-calibration check.

    python docs/examples/infer_galaxy.py [--draws 3] [--realisations 20] [--nuts] [--free ...]
    python docs/examples/infer_galaxy.py --only-draw K --fits fitsK.jsonl ...   # one draw
    python docs/examples/infer_galaxy.py --merge fits0.jsonl fits1.jsonl ...    # pool them

For each of `--draws` parameter vectors drawn from the prior, and each of
`--realisations` noise realisations (S/N 30), fit MAP + Laplace through the full
pipeline and count how often the truth falls inside the 68 % and 95 % intervals.
With `--nuts`, also sample the first cube with NUTS and write corner.png. A toy SSP grid
and small telescope (tests/cases.py) keep it to minutes on a laptop; swap in
`rx.SSPGrid.load("miles")` and a preset for the real thing.
"""

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rubix_eqx as rx
from rubix_eqx.fit import Uniform
from tests.cases import observation, tiny_ssp, tiny_telescope


jax.config.update("jax_enable_x64", True)
PRIORS = {
    "log_age": Uniform(-0.25, 1.05),
    "log_age_gradient": Uniform(-0.3, 0.3),
    "metallicity": Uniform(-0.65, 0.15),
    "metallicity_gradient": Uniform(-0.3, 0.3),
    "log_mass": Uniform(9.0, 11.0),
    "log_age_width": Uniform(0.01, 0.5),
    "v_flat": Uniform(0.0, 400.0),
    "dispersion": Uniform(5.0, 200.0),
    "inclination": Uniform(5.0, 85.0),
    "position_angle": Uniform(-180.0, 180.0),
}
# the prior region drawn for the truths (inside the priors, away from the bounds)
DRAW = {"log_age": (0.3, 0.9), "log_age_gradient": (-0.15, 0.0), "metallicity": (-0.4, 0.0),
        "metallicity_gradient": (-0.15, 0.0), "log_mass": (9.7, 10.3),
        "log_age_width": (0.05, 0.2), "v_flat": (120.0, 250.0), "dispersion": (40.0, 90.0),
        "inclination": (35.0, 65.0), "position_angle": (-60.0, 60.0)}  # fmt: skip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--realisations", type=int, default=20)
    ap.add_argument("--nuts", action="store_true")
    ap.add_argument("--free", nargs="+", default=list(PRIORS)[:5], choices=list(PRIORS),
                    help="the free parameters (default: the five population and mass ones)")
    ap.add_argument("--init", choices=("screen", "centre", "truth"), default="screen",
                    help="MAP start: the global start of rx.fit.laplace (default), the "
                    "prior centres only, or the truth")
    ap.add_argument("--screen", type=int, default=63, help="prior draws screened for starts")
    ap.add_argument("--starts", type=int, default=3, help="LM solves from the best screened")
    ap.add_argument("--json", help="write the coverage table to this JSON file")
    ap.add_argument("--only-draw", type=int, help="fit only this draw (same truths as a full "
                    "run; for parallel processes, merged with --merge)")
    ap.add_argument("--fits", help="append one JSON line per fit (z, chi2/nu) to this file")
    ap.add_argument("--merge", nargs="+", metavar="FITS", help="only merge --fits files of "
                    "parallel runs into the coverage table")
    args = ap.parse_args()
    if args.merge:
        return report(args, [json.loads(line) for f in args.merge for line in open(f)])
    ssp, tel = tiny_ssp(metal_slope=0.3), tiny_telescope(n=6, step=4.0, lsf_fwhm=8.0)
    key = jax.random.key(0)
    base = dict(scale_length=1.0, bulge_fraction=0.0, log_age_scatter=0.1, dispersion=60.0)
    _, structure = rx.galaxy.synthetic_disk(key, 2000, dtype=jnp.float64, **base)
    draws = rx.galaxy.draw_disk(key, 2000, 0.0, jnp.float64)
    obs = observation(inclination=50.0)
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=30.0), dtype=jnp.float64)
    rng = np.random.default_rng(1)
    names = tuple(args.free)
    priors = {n: PRIORS[n] for n in names}
    fits = []
    for d in range(args.draws):
        truth = {n: rng.uniform(*DRAW[n]) for n in names}
        if args.only_draw is not None and d != args.only_draw:
            continue
        model = rx.fit.galaxy_model(draws, structure, obs, priors)
        theta = model.vector(truth)
        gal, o = model.galaxy_and_observation(theta)
        for r in range(args.realisations):
            cube = pipe(gal, o, key=jax.random.key(1000 * d + r))
            post = rx.fit.posterior(cube, pipe, model)
            start = {"screen": dict(screen=args.screen, starts=args.starts),
                     "centre": dict(screen=0, starts=1), "truth": dict(init=truth)}
            lap = rx.fit.laplace(post, **start[args.init])
            pull = (np.asarray(lap.mean) - np.asarray(theta)) / np.asarray(lap.errors)
            fit = {"draw": d, "noise": r, "names": names, "pull": pull.tolist(),
                   "chi2_nu": lap.reduced_chi2}
            if "log_age" in names and "metallicity" in names:
                i, j = names.index("log_age"), names.index("metallicity")
                fit["rho_age_z"] = float(lap.correlation[i, j])
            fits.append(fit)
            if args.fits:
                with open(args.fits, "a") as f:
                    f.write(json.dumps(fit) + "\n")
            print(f"  draw {d} noise {r}: chi2/nu {fit['chi2_nu']:.3f}, pulls "
                  + " ".join(f"{n}={p:+.1f}" for n, p in zip(names, pull)), flush=True)
            if args.nuts and d == 0 and r == 0:
                res = rx.fit.nuts(post, jax.random.key(5), start=lap, num_chains=2,
                                  num_warmup=200, num_samples=300, progress=print)  # fmt: skip
                print(rx.fit.format_table(rx.fit.posterior_summary(res, truth=truth)))
                rx.fit.corner_plot(res.samples, res.names, "corner.png", truth=truth, laplace=lap)
        print(f"draw {d + 1}/{args.draws} done: {truth}", flush=True)
    report(args, fits)


def report(args, fits):
    names = fits[0]["names"]
    z = np.abs(np.array([f["pull"] for f in fits]))
    hit68, hit95 = z < 0.9945, z < 1.96  # the 68.0 % and 95.0 % half-widths in σ
    c68, c95 = np.mean(hit68, 0), np.mean(hit95, 0)
    chi2 = [f["chi2_nu"] for f in fits]
    rho = [f["rho_age_z"] for f in fits if "rho_age_z" in f]
    n_draws = len({f["draw"] for f in fits})
    print(f"\nSBC: {n_draws} prior draws, {len(fits)} fits (noise realisations)")
    print(f"{'parameter':>22} {'68 %':>6} {'95 %':>6}")
    for n, a, b in zip(names, c68, c95):
        print(f"{n:>22} {a:6.2f} {b:6.2f}")
    print(f"{'pooled':>22} {np.mean(hit68):6.2f} {np.mean(hit95):6.2f}")
    print(f"chi2/nu at the MAP: median {np.median(chi2):.3f}, max {np.max(chi2):.3f} "
          "(>> 1: a local optimum)")
    if rho:
        print(f"age-metallicity correlation (Laplace): {np.mean(rho):.3f} ± {np.std(rho):.3f}")
    if args.json:
        table = {n: {"68": float(a), "95": float(b)} for n, a, b in zip(names, c68, c95)}
        table["pooled"] = {"68": float(np.mean(hit68)), "95": float(np.mean(hit95))}
        Path(args.json).write_text(json.dumps({"draws": n_draws, "fits": len(fits),
                                               "coverage": table}, indent=1))


if __name__ == "__main__":
    main()
