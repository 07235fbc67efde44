"""Posterior cost: forward vs gradient of the log posterior (all ten model parameters),
and NUTS time per draw and per effective sample, at 10⁴ and 10⁵ particles.

    python benchmarks/posterior.py [--particles 10000 100000] [--samples 100]

A small MUSE-like cube from a toy SSP grid (the shapes of tests/cases.py, 10×10 spaxels
of 0.5″, 4800–6000 Å at 2 Å), S/N 30. Prints a table and writes
benchmarks/results/posterior.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rubix_eqx as rx
from tests.cases import observation, tiny_ssp, tiny_telescope


def timed(fn, *args, repeat=10):
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t) / repeat


def case(n):
    ssp = tiny_ssp(metal_slope=0.3)
    tel = tiny_telescope(n=10, step=2.0)
    key = jax.random.key(0)
    kw = dict(scale_length=1.0, bulge_fraction=0.0, log_age_centre=0.6, log_age_gradient=-0.1,
              log_age_scatter=0.1, metallicity_centre=-0.1, metallicity_gradient=-0.1,
              dispersion=60.0)  # fmt: skip
    gal, structure = rx.galaxy.synthetic_disk(key, n, dtype=jnp.float32, **kw)
    draws = rx.galaxy.draw_disk(key, n, 0.0, jnp.float32)
    obs = observation(inclination=50.0)
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=30.0))
    cube = pipe(gal, obs, key=jax.random.key(1))
    priors = dict(rx.fit.PARAMETERS)
    priors = {k: v[2] for k, v in priors.items()}
    priors["log_age"] = rx.fit.Uniform(-0.25, 1.05)
    priors["metallicity"] = rx.fit.Uniform(-0.65, 0.15)
    priors["position_angle"] = rx.fit.Uniform(-40.0, 80.0)
    model = rx.fit.galaxy_model(draws, structure, obs, priors)
    return rx.fit.posterior(cube, pipe, model), model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    rows = []
    for n in args.particles:
        post, model = case(n)
        theta = model.vector(model.defaults()).astype(jnp.float32)
        u = model.to_unconstrained(theta)
        # compiled as the package's own entry points are (rubix_eqx._compile)
        options = rx.compiler_options()
        fwd = eqx.filter_jit(lambda p, u: p.log_density(u), compiler_options=options)
        grad = eqx.filter_jit(lambda p, u: jax.grad(p.log_density)(u), compiler_options=options)
        t_f, t_g = timed(fwd, post, u), timed(grad, post, u)
        t0 = time.perf_counter()
        lap = rx.fit.laplace(post, init=model.defaults())
        t_lap = time.perf_counter() - t0
        res = rx.fit.nuts(post, jax.random.key(3), start=lap, num_chains=2,
                          num_warmup=args.warmup, num_samples=args.samples, block=50)  # fmt: skip
        draws = 2 * args.samples
        ess = float(np.min(np.asarray(res.ess)))
        t_s = res.seconds["sampling"]
        row = {
            "particles": n, "parameters": model.n_parameters,
            "forward_ms": 1e3 * t_f, "gradient_ms": 1e3 * t_g, "gradient_over_forward": t_g / t_f,
            "laplace_s_incl_compile": t_lap,
            "gradients_per_draw": int(res.n_gradients) / draws,
            "sampling_s": t_s, "ms_per_draw": 1e3 * t_s / draws,
            "min_ess": ess, "ms_per_effective_sample": 1e3 * t_s / ess,
            "max_rhat": float(np.max(np.asarray(res.rhat))),
            "divergences": int(res.divergences),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["particles", "forward_ms", "gradient_ms", "gradient_over_forward",
            "gradients_per_draw", "ms_per_draw", "min_ess", "ms_per_effective_sample",
            "max_rhat"]  # fmt: skip
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>14.4g}" for c in cols))
    out = Path(__file__).parent / "results" / "posterior.json"
    out.write_text(json.dumps({"device": str(jax.devices()[0]), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
