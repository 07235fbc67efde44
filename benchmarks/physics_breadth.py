"""Cost of the physics-breadth stages (dust screen, gas emission lines) against the core
stellar cube.

    python benchmarks/physics_breadth.py [--n 100000,1000000] [--repeats 3] [--out DIR]

Setup (as the README): MUSE-WFM 40×40 spaxels (3681 wavelengths), E-MILES, a synthetic
disk of N star particles and a synthetic gas disk of N/5 elements, z = 0.05, inclination
60°, LSF on, PSF off, float32. Variants:

- `core`: stars only, the auto engine (what a user gets without gas);
- `core_direct`: stars only, the direct engine (the dust variants run on it too, for
  comparability; `benchmarks/dust_engines.py` times dust on the histogram engine);
- `lines`: stars + the gas's emission lines (all 13 lines);
- `dust`: stars behind `rx.GasScreen` (the gas metal column), no lines;
- `lines_dust`: both;
- `lines_dust_clouds`: both, plus Charlot & Fall birth clouds (`rx.BirthCloud`);
- `smoothed`: stars only, `rx.SmoothedDeposit` (cubic spline, 5×5 stencil, k = 32
  neighbour lengths computed once, outside the timing), the auto engine.

Each (variant, N) runs in a fresh process: compile time, the median of `--repeats`
timed runs after a warm-up, and the peak RSS. Prints a table and writes
`<out>/physics_breadth.json`.
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
VARIANTS = ("core", "core_direct", "lines", "dust", "lines_dust", "lines_dust_clouds", "smoothed")


def child(variant: str, n: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import rubix_eqx as rx

    ssp = rx.SSPGrid.load("miles")
    tel = rx.Telescope.preset("MUSE-WFM", n_x=40, n_y=40, spaxel_size=0.4)
    engine = "auto" if variant in ("core", "smoothed") else "direct"
    pipe = rx.Pipeline(
        tel, ssp, psf=False, allow_sharper_lsf=True, engine=engine,
        emission_lines=variant.startswith("lines"),
        dust="gas" if "dust" in variant else None, birth_clouds=variant.endswith("clouds"),
        deposit="smoothed" if variant == "smoothed" else "cic",
    )  # fmt: skip
    stars, _ = rx.galaxy.synthetic_disk(jax.random.key(0), n_stars=n, dtype=jnp.float32)
    if variant == "smoothed":
        stars = rx.galaxy.with_smoothing_lengths(stars, 32)
    gas = None
    if variant not in ("core", "core_direct", "smoothed"):
        gas = rx.galaxy.synthetic_gas_disk(jax.random.key(1), max(n // 5, 1), dtype=jnp.float32)
    obs = rx.Observation(redshift=0.05, inclination=60.0, position_angle=30.0)
    t0 = time.perf_counter()
    pipe(stars, obs, gas=gas).flux.block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe(stars, obs, gas=gas).flux.block_until_ready()
        times.append(time.perf_counter() - t0)
    run = statistics.median(times)
    return {
        "variant": variant, "n_stars": n, "n_gas": 0 if gas is None else gas.n_particles,
        "engine": pipe.engine_for(n), "compile_and_first_s": first, "median_s": run,
        "min_s": min(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", default="100000,1000000", help="star particle counts, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--out", default=str(HERE / "results"), help="directory for the JSON")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("@@RESULT " + json.dumps(child(args.child[0], int(args.child[1]), args.repeats)))
        return
    rows = []
    for n in [int(float(v)) for v in args.n.split(",")]:
        for variant in args.variants.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", variant, str(n), "--repeats", str(args.repeats)],
                capture_output=True, text=True,
            )  # fmt: skip
            line = next((s for s in proc.stdout.splitlines() if s.startswith("@@RESULT ")), None)
            if line is None:
                sys.exit(f"{variant} at N = {n} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[len("@@RESULT ") :]))
            r = rows[-1]
            print(f"{r['variant']:>12} N={n:>8} gas={r['n_gas']:>7} {r['engine']:>9}  "
                  f"run {r['median_s']:8.3f} s  first {r['compile_and_first_s']:7.1f} s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)  # fmt: skip
    core = {(r["n_stars"]): r["median_s"] for r in rows if r["variant"] == "core_direct"}
    print("\nratio to the direct core cube at the same N:")
    for r in rows:
        if r["n_stars"] in core:
            print(
                f"  {r['variant']:>12} N={r['n_stars']:>8}: {r['median_s'] / core[r['n_stars']]:.2f}x"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "physics_breadth.json").write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "machine": platform.platform(),
        "cpus": os.cpu_count(), "rows": rows,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
