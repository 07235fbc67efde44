"""Particle sharding: one galaxy spread over many devices, on one machine or many.

The cube is a sum over particles, so the particle arrays of a [`rubix_eqx.Galaxy`][] are
split along a 1-D device mesh axis named `"particles"` (a
`jax.sharding.NamedSharding(mesh, P("particles", ...))`); everything else (the cube, the
SSP templates, the telescope) is replicated. Inside the jitted pipeline each device
computes the partial cube of its own particles and the partial cubes are added with a
single all-reduce ([`rubix_eqx.sharding.sum_over_particles`][]). Across machines this is
JAX's own multi-process runtime ([`rubix_eqx.sharding.initialize`][]); each process then
reads only its rows of the galaxy file ([`rubix_eqx.sharding.load_sharded_galaxy`][]).

```python
mesh = rx.sharding.particle_mesh()          # every device of every process
galaxy = rx.shard(galaxy, mesh)             # padded to a multiple of the device count
cube = rx.Pipeline(telescope, ssp)(galaxy, observation)
```

See docs/scaling.md for one GPU, a multi-GPU node and a SLURM cluster.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .galaxy import Galaxy
from .galaxy._io import LAYOUT, open_galaxy_file, OPTIONAL_LAYOUT, particle_datasets, read_rows


AXIS = "particles"
"""The name of the mesh axis that particle arrays are split along."""

# Padding particles: zero mass (so zero amplitude: they add exactly 0 to the cube and
# to every gradient of another particle), at the centre, at rest, with an age and a
# metallicity inside any SSP grid (so they are never counted as clipped).
PAD_VALUES = {
    "position": 0.0, "velocity": 0.0, "mass": 0.0, "age": 1.0, "metallicity": 0.019,
    "smoothing_length": 1.0,
}  # fmt: skip

# Environment variables read by `initialize` (before JAX's own auto-detection).
ENV_COORDINATOR = "RUBIX_COORDINATOR"
ENV_NUM_PROCESSES = "RUBIX_NUM_PROCESSES"
ENV_PROCESS_ID = "RUBIX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "RUBIX_LOCAL_DEVICE_IDS"


def particle_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D device mesh with the axis `"particles"`.

    **Arguments:**

    - `devices`: the devices to spread the particles over (default: `jax.devices()`, i.e.
      every device of every process once [`rubix_eqx.sharding.initialize`][] has run).

    **Returns:** a `jax.sharding.Mesh` of shape `(len(devices),)`.
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("`particle_mesh(devices=...)` must contain at least one device.")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def particle_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """The sharding of an `ndim`-D particle array: split on its first (particle) axis
    over the mesh axis `"particles"`, replicated over any other mesh axis."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P(AXIS, *([None] * (ndim - 1))))


def padded_size(n_particles: int, mesh: Mesh) -> int:
    """`n_particles` rounded up to a multiple of the mesh's `"particles"` axis size."""
    n_dev = _check_mesh(mesh)
    return -(-n_particles // n_dev) * n_dev


def shard(galaxy: Galaxy, mesh: Mesh | None = None) -> Galaxy:
    """`galaxy` padded and split over the devices of `mesh` along its particles.

    The number of particles is padded to a multiple of the mesh's `"particles"` axis with
    zero-mass particles (position and velocity 0, age 1 Gyr, metallicity 0.019): they add
    exactly nothing to the cube or to the gradient with respect to any real particle, and
    their own gradients are 0. The real particles keep their indices `0 … n - 1`, so
    `grad.age[:n]` are the gradients of the input galaxy. Note that the cube's
    `diagnostics.n_particles` counts the padding too.

    Every process must pass the same `galaxy` (on the host or any device); each keeps
    only its own rows on its devices. For data too large for one host, use
    [`rubix_eqx.sharding.load_sharded_galaxy`][].

    **Arguments:**

    - `galaxy`: a [`rubix_eqx.Galaxy`][].
    - `mesh`: a mesh with an axis `"particles"` (default:
      [`rubix_eqx.sharding.particle_mesh`][]`()`).

    **Returns:** a [`rubix_eqx.Galaxy`][] whose arrays carry
    `NamedSharding(mesh, P("particles", ...))`.
    """
    mesh = particle_mesh() if mesh is None else mesh
    n = galaxy.n_particles
    n_pad = padded_size(n, mesh)
    arrays = {}
    for name in LAYOUT | OPTIONAL_LAYOUT:
        if getattr(galaxy, name) is None:
            continue
        host = np.asarray(getattr(galaxy, name))
        fill = np.full((n_pad - n,) + host.shape[1:], PAD_VALUES[name], host.dtype)
        padded = np.concatenate([host, fill])
        arrays[name] = jax.make_array_from_callback(
            padded.shape, particle_sharding(mesh, padded.ndim), lambda index, a=padded: a[index]
        )
    return _assemble(**arrays)


def mesh_of(galaxy: Galaxy) -> Any:
    """The (possibly abstract) mesh that `galaxy`'s particles are split over, or `None`.

    Works on concrete arrays and on tracers (under `jit`, `grad`, ...): JAX keeps the mesh
    of an input's `NamedSharding` in its abstract value. Returns `None` unless that mesh
    has an axis `"particles"` dividing the number of particles.
    """
    leaf = galaxy.mass
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        sharding = leaf.sharding  # a concrete array: its device mesh
        if not isinstance(sharding, NamedSharding):
            return None
        mesh = sharding.mesh
    else:
        try:
            mesh = jax.typeof(leaf).sharding.mesh  # a tracer: its abstract mesh
        except AttributeError:
            return None
    if AXIS not in mesh.axis_names:
        return None
    if galaxy.n_particles % mesh.shape[AXIS]:
        return None
    return mesh


def sum_over_particles(fn: Callable[..., Any], galaxy: Galaxy, *args: Any) -> Any:
    """`fn(galaxy, *args)`, a pytree of arrays that are sums over the particles of
    `galaxy` (a partial cube, a total mass, a count), computed device by device.

    If `galaxy` is split over a mesh axis `"particles"` (see
    [`rubix_eqx.sharding.shard`][]), `fn` runs once per device on that device's
    particles (`jax.shard_map`, `args` replicated) and the per-device results are added
    by one all-reduce. Otherwise this is just
    `fn(galaxy, *args)`. Gradients flow through both; gradients with respect to the
    galaxy come back split the same way.

    Only for sums: a result that is not additive over particles (a maximum, a count of
    the mesh's devices) would be wrong on more than one device.
    """
    mesh = mesh_of(galaxy)
    if mesh is None:
        return fn(galaxy, *args)
    galaxy_dynamic, galaxy_static = eqx.partition(galaxy, eqx.is_array)
    args_dynamic, args_static = eqx.partition(args, eqx.is_array)

    def local(galaxy_dynamic, args_dynamic):
        out = fn(
            eqx.combine(galaxy_dynamic, galaxy_static), *eqx.combine(args_dynamic, args_static)
        )
        return jax.tree.map(lambda x: x[None], out)  # this device's row of (n_dev, ...)

    in_specs = (
        jax.tree.map(lambda x: P(AXIS), galaxy_dynamic),
        jax.tree.map(lambda x: P(), args_dynamic),
    )
    # The partial results leave the shard_map stacked along the device axis and are
    # added outside it: XLA lowers that sum to one all-reduce in the forward pass, and
    # its transpose is a broadcast, so the backward pass moves no particle-sized and no
    # cube-sized data (a psum inside a `check_vma=False` shard_map would all-reduce the
    # cotangent again). check_vma=False: `eqx.error_if` (a callback inside a `cond`)
    # carries no varying-axis types.
    mapped = jax.shard_map(
        local, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS), axis_names={AXIS}, check_vma=False
    )
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), mapped(galaxy_dynamic, args_dynamic))


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
) -> None:
    """Start JAX's multi-process runtime (`jax.distributed.initialize`): call it once in
    every process, first thing, before any other JAX call.

    Each setting comes from, in order: the argument; the environment variable
    `RUBIX_COORDINATOR` (`host:port` of process 0), `RUBIX_NUM_PROCESSES`,
    `RUBIX_PROCESS_ID` or `RUBIX_LOCAL_DEVICE_IDS` (comma-separated, e.g. `0` for one
    process per GPU); JAX's own variables `JAX_COORDINATOR_ADDRESS`,
    `JAX_LOCAL_DEVICE_IDS`; and finally JAX's cluster auto-detection: under SLURM it
    reads `SLURM_JOB_ID`, `SLURM_STEP_NODELIST` (coordinator = first node, port from the
    job id or `JAX_COORDINATOR_PORT`), `SLURM_NTASKS`, `SLURM_PROCID` and `SLURM_LOCALID`
    (which also selects the GPU: one process per GPU); Open MPI's `OMPI_*` variables are
    detected likewise. Does nothing if the runtime is already initialized.

    CPU collectives (for CPU-only runs and tests) use gloo unless
    `jax_cpu_collectives_implementation` was set otherwise.

    **Arguments:** as `jax.distributed.initialize`.
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get(ENV_COORDINATOR) or None
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = int(env[ENV_PROCESS_ID])
    if local_device_ids is None and env.get(ENV_LOCAL_DEVICE_IDS):
        local_device_ids = [int(i) for i in env[ENV_LOCAL_DEVICE_IDS].split(",")]
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


def load_sharded_galaxy(path: str | os.PathLike, mesh: Mesh | None = None, *, dtype=None) -> Galaxy:
    """Read a galaxy file (the layout of [`rubix_eqx.galaxy.to_hdf5`][], checked as
    [`rubix_eqx.galaxy.from_hdf5`][] checks it) straight into sharded arrays: each process
    reads only the rows of the particles that live on its own devices.

    Particles are padded as in
    [`rubix_eqx.sharding.shard`][]. The rows read are checked as `Galaxy` checks its
    values (`ValueError` naming the field and the row).

    **Arguments:**

    - `path`: the HDF5 file (visible to every process).
    - `mesh`: a mesh with an axis `"particles"` (default:
      [`rubix_eqx.sharding.particle_mesh`][]`()`).
    - `dtype`: float dtype of the arrays (default: JAX's default float).

    **Returns:** a [`rubix_eqx.Galaxy`][] of global arrays with
    `NamedSharding(mesh, P("particles", ...))`.
    """
    mesh = particle_mesh() if mesh is None else mesh
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    with open_galaxy_file(path) as f:
        datasets, n = particle_datasets(path, f)
        n_pad = padded_size(n, mesh)
        arrays = {
            name: jax.make_array_from_callback(
                (n_pad,) + tail,
                particle_sharding(mesh, 1 + len(tail)),
                lambda index, name=name: _padded_rows(
                    datasets[name], name, index[0], n, n_pad, dtype
                ),
            )
            for name, (tail, _) in (LAYOUT | OPTIONAL_LAYOUT).items()
            if name in datasets
        }
    return _assemble(**arrays)


def _padded_rows(
    dataset: h5py.Dataset, name: str, rows: slice, n: int, n_pad: int, dtype
) -> np.ndarray:
    """Rows `rows` of the particle array `name` padded to `n_pad`: read (and checked) from
    the file below `n`, padding values from `n` on."""
    start, stop, _ = rows.indices(n_pad)
    data = read_rows(dataset, name, start, min(stop, n))
    fill = np.full((stop - start - data.shape[0],) + dataset.shape[1:], PAD_VALUES[name])
    return np.concatenate([data, fill]).astype(dtype)


def _assemble(**arrays: jax.Array) -> Galaxy:
    """A `Galaxy` of already-checked arrays, built without `Galaxy.__init__`: its value
    checks would fetch every particle to the host, which is impossible for arrays that
    span other processes' devices."""
    layout = {k: v for k, v in (LAYOUT | OPTIONAL_LAYOUT).items() if k in arrays}
    template = Galaxy(
        **{name: jnp.full((1,) + tail, PAD_VALUES[name]) for name, (tail, _) in layout.items()}
    )
    return jax.tree.unflatten(jax.tree.structure(template), [arrays[name] for name in layout])


def _check_mesh(mesh: Mesh) -> int:
    if AXIS not in mesh.axis_names:
        raise ValueError(f"The mesh must have an axis {AXIS!r}; got axes {mesh.axis_names}.")
    return mesh.shape[AXIS]
