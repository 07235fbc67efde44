"""Particle sharding benchmark: the same galaxy on 1, 2 and 4 devices.

    python benchmarks/sharding.py [--n-direct 100000,300000] [--n-histogram 100000,1000000]
                                  [--devices 1,2,4] [--repeats 5]

Each device count runs in a fresh Python process with
`XLA_FLAGS=--xla_force_host_platform_device_count=D` (the worker is
`tests/sharding_worker.py bench`): the galaxy is padded and sharded with
`rx.sharding.shard` over a 1-D `"particles"` mesh, the forward pass (flux) and a gradient
with respect to the ages are compiled ahead of time, run once as a warm-up and timed
`--repeats` times (median reported). Prints a table and writes
`benchmarks/results/sharding.json`.

On a CPU these "devices" are not separate hardware: the forced host devices are threads
sharing the machine's cores (2 on the reference machine), so a speed-up beyond the
number of cores is impossible and the numbers measure the overhead and the parallelism
of the sharded program, not multi-GPU scaling. The problem is the tiny synthetic test
case (tests/cases.py: 10×10 spaxels, 601 wavelengths, 12 templates), so no MILES data is
needed.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = REPO / "tests" / "sharding_worker.py"


def run(n: int, n_devices: int, engine: str, repeats: int, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env.setdefault("JAX_PLATFORMS", "cpu")
    args = json.dumps({"n": n, "engine": engine, "repeats": repeats})
    proc = subprocess.run(
        [sys.executable, str(WORKER), "bench", args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {
            "n": n,
            "n_devices": n_devices,
            "engine": engine,
            "ok": False,
            "error": proc.stderr[-2000:],
        }
    return json.loads(lines[-1][len("RESULT ") :]) | {"ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-direct", default="100000,300000", help="'' to skip the engine")
    parser.add_argument("--n-histogram", default="100000,1000000", help="'' to skip the engine")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sharding.json")
    args = parser.parse_args()

    results = []
    sizes = {"direct": args.n_direct, "histogram": args.n_histogram}
    for engine, n_list in sizes.items():
        for n in (int(x) for x in n_list.split(",") if x):
            for n_devices in (int(x) for x in args.devices.split(",")):
                r = run(n, n_devices, engine, args.repeats, args.timeout)
                results.append(r)
                print(
                    f"  done: {engine} N={n} devices={n_devices} ok={r['ok']}",
                    file=sys.stderr,
                    flush=True,
                )

    header = (
        f"{'engine':<10} {'N':>8} {'dev':>4} {'forward s':>10} {'speed-up':>9} "
        f"{'grad s':>8} {'speed-up':>9} {'compile s':>10} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if not r["ok"]:
            print(f"{r['engine']:<10} {r['n']:>8} {r['n_devices']:>4}  FAILED")
            continue
        base = next(
            b for b in results if b["ok"] and b["engine"] == r["engine"] and b["n"] == r["n"]
        )
        print(
            f"{r['engine']:<10} {r['n']:>8} {r['n_devices']:>4} {r['forward_s']:>10.3f} "
            f"{base['forward_s'] / r['forward_s']:>8.2f}x {r['grad_s']:>8.3f} "
            f"{base['grad_s'] / r['grad_s']:>8.2f}x {r['forward_compile_s']:>10.2f} "
            f"{r['loadavg_1min']:>5.1f}"
        )
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": (
            "CPU 'devices' are forced host devices "
            "(XLA_FLAGS=--xla_force_host_platform_device_count) "
            f"sharing the machine's {os.cpu_count()} cores: not independent hardware."
        ),
        "problem": (
            "tests/cases.py tiny_telescope (10x10 spaxels, 601 wavelengths), tiny_ssp, lsf=False"
        ),
        "timing": f"median of {args.repeats} runs after compile and one warm-up",
        "load": "loadavg_1min: the machine's 1-minute load average after each run (other jobs)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
