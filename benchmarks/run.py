"""Benchmark suite of rubix_eqx.

    python benchmarks/run.py [--quick] [--cases a,b] [--out benchmarks/results]

Cases: forward_vs_n, forward_vs_nwave, forward_vs_nspaxel, grad_vs_n, reference,
roofline, profile, memory, engines (default: all; --quick: all but profile, engines). Each size runs in a fresh Python process
(peak RSS per size); the parent prints a table per case, writes
`<out>/<case>.json` and `<out>/summary.json`, and ends with a summary block.

Timing: every function is compiled ahead of time (`jax.jit(f).lower(...).compile()`,
compile time reported separately), run once as a warm-up, then timed >= 5 times
(median and min reported). Sizes whose runs do not fit the per-size `--budget` get
fewer timed runs (flagged `repeats_reduced_by_budget`); sizes whose single run is
predicted (linear in N from the previous size) to exceed `--max-run` are not timed:
the forward is then watched for `--probe-s` seconds for its peak RSS (flagged
`rss_truncated`) and the gradient is only compiled (memory analysis).
See docs/benchmarks.md.
"""

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_CASES = (
    "forward_vs_n", "forward_vs_nwave", "forward_vs_nspaxel", "grad_vs_n",
    "reference", "roofline", "profile", "memory", "engines",
)  # fmt: skip
TARGET_UPDATES_PER_S = 3e9  # particle·λ per second
TARGET_PEAK_BYTES = 4e9  # at N = 1e7
RUBIX = {  # astro-rubix 0.0.5, MUSE 25x25x3721, similar 2-core machine; measured by the project, issue #5
    100_000: 15.9,
    1_000_000: 163.0,
}

FULL = dict(
    forward_n=[10**3, 10**4, 10**5, 10**6, 10**7],
    sweep_n=10**5,
    n_wave=[500, 1000, 2000, 3681],
    n_spaxel=[10, 20, 40, 80],
    grad_n=[10**4, 10**5, 10**6],
    reference_n=10**3,
    roofline_n=10**6,
    profile_n=10**5,
    engines_n=[10**3, 10**4, 10**5, 10**6],
    budget=40.0,  # seconds of timed runs per size (after the warm-up)
    max_run=300.0,  # do not time a size whose single run is predicted to be longer
    warmup_max=60.0,  # skip the warm-up if one run is predicted to be longer
    probe_s=45.0,
    profile_budget=50.0,
)
QUICK = dict(
    forward_n=[10**3, 10**4, 10**5],
    sweep_n=10**4,
    n_wave=[500, 2000],
    n_spaxel=[20, 80],
    grad_n=[10**4, 10**5],
    reference_n=10**3,
    roofline_n=10**5,
    profile_n=10**4,
    engines_n=[10**3, 10**4],
    budget=3.0,
    max_run=30.0,
    warmup_max=2.0,
    probe_s=10.0,
    profile_budget=5.0,
)


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    import jax
    import jaxlib

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    try:
        import rubix_eqx

        version = rubix_eqx.__version__
    except Exception:  # noqa: BLE001
        version = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gb": mem_gb,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "devices": [str(d) for d in jax.devices()],
        "dtype": "float32",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rubix_eqx": version,
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }


# ----------------------------------------------------------------------------- children


SNAPSHOT: Path | None = None


def make_snapshot() -> Path:
    """Copy the package (and tests/reference.py) to a temporary folder that every child
    imports first, so that one run measures one version even while the working tree
    is being edited. The presets go where a wheel puts them."""
    root = Path(tempfile.mkdtemp(prefix="rubix_eqx_bench_"))
    shutil.copytree(
        REPO / "rubix_eqx", root / "rubix_eqx", ignore=shutil.ignore_patterns("__pycache__")
    )
    presets = root / "rubix_eqx" / "telescope" / "presets"
    if not presets.exists():
        shutil.copytree(REPO / "configs" / "telescopes", presets)
    (root / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "reference.py", root / "tests" / "reference.py")
    return root


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if SNAPSHOT is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(SNAPSHOT), *filter(None, [env.get("PYTHONPATH")])])
        env["RUBIX_EQX_BENCH_REFERENCE"] = str(SNAPSHOT / "tests" / "reference.py")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout:.0f} s", "spec": spec}
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT "):
            res = json.loads(line[len("@@RESULT ") :])
            res["spec"] = spec
            res["process_wall_s"] = time.perf_counter() - t0
            return res
    return {
        "ok": False,
        "error": f"no result (exit {proc.returncode})",
        "stderr": proc.stderr[-3000:],
        "spec": spec,
    }


def _timeout(cfg, predicted):
    p = predicted or 10.0
    return 180.0 + 3.0 * (cfg["budget"] + 2.0 * p + cfg["probe_s"])


@functools.cache
def _pipeline(engine, core, n_x=40, n_y=40, n_wave=None):
    from _cases import make_setup

    return make_setup(n_x, n_y, n_wave, engine, core)[2]


def engine_at(cfg, n, engine=None, **setup) -> str:
    """The engine the (snapshot's) pipeline picks for n particles."""
    from _cases import engine_used

    try:
        return engine_used(
            _pipeline(engine or cfg.get("engine"), cfg.get("core", False), **setup), n
        )
    except Exception:  # noqa: BLE001
        return "?"


def predict(last, n, engine, seconds):
    """Linear-in-N prediction from the previous size, only within one engine."""
    if last is None or last.get("engine_used") != engine:
        return None
    return seconds(last) * n / last["n"]


def _spec(cfg, **kw):
    """A child spec; `engine` only when --engine was given (else the package default)."""
    return (
        ({"engine": cfg["engine"]} if cfg.get("engine") else {})
        | {"core": cfg.get("core", False)}
        | kw
    )


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- cases


def case_forward_vs_n(cfg):
    rows, last = [], None
    for n in cfg["forward_n"]:
        predicted = predict(last, n, engine_at(cfg, n), lambda r: r["median_s"])
        spec = _spec(cfg, kind="forward", n=n, budget=cfg["budget"], public_call=n <= 10**3)
        if predicted is not None and predicted > cfg["max_run"]:
            spec.update(mode="probe", probe_s=cfg["probe_s"])
        else:
            spec["warmup"] = predicted is None or predicted <= cfg["warmup_max"]
        _log(f"  forward N={n:.0e} mode={spec.get('mode', 'time')} predicted={predicted}")
        res = run_child(spec, _timeout(cfg, predicted))
        if predicted is not None:
            res["predicted_s_linear"] = predicted
        if res.get("ok") and "median_s" in res:
            last = res
        rows.append(res)
    return {"results": rows}


def case_forward_vs_nwave(cfg):
    rows = []
    for n_wave in cfg["n_wave"]:
        _log(f"  forward n_wave={n_wave}")
        spec = _spec(cfg, kind="forward", n=cfg["sweep_n"], n_wave=n_wave, budget=cfg["budget"])
        rows.append(run_child(spec, _timeout(cfg, None)))
    return {"results": rows}


def case_forward_vs_nspaxel(cfg):
    rows = []
    for side in cfg["n_spaxel"]:
        _log(f"  forward n_x=n_y={side}")
        spec = _spec(
            cfg, kind="forward", n=cfg["sweep_n"], n_x=side, n_y=side, budget=cfg["budget"]
        )
        rows.append(run_child(spec, _timeout(cfg, None)))
    return {"results": rows}


def case_grad_vs_n(cfg):
    rows, last = [], None
    for n in cfg["grad_n"]:
        predicted = predict(
            last, n, engine_at(cfg, n), lambda r: r["grad"]["median_s"] + r["forward"]["median_s"]
        )
        spec = _spec(cfg, kind="grad", n=n, budget=cfg["budget"])
        if predicted is not None and predicted > cfg["max_run"]:
            spec["mode"] = "compile"
        else:
            spec["warmup"] = predicted is None or predicted <= cfg["warmup_max"]
        _log(f"  grad N={n:.0e} mode={spec.get('mode', 'time')} predicted(fwd+grad)={predicted}")
        res = run_child(spec, _timeout(cfg, predicted))
        if predicted is not None:
            res["predicted_s_linear"] = predicted
        if res.get("ok") and "grad" in res:
            last = res
        rows.append(res)
    return {"results": rows}


def case_reference(cfg):
    _log(
        f"  reference N={cfg['reference_n']} (core pipeline: the reference has no LSF/PSF/aperture)"
    )
    spec = _spec(cfg, kind="reference", n=cfg["reference_n"], budget=cfg["budget"]) | {"core": True}
    return {"results": [run_child(spec, 900)]}


def case_roofline(cfg):
    _log(f"  roofline (matmul 2048^3, triad, engine N={cfg['roofline_n']:.0e})")
    return {
        "results": [
            run_child(_spec(cfg, kind="roofline", n=cfg["roofline_n"], budget=cfg["budget"]), 900)
        ]
    }


def case_profile(cfg):
    _log(f"  profile N={cfg['profile_n']:.0e}")
    spec = _spec(cfg, kind="profile", n=cfg["profile_n"], budget=cfg["profile_budget"])
    return {"results": [run_child(spec, 1200)]}


def case_memory(cfg, done):
    """Peak RSS (from forward_vs_n) and compiled buffer sizes (forward and gradient) vs N."""
    fwd = {r["n"]: r for r in _results(done, "forward_vs_n", cfg["out"]) if r.get("ok")}
    grad = {r["n"]: r for r in _results(done, "grad_vs_n", cfg["out"]) if r.get("ok")}
    rows = []
    for n in cfg["forward_n"]:
        f = fwd.get(n)
        if f is None:
            _log(f"  memory: compile-only forward N={n:.0e}")
            f = run_child(_spec(cfg, kind="forward", n=n, mode="compile"), 600)
        g = grad.get(n)
        if g is None:
            _log(f"  memory: compile-only grad N={n:.0e}")
            g = run_child(_spec(cfg, kind="grad", n=n, mode="compile"), 600)
        fm = (f.get("compile") or {}).get("memory_analysis", {})
        gm = (g.get("compile_grad") or {}).get("memory_analysis", {})
        rows.append({
            "n": n,
            "ok": bool(f.get("ok") and g.get("ok")),
            "particle_bytes": n * 36,
            "forward_temp_bytes": fm.get("temp_size_in_bytes"),
            "forward_argument_bytes": fm.get("argument_size_in_bytes"),
            "forward_output_bytes": fm.get("output_size_in_bytes"),
            "grad_temp_bytes": gm.get("temp_size_in_bytes"),
            "grad_argument_bytes": gm.get("argument_size_in_bytes"),
            "forward_peak_rss_mb": f.get("peak_rss_mb"),
            "forward_rss_before_run_mb": f.get("rss_before_run_mb"),
            "rss_truncated": f.get("rss_truncated", False),
            "grad_peak_rss_mb": g.get("peak_rss_mb"),
            "engine_used": f.get("engine_used"),
        })  # fmt: skip
    return {"results": rows}


def case_engines(cfg):
    """Both particle-sum engines forced, forward vs N (the default picks one by a cost model)."""
    rows = []
    for engine in ("direct", "histogram"):
        last = None
        for n in cfg["engines_n"]:
            predicted = predict(last, n, engine, lambda r: r["median_s"])
            spec = _spec(cfg, kind="forward", n=n, budget=cfg["budget"], engine=engine)
            if predicted is not None and predicted > cfg["max_run"]:
                rows.append(
                    {
                        "ok": False,
                        "n": n,
                        "spec": spec,
                        "error": f"skipped: predicted {predicted:.0f} s",
                    }
                )
                continue
            spec["warmup"] = predicted is None or predicted <= cfg["warmup_max"]
            _log(f"  engine={engine} N={n:.0e} predicted={predicted}")
            res = run_child(spec, _timeout(cfg, predicted))
            if res.get("ok") and "median_s" in res:
                last = res
            rows.append(res)
    return {"results": rows}


CASE_FUNCS = {
    "forward_vs_n": case_forward_vs_n,
    "forward_vs_nwave": case_forward_vs_nwave,
    "forward_vs_nspaxel": case_forward_vs_nspaxel,
    "grad_vs_n": case_grad_vs_n,
    "reference": case_reference,
    "roofline": case_roofline,
    "profile": case_profile,
    "engines": case_engines,
}


def _results(done, case, out):
    """Rows of `case` from this run, else from `<out>/<case>.json`, else []."""
    if case in done:
        return done[case]["results"]
    path = Path(out) / f"{case}.json"
    if path.exists():
        return json.loads(path.read_text()).get("results", [])
    return []


# ----------------------------------------------------------------------------- tables


def _f(x, fmt="{:.3g}", none="—"):
    return none if x is None else fmt.format(x)


def _table(headers, rows):
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _mb(b):
    return None if b is None else b / 2**20


def table_forward(rows, key):
    lead = [] if key == "N" else [key]
    headers = [*lead, "N", "engine", "n_wave", "n_work", "runs", "median s", "min s", "compile s", "peak RSS MB",
               "pλ/s (n_wave)", "pλ/s (n_work)", "temp MB", "note"]  # fmt: skip
    body = []
    for r in rows:
        if not r.get("ok"):
            spec = r.get("spec", {})
            kv = [] if key == "N" else [spec.get({"n_wave": "n_wave", "n_x=n_y": "n_x"}[key], "?")]
            body.append(
                [
                    *kv,
                    f"{spec.get('n', 0):.0e}",
                    spec.get("engine", "—"),
                    *["—"] * 10,
                    r.get("error", "")[:60],
                ]
            )
            continue
        note = ""
        if r.get("mode") == "probe":
            p = r["probe"]
            if p["completed"]:
                note = (f"predicted {r.get('predicted_s_linear', 0):.0f} s, so not timed; one watched run "
                        f"took {p['run_s']:.3g} s")  # fmt: skip
            else:
                note = (f"not timed (predicted {r.get('predicted_s_linear', 0):.0f} s); RSS after "
                        f"{p['watched_s']:.0f} s, run abandoned")  # fmt: skip
        elif r.get("repeats_reduced_by_budget"):
            note = "runs cut by budget"
        if r.get("mode") == "time" and r.get("warmup_s") is None:
            note += ("; " if note else "") + "no warm-up"
        kv = [] if key == "N" else [{"n_wave": r["n_wave"], "n_x=n_y": r["n_x"]}[key]]
        ma = r.get("compile", {}).get("memory_analysis", {})
        body.append([
            *kv, f"{r['n']:.0e}", r.get("engine_used", "?"), r["n_wave"], r["n_work"], r.get("n_runs", 0),
            _f(r.get("median_s"), "{:.4g}"), _f(r.get("min_s"), "{:.4g}"),
            _f(r["compile"]["compile_s"], "{:.2f}"), _f(r.get("peak_rss_mb"), "{:.0f}"),
            _f(r.get("particle_lambda_per_s"), "{:.3g}"), _f(r.get("particle_workbin_per_s"), "{:.3g}"),
            _f(_mb(ma.get("temp_size_in_bytes")), "{:.0f}"), note,
        ])  # fmt: skip
    return _table(headers, body)


def table_grad(rows):
    headers = ["N", "runs", "forward median s", "grad median s", "grad min s", "grad/forward",
               "grad compile s", "peak RSS MB", "grad temp MB", "note"]  # fmt: skip
    body = []
    for r in rows:
        if not r.get("ok"):
            body.append([r["spec"]["n"], *["—"] * 8, r.get("error", "")[:40]])
        elif r.get("mode") == "compile":
            gm = r["compile_grad"].get("memory_analysis", {})
            body.append([f"{r['n']:.0e}", 0, "—", "—", "—", "—", _f(r["compile_grad"]["compile_s"], "{:.2f}"), "—",
                         _f(_mb(gm.get("temp_size_in_bytes")), "{:.0f}"),
                         f"not timed (predicted fwd+grad {r.get('predicted_s_linear', 0):.0f} s)"])  # fmt: skip
        else:
            gm = r["compile_grad"].get("memory_analysis", {})
            note = "runs cut by budget" if r["grad"]["repeats_reduced_by_budget"] else ""
            if r.get("grad_first_run_s") is None and r["grad"]["warmup_s"] is None:
                note += ("; " if note else "") + "no warm-up"
            body.append([
                f"{r['n']:.0e}", r["grad"]["n_runs"], _f(r["forward"]["median_s"], "{:.4g}"),
                _f(r["grad"]["median_s"], "{:.4g}"), _f(r["grad"]["min_s"], "{:.4g}"),
                _f(r["ratio_grad_over_forward"], "{:.2f}"), _f(r["compile_grad"]["compile_s"], "{:.2f}"),
                _f(r.get("peak_rss_mb"), "{:.0f}"), _f(_mb(gm.get("temp_size_in_bytes")), "{:.0f}"), note,
            ])  # fmt: skip
    return _table(headers, body)


def table_reference(rows):
    headers = ["N", "engine median s", "reference median s", "ref runs", "speed-up", "max|Δ|/max"]
    body = []
    for r in rows:
        if not r.get("ok"):
            body.append([r["spec"]["n"], "—", "—", "—", "—", r.get("error", "")[:40]])
            continue
        body.append([f"{r['n']:.0e}", _f(r["engine"]["median_s"], "{:.4g}"), _f(r["reference"]["median_s"], "{:.4g}"),
                     r["reference"]["n_runs"], _f(r["speedup_engine_over_reference"], "{:.1f}"),
                     _f(r["max_abs_diff_over_max"], "{:.1e}")])  # fmt: skip
    return _table(headers, body)


def table_roofline(rows):
    r = rows[0]
    if not r.get("ok"):
        return f"failed: {r.get('error')}"
    e = r["engine"]
    body = [
        ["matmul 2048² float32 (2n³ flop)", _f(r["matmul"]["median_s"], "{:.4g}"), f"{r['matmul_gflop_s']:.1f} GFLOP/s"],
        ["stream triad x+3y (2^25 float32, 12 B/elt)", _f(r["triad"]["median_s"], "{:.4g}"), f"{r['triad_gb_s']:.1f} GB/s"],
        [f"forward N={e['n']:.0e} ({e.get('engine_used', '?')} engine)", _f(e["median_s"], "{:.4g}"),
         f"{e['particle_lambda_per_s']:.3g} pλ/s × 17 = {r['engine_gflop_s']:.2f} GFLOP/s "
         f"= {100 * r['fraction_of_matmul']:.2f}% of matmul"],
    ]  # fmt: skip
    if e.get("engine_used", "direct") == "direct":
        body.append(
            [
                "template reads (4 rows × 4 B per work bin)",
                "",
                f"{r['engine_template_read_gb_s']:.1f} GB/s",
            ]
        )
    return _table(["kernel", "median s", "rate"], body)


def table_profile(rows):
    r = rows[0]
    if not r.get("ok"):
        return f"failed: {r.get('error')}"
    total = next(
        (p["median_s"] for k, p in r["pieces"].items() if k.startswith("forward total")), None
    )
    body = [[name, _f(p["median_s"], "{:.4g}"), p["n_runs"], _f(None if not total else 100 * p["median_s"] / total, "{:.0f}%")]
            for name, p in r["pieces"].items()]  # fmt: skip
    text = (f"N={r['n']:.0e}, n_work={r['n_work']}, default engine at this N: {r.get('engine_used')}, "
            f"direct chunk {r.get('chunk_size_direct')}, histogram columns {r.get('histogram_columns')} "
            f"(matmul {_f(r.get('histogram_matmul_flop'), '{:.3g}')} flop)\n")  # fmt: skip
    for name, err in (r.get("errors") or {}).items():
        text += f"(piece {name!r} failed: {err})\n"
    return text + _table(["piece (each jitted alone)", "median s", "runs", "of forward"], body)


def table_memory(rows):
    headers = [
        "N",
        "engine",
        "particle arrays MB",
        "fwd temp MB",
        "fwd args MB",
        "grad temp MB",
        "fwd peak RSS MB",
        "RSS before run MB",
    ]
    body = [[f"{r['n']:.0e}", r.get("engine_used") or "?", _f(_mb(r["particle_bytes"]), "{:.1f}"), _f(_mb(r["forward_temp_bytes"]), "{:.1f}"),
             _f(_mb(r["forward_argument_bytes"]), "{:.1f}"), _f(_mb(r["grad_temp_bytes"]), "{:.1f}"),
             _f(r["forward_peak_rss_mb"], "{:.0f}") + (" (truncated run)" if r["rss_truncated"] else ""),
             _f(r["forward_rss_before_run_mb"], "{:.0f}")] for r in rows]  # fmt: skip
    return _table(headers, body)


def render(case, data):
    rows = data["results"]
    if case == "forward_vs_n":
        return table_forward(rows, "N")
    if case == "forward_vs_nwave":
        return table_forward(rows, "n_wave")
    if case == "forward_vs_nspaxel":
        return table_forward(rows, "n_x=n_y")
    if case == "engines":
        return table_forward(rows, "N")
    return {"grad_vs_n": table_grad, "reference": table_reference, "roofline": table_roofline,
            "profile": table_profile, "memory": table_memory}[case](rows)  # fmt: skip


# ----------------------------------------------------------------------------- summary


def summary(done, out) -> tuple[dict, str]:
    s, lines = {}, []
    fwd = {r["n"]: r for r in _results(done, "forward_vs_n", out) if r.get("ok")}
    f6 = fwd.get(10**6)
    if f6 and "median_s" in f6:
        rate = f6["particle_lambda_per_s"]
        s["forward_1e6"] = {"median_s": f6["median_s"], "particle_lambda_per_s": rate,
                            "fraction_of_3e9_target": rate / TARGET_UPDATES_PER_S, "n_runs": f6["n_runs"]}  # fmt: skip
        lines.append(f"forward N=1e6 (MUSE 40x40x3681): {f6['median_s']:.3g} s median ({f6['n_runs']} runs), "
                     f"{rate:.3g} particle·λ/s = {rate / TARGET_UPDATES_PER_S:.3f} x the 3e9 target")  # fmt: skip
    else:
        lines.append("forward N=1e6: not measured in this run (use the full run)")
    best = max(
        (r for r in fwd.values() if "particle_lambda_per_s" in r),
        key=lambda r: r["particle_lambda_per_s"],
        default=None,
    )
    if best:
        s["best_particle_lambda_per_s"] = {"n": best["n"], "value": best["particle_lambda_per_s"]}
        lines.append(
            f"best forward rate: {best['particle_lambda_per_s']:.3g} particle·λ/s at N={best['n']:.0e}"
        )
    grads = [r for r in _results(done, "grad_vs_n", out) if r.get("ok") and "grad" in r]
    if grads:
        s["grad_over_forward"] = {str(r["n"]): r["ratio_grad_over_forward"] for r in grads}
        lines.append(
            "grad/forward time: "
            + ", ".join(f"N={r['n']:.0e}: {r['ratio_grad_over_forward']:.2f}" for r in grads)
        )
    f7 = fwd.get(10**7)
    if f7:
        peak_b = f7["peak_rss_mb"] * 2**20
        s["peak_rss_1e7"] = {"mb": f7["peak_rss_mb"], "fraction_of_4GB_target": peak_b / TARGET_PEAK_BYTES,
                             "truncated": f7.get("rss_truncated", False)}  # fmt: skip
        trunc = (
            " (run abandoned after the probe window; buffers are allocated up front)"
            if f7.get("rss_truncated")
            else ""
        )
        lines.append(
            f"peak RSS forward N=1e7: {f7['peak_rss_mb']:.0f} MB = {peak_b / TARGET_PEAK_BYTES:.2f} x the 4 GB target{trunc}"
        )
    refs = [r for r in _results(done, "reference", out) if r.get("ok")]
    if refs:
        r = refs[0]
        s["speedup_over_reference"] = {"n": r["n"], "value": r["speedup_engine_over_reference"]}
        lines.append(f"speed-up over the NumPy float64 reference at N={r['n']:.0e}: {r['speedup_engine_over_reference']:.1f}x "
                     f"(max|Δ|/max = {r['max_abs_diff_over_max']:.1e})")  # fmt: skip
        big = max((f for f in fwd.values() if "median_s" in f), key=lambda f: f["n"], default=None)
        if big and big["n"] > r["n"]:
            # the reference loops over particles: its time is linear in N (fixed part negligible)
            t_ref = r["reference"]["median_s"] * big["n"] / r["n"]
            s["speedup_over_reference_extrapolated"] = {"n": big["n"], "reference_s_extrapolated": t_ref,
                                                        "value": t_ref / big["median_s"]}  # fmt: skip
            lines.append(f"  at N={big['n']:.0e}: reference extrapolated linearly to {t_ref:.3g} s -> "
                         f"{t_ref / big['median_s']:.1f}x (engine: forward_vs_n pipeline, stages "
                         f"{big.get('stages')}; reference: particle sum + rebin only)")  # fmt: skip
    roof = [r for r in _results(done, "roofline", out) if r.get("ok")]
    if roof:
        r = roof[0]
        s["roofline"] = {"matmul_gflop_s": r["matmul_gflop_s"], "engine_gflop_s": r["engine_gflop_s"],
                         "fraction_of_matmul": r["fraction_of_matmul"]}  # fmt: skip
        lines.append(f"roofline: engine {r['engine_gflop_s']:.2f} GFLOP/s (17 flop/pλ) = "
                     f"{100 * r['fraction_of_matmul']:.2f}% of the {r['matmul_gflop_s']:.0f} GFLOP/s matmul")  # fmt: skip
    rub = {}
    for n, t_rubix in RUBIX.items():
        r = fwd.get(n)
        if r and "median_s" in r:
            rub[str(n)] = {
                "rubix_s": t_rubix,
                "rubix_eqx_s": r["median_s"],
                "speedup": t_rubix / r["median_s"],
            }
            lines.append(f"vs RUBIX (astro-rubix 0.0.5, MUSE 25x25x3721, similar 2-core machine; measured by the "
                         f"project, issue #5) at N={n:.0e}: {t_rubix} s vs {r['median_s']:.3g} s "
                         f"(40x40x3681) = {t_rubix / r['median_s']:.1f}x faster")  # fmt: skip
    s["rubix_comparison"] = rub
    eng = [r for r in _results(done, "engines", out) if r.get("ok") and "median_s" in r]
    if eng:
        by = {}
        for r in eng:
            by.setdefault(r["n"], {})[r["engine_used"]] = r["median_s"]
        s["engines"] = {str(n): v for n, v in sorted(by.items())}
        lines.append("direct vs histogram engine (median s): " + ", ".join(
            f"N={n:.0e}: " + " / ".join(f"{v[e]:.3g}" if e in v else "—" for e in ("direct", "histogram"))
            for n, v in sorted(by.items())))  # fmt: skip
    hashes = set()
    for case in ALL_CASES:
        for r in _results(done, case, out):
            if isinstance(r, dict) and r.get("package_hash"):
                hashes.add(r["package_hash"])
    s["package_hashes"] = sorted(hashes)
    if len(hashes) > 1:
        lines.append(f"WARNING: the package sources changed during these measurements ({len(hashes)} versions "
                     f"seen: {sorted(hashes)}); compare numbers across cases with care.")  # fmt: skip
    return s, "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 min)")
    ap.add_argument(
        "--cases",
        help="comma-separated subset of: "
        + ", ".join(ALL_CASES)
        + " (default: all; with --quick all but profile and engines)",
    )
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--budget", type=float, help="seconds of timed runs per size")
    ap.add_argument(
        "--max-run", type=float, help="do not time sizes predicted slower than this (s)"
    )
    ap.add_argument(
        "--probe-s", type=float, help="seconds to watch an untimed forward for its peak RSS"
    )
    ap.add_argument(
        "--engine",
        choices=("auto", "direct", "histogram"),
        help="force Pipeline(engine=...) (default: the package default)",
    )
    ap.add_argument(
        "--core",
        action="store_true",
        help="pipelines without the LSF, PSF and aperture stages (particle sum + rebin only)",
    )
    ap.add_argument(
        "--no-snapshot", action="store_true", help="children import the working tree directly"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(HERE))
        from _cases import child_main

        child_main(args.child)
        return
    cfg = dict(QUICK if args.quick else FULL)
    for name in ("budget", "max_run", "probe_s"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    cfg["out"] = args.out
    cfg["engine"] = args.engine
    cfg["core"] = args.core
    default = [c for c in ALL_CASES if not (args.quick and c in ("profile", "engines"))]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else default
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        ap.error(f"unknown case(s): {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global SNAPSHOT
    if not args.no_snapshot:
        SNAPSHOT = make_snapshot()
        sys.path.insert(0, str(SNAPSHOT))
    sys.path.insert(0, str(HERE))
    info = machine_info()
    from _cases import package_hash

    info["package_hash"] = package_hash()
    info["package_snapshot"] = not args.no_snapshot
    t_start = time.perf_counter()
    _log(f"rubix_eqx benchmarks ({'quick' if args.quick else 'full'}) on {info['cpu_model']}, "
         f"{info['cores']} cores, jax {info['jax']}, {info['device_count']} device(s)")  # fmt: skip
    done = {}
    for case in [c for c in ALL_CASES if c in cases]:
        _log(f"[{case}]")
        t0 = time.perf_counter()
        data = case_memory(cfg, done) if case == "memory" else CASE_FUNCS[case](cfg)
        data.update(case=case, quick=args.quick, config={k: v for k, v in cfg.items() if k != "out"},
                    machine=info, wall_s=time.perf_counter() - t0)  # fmt: skip
        done[case] = data
        (out / f"{case}.json").write_text(json.dumps(data, indent=1, default=str))
        print(f"\n## {case}  ({data['wall_s']:.0f} s)\n")
        print(render(case, data), flush=True)
    summ, text = summary(done, args.out)
    total = time.perf_counter() - t_start
    summ.update(machine=info, quick=args.quick, cases_run=list(done), wall_s=total)
    (out / "summary.json").write_text(json.dumps(summ, indent=1, default=str))
    print(
        f"\n## summary  (total {total:.0f} s; load average at start {info['loadavg_start']}; "
        f"package {info['package_hash']})\n"
    )
    print(text, flush=True)
    if SNAPSHOT is not None:
        shutil.rmtree(SNAPSHOT, ignore_errors=True)


if __name__ == "__main__":
    main()
