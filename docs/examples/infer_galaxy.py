"""Posterior inference of a synthetic disk, and a simulation-based-calibration check.

    python docs/examples/infer_galaxy.py [--draws 3] [--realisations 20] [--nuts]

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
    ap.add_argument("--init", choices=("centre", "truth"), default="centre",
                    help="start the MAP at the prior centres (default) or at the truth")
    ap.add_argument("--json", help="write the coverage table to this JSON file")
    args = ap.parse_args()
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
    hit68, hit95, rho, chi2 = [], [], [], []
    for d in range(args.draws):
        truth = {n: rng.uniform(*DRAW[n]) for n in names}
        model = rx.fit.galaxy_model(draws, structure, obs, priors)
        theta = model.vector(truth)
        gal, o = model.galaxy_and_observation(theta)
        for r in range(args.realisations):
            cube = pipe(gal, o, key=jax.random.key(1000 * d + r))
            post = rx.fit.posterior(cube, pipe, model)
            lap = rx.fit.laplace(post, init=truth if args.init == "truth" else None)
            z = np.abs(np.asarray(lap.mean) - np.asarray(theta)) / np.asarray(lap.errors)
            hit68.append(z < 0.9945), hit95.append(z < 1.96)
            chi2.append(float(lap.chi2) / float(lap.n_data))
            if "log_age" in names and "metallicity" in names:
                i, j = names.index("log_age"), names.index("metallicity")
                rho.append(float(lap.correlation[i, j]))
            if args.nuts and d == 0 and r == 0:
                res = rx.fit.nuts(post, jax.random.key(5), start=lap, num_chains=2,
                                  num_warmup=200, num_samples=300, progress=print)  # fmt: skip
                print(rx.fit.format_table(rx.fit.posterior_summary(res, truth=truth)))
                rx.fit.corner_plot(res.samples, res.names, "corner.png", truth=truth, laplace=lap)
        print(f"draw {d + 1}/{args.draws} done: {truth}", flush=True)
    c68, c95 = np.mean(hit68, 0), np.mean(hit95, 0)
    print(f"\nSBC: {args.draws} prior draws x {args.realisations} noise realisations")
    print(f"{'parameter':>22} {'68 %':>6} {'95 %':>6}")
    for n, a, b in zip(names, c68, c95):
        print(f"{n:>22} {a:6.2f} {b:6.2f}")
    print(f"{'pooled':>22} {np.mean(hit68):6.2f} {np.mean(hit95):6.2f}")
    print(f"chi2/N at the MAP: median {np.median(chi2):.3f}, max {np.max(chi2):.3f} "
          "(>> 1: a local optimum)")
    if rho:
        print(f"age-metallicity correlation (Laplace): {np.mean(rho):.3f} ± {np.std(rho):.3f}")
    if args.json:
        table = {n: {"68": float(a), "95": float(b)} for n, a, b in zip(names, c68, c95)}
        table["pooled"] = {"68": float(np.mean(hit68)), "95": float(np.mean(hit95))}
        Path(args.json).write_text(json.dumps({"draws": args.draws, "realisations":
                                               args.realisations, "coverage": table}, indent=1))


if __name__ == "__main__":
    main()
