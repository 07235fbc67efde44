"""The `rubix-eqx infer` job: a run config + a cube → posterior summary, corner plot and
samples (the CLI only parses arguments and calls `infer_run`)."""

import json
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from ._galaxy_model import galaxy_model, Normal, PARAMETERS, PriorRangeError, Uniform
from ._posterior import (
    corner_plot,
    format_table,
    laplace,
    nuts,
    posterior,
    posterior_summary,
    write_samples_hdf5,
)


def _prior(name: str, spec) -> object:
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        return Uniform(float(spec[0]), float(spec[1]))
    if isinstance(spec, dict) and set(spec) == {"uniform"}:
        return Uniform(*map(float, spec["uniform"]))
    if isinstance(spec, dict) and set(spec) == {"normal"}:
        return Normal(*map(float, spec["normal"]))
    raise PriorRangeError(
        f"inference.priors.{name}: must be [low, high], {{uniform: [low, high]}} or "
        f"{{normal: [mean, sigma]}}; got {spec!r}."
    )


def infer_run(
    config_path,
    cube_path,
    out,
    *,
    free: list[str] | None = None,
    num_chains: int = 2,
    num_warmup: int = 200,
    num_samples: int = 300,
    seed: int = 0,
    progress=print,
) -> dict:
    """Posterior of the synthetic-disk model of the run config `config_path` given the
    cube at `cube_path`, through the config's own pipeline. An optional `inference:`
    section of the config holds `priors: {name: [low, high] | {normal: [mu, sigma]}}`
    (default: `PARAMETERS`' priors for the `free` names, default all ten). Writes
    `posterior.txt` (table), `posterior.json`, `corner.png` and `samples.h5` to `out`.
    Returns the summary dict."""
    from .. import config as rc, galaxy as gal
    from ..io import read_cube

    t0 = time.perf_counter()
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    inference = raw.pop("inference", None) or {}
    spec = rc.check_config(raw)
    if spec.galaxy["source"] != "synthetic":
        raise ValueError(
            f"galaxy.source: `infer` fits the synthetic-disk model; got {spec.galaxy['source']!r}."
        )
    priors_spec = dict(inference.get("priors") or {})
    names = free or list(priors_spec) or list(PARAMETERS)
    priors = {n: _prior(n, priors_spec[n]) if n in priors_spec else PARAMETERS[n][2]
              for n in names}  # fmt: skip
    progress(f"loading SSP grid {spec.ssp!r} and building the pipeline")
    ssp = rc.build_ssp(spec.ssp)
    pipe = rc.build_pipeline_from(spec, ssp)
    params = {k: v for k, v in spec.galaxy.items() if k != "source"}
    progress("drawing the model's particles (fixed draws of the config's seed)")
    _, structure = gal.synthetic_disk(jax.random.key(spec.seed), **params)
    n = int(params.get("n_stars", 10_000))
    bulge = float(structure.bulge_fraction)
    draws = gal.draw_disk(jax.random.key(spec.seed), n, bulge, structure.total_mass.dtype)
    obs = rc.build_observation(spec.observation)
    cube = read_cube(cube_path)
    model = galaxy_model(draws, structure, obs, priors)
    post = posterior(cube, pipe, model)
    progress(f"MAP + Laplace over {len(names)} parameters: {', '.join(names)}")
    lap = laplace(post)
    progress(f"MAP converged={bool(lap.converged)} in {int(lap.steps)} steps, "
             f"chi2/N = {float(lap.chi2) / float(lap.n_data):.3f}")  # fmt: skip
    res = nuts(post, jax.random.key(seed), start=lap, num_chains=num_chains,
               num_warmup=num_warmup, num_samples=num_samples, progress=progress)  # fmt: skip
    truth = {k: float(v) for k, v in model.defaults().items()}
    rows = posterior_summary(res, truth=truth)
    table = format_table(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "posterior.txt").write_text(table + "\n")
    corner_plot(res.samples, res.names, out / "corner.png", laplace=lap)
    write_samples_hdf5(out / "samples.h5", res, lap, attrs={"config": str(config_path),
                                                            "cube": str(cube_path)})  # fmt: skip
    corr = np.asarray(res.correlation)
    summary = {
        "parameters": rows,
        "laplace": {
            "mean": np.asarray(lap.mean).tolist(),
            "errors": np.asarray(lap.errors).tolist(),
            "converged": bool(lap.converged),
        },
        "correlation": corr.tolist(),
        "names": list(res.names),
        "divergences": int(res.divergences),
        "acceptance": float(res.acceptance),
        "n_gradients": int(res.n_gradients),
        "seconds": {**res.seconds, "total": time.perf_counter() - t0},
    }
    (out / "posterior.json").write_text(json.dumps(summary, indent=2))
    return summary
