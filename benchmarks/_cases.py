"""Child-side measurements for `benchmarks/run.py`.

Every measurement runs in a fresh Python process (`run.py --child SPEC`) so that peak
RSS is per size; the child prints one line `@@RESULT <json>` on stdout. Nothing here
is imported by the package or the tests.
"""

import functools
import gc
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import rubix_eqx as rx


REPO = Path(__file__).resolve().parents[1]
REDSHIFT, INCLINATION, POSITION_ANGLE = 0.05, 60.0, 30.0
MUSE_START, MUSE_STEP = 4750.0, 1.25
GEN_CHUNK = 1_000_000  # galaxies larger than this are drawn in pieces (bounded setup memory)
FLOP_PER_UPDATE = 17  # 8-row gather-FMA (4 templates x 2 Doppler neighbours) + 1 accumulate


# ----------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else -1


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    """Peak RSS (VmHWM) since the last `reset_hwm()` (or process start)."""
    return _status_kb("VmHWM") / 1024


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def maxrss_mb() -> float:
    """ru_maxrss: lifetime peak of this process (kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- inputs


def n_wave_stop(n_wave: int) -> float:
    """`wavelength.stop` of a MUSE-WFM grid cropped to `n_wave` pixels."""
    return MUSE_START + (n_wave - 1) * MUSE_STEP


def pipeline_kwargs(engine=None, core=False) -> dict:
    """Keyword arguments for `rx.Pipeline`: the package defaults, except

    - `allow_sharper_lsf=True` (MUSE is sharper than E-MILES in the red at z = 0.05, which
      the default LSF stage treats as an error),
    - `core=True`: no LSF, PSF or aperture stage (particle sum + rebin only),
    - `engine` if given. Only arguments the installed Pipeline accepts are passed."""
    params = inspect.signature(rx.Pipeline.__init__).parameters
    kw = {}
    if engine and "engine" in params:
        kw["engine"] = engine
    if core:
        kw.update({k: False for k in ("lsf", "psf", "aperture") if k in params})
    elif "allow_sharper_lsf" in params:
        kw["allow_sharper_lsf"] = True
    return kw


def stages(pipe) -> list[str]:
    """The optional stages present in `pipe`."""
    return [k for k in ("lsf", "psf", "noise", "aperture") if getattr(pipe, k, None) is not None]


def make_setup(n_x=40, n_y=40, n_wave=None, engine=None, core=False):
    """SSP grid, MUSE-WFM telescope, pipeline (see `pipeline_kwargs`) and the
    observation used by every case."""
    ssp = rx.SSPGrid.load("miles")
    overrides = (
        {} if n_wave is None or n_wave >= 3681 else {"wavelength": {"stop": n_wave_stop(n_wave)}}
    )
    tel = rx.Telescope.preset("MUSE-WFM", n_x=n_x, n_y=n_y, **overrides)
    pipe = rx.Pipeline(tel, ssp, **pipeline_kwargs(engine, core))
    obs = rx.Observation(redshift=REDSHIFT, inclination=INCLINATION, position_angle=POSITION_ANGLE)
    return ssp, tel, pipe, obs


CACHE = Path(
    os.environ.get(
        "RUBIX_EQX_BENCH_CACHE", Path(tempfile.gettempdir()) / "rubix_eqx_bench_galaxies"
    )
)
FIELDS = ("position", "velocity", "mass", "age", "metallicity")


@functools.cache
def _drawer(n: int, total_mass: float):
    return jax.jit(lambda k: rx.galaxy.synthetic_disk(k, n_stars=n, total_mass=total_mass)[0])


def _draw(key, n: int, total_mass: float) -> dict:
    """`synthetic_disk`, jitted (eager dispatch of its many small ops costs seconds)."""
    g = _drawer(n, total_mass)(key)
    return {f: np.asarray(getattr(g, f)) for f in FIELDS}


def make_galaxy(n: int) -> rx.Galaxy:
    """`synthetic_disk(key(0), n)` (float32, 1e10 M☉); for n > 1e6 drawn in 1e6 pieces
    with keys folded from key(0) (bounded setup memory). Cached as .npy files in
    $RUBIX_EQX_BENCH_CACHE (default: a temporary directory) so that later processes
    skip the generation."""
    source = Path(rx.galaxy.__file__).parent / "_synthetic.py"
    tag = hashlib.sha256(source.read_bytes()).hexdigest()[:8] if source.exists() else "x"
    folder = CACHE / f"disk_{n}_{tag}"
    if not all((folder / f"{f}.npy").exists() for f in FIELDS):
        if n <= GEN_CHUNK:
            arrays = _draw(jax.random.key(0), n, 1e10)
        else:
            sizes = [GEN_CHUNK] * (n // GEN_CHUNK) + ([n % GEN_CHUNK] if n % GEN_CHUNK else [])
            pieces = [
                _draw(jax.random.fold_in(jax.random.key(0), i), m, 1e10 * m / n)
                for i, m in enumerate(sizes)
            ]
            arrays = {f: np.concatenate([p.pop(f) for p in pieces]) for f in FIELDS}
            del pieces
        tmp = CACHE / f"disk_{n}_{tag}.tmp{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        for f in FIELDS:
            np.save(tmp / f"{f}.npy", arrays[f])
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            pass
        del arrays
    gal = rx.Galaxy(**{f: jnp.asarray(np.load(folder / f"{f}.npy")) for f in FIELDS})
    gc.collect()
    return gal


def engine_used(pipe, n: int) -> str:
    """Which particle-sum engine the pipeline runs for n particles ("direct" if the
    package has only one)."""
    return pipe.engine_for(n) if hasattr(pipe, "engine_for") else "direct"


def package_hash() -> str:
    """Short hash of the package's .py sources (to spot edits during a run)."""
    h = hashlib.sha256()
    for p in sorted(Path(rx.__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def abstract_galaxy(n: int):
    """A `Galaxy` of ShapeDtypeStructs (for compile-only memory analysis)."""
    return eqx.filter_eval_shape(lambda: rx.galaxy.synthetic_disk(jax.random.key(0), n_stars=n)[0])


# ----------------------------------------------------------------------------- compile


def _is_dyn(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def aot(fn, *args):
    """Ahead-of-time compile `fn(*args)` with jax.jit over all array leaves.

    Returns `(call, info)`: `call()` runs the compiled executable on `args` (not usable
    when `args` are abstract); `info` holds trace+lower and XLA compile times and the
    compiled memory analysis."""
    dyn, static = eqx.partition(args, _is_dyn)
    jitted = jax.jit(lambda d: fn(*eqx.combine(d, static)))
    t0 = time.perf_counter()
    lowered = jitted.lower(dyn)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    info = {"trace_lower_s": t1 - t0, "xla_compile_s": t2 - t1, "compile_s": t2 - t0}
    try:
        ma = compiled.memory_analysis()
        info["memory_analysis"] = {
            k: int(getattr(ma, k))
            for k in (
                "temp_size_in_bytes",
                "argument_size_in_bytes",
                "output_size_in_bytes",
                "alias_size_in_bytes",
            )
        }
    except Exception as e:  # noqa: BLE001 (backend without memory analysis)
        info["memory_analysis"] = {"error": repr(e)}
    return (lambda: compiled(dyn)), info


def forward_fn(pipe, gal, obs):
    return pipe(gal, obs).flux


def grad_fn(params, pipe, gal, obs, target, inv_sigma):
    def loss(p):
        g = eqx.tree_at(lambda g: (g.age, g.metallicity), gal, (p["age"], p["metallicity"]))
        return jnp.sum(((pipe(g, obs).flux - target) * inv_sigma) ** 2)

    return eqx.filter_grad(loss)(params)


# ----------------------------------------------------------------------------- timing


def _run(call):
    t = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t


def n_repeats(t_one: float, budget: float, min_repeats: int = 5, max_repeats: int = 20) -> int:
    """5..20 timed runs when they fit in `budget` seconds, else as many as fit (>= 1)."""
    if t_one <= 0:
        return max_repeats
    fit = int(budget // t_one)
    if fit >= min_repeats:
        return min(max_repeats, max(min_repeats, int(0.5 * budget // t_one)))
    return max(1, fit)


def time_calls(calls: dict, budget: float, warmup: bool, predicted: float | None = None) -> dict:
    """Warm up (optional) then time the callables interleaved (same load for each).
    Returns per-name {median_s, min_s, runs_s, warmup_s}."""
    out = {name: {"runs_s": []} for name in calls}
    first = {}
    for name, call in calls.items():
        first[name] = _run(call)
    t_pair = sum(first.values())
    if warmup:
        for name in calls:
            out[name]["warmup_s"] = first[name]
        repeats = n_repeats(t_pair, budget)
    else:  # the first run after the AOT compile is itself a timed run (no compile in it)
        for name in calls:
            out[name]["warmup_s"] = None
            out[name]["runs_s"].append(first[name])
        repeats = n_repeats(t_pair, budget) - 1
    for _ in range(repeats):
        for name, call in calls.items():
            out[name]["runs_s"].append(_run(call))
    for name in calls:
        runs = out[name]["runs_s"]
        out[name].update(median_s=statistics.median(runs), min_s=min(runs), n_runs=len(runs))
        out[name]["repeats_reduced_by_budget"] = len(runs) < 5
    return out


def rates(n: int, n_wave: int, n_work: int, seconds: float) -> dict:
    return {
        "particle_lambda_per_s": n * n_wave / seconds,
        "particle_workbin_per_s": n * n_work / seconds,
    }


# ----------------------------------------------------------------------------- children


def child_forward(spec: dict) -> dict:
    """One forward size: compile, memory analysis, warm-up + timed runs, peak RSS.

    mode "time": full timing. mode "probe": one execution watched for `probe_s`
    seconds then abandoned (peak RSS only; for sizes whose run would exceed the
    time limit). mode "compile": compile-only memory analysis on abstract inputs."""
    n, mode = int(spec["n"]), spec.get("mode", "time")
    _, tel, pipe, obs = make_setup(
        spec.get("n_x", 40),
        spec.get("n_y", 40),
        spec.get("n_wave"),
        spec.get("engine"),
        spec.get("core", False),
    )
    res = {
        "n": n,
        "n_x": tel.n_x,
        "n_y": tel.n_y,
        "n_wave": tel.n_wave,
        "n_work": pipe.grid.n_work,
        "mode": mode,
    }
    res["engine_used"] = engine_used(pipe, n)
    res["particle_bytes"] = n * 9 * 4  # position, velocity (3 each), mass, age, Z in float32
    if mode == "compile":
        _, info = aot(forward_fn, pipe, abstract_galaxy(n), obs)
        res["compile"] = info
        return res
    gal = make_galaxy(n)
    jax.block_until_ready(gal)
    res["setup_peak_rss_mb"] = maxrss_mb()
    call, info = aot(forward_fn, pipe, gal, obs)
    res["compile"] = info
    gc.collect()
    res["rss_before_run_mb"] = rss_mb()
    res["hwm_reset"] = reset_hwm()
    if mode == "probe":
        done = threading.Event()
        box = {}

        def target():
            box["t"] = _run(call)
            done.set()

        t0 = time.perf_counter()
        threading.Thread(target=target, daemon=True).start()
        done.wait(float(spec["probe_s"]))
        res["probe"] = {
            "watched_s": time.perf_counter() - t0,
            "completed": done.is_set(),
            "run_s": box.get("t"),
        }
        res["peak_rss_mb"] = hwm_mb()
        res["ru_maxrss_mb"] = maxrss_mb()
        res["rss_truncated"] = not done.is_set()
        return res
    timing = time_calls({"forward": call}, float(spec["budget"]), bool(spec.get("warmup", True)))[
        "forward"
    ]
    res.update(timing)
    res.update(rates(n, tel.n_wave, pipe.grid.n_work, timing["median_s"]))
    res["peak_rss_mb"] = hwm_mb()
    res["ru_maxrss_mb"] = maxrss_mb()
    if spec.get("public_call") and timing["median_s"] < 2.0:
        import logging

        logging.getLogger("rubix_eqx").setLevel(logging.ERROR)
        pipe(gal, obs).flux.block_until_ready()
        res["public_call_median_s"] = statistics.median(
            _run(lambda: pipe(gal, obs).flux) for _ in range(5)
        )
    return res


def child_grad(spec: dict) -> dict:
    """filter_grad of a χ² loss w.r.t. all ages and metallicities, with the forward
    timed interleaved in the same process (so that the ratio sees the same load). The
    forward's warm-up is the run that makes the target, the gradient's the run that
    checks its gradients are finite."""
    n, mode = int(spec["n"]), spec.get("mode", "time")
    _, tel, pipe, obs = make_setup(engine=spec.get("engine"), core=spec.get("core", False))
    res = {
        "n": n,
        "n_wave": tel.n_wave,
        "n_work": pipe.grid.n_work,
        "mode": mode,
        "engine_used": engine_used(pipe, n),
    }
    if mode == "compile":
        gal = abstract_galaxy(n)
        params = {"age": gal.age, "metallicity": gal.metallicity}
        flux = jax.ShapeDtypeStruct((tel.n_x, tel.n_y, tel.n_wave), jnp.float32)
        res["compile_grad"] = aot(grad_fn, params, pipe, gal, obs, flux, flux)[1]
        return res
    gal = make_galaxy(n)
    fwd, info_f = aot(forward_fn, pipe, gal, obs)
    target = jax.block_until_ready(fwd()) * 1.05 + 1e-3
    inv_sigma = 1.0 / (0.05 * jnp.abs(target) + 1e-2)
    params = {"age": gal.age, "metallicity": gal.metallicity}
    grd, info_g = aot(grad_fn, params, pipe, gal, obs, target, inv_sigma)
    res["compile_forward"], res["compile_grad"] = info_f, info_g
    t0 = time.perf_counter()
    g = jax.block_until_ready(grd())  # also the gradient's warm-up (the forward's was the target)
    res["grad_first_run_s"] = time.perf_counter() - t0
    res["grad_finite"] = bool(all(bool(jnp.all(jnp.isfinite(v))) for v in g.values()))
    del g
    gc.collect()
    res["rss_before_run_mb"] = rss_mb()
    res["hwm_reset"] = reset_hwm()
    t = time_calls({"forward": fwd, "grad": grd}, float(spec["budget"]), False)
    res["forward"], res["grad"] = t["forward"], t["grad"]
    res["ratio_grad_over_forward"] = t["grad"]["median_s"] / t["forward"]["median_s"]
    res["peak_rss_mb"] = hwm_mb()
    res["ru_maxrss_mb"] = maxrss_mb()
    return res


def _load_reference():
    path = os.environ.get("RUBIX_EQX_BENCH_REFERENCE", REPO / "tests" / "reference.py")
    spec = importlib.util.spec_from_file_location("rubix_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def child_reference(spec: dict) -> dict:
    """The NumPy float64 reference (tests/reference.py, loop over particles) against the
    compiled core pipeline (no LSF, PSF, aperture: the reference has none) on the same
    inputs."""
    import astropy.cosmology

    ref = _load_reference()
    n = int(spec["n"])
    # the reference models the particle sum and the rebin only: compare the core pipeline
    ssp, tel, pipe, obs = make_setup(engine=spec.get("engine"), core=True)
    gal = make_galaxy(n)
    fwd, info = aot(forward_fn, pipe, gal, obs)
    kwargs = dict(
        position=np.asarray(gal.position), velocity=np.asarray(gal.velocity), mass=np.asarray(gal.mass),
        age=np.asarray(gal.age), metallicity=np.asarray(gal.metallicity),
        ssp_age=np.asarray(ssp.age), ssp_metallicity=np.asarray(ssp.metallicity),
        ssp_wavelength=np.asarray(ssp.wavelength), ssp_flux=np.asarray(ssp.flux),
        redshift=REDSHIFT,
        d_l=astropy.cosmology.Planck18.luminosity_distance(REDSHIFT).value,
        d_a=astropy.cosmology.Planck18.angular_diameter_distance(REDSHIFT).value,
        inclination=INCLINATION, position_angle=POSITION_ANGLE,
        spaxel_size=float(tel.spaxel_size), n_x=tel.n_x, n_y=tel.n_y,
        telescope_wavelength=np.asarray(tel.wavelength),
        rest_log_edges=pipe.grid.rest_log_edges, obs_log_edges=pipe.grid.obs_log_edges,
    )  # fmt: skip
    reference = lambda: ref.reference_cube_working_grid(**kwargs)  # noqa: E731
    t = time_calls({"engine": fwd, "reference": reference}, float(spec["budget"]), True)
    cube, expected = np.asarray(fwd()), reference()
    res = {
        "n": n,
        "n_wave": tel.n_wave,
        "n_work": pipe.grid.n_work,
        "compile": info,
        "engine_used": engine_used(pipe, n),
    }
    res["engine"], res["reference"] = t["engine"], t["reference"]
    res["engine"].update(rates(n, tel.n_wave, pipe.grid.n_work, t["engine"]["median_s"]))
    res["reference"].update(rates(n, tel.n_wave, pipe.grid.n_work, t["reference"]["median_s"]))
    res["speedup_engine_over_reference"] = t["reference"]["median_s"] / t["engine"]["median_s"]
    res["max_abs_diff_over_max"] = float(np.abs(cube - expected).max() / np.abs(expected).max())
    return res


def child_roofline(spec: dict) -> dict:
    """Dense float32 matmul GFLOP/s and a streaming triad GB/s, then the engine's
    achieved rate (x 17 flop per particle·λ) as a fraction of the matmul rate."""
    m = int(spec.get("matmul_n", 2048))
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (m, m), jnp.float32)
    b = jax.random.normal(kb, (m, m), jnp.float32)
    mm, mm_info = aot(jnp.matmul, a, b)
    n_stream = 2**25  # 128 MiB per float32 array
    x = jnp.ones(n_stream, jnp.float32)
    y = jnp.full(n_stream, 2.0, jnp.float32)
    triad, _ = aot(lambda x, y: x + 3.0 * y, x, y)
    t = time_calls({"matmul": mm, "triad": triad}, min(10.0, float(spec["budget"])), True)
    res = {"matmul_n": m, "matmul": t["matmul"], "triad": t["triad"], "matmul_compile": mm_info}
    res["matmul_gflop_s"] = 2 * m**3 / t["matmul"]["median_s"] / 1e9
    res["triad_gb_s"] = 3 * 4 * n_stream / t["triad"]["median_s"] / 1e9
    del a, b, x, y
    n = int(spec["n"])
    _, tel, pipe, obs = make_setup(engine=spec.get("engine"), core=spec.get("core", False))
    gal = make_galaxy(n)
    fwd, info = aot(forward_fn, pipe, gal, obs)
    e = time_calls({"forward": fwd}, float(spec["budget"]), True)["forward"]
    res["engine"] = {
        "n": n,
        "n_wave": tel.n_wave,
        "n_work": pipe.grid.n_work,
        "engine_used": engine_used(pipe, n),
        **e,
    }
    res["engine"].update(rates(n, tel.n_wave, pipe.grid.n_work, e["median_s"]))
    upd = res["engine"]["particle_lambda_per_s"]
    res["flop_per_update"] = FLOP_PER_UPDATE
    res["flop_convention"] = (
        "17 flop per particle x telescope-lambda update: 8 fused multiply-adds (4 SSP "
        "templates x 2 Doppler-neighbour rows) + 1 accumulate into the cube"
    )
    res["engine_gflop_s"] = upd * FLOP_PER_UPDATE / 1e9
    res["fraction_of_matmul"] = res["engine_gflop_s"] / res["matmul_gflop_s"]
    # bytes actually read per (particle, work bin): 4 template rows x 4 B
    res["engine_template_read_gb_s"] = res["engine"]["particle_workbin_per_s"] * 16 / 1e9
    return res


def child_profile(spec: dict) -> dict:
    """Time the pieces of one forward separately (each jitted on its own, timed
    interleaved). Uses engine internals, so every piece is guarded: a piece whose
    internals moved is reported as an error, not a crash."""
    from rubix_eqx import _engine as engine

    n = int(spec["n"])
    _, tel, pipe, obs = make_setup(engine=spec.get("engine"), core=spec.get("core", False))
    gal = make_galaxy(n)
    grid = pipe.grid
    n_sp = tel.n_x * tel.n_y
    used = engine_used(pipe, n)
    out = {
        "n": n,
        "n_work": grid.n_work,
        "n_wave": tel.n_wave,
        "engine_used": used,
        "pieces": {},
        "errors": {},
    }
    chunk_direct = engine.auto_chunk_size(n, grid.n_work)
    out["chunk_size_direct"] = chunk_direct

    def chunks(terms, chunk):
        nc = max(1, n // chunk)
        return jax.tree.map(lambda x: x[: nc * chunk].reshape((nc, chunk) + x.shape[1:]), terms)

    def shift_of(c):
        return c.shift if hasattr(c, "shift") else c.start

    def spectra_only(terms, grid):
        def step(acc, c):
            s = grid.spectra(c.template_index, c.template_weight, shift_of(c), c.fraction)
            return acc + (s * c.amplitude[:, None]).sum(0), None

        return jax.lax.scan(
            step, jnp.zeros(grid.n_work, grid.templates.dtype), chunks(terms, chunk_direct)
        )[0]

    def gather_only(terms, grid):
        width = grid.n_work + 1

        def step(acc, c):
            offset = grid.read_offset(shift_of(c)) if hasattr(grid, "read_offset") else shift_of(c)

            def one(index, o):
                return sum(
                    jax.lax.dynamic_slice(grid.templates, (index[k], o), (1, width))[0]
                    for k in range(4)
                )

            return acc + jax.vmap(one)(c.template_index, offset).sum(0), None

        return jax.lax.scan(
            step, jnp.zeros(width, grid.templates.dtype), chunks(terms, chunk_direct)
        )[0]

    def deposit_scatter_only(terms, grid):
        row = grid.templates[0, : grid.n_work]

        def step(cube, c):
            contrib = (
                c.spaxel_weight[:, :, None] * (c.amplitude[:, None] * row)[:, None, :]
            ).reshape(-1, grid.n_work)
            return cube.at[c.spaxel_index.reshape(-1)].add(contrib), None

        return jax.lax.scan(
            step, jnp.zeros((n_sp, grid.n_work), grid.templates.dtype), chunks(terms, chunk_direct)
        )[0]

    calls = {}

    def add(name, make):
        try:
            calls[name] = make()
        except Exception as e:  # noqa: BLE001
            out["errors"][name] = repr(e)[:300]

    terms = None
    try:
        terms_call, _ = aot(lambda p, g, o: p.particle_terms(g, o)[0], pipe, gal, obs)
        terms = jax.block_until_ready(terms_call())
        calls["particle_terms (orient, deposit, SSP weights, Doppler)"] = terms_call
    except Exception as e:  # noqa: BLE001
        out["errors"]["particle_terms"] = repr(e)[:300]
    if terms is not None:
        hist_args = None
        try:
            n_shift = engine.n_shift_bins(grid, pipe.velocity_margin)
            systemic = jnp.log1p(obs.redshift.astype(grid.templates.dtype)) / grid.log_step
            hist_args = (systemic, n_shift)
            out["histogram_columns"] = grid.templates.shape[0] * n_shift
            out["histogram_matmul_flop"] = (
                2 * n_sp * grid.templates.shape[0] * n_shift * grid.n_work
            )
        except Exception as e:  # noqa: BLE001
            out["errors"]["histogram setup"] = repr(e)[:300]
        if hist_args is not None:
            systemic, n_shift = hist_args
            add(
                "histogram_cube (deposit scan + basis + matmul)",
                lambda: aot(
                    lambda t, gr, sy: engine.histogram_cube(t, gr, n_sp, 4096, sy, n_shift),
                    terms,
                    grid,
                    systemic,
                )[0],
            )
            one_chunk = jax.tree.map(lambda x: x[:4096], terms)
            add(
                "  histogram_cube on 4096 particles (≈ basis + matmul)",
                lambda: aot(
                    lambda t, gr, sy: engine.histogram_cube(t, gr, n_sp, 4096, sy, n_shift),
                    one_chunk,
                    grid,
                    systemic,
                )[0],
            )
        if spec.get("direct", True):
            add(
                f"direct_cube (chunk {chunk_direct})",
                lambda: aot(
                    lambda t, gr: engine.direct_cube(t, gr, n_sp, chunk_direct), terms, grid
                )[0],
            )
            add(
                "  spectra only (4-row gather + FMA + lerp)",
                lambda: aot(spectra_only, terms, grid)[0],
            )
            add("    gather only (4 dynamic_slice rows)", lambda: aot(gather_only, terms, grid)[0])
            add(
                "  deposit x4 + scatter-add only", lambda: aot(deposit_scatter_only, terms, grid)[0]
            )
        work = jnp.ones((n_sp, grid.n_work), grid.templates.dtype)
        if getattr(pipe, "lsf", None) is not None:
            add(
                "lsf (broadening on the lattice)",
                lambda: aot(lambda p, w, o: p.stage(rx.LSF).apply(w, o.redshift), pipe, work, obs)[0],
            )
        add(
            "to_telescope (rebin to telescope pixels)",
            lambda: aot(lambda gr, w: gr.to_telescope(w), grid, work)[0],
        )
        if getattr(pipe, "psf", None) is not None:
            flux = jnp.ones((tel.n_x, tel.n_y, tel.n_wave), grid.templates.dtype)
            add("psf (every λ slice)", lambda: aot(lambda p, f: p.stage(rx.PSFConvolution).apply(f), pipe, flux)[0])
    add(f"forward total ({used} engine)", lambda: aot(forward_fn, pipe, gal, obs)[0])
    if calls:
        timed = time_calls(
            calls, float(spec["budget"]), True
        )  # interleaved: every piece sees the same load
        for name, t in timed.items():
            out["pieces"][name] = {
                "median_s": t["median_s"],
                "min_s": t["min_s"],
                "n_runs": t["n_runs"],
            }
    return out


CHILDREN = {
    "forward": child_forward,
    "grad": child_grad,
    "reference": child_reference,
    "roofline": child_roofline,
    "profile": child_profile,
}


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    t0 = time.perf_counter()
    try:
        res = CHILDREN[spec["kind"]](spec)
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 (reported to the parent)
        import traceback

        res = {"ok": False, "error": repr(e), "traceback": traceback.format_exc()[-3000:]}
    res["child_wall_s"] = time.perf_counter() - t0
    res["package_hash"] = package_hash()
    try:
        res["pipeline_kwargs"] = pipeline_kwargs(spec.get("engine"), spec.get("core", False))
        res["stages"] = stages(
            make_setup(40, 40, None, spec.get("engine"), spec.get("core", False))[2]
        )
    except Exception as e:  # noqa: BLE001
        res["stages"] = repr(e)[:200]
    res["loadavg_end"] = os.getloadavg()
    print("@@RESULT " + json.dumps(res, default=_json_default), flush=True)
    sys.stdout.flush()
    os._exit(0)  # do not wait for an abandoned probe run


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
