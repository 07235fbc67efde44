"""Cost of the traced input checks (`Galaxy.checked()`, `Observation.checked()`) in the
forward pass.

    python benchmarks/checks_overhead.py [--n-stars 100000] [--repeats 5]

Setup (as the README): MUSE-WFM 40×40 spaxels (3681 wavelengths), E-MILES, a synthetic
disk of 10⁵ particles, z = 0.05, inclination 60°, position angle 30°,
`rx.Pipeline(tel, ssp, lsf=False)` (float32). The jitted forward pass
(`rubix_eqx._pipeline._forward`, where the checks are applied) is compiled ahead of time
twice: as shipped, and with `rx.Galaxy.checked` / `rx.Observation.checked` monkeypatched
to return `self`. Both executables are checked to behave as labelled (only the first
raises on a NaN mass), warmed up once, then timed alternately (A B A B ...; the machine may
be busy) `--repeats` times each. Prints the medians and the overhead, and writes
`benchmarks/results/checks_overhead.json`. Target: overhead < 5 %.
"""

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import rubix_eqx as rx
from rubix_eqx import _pipeline


HERE = Path(__file__).resolve().parent
TARGET_PERCENT = 5.0


def forward_checked(pipeline, galaxy, observation):
    return _pipeline._forward.__wrapped__(pipeline, galaxy, observation, None).flux


def forward_unchecked(pipeline, galaxy, observation):
    # Same body; traced while the checks are patched out. A distinct function (name) so
    # that Equinox's compile cache keeps the two executables apart.
    return _pipeline._forward.__wrapped__(pipeline, galaxy, observation, None).flux


def compile_variant(fn, args):
    t0 = time.perf_counter()
    compiled = eqx.filter_jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def raises_on_nan_mass(compiled, pipeline, galaxy, observation) -> bool:
    bad = eqx.tree_at(lambda g: g.mass, galaxy, galaxy.mass.at[0].set(jnp.nan))
    callback_logger = logging.getLogger("jax._src.callback")  # logs the expected error in full
    level = callback_logger.level
    callback_logger.setLevel(logging.CRITICAL)
    try:
        compiled(pipeline, bad, observation).block_until_ready()
    except (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError) as e:  # AOT-compiled: the latter
        return "`Galaxy.mass` has values that are NaN" in str(e)
    finally:
        callback_logger.setLevel(level)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "checks_overhead.json"))
    args = parser.parse_args()

    tel = rx.Telescope.preset("MUSE-WFM", n_x=40, n_y=40)
    ssp = rx.SSPGrid.load("miles")
    galaxy, _ = rx.galaxy.synthetic_disk(jax.random.key(0), args.n_stars)
    observation = rx.Observation(redshift=0.05, inclination=60.0, position_angle=30.0)
    pipeline = rx.Pipeline(tel, ssp, lsf=False)
    pipeline.check_coverage(0.05)
    call_args = (pipeline, galaxy, observation)

    checked, compile_checked = compile_variant(forward_checked, call_args)
    original = (rx.Galaxy.checked, rx.Observation.checked)
    rx.Galaxy.checked = lambda self: self  # type: ignore[method-assign]
    rx.Observation.checked = lambda self: self  # type: ignore[method-assign]
    try:
        unchecked, compile_unchecked = compile_variant(forward_unchecked, call_args)
    finally:
        rx.Galaxy.checked, rx.Observation.checked = original  # type: ignore[method-assign]

    assert raises_on_nan_mass(checked, *call_args), "the checked forward pass did not raise"
    assert not raises_on_nan_mass(unchecked, *call_args), "the unchecked forward pass raised"
    same = bool(jnp.array_equal(checked(*call_args), unchecked(*call_args)))  # also the warm-up

    times: dict[str, list[float]] = {"checked": [], "unchecked": []}
    for _ in range(args.repeats):
        for name, compiled in (("checked", checked), ("unchecked", unchecked)):
            t0 = time.perf_counter()
            compiled(*call_args).block_until_ready()
            times[name].append(time.perf_counter() - t0)

    median = {k: statistics.median(v) for k, v in times.items()}
    overhead = 100.0 * (median["checked"] / median["unchecked"] - 1.0)
    engine = pipeline.engine_for(galaxy.n_particles)
    print(
        f"forward pass, MUSE-WFM 40x40x{tel.n_wave}, {args.n_stars} particles, engine {engine}, "
        f"float32, {jax.devices()[0].platform}"
    )
    for name in ("checked", "unchecked"):
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"  {name:>9}: median {median[name]:.3f} s  (runs {runs} s)")
    print(f"  cubes identical: {same}")
    verdict = "OK" if overhead < TARGET_PERCENT else "ABOVE TARGET"
    target = f"target < {TARGET_PERCENT:g} %: {verdict}"
    print(f"overhead of the traced checks: {overhead:+.2f} % ({target})")

    result = {
        "case": "checks_overhead",
        "description": "forward pass with vs without the traced checks "
        "(Galaxy.checked(), Observation.checked())",
        "telescope": f"MUSE-WFM {tel.n_x}x{tel.n_y}x{tel.n_wave}",
        "ssp": ssp.name,
        "n_particles": args.n_stars,
        "engine": engine,
        "dtype": "float32",
        "redshift": 0.05,
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": median,
        "compile_seconds": {"checked": compile_checked, "unchecked": compile_unchecked},
        "overhead_percent": overhead,
        "target_percent": TARGET_PERCENT,
        "within_target": overhead < TARGET_PERCENT,
        "cubes_identical": same,
        "platform": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
