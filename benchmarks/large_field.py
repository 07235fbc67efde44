"""Full MUSE fields (issue #18): forward time at 40×40, 150×150 and 300×300 spaxels.

    python benchmarks/large_field.py [--n 1000000] [--sizes 40,150,300] [--grad 40,150]
        [--engines auto,histogram] [--name large_field] [--out benchmarks/results]

Synthetic disk (`benchmarks/_cases.make_galaxy`), MUSE-WFM (3681 λ, 5080 lattice bins),
z = 0.05, float32. Per size, in a fresh process (peak RSS per run): the engine alone
(the lattice cube) and the forward with the LSF on and the PSF off, the sparse engine
(what `engine="auto"` runs now) or any `--engines`; "before" is this script run
against the previous package (`--name large_field_before`, the package directory is
recorded). Also the deposit per particle (the old 32 scalar scatters against the new
pair-window scatter, on the same synthetic indices) against the time to stream the
particle arrays once (the bandwidth bound). Prints a table and writes
`<out>/large_field.json`. Timings: compiled once (with `rubix_eqx._compile`'s XLA
options), best of `--repeats` runs, wall and CPU (`time.process_time`) time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent


def child(spec: dict) -> dict:
    sys.path.insert(0, str(HERE))
    import _cases as C
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import rubix_eqx as rx
    from rubix_eqx._compile import jit
    from rubix_eqx._pipeline import _particle_sums

    gal = C.make_galaxy(spec["n"])
    ssp = rx.SSPGrid.load("miles")
    obs = rx.Observation(redshift=C.REDSHIFT, inclination=C.INCLINATION,
                         position_angle=C.POSITION_ANGLE)  # fmt: skip
    tel = rx.Telescope.preset("MUSE-WFM", n_x=spec["size"], n_y=spec["size"])
    pipe = rx.Pipeline(tel, ssp, engine=spec["engine"], psf=False, allow_sharper_lsf=True)
    bound = pipe.speed_bound(gal, obs)
    out = {"engine_used": pipe.engine_for(spec["n"], bound)}

    def best(fn, *args, key=None):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first = time.perf_counter() - t
        times = []
        for _ in range(spec["repeats"]):
            t, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*args))
            times.append((time.perf_counter() - t, time.process_time() - cpu))
        out[key + "_cpu_s"] = min(c for _, c in times)
        return min(w for w, _ in times), first

    C.reset_hwm()
    engine = jit(lambda p, g, o: _particle_sums(g, p, o, bound)[0])
    out["engine_s"], out["engine_first_s"] = best(engine, pipe, gal, obs, key="engine")
    forward = jit(lambda p, g, o: p(g, o, speed_bound=bound).flux)
    out["forward_s"], out["forward_first_s"] = best(forward, pipe, gal, obs, key="forward")
    if spec["grad"]:
        def loss(ages_z, p, g, o):
            g = eqx.tree_at(lambda g: (g.age, g.metallicity), g, ages_z)
            return jnp.sum(p(g, o, speed_bound=bound).flux ** 2)

        grad = jit(jax.grad(loss))
        out["grad_s"], out["grad_first_s"] = best(grad, (gal.age, gal.metallicity), pipe, gal,
                                                  obs, key="grad")  # fmt: skip
    out["peak_rss_mb"] = C.hwm_mb()
    out["load_average"] = os.getloadavg()[0]
    return out


def deposit_micro(n: int = 2**20, chunk: int = 4096) -> dict:
    """µs per particle of the histogram deposit's scatters (CIC: 4 spaxels × 4 templates ×
    2 shifts) on random indices into a 40×40 × 150 × 35 histogram: 32 scalar scatter-adds
    (before) against 16 with a 2-bin update window (now); and the time to stream the
    particle arrays (9 float32 per particle) once, measured as a copy."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from rubix_eqx._compile import compiler_options

    n_sp, n_t, n_s = 1600, 150, 35
    rng = np.random.default_rng(0)
    sp = rng.integers(0, n_sp - 41, n)
    spaxel = jnp.asarray(np.stack([sp, sp + 1, sp + 40, sp + 41], 1), jnp.int32)
    t0 = rng.integers(0, n_t - 7, n)
    template = jnp.asarray(np.stack([t0, t0 + 1, t0 + 6, t0 + 7], 1), jnp.int32)
    sw, tw = (jnp.asarray(rng.random((n, 4), dtype=np.float32)) for _ in range(2))
    shift = jnp.asarray(rng.integers(0, n_s - 1, n), jnp.int32)
    frac = jnp.asarray(rng.random(n, dtype=np.float32))

    def scan(body):
        def step(h, i):
            sl = lambda x: jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            return body(h, *map(sl, (spaxel, sw, template, tw, shift, frac))), None

        return jax.lax.scan(step, jnp.zeros(n_sp * n_t * n_s), jnp.arange(n // chunk))[0]

    def parts(s, sw, t, tw, r, f):
        index = (s[:, :, None] * n_t + t[:, None, :]) * n_s + r[:, None, None]
        split = jnp.stack([1 - f, f], 1)
        value = sw[:, :, None, None] * tw[:, None, :, None] * split[:, None, None, :]
        return index.reshape(-1), value.reshape(-1, 2)

    def scalar(h, *a):
        index, value = parts(*a)
        return h.at[(index[:, None] + jnp.arange(2)).reshape(-1)].add(value.reshape(-1))

    def window(h, *a):
        from rubix_eqx._engine import _add_pairs

        return _add_pairs(h, *parts(*a))

    def timed(fn):
        fn = jax.jit(fn, compiler_options=compiler_options())
        jax.block_until_ready(fn())
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
        return min(ts)

    particles = jnp.ones((n, 9), jnp.float32)
    stream = timed(lambda: particles * 2.0) / 2  # a copy reads and writes: half is one read
    return {
        "n": n,
        "scalar32_us": timed(lambda: scan(scalar)) / n * 1e6,
        "window16_us": timed(lambda: scan(window)) / n * 1e6,
        "stream_us": stream / n * 1e6,
        "stream_bytes_per_particle": 36,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10**6)
    ap.add_argument("--sizes", default="40,150,300")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--grad", default="", help="sizes (comma-separated) to time the gradient at")
    ap.add_argument("--engines", default="auto", help="comma-separated engine names")
    ap.add_argument("--name", default="large_field", help="<out>/<name>.json")
    ap.add_argument("--no-micro", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        result = deposit_micro() if spec.get("micro") else child(spec)
        print("@@RESULT " + json.dumps(result))
        return

    def run(spec):
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True)  # fmt: skip
        lines = [x for x in proc.stdout.splitlines() if x.startswith("@@RESULT ")]
        if not lines:
            return {"error": proc.stderr[-2000:]}
        return json.loads(lines[-1][9:])

    rows = []
    engines = args.engines.split(",")
    for size in [int(s) for s in args.sizes.split(",")]:
        for engine in engines:
            spec = dict(n=args.n, size=size, engine=engine, repeats=args.repeats,
                        grad=str(size) in args.grad.split(","))  # fmt: skip
            row = spec | run(spec)
            rows.append(row)
            print(json.dumps(row), flush=True)
    micro = {} if args.no_micro else run({"micro": True})
    base = {r["engine"]: r for r in rows if r["size"] == 40 and "engine_s" in r}
    print(f"\n{'size':>8} {'engine':>10} {'used':>9} {'engine s':>9} {'forward s':>9} "
          f"{'fwd/40²':>7} {'grad s':>7} {'RSS GB':>7} {'load':>5}")  # fmt: skip
    for r in rows:
        if "engine_s" not in r:
            print(f"{r['size']:>8} {r['engine']:>10} error")
            continue
        b = base.get(r["engine"])
        ratio = r["forward_s"] / b["forward_s"] if b else float("nan")
        grad = f"{r['grad_s']:7.2f}" if "grad_s" in r else "      -"
        print(f"{r['size']:>8} {r['engine']:>10} {r['engine_used']:>9} {r['engine_s']:9.2f} "
              f"{r['forward_s']:9.2f} {ratio:7.2f} {grad} {r['peak_rss_mb'] / 1024:7.2f} "
              f"{r['load_average']:5.1f}")  # fmt: skip
    print(f"\ndeposit scatters: {micro.get('scalar32_us', float('nan')):.3f} µs/particle "
          f"(32 scalar) → {micro.get('window16_us', float('nan')):.3f} (16 pair windows); "
          f"streaming the particle arrays once: {micro.get('stream_us', float('nan')):.4f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"n": args.n, "rows": rows, "deposit": micro, "cores": os.cpu_count(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    import rubix_eqx

    result["package"] = str(Path(rubix_eqx.__file__).parent)
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
