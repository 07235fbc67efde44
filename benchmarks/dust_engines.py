"""Dust on the two engines: the direct engine (exact 10^(−0.4 A_λ) per particle and bin)
against the histogram engine's low-rank expansion (R histograms), and the histogram
engine without dust, timed back to back in one process per N.

    python benchmarks/dust_engines.py [--n 100000,1000000] [--repeats 3] [--out DIR]

Setup: MUSE-WFM 40×40 spaxels (3681 wavelengths), E-MILES, a synthetic disk of N star
particles behind `rx.GasScreen` (CCM89; the metal column of a synthetic gas disk of N/5
elements), z = 0.05, inclination 60°, LSF on, PSF off, float32. Per N (a fresh
process): compile + first call and the median of `--repeats` calls of each variant,
the repeats interleaved (so that the ratios see the same machine load), the largest
|histogram − direct| relative to the unattenuated cube (bin by bin, over bins ≥ 10⁻³
of the cube's peak), the largest A_λ, and the peak RSS. Prints a table and writes
`<out>/dust_engines.json`.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
VARIANTS = ("direct_dust", "histogram_dust", "histogram_clear")


def child(n: int, repeats: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import rubix_eqx as rx

    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset("MUSE-WFM", n_x=40, n_y=40, spaxel_size=0.4)
    common = dict(psf=False, allow_sharper_lsf=True)
    pipes = {
        "direct_dust": rx.Pipeline(tel, ssp, engine="direct", dust="gas", **common),
        "histogram_dust": rx.Pipeline(tel, ssp, engine="histogram", dust="gas", **common),
        "histogram_clear": rx.Pipeline(tel, ssp, engine="histogram", **common),
    }
    stars, _ = rx.galaxy.synthetic_disk(jax.random.key(0), n_stars=n, dtype=jnp.float32)
    gas = rx.galaxy.synthetic_gas_disk(jax.random.key(1), max(n // 5, 1), dtype=jnp.float32)
    obs = rx.Observation(redshift=0.05, inclination=60.0, position_angle=30.0)
    bound = pipes["direct_dust"].speed_bound(stars, obs)

    def call(name):
        g = None if name == "histogram_clear" else gas
        return pipes[name](stars, obs, gas=g, speed_bound=bound).flux.block_until_ready()

    first, cubes = {}, {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        cubes[name] = np.asarray(call(name), np.float64)
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            t0 = time.perf_counter()
            call(name)
            times[name].append(time.perf_counter() - t0)
    clear = cubes["histogram_clear"]
    bright = clear > 1e-3 * clear.max()
    error = np.abs(cubes["histogram_dust"] - cubes["direct_dust"])[bright] / clear[bright]
    # the largest A_λ of the galaxy: A_V from the screen, × the curve's peak on the lattice
    screen = pipes["direct_dust"].stage(rx.GasScreen)
    scene = rx.Scene(obs, tel, None, 1e-20, gas)
    prepared = screen.prepare(scene)
    a_v = []
    for start in range(0, n, 100_000):  # in pieces: the column lookup is (n, 4, n_depth)
        piece = jax.tree.map(lambda x: x[start : start + 100_000], stars)
        particles = rx.Particles(piece)
        for stage in pipes["direct_dust"].stages[:2]:  # orient, deposit
            particles = stage(particles, scene)
        a_v.append(np.asarray(prepared.a_v(particles, scene)))
    a_v = np.concatenate(a_v)
    peak = float(jnp.max(screen.curve_on_lattice(jnp.asarray(0.05, jnp.float32))))
    engine = eqx.tree_at(lambda p: p.engine, pipes["histogram_dust"], rx.AutoEngine())
    return {
        "n_stars": n, "n_gas": gas.n_particles, "rank": rx.HistogramEngine().dust_rank,
        "dust_rtol": rx.HistogramEngine().dust_rtol,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()}, "compile_and_first_s": first,
        "max_error_over_unattenuated": float(error.max()),
        "a_v_max": float(a_v.max()), "a_v_median": float(np.median(a_v)),
        "a_lambda_max": float(a_v.max()) * peak,
        "auto_engine_choice": engine.engine_for(n, bound),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="100000,1000000", help="star counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--out", default=str(HERE / "results"), help="directory for the JSON")
    parser.add_argument("--child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("@@RESULT " + json.dumps(child(args.child, args.repeats)))
        return
    rows = []
    for n in [int(float(v)) for v in args.n.split(",")]:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--repeats", str(args.repeats)],
            capture_output=True, text=True,
        )  # fmt: skip
        line = next((s for s in proc.stdout.splitlines() if s.startswith("@@RESULT ")), None)
        if line is None:
            sys.exit(f"N = {n} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[len("@@RESULT ") :])
        rows.append(r)
        t = r["median_s"]
        print(f"N={n:>8} (gas {r['n_gas']}), rank R = {r['rank']}, A_V max {r['a_v_max']:.2f} "
              f"(A_λ max {r['a_lambda_max']:.2f}) mag, median {r['a_v_median']:.2f}; "
              f"auto picks {r['auto_engine_choice']}", flush=True)  # fmt: skip
        for name in VARIANTS:
            print(f"  {name:>16}: run {t[name]:8.3f} s  ({t[name] / t['direct_dust']:.3f}× "
                  f"direct+dust)  first {r['compile_and_first_s'][name]:6.1f} s")  # fmt: skip
        print(f"  max |hist − direct| / unattenuated: {r['max_error_over_unattenuated']:.2e} "
              f"(bound {r['dust_rtol']:g}; float32)  RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
        out = Path(args.out)  # written after every N, so that a long run keeps its rows
        out.mkdir(parents=True, exist_ok=True)
        (out / "dust_engines.json").write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "machine": platform.platform(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
