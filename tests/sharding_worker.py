"""Subprocess worker for tests/test_sharding.py and benchmarks/sharding.py.

Run as `python tests/sharding_worker.py MODE ARGS_JSON`; prints one line
`RESULT <json>` on success. Modes:

- `devices`: on several (forced host) devices, compare sharded and unsharded cubes and
  gradients for both engines, and summarise the collectives of the compiled HLO.
- `process`: one member of a multi-process run (`rx.sharding.initialize` from the
  `RUBIX_*` environment variables), loading its half of a galaxy file.
- `bench`: time the forward pass (and a gradient) of a sharded galaxy.

The device count comes from `XLA_FLAGS=--xla_force_host_platform_device_count=N`, set by
the parent: the parent pytest process keeps its single device.
"""

import collections
import json
import os
import re
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax


# As tests/conftest.py.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")

# As pyproject's pytest addopts: the package under the jaxtyping import hook.
from jaxtyping import install_import_hook


with install_import_hook(
    "rubix_eqx", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
):
    import rubix_eqx as rx
    import rubix_eqx.sharding as rs

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from tests.cases import observation, random_galaxy, tiny_ssp, tiny_telescope


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(hlo: str) -> list[dict]:
    """Every collective of a compiled HLO module: its kind and operand/result shapes."""
    found = []
    pattern = re.compile(r"=\s+(\S.*?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        m = pattern.search(line)
        if m:
            shapes = re.findall(r"[a-z]+\d*\[[\d,]*\]", m.group(1))
            found.append({"kind": m.group(2), "shapes": shapes})
    return found


def rel_err(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / np.max(np.abs(y)))


def pipeline(engine: str, lsf: bool = False) -> rx.Pipeline:
    return rx.Pipeline(tiny_telescope(), tiny_ssp(), lsf=lsf, engine=engine)


def mode_devices(n: int) -> dict:
    """Sharded vs unsharded, both engines, forward and gradient, plus HLO collectives."""
    mesh = rs.particle_mesh()
    galaxy = random_galaxy(0, n)
    sharded = rs.shard(galaxy, mesh)
    obs = observation()
    out = {
        "n_devices": len(jax.devices()),
        "n_padded": sharded.n_particles,
        "input_spec": str(sharded.age.sharding.spec),
        "position_spec": str(sharded.position.sharding.spec),
        "mesh_of_unsharded": rs.mesh_of(galaxy) is not None,
    }
    for engine, lsf in (("direct", False), ("histogram", False), ("direct", True)):
        pipe = pipeline(engine, lsf)

        def cube(g, pipe=pipe):
            return pipe(g, obs)

        def loss(params, g, pipe=pipe):
            age, inclination = params
            g = eqx.tree_at(lambda g: g.age, g, age)
            o = eqx.tree_at(lambda o: o.inclination, obs, inclination)
            return jnp.sum(pipe(g, o).flux ** 2)

        grad = jax.jit(jax.grad(loss))
        t0 = time.perf_counter()
        compiled = jax.jit(cube).lower(sharded).compile()
        compile_s = time.perf_counter() - t0
        got = compiled(sharded)
        ref = pipe(galaxy, obs)
        res = {
            "engine": pipe.engine_for(n),
            "compile_s": compile_s,
            "cube_rel_err": rel_err(got.flux, ref.flux),
            "cube_shape": list(got.flux.shape),
            "cube_spec": str(got.flux.sharding.spec),
            "work_shape": [pipe.telescope.n_x * pipe.telescope.n_y, pipe.grid.n_work],
            "hlo": collectives(compiled.as_text()),
            "n_particles_diag": int(got.diagnostics.n_particles),
            "n_outside_diag": [int(got.diagnostics.n_outside), int(ref.diagnostics.n_outside)],
            "outside_fraction_diag": [
                float(got.diagnostics.outside_mass_fraction),
                float(ref.diagnostics.outside_mass_fraction),
            ],
        }
        if not lsf:
            params = (sharded.age, obs.inclination)
            compiled_grad = grad.lower(params, sharded).compile()
            g_age, g_inc = compiled_grad(params, sharded)
            r_age, r_inc = grad((galaxy.age, obs.inclination), galaxy)
            res |= {
                "grad_rel_err": rel_err(g_age[:n], r_age),
                "grad_inclination_rel_err": rel_err(g_inc, r_inc),
                "grad_padding_max": float(jnp.max(jnp.abs(g_age[n:])))
                if sharded.n_particles > n
                else 0.0,
                "grad_sharding_equal": g_age.sharding.is_equivalent_to(sharded.age.sharding, 1),
                "grad_spec": str(g_age.sharding.spec),
                "hlo_grad": collectives(compiled_grad.as_text()),
            }
        out[f"{engine}{'_lsf' if lsf else ''}"] = res
    return out


def mode_process(path: str, out_path: str, n: int) -> dict:
    """One of several processes: initialize from RUBIX_* variables, load its half, and
    compute the cube (process 0 saves it)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    rs.initialize()
    reads = []
    read_rows = rs.read_rows

    def logged(dataset, name, start, stop):
        data = read_rows(dataset, name, start, stop)
        reads.append((name, start, stop))
        return data

    rs.read_rows = logged
    mesh = rs.particle_mesh()
    galaxy = rs.load_sharded_galaxy(path, mesh, dtype=jnp.float64)
    pipe = pipeline("direct")
    cube = pipe(galaxy, observation())
    flux = np.asarray(cube.flux.addressable_data(0))
    if jax.process_index() == 0:
        np.save(out_path, flux)
    shards = galaxy.mass.addressable_shards
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "n_devices": len(jax.devices()),
        "n_local_devices": len(jax.local_devices()),
        "rows_read": sorted({(start, stop) for _, start, stop in reads}),
        "local_rows": [list(s.index[0].indices(galaxy.n_particles))[:2] for s in shards],
        "n_padded": galaxy.n_particles,
        "fully_addressable": galaxy.mass.is_fully_addressable,
        "n_particles_diag": int(np.asarray(cube.diagnostics.n_particles.addressable_data(0))),
    }


def mode_bench(n: int, engine: str, repeats: int) -> dict:
    """Median wall time of the sharded forward pass and of a gradient w.r.t. ages."""
    galaxy = random_galaxy(0, n)
    sharded = rs.shard(galaxy, rs.particle_mesh())
    obs = observation()
    pipe = pipeline(engine)

    def flux(g):
        return pipe(g, obs).flux

    def loss(age, g):
        return jnp.sum(pipe(eqx.tree_at(lambda g: g.age, g, age), obs).flux ** 2)

    out = {
        "n_devices": len(jax.devices()),
        "n": n,
        "engine": pipe.engine_for(n),
    }
    for name, fn, args in (
        ("forward", jax.jit(flux), (sharded,)),
        ("grad", jax.jit(jax.grad(loss)), (sharded.age, sharded)),
    ):
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        out[f"{name}_compile_s"] = time.perf_counter() - t0
        jax.block_until_ready(compiled(*args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = float(np.median(times))
        out[f"{name}_min_s"] = float(np.min(times))
        kinds = collections.Counter(c["kind"] for c in collectives(compiled.as_text()))
        out[f"{name}_collectives"] = dict(kinds)
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = {"devices": mode_devices, "process": mode_process, "bench": mode_bench}[mode](**args)
    print("RESULT " + json.dumps(result), flush=True)
    if mode == "process":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
