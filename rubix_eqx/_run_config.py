"""Run configurations (YAML): parsed into the typed pytrees, errors naming the key path."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

from ._config_checks import boolean, ConfigError, check_keys, choice, integer, join, number, read_yaml
from ._observation import Observation
from ._pipeline import Pipeline
from ._stages._noise import Noise
from .galaxy import Galaxy, synthetic_disk
from .ssp import SSPGrid
from .telescope import Telescope


TOP_KEYS = ("seed", "galaxy", "observation", "telescope", "ssp", "pipeline", "output")
SYNTHETIC_KEYS = (
    "source", "n_stars", "total_mass", "scale_length", "scale_height", "bulge_fraction",
    "bulge_radius", "v_flat", "r_turn", "dispersion", "bulge_dispersion", "log_age_centre",
    "log_age_gradient", "metallicity_centre", "metallicity_gradient", "log_age_scatter",
    "metallicity_scatter",
)  # fmt: skip


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a run config and apply `key.path=value` overrides (values parsed as YAML)."""
    import yaml

    data = read_yaml(path)
    data = dict(check_keys(data, TOP_KEYS, ""))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value.")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, Mapping):
                child = {}
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = value
    return data


def build_galaxy(spec: Any, seed: int) -> Galaxy:
    path = "galaxy"
    spec = check_keys(spec, SYNTHETIC_KEYS, path, required=("source",))
    choice(spec["source"], join(path, "source"), ("synthetic",))
    params = {}
    for key, value in spec.items():
        if key == "source":
            continue
        if key == "n_stars":
            params[key] = integer(value, join(path, key))
        else:
            params[key] = number(value, join(path, key))
    galaxy, _ = synthetic_disk(jax.random.key(seed), **params)
    return galaxy


def build_observation(spec: Any) -> Observation:
    path = "observation"
    keys = ("redshift", "distance", "inclination", "position_angle", "ra", "dec")
    spec = check_keys(spec, keys, path)
    kw = {k: number(v, join(path, k)) for k, v in spec.items() if v is not None}
    if "redshift" in kw and kw["redshift"] < 0:
        raise ConfigError(f"observation.redshift: must be >= 0, got {kw['redshift']:g}.")
    if "distance" in kw and not kw["distance"] > 0:
        raise ConfigError(f"observation.distance: must be > 0, got {kw['distance']:g}.")
    if "inclination" in kw and not 0 <= kw["inclination"] <= 180:
        raise ConfigError(f"observation.inclination: must lie in [0, 180], got {kw['inclination']:g}.")
    return Observation(**kw)


def build_telescope(spec: Any) -> Telescope:
    path = "telescope"
    if isinstance(spec, str):
        return Telescope.preset(spec)
    spec = check_keys(spec, ("preset", "overrides", "file"), path)
    overrides = check_keys(spec.get("overrides") or {}, Telescope.__dataclass_fields__.keys() | {"noise"}, join(path, "overrides"))
    if "file" in spec:
        return Telescope.from_yaml(spec["file"])
    if "preset" not in spec:
        raise ConfigError(f"{path}: give `preset` (a name) or `file` (a YAML path).")
    return Telescope.preset(spec["preset"], **overrides)


def build_pipeline(config: Mapping) -> tuple[Pipeline, Galaxy, Observation]:
    """The pipeline, galaxy and observation a run config describes."""
    seed = integer(config.get("seed", 0), "seed", minimum=0)
    telescope = build_telescope(config.get("telescope", "MUSE-WFM"))
    ssp_name = config.get("ssp", "miles")
    ssp = SSPGrid.from_hdf5(ssp_name) if str(ssp_name).endswith((".h5", ".hdf5")) else SSPGrid.load(ssp_name)
    keys = (
        "deposit", "engine", "flux_unit", "chunk_size", "oversample", "velocity_margin",
        "lsf", "allow_sharper_lsf", "psf", "aperture", "noise",
    )  # fmt: skip
    options = check_keys(config.get("pipeline") or {}, keys, "pipeline")
    kw: dict[str, Any] = {}
    if "deposit" in options:
        kw["deposit"] = choice(options["deposit"], "pipeline.deposit", ("cic", "nearest"))
    if "engine" in options:
        kw["engine"] = choice(options["engine"], "pipeline.engine", ("auto", "direct", "histogram"))
    if "flux_unit" in options:
        kw["flux_unit"] = number(options["flux_unit"], "pipeline.flux_unit", positive=True)
    if "velocity_margin" in options:
        kw["velocity_margin"] = number(options["velocity_margin"], "pipeline.velocity_margin", positive=True)
    for key in ("chunk_size", "oversample"):
        if key in options:
            kw[key] = integer(options[key], f"pipeline.{key}")
    for key in ("lsf", "allow_sharper_lsf", "psf", "aperture"):
        if key in options:
            kw[key] = boolean(options[key], f"pipeline.{key}")
    if options.get("noise") is not None:
        noise = options["noise"]
        if noise == "telescope":
            kw["noise"] = "telescope"
        else:
            spec = check_keys(noise, ("snr", "window"), "pipeline.noise", required=("snr",))
            window = spec.get("window")
            if window is not None and (not isinstance(window, list) or len(window) != 2):
                raise ConfigError("pipeline.noise.window: must be [start, stop] in Angstrom.")
            kw["noise"] = Noise(
                snr=number(spec["snr"], "pipeline.noise.snr", positive=True),
                window=None if window is None else tuple(number(w, "pipeline.noise.window") for w in window),
            )
    pipeline = Pipeline(telescope, ssp, **kw)
    galaxy = build_galaxy(config.get("galaxy", {"source": "synthetic"}), seed)
    observation = build_observation(config.get("observation") or {})
    return pipeline, galaxy, observation
