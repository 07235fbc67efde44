"""The RUBIX paper's experiment, with E-MILES: one star particle in one MUSE spaxel at
S/N = 100; recover its age and metallicity by Levenberg–Marquardt from a grid of
starting points, and draw the χ² landscape with the convergence of every start.

    python docs/examples/particle_recovery.py --out out/particle_recovery

Writes `landscape.png` and `summary.json` to the output folder (they are derived from
MILES spectra: keep them out of version control).
"""

import argparse
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import rubix_eqx as rx


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/particle_recovery")
    parser.add_argument("--age", type=float, default=4.0, help="true age, Gyr")
    parser.add_argument("--metallicity", type=float, default=0.012, help="true Z")
    parser.add_argument("--snr", type=float, default=100.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset("MUSE-WFM", n_x=1, n_y=1)
    obs = rx.Observation(redshift=0.05)
    truth = rx.galaxy.single_population(1, age=args.age, metallicity=args.metallicity)
    noisy = rx.Pipeline(tel, ssp, allow_sharper_lsf=True, noise=rx.Noise(snr=args.snr))
    cube = noisy(truth, obs, key=jax.random.key(0))
    model = rx.Pipeline(tel, ssp, allow_sharper_lsf=True)

    # χ² landscape on a grid of (log age, log Z)
    la = np.linspace(np.log10(float(ssp.age[0])), np.log10(float(ssp.age[-1])), 60)
    lz = np.linspace(np.log10(float(ssp.metallicity[0])), np.log10(float(ssp.metallicity[-1])), 40)

    @eqx.filter_jit
    def chi2(a, z):
        g = eqx.tree_at(lambda g: (g.age, g.metallicity), truth, (10.0 ** a[None], 10.0 ** z[None]))
        return jnp.sum((model(g, obs).flux - cube.flux) ** 2 / cube.variance)

    landscape = np.array([[float(chi2(jnp.asarray(a), jnp.asarray(z))) for a in la] for z in lz])

    # fits from a grid of starting points
    starts = [(a, z) for a in np.linspace(la[2], la[-3], 6) for z in np.linspace(lz[2], lz[-3], 4)]
    results = []
    for a0, z0 in starts:
        start = eqx.tree_at(
            lambda g: (g.age, g.metallicity), truth, (jnp.array([10.0**a0]), jnp.array([10.0**z0]))
        )
        fit = rx.fit.fit_particles(cube, model, start, obs)
        a1, z1 = float(jnp.log10(fit.age[0])), float(jnp.log10(fit.metallicity[0]))
        results.append(dict(start=[a0, z0], end=[a1, z1], converged=bool(fit.converged),
                            log_age_err=float(fit.log_age_err[0]), steps=int(fit.steps)))  # fmt: skip
    ta, tz = np.log10(args.age), np.log10(args.metallicity)
    hits = [abs(r["end"][0] - ta) < 0.02 and abs(r["end"][1] - tz) < 0.02 for r in results]

    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.pcolormesh(la, lz, np.log10(landscape), shading="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label="log10 χ²")
    for r, hit in zip(results, hits):
        ax.annotate("", xy=r["end"], xytext=r["start"],
                    arrowprops=dict(arrowstyle="->", color="w" if hit else "r", lw=0.8))  # fmt: skip
    ax.plot(ta, tz, "r*", ms=14, label="truth")
    ax.set_xlabel("log10(age / Gyr)")
    ax.set_ylabel("log10 Z")
    ax.set_title(
        f"One particle, MUSE spaxel, S/N = {args.snr:g}: {sum(hits)}/{len(hits)} starts within 0.02 dex"
    )
    ax.legend(loc="lower left")
    fig.savefig(out / "landscape.png", dpi=100)
    summary = dict(truth=[ta, tz], fraction_recovered=float(np.mean(hits)), fits=results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{sum(hits)}/{len(hits)} starting points recover log age and log Z within 0.02 dex")


if __name__ == "__main__":
    main()
