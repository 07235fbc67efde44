"""Run configurations (YAML): checked in full before anything is computed, then built
into the typed pytrees. Errors name the key path (`telescope.psf.fwhm: must be > 0, got
-1.`), unknown keys come with a did-you-mean hint, and malformed YAML reports the line
and column. Schema: docs/configuration.md."""

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._checks import boolean, check_keys, choice, ConfigError, integer, join, number
from ._keys import KEYS_BY_NAME, TELESCOPE_KEYS as SCHEMA
from ._telescope import preset_file
from ._yaml import deep_merge, load_yaml_text, read_yaml


TOP_KEYS = (
    "seed", "galaxy", "gas", "observation", "telescope", "ssp", "pipeline", "output", "inference",
)  # fmt: skip
SYNTHETIC_GAS_KEYS = (
    "source", "n_gas", "total_mass", "scale_length", "scale_height", "v_flat", "r_turn",
    "dispersion", "total_sfr", "sf_radius", "metallicity_centre", "metallicity_gradient",
    "temperature",
)  # fmt: skip
POSITIVE_GAS = ("total_mass", "scale_length", "scale_height", "r_turn", "sf_radius", "temperature")
NON_NEGATIVE_GAS = ("dispersion", "total_sfr", "v_flat")
LINE_KEYS = ("turbulent_sigma", "electron_density", "max_sigma", "lines")
SYNTHETIC_KEYS = (
    "source", "n_stars", "total_mass", "scale_length", "scale_height", "bulge_fraction",
    "bulge_radius", "v_flat", "r_turn", "dispersion", "bulge_dispersion", "log_age_centre",
    "log_age_gradient", "metallicity_centre", "metallicity_gradient", "log_age_scatter",
    "metallicity_scatter",
)  # fmt: skip
POSITIVE_SYNTHETIC = ("total_mass", "scale_length", "scale_height", "bulge_radius", "r_turn")
NON_NEGATIVE_SYNTHETIC = (
    "dispersion",
    "bulge_dispersion",
    "log_age_scatter",
    "metallicity_scatter",
)
FILE_KEYS = (
    "source", "path", "loader", "subhalo_id", "group_id", "catalog", "centre", "align",
    "radius", "metallicity",
)  # fmt: skip
LOADERS = ("hdf5", "tng", "eagle")
OBSERVATION_KEYS = ("redshift", "distance", "inclination", "position_angle", "ra", "dec")
TELESCOPE_KEYS = ("preset", "file", "overrides")
TELESCOPE_SCHEMA = tuple(key.name for key in SCHEMA if not key.section)
PIPELINE_KEYS = (
    "deposit", "engine", "flux_unit", "chunk_size", "oversample", "velocity_margin", "lsf",
    "allow_sharper_lsf", "psf", "aperture", "noise", "crop_to_coverage", "smoothing",
    "emission_lines", "dust", "birth_clouds",
)  # fmt: skip
DUST_KEYS = ("curve", "r_v", "dust_to_metal", "n_depth", "depth")
BIRTH_CLOUD_KEYS = ("a_v", "age_limit", "slope", "curve", "r_v")
DEPOSIT_NAMES = ("cic", "nearest", "smoothed")
SMOOTHING_KEYS = ("kernel", "stencil", "neighbours")
SMOOTHING_DEFAULTS = {"kernel": "cubic_spline", "stencil": 5, "neighbours": 32}
CONSTANT_NOISE_KEYS = ("snr", "window")
PHYSICAL_NOISE_KEYS = (
    "exposure_time", "n_exposures", "sky", "snr", "reference_sb", "reference_wavelength",
)  # fmt: skip
REFERENCE_KEYS = ("snr", "reference_sb", "reference_wavelength")
OUTPUT_DEFAULTS = {
    "directory": "out",
    "cube_fits": "cube.fits",
    "cube_hdf5": "cube.h5",
    "quicklook": "quicklook.png",
    "summary": "summary.json",
}
DEFAULT_TELESCOPE = "MUSE-WFM"


class RunSpec(NamedTuple):
    """A checked run config: everything needed to build the run, nothing heavy loaded.

    - `seed`: int; the galaxy uses `jax.random.key(seed)`, the noise `key(seed + 1)`.
    - `galaxy`: normalised galaxy section (`source` is `"synthetic"` or `"file"`).
    - `gas`: normalised gas section, or `None` for no gas (`source` is `"synthetic"`, or
      `"file"`: the gas of the galaxy section's snapshot).
    - `observation`: keyword arguments of [`rubix_eqx.Observation`][].
    - `telescope`: the [`rubix_eqx.Telescope`][] (built: it is cheap and its checks name
      the key path).
    - `ssp`: a grid name (`"miles"`) or an HDF5 path.
    - `pipeline`: keyword arguments of [`rubix_eqx.Pipeline`][] (besides telescope, ssp).
    - `output`: `directory` and file names (`None` = not written).
    - `inference`: `{"priors": {name: ("uniform", low, high) | ("normal", mean, sigma)}}`
      for `rubix-eqx infer` (ignored by `run`; empty when absent).
    """

    seed: int
    galaxy: dict
    gas: dict | None
    observation: dict
    telescope: Any
    ssp: str
    pipeline: dict
    output: dict
    inference: dict = {"priors": {}}


def _parse_value(raw: str, item: str):
    import yaml

    try:
        return load_yaml_text(raw)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})."
        ) from None


# Sections where `null` is a value in its own right rather than "not given": an output
# file name of null skips that file, and a telescope field of null removes the preset's
# value of that field (e.g. `telescope.psf=null`: no PSF).
NULL_KEEPING = ("output", "telescope")


def apply_override(data: dict, item: str) -> dict:
    """`data` with one `key.path=value` override applied (the value parsed as YAML).
    Intermediate mappings are created as needed; a telescope given as a preset name (or
    not given: the default preset) becomes `{preset: name}` so that its fields can be
    overridden.

    `key.path=null` removes the key, so that its default applies (`--set
    galaxy.scale_length=null`, `--set pipeline.noise=null`: noiseless); removing a key
    that is not there does nothing. Under `output` and `telescope` a null is kept, as it
    means something there: `output.quicklook=null` skips that file, `telescope.psf=null`
    drops the preset's PSF."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value.")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key in {key.strip()!r}.")
    value = _parse_value(raw, item)
    remove = value is None and not (parts[0] in NULL_KEEPING and len(parts) > 1)
    data = dict(data)
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if depth == 0 and part == "telescope" and (child is None or isinstance(child, str)):
            child = {"preset": child or DEFAULT_TELESCOPE}
        if child is None:
            if remove:
                return data  # nothing to remove
            child = {}
        if not isinstance(child, Mapping):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"--set {item!r}: `{where}` is {type(child).__name__} {child!r}, not a mapping."
            )
        node[part] = dict(child)
        node = node[part]
    if remove:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a run config (YAML) and apply `key.path=value` overrides. The result is
    still unchecked: pass it to `check_config` (or `build_run`)."""
    data = read_yaml(path)
    if data is None:
        data = {}
    data = dict(check_keys(data, TOP_KEYS, ""))
    for item in overrides:
        data = apply_override(data, item)
    return data


# --- sections -----------------------------------------------------------------------------


def check_galaxy(spec: Any) -> dict:
    path = "galaxy"
    if spec is None:
        spec = {"source": "synthetic"}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {type(spec).__name__}.")
    source = choice(spec.get("source", "synthetic"), join(path, "source"), ("synthetic", "file"))
    if source == "synthetic":
        check_keys(spec, SYNTHETIC_KEYS, path)
        out: dict[str, Any] = {"source": "synthetic"}
        for key, value in spec.items():
            if key == "source":
                continue
            where = join(path, key)
            if key == "n_stars":
                out[key] = integer(value, where)
            elif key in POSITIVE_SYNTHETIC:
                out[key] = number(value, where, positive=True)
            elif key in NON_NEGATIVE_SYNTHETIC:
                out[key] = number(value, where, non_negative=True)
            elif key == "bulge_fraction":
                out[key] = number(value, where, lo=0.0, hi=1.0)
            else:
                out[key] = number(value, where)
        return out
    check_keys(spec, FILE_KEYS, path, required=("path",))
    loader = choice(spec.get("loader", "hdf5"), join(path, "loader"), LOADERS)
    file = spec["path"]
    if not isinstance(file, str | Path):
        raise ConfigError(f"{path}.path: must be a file path, got {file!r}.")
    if not Path(file).is_file():
        raise ConfigError(f"{path}.path: file not found: {file}")
    out = {"source": "file", "path": str(file), "loader": loader}
    for key in ("subhalo_id", "group_id"):
        if spec.get(key) is not None:
            if loader == "hdf5":
                raise ConfigError(f"{join(path, key)}: only for `loader: tng` or `loader: eagle`.")
            minimum = 1 if (loader, key) == ("eagle", "group_id") else 0
            out[key] = integer(spec[key], join(path, key), minimum=minimum)
    if spec.get("catalog") is not None:
        if loader != "tng":
            raise ConfigError(f"{path}.catalog: only for `loader: tng` (the group catalogue).")
        if not Path(spec["catalog"]).is_file():
            raise ConfigError(f"{path}.catalog: file not found: {spec['catalog']}")
        out["catalog"] = str(spec["catalog"])
    if loader == "tng" and ("subhalo_id" in out or "group_id" in out) and "catalog" not in out:
        raise ConfigError(
            f"{path}.catalog: required with subhalo_id/group_id for `loader: tng` (the group "
            "catalogue locates the particles); for an API cutout, drop subhalo_id/group_id."
        )
    if loader == "eagle" and "subhalo_id" in out and "group_id" not in out:
        raise ConfigError(
            f"{path}.group_id: required with subhalo_id for `loader: eagle` (GroupNumber)."
        )
    if spec.get("metallicity") is not None:
        if loader != "eagle":
            raise ConfigError(f"{path}.metallicity: only for `loader: eagle`.")
        out["metallicity"] = choice(
            spec["metallicity"], join(path, "metallicity"), ("smoothed", "particle")
        )
    out["centre"] = boolean(spec.get("centre", loader != "hdf5"), join(path, "centre"))
    out["align"] = boolean(spec.get("align", False), join(path, "align"))
    if out["align"] and not out["centre"]:
        raise ConfigError(f"{path}.align: needs `centre: true` (the rotation is about the centre).")
    if spec.get("radius") is not None:
        out["radius"] = number(spec["radius"], join(path, "radius"), positive=True)
    return out


def check_observation(spec: Any) -> dict:
    path = "observation"
    spec = check_keys({} if spec is None else spec, OBSERVATION_KEYS, path)
    kw = {k: number(v, join(path, k)) for k, v in spec.items() if v is not None}
    if "distance" in kw and not kw["distance"] > 0:
        raise ConfigError(f"{path}.distance: must be > 0 (Mpc), got {kw['distance']:g}.")
    if "redshift" in kw:
        if kw["redshift"] < 0:
            raise ConfigError(f"{path}.redshift: must be >= 0, got {kw['redshift']:g}.")
        if kw["redshift"] == 0 and "distance" not in kw:
            raise ConfigError(
                f"{path}.redshift: must be > 0 unless `{path}.distance` (Mpc) is given, got 0."
            )
    elif "distance" in kw:
        kw["redshift"] = 0.0  # a nearby galaxy: spectra at rest unless a redshift is given
    if "inclination" in kw and not 0 <= kw["inclination"] <= 180:
        raise ConfigError(
            f"{path}.inclination: must lie in [0, 180] degrees, got {kw['inclination']:g}."
        )
    if "ra" in kw and not 0 <= kw["ra"] < 360:
        raise ConfigError(f"{path}.ra: must lie in [0, 360) degrees, got {kw['ra']:g}.")
    if "dec" in kw and not -90 <= kw["dec"] <= 90:
        raise ConfigError(f"{path}.dec: must lie in [-90, 90] degrees, got {kw['dec']:g}.")
    return kw


def check_telescope(spec: Any):
    """The telescope a config's `telescope` section describes: a preset name; a mapping
    with `preset` (or `file`) plus any preset fields overriding it (also accepted under
    `overrides`); or a complete inline definition in the preset schema."""
    from ..telescope import presets

    path = "telescope"
    if spec is None:
        spec = DEFAULT_TELESCOPE
    if isinstance(spec, str):
        spec = {"preset": spec}
    check_keys(spec, TELESCOPE_KEYS + TELESCOPE_SCHEMA, path)
    if "preset" in spec and "file" in spec:
        raise ConfigError(f"{path}: give `preset` or `file`, not both.")
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{path}.overrides: must be a mapping, got {type(overrides).__name__}.")
    inline = {k: v for k, v in spec.items() if k in TELESCOPE_SCHEMA}
    if "preset" in spec:
        name = spec["preset"]
        if not isinstance(name, str):
            raise ConfigError(f"{path}.preset: must be a preset name, got {name!r}.")
        try:
            base = read_yaml(preset_file(name))
        except ValueError:
            names = presets()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(
                f"{path}.preset: unknown preset {name!r}.{hint} Available: {', '.join(names)}."
            ) from None
    elif "file" in spec:
        if not Path(spec["file"]).is_file():
            raise ConfigError(f"{path}.file: file not found: {spec['file']}")
        base = read_yaml(spec["file"])
    else:
        base = {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"{path}: the preset/file does not hold a mapping.")
    merged = deep_merge(deep_merge(base, inline), overrides)
    from ..telescope import Telescope

    return Telescope.from_dict(merged, path=join(path, "overrides") if overrides else path)


def check_ssp(spec: Any) -> str:
    if spec is None:
        return "miles"
    if not isinstance(spec, str):
        raise ConfigError(f"ssp: must be a grid name (miles) or an HDF5 file path, got {spec!r}.")
    if spec.endswith((".h5", ".hdf5")):
        if not Path(spec).is_file():
            raise ConfigError(f"ssp: file not found: {spec}")
    elif spec.lower() not in ("miles", "e-miles", "emiles"):
        raise ConfigError(
            f"ssp: unknown grid {spec!r}; give `miles` or the path of an SSP HDF5 file."
        )
    return spec


def check_gas(spec: Any, galaxy: Any) -> dict | None:
    """The `gas` section: `null` (no gas), a synthetic gas disk
    (`rx.galaxy.synthetic_gas_disk` keywords), or `{source: file}`: the gas of the galaxy
    section's TNG or EAGLE snapshot, in the stars' frame."""
    path = "gas"
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be a mapping or null, got {type(spec).__name__}.")
    source = choice(spec.get("source", "synthetic"), join(path, "source"), ("synthetic", "file"))
    if source == "file":
        check_keys(spec, ("source", "eos_temperature"), path)
        loader = (galaxy or {}).get("loader", "hdf5") if isinstance(galaxy, Mapping) else None
        if not isinstance(galaxy, Mapping) or galaxy.get("source") != "file" or loader == "hdf5":
            raise ConfigError(
                f"{path}.source: `file` reads the gas of the galaxy's snapshot, which needs "
                f"`galaxy: {{source: file, loader: tng|eagle}}`; got galaxy loader {loader!r}."
            )
        out: dict[str, Any] = {"source": "file"}
        if spec.get("eos_temperature") is not None:
            out["eos_temperature"] = number(
                spec["eos_temperature"], join(path, "eos_temperature"), positive=True
            )
        return out
    check_keys(spec, SYNTHETIC_GAS_KEYS, path)
    out = {"source": "synthetic"}
    for key, value in spec.items():
        where = join(path, key)
        if key == "source":
            continue
        if key == "n_gas":
            out[key] = integer(value, where)
        elif key in POSITIVE_GAS:
            out[key] = number(value, where, positive=True)
        elif key in NON_NEGATIVE_GAS:
            out[key] = number(value, where, non_negative=True)
        else:
            out[key] = number(value, where)
    return out


def check_emission_lines(spec: Any, gas: bool) -> dict | bool:
    """`pipeline.emission_lines`: `true`/`false` or a mapping of `rx.EmissionLines.build`
    keywords; default `true` when a `gas` section is given."""
    path = "pipeline.emission_lines"
    if spec is None:
        return gas
    if isinstance(spec, bool):
        if gas and not spec:
            raise ConfigError(f"{path}: a `gas` section needs emission lines; got false.")
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be true, false or a mapping; got {spec!r}.")
    spec = check_keys(spec, LINE_KEYS, path)
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "lines":
            names = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            if not (names and value):
                raise ConfigError(f"{path}.lines: must be a list of line names; got {value!r}.")
            from ..physics._emission_lines import LINE_NAMES

            unknown = [v for v in value if v not in LINE_NAMES]
            if unknown:
                raise ConfigError(
                    f"{path}.lines: unknown line(s) {unknown}; known: {', '.join(LINE_NAMES)}."
                )
            out[key] = tuple(value)
        else:
            out[key] = number(value, join(path, key), positive=key == "max_sigma",
                              non_negative=key != "max_sigma")  # fmt: skip
    return out


def check_dust(spec: Any, gas: bool) -> dict:
    """`pipeline.dust`: `gas` (the gas screen with its defaults) or a mapping of
    `rx.GasScreen.build` keywords (`curve`, `r_v`, `dust_to_metal`, `n_depth`, `depth`);
    needs a `gas` section."""
    path = "pipeline.dust"
    if not gas:
        raise ConfigError(
            f"{path}: the dust screen is the gas in front of the stars; add a `gas` section."
        )
    if spec == "gas":
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be `gas`, null or a mapping; got {spec!r}.")
    spec = check_keys(spec, DUST_KEYS, path)
    out: dict[str, Any] = {}
    for key, value in spec.items():
        where = join(path, key)
        if key == "curve":
            from ..physics._dust_curves import CURVES

            out[key] = choice(value, where, CURVES)
        elif key == "n_depth":
            out[key] = integer(value, where, minimum=2)
        elif key == "dust_to_metal":
            out[key] = number(value, where, lo=0.0, hi=1.0)
        else:
            out[key] = number(value, where, positive=True)
    return out


def check_birth_clouds(spec: Any) -> dict | None:
    """`pipeline.birth_clouds`: `true` (Charlot & Fall 2000 defaults), `false`/null, or a
    mapping of `rx.BirthCloud.build` keywords (`a_v`, `age_limit`, `slope`, `curve`,
    `r_v`); `None` for none."""
    path = "pipeline.birth_clouds"
    if spec is None or spec is False:
        return None
    if spec is True:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be true, false or a mapping; got {spec!r}.")
    out: dict[str, Any] = {}
    for key, value in check_keys(spec, BIRTH_CLOUD_KEYS, path).items():
        where = join(path, key)
        if key == "curve":
            from ..physics._dust_curves import CURVES

            out[key] = choice(value, where, ("cf00", *CURVES))
        elif key == "a_v":
            out[key] = number(value, where, non_negative=True)
        elif key == "slope":
            out[key] = number(value, where)
            if out[key] >= 0:
                raise ConfigError(f"{where}: must be < 0 (τ falls with λ); got {value!r}.")
        else:
            out[key] = number(value, where, positive=True)
    return out


def check_pipeline(spec: Any, gas: bool = False) -> dict:
    path = "pipeline"
    options = check_keys({} if spec is None else spec, PIPELINE_KEYS, path)
    kw: dict[str, Any] = {}
    lines = check_emission_lines(options.get("emission_lines"), gas)
    if lines:
        kw["emission_lines"] = lines
    if options.get("dust") is not None:
        kw["dust"] = check_dust(options["dust"], gas)
    clouds = check_birth_clouds(options.get("birth_clouds"))
    if clouds is not None:
        kw["birth_clouds"] = clouds
    if "deposit" in options:
        kw["deposit"] = choice(options["deposit"], "pipeline.deposit", DEPOSIT_NAMES)
    if options.get("smoothing") is not None:
        if kw.get("deposit") != "smoothed":
            raise ConfigError("pipeline.smoothing: only with `deposit: smoothed`.")
    if kw.get("deposit") == "smoothed":
        kw["smoothing"] = check_smoothing(options.get("smoothing"))
    if "engine" in options:
        kw["engine"] = choice(options["engine"], "pipeline.engine", ("auto", "direct", "histogram"))
    if "flux_unit" in options:
        kw["flux_unit"] = number(options["flux_unit"], "pipeline.flux_unit", positive=True)
    if "velocity_margin" in options:
        kw["velocity_margin"] = number(
            options["velocity_margin"], "pipeline.velocity_margin", non_negative=True
        )
    for key in ("chunk_size", "oversample"):
        if options.get(key) is not None:
            kw[key] = integer(options[key], f"pipeline.{key}")
    for key in ("lsf", "allow_sharper_lsf", "psf", "aperture", "crop_to_coverage"):
        if key in options:
            kw[key] = boolean(options[key], f"pipeline.{key}")
    noise = options.get("noise")
    if noise is not None:
        if isinstance(noise, str):
            kw["noise"] = choice(noise, "pipeline.noise", ("telescope",))
        else:
            kw["noise"] = check_noise(noise)
    return kw


def check_smoothing(spec: Any) -> dict:
    """`pipeline.smoothing` of `deposit: smoothed`: the kernel, the stencil (odd, pixels
    per side) and the neighbour rank k of the smoothing lengths computed for galaxies
    that carry none; defaults filled in."""
    path = "pipeline.smoothing"
    options = check_keys({} if spec is None else spec, SMOOTHING_KEYS, path)
    out = dict(SMOOTHING_DEFAULTS)
    if "kernel" in options:
        out["kernel"] = choice(
            options["kernel"], join(path, "kernel"), ("cubic_spline", "gaussian")
        )
    if "stencil" in options:
        out["stencil"] = integer(options["stencil"], join(path, "stencil"))
        if out["stencil"] % 2 == 0:
            raise ConfigError(f"{path}.stencil: must be odd, got {out['stencil']}.")
    if "neighbours" in options:
        out["neighbours"] = integer(options["neighbours"], join(path, "neighbours"))
    return out


def with_smoothing_spec(galaxy: dict, pipeline: Mapping) -> dict:
    """The checked galaxy section with `smoothing_neighbours` (k) when the pipeline's
    deposit is smoothed: `build_galaxy` then gives galaxies without a smoothing
    length one (the k-th-neighbour distance)."""
    if pipeline.get("deposit") != "smoothed":
        return galaxy
    return {**galaxy, "smoothing_neighbours": pipeline["smoothing"]["neighbours"]}


def is_physical_noise(spec: Any) -> bool:
    """Whether a checked `pipeline.noise` value asks for the physical model."""
    return spec == "telescope" or (
        isinstance(spec, Mapping) and not set(spec) <= set(CONSTANT_NOISE_KEYS)
    )


def check_noise(spec: Any) -> dict:
    """A `pipeline.noise` mapping: the constant S/N `{snr, window}`, or the physical model
    with the telescope's detector and any of `exposure_time`, `n_exposures`, `sky`, or a
    S/N `snr` at `reference_sb` and `reference_wavelength` replacing the preset's."""
    path = "pipeline.noise"
    spec = check_keys(spec, tuple(dict.fromkeys(CONSTANT_NOISE_KEYS + PHYSICAL_NOISE_KEYS)), path)
    physical = [k for k in spec if k not in CONSTANT_NOISE_KEYS]
    if not physical:
        check_keys(spec, CONSTANT_NOISE_KEYS, path, required=("snr",))
        snr = KEYS_BY_NAME["noise.snr"].check(spec["snr"], join(path, "snr"))
        window = spec.get("window")
        if window is not None:
            window = KEYS_BY_NAME["noise.window"].check(window, join(path, "window"))
        return {"snr": snr, "window": window}
    if "window" in spec:
        raise ConfigError(
            f"{path}.window: only for the constant-S/N form {{snr, window}}; the physical form "
            f"(here with {', '.join(physical)}) states its S/N with reference_sb and "
            "reference_wavelength."
        )
    out: dict[str, Any] = {}
    for key in PHYSICAL_NOISE_KEYS:  # the `exposure` keys of the telescope schema
        if spec.get(key) is not None:
            name = "exposure.time" if key == "exposure_time" else f"exposure.{key}"
            out[key] = KEYS_BY_NAME[name].check(spec[key], join(path, key))
    if "sky" in out:
        table, value = out["sky"]
        out["sky"] = float(value) if table is None else (table.tolist(), value.tolist())
    reference = [k for k in REFERENCE_KEYS if k in out]
    if "exposure_time" in out and reference:
        raise ConfigError(
            f"{path}: give `exposure_time` or `snr` with `reference_sb` and "
            f"`reference_wavelength`, not both; got exposure_time={out['exposure_time']:g} and "
            + ", ".join(f"{k}={out[k]:g}" for k in reference)
            + "."
        )
    if reference:
        for key in REFERENCE_KEYS:
            if key not in out:
                raise ConfigError(
                    f"{join(path, key)}: required with {', '.join(reference)} (a S/N is stated at "
                    "a surface brightness in erg/s/cm2/Angstrom/arcsec2 and a wavelength in "
                    "Angstrom)."
                )
    return out


def check_noise_for(telescope, pipeline: Mapping) -> None:
    """Build the physical noise stage of a checked `pipeline` section for `telescope` (cheap),
    so that a missing `detector` or a reference wavelength off the grid is reported as
    `pipeline.noise: ...` before anything is computed."""
    from .._stages._noise import ExposureNoise, telescope_noise

    spec = pipeline.get("noise")
    if not is_physical_noise(spec):
        return
    flux_unit = pipeline.get("flux_unit", 1e-20)
    try:
        if spec == "telescope":
            stage = telescope_noise(telescope, flux_unit)
        else:
            stage = ExposureNoise.from_telescope(telescope, flux_unit=flux_unit, **spec)
        stage.for_pipeline(telescope, flux_unit)
    except ValueError as e:
        raise ConfigError(f"pipeline.noise: {e}") from None


def check_output(spec: Any) -> dict:
    path = "output"
    spec = check_keys({} if spec is None else spec, tuple(OUTPUT_DEFAULTS), path)
    out = dict(OUTPUT_DEFAULTS)
    for key, value in spec.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"{join(path, key)}: must be a path (or null to skip), got {value!r}."
            )
        out[key] = value
    if out["directory"] is None:
        raise ConfigError(f"{path}.directory: must be a path, got null.")
    return out


def check_inference(spec: Any) -> dict:
    """The `inference:` section: `priors: {name: [low, high] | {uniform: [low, high]} |
    {normal: [mean, sigma]}}` over the parameters of `rubix_eqx.fit.PARAMETERS`."""
    from ..fit import PARAMETERS

    path = "inference"
    spec = check_keys({} if spec is None else spec, ("priors",), path)
    priors = spec.get("priors") or {}
    if not isinstance(priors, Mapping):
        raise ConfigError(f"{path}.priors: must be a mapping of parameter: prior, got {priors!r}.")
    out = {}
    for name, prior in priors.items():
        key = join(f"{path}.priors", str(name))
        if name not in PARAMETERS:
            raise ConfigError(f"{key}: unknown parameter; the model has {sorted(PARAMETERS)}.")
        kind, values = "uniform", prior
        if isinstance(prior, Mapping) and len(prior) == 1 and set(prior) <= {"uniform", "normal"}:
            (kind, values), = prior.items()
        if not (isinstance(values, (list, tuple)) and len(values) == 2):
            raise ConfigError(
                f"{key}: must be [low, high], {{uniform: [low, high]}} or "
                f"{{normal: [mean, sigma]}}, got {prior!r}."
            )
        a, b = (number(v, key) for v in values)
        out[name] = (kind, a, b)
    return {"priors": out}


def check_config(config: Mapping) -> RunSpec:
    """Check every section of a run config (as read by `load_config`) without
    loading SSP grids, galaxies or compiling anything. Raises `ConfigError` naming the
    key path of the first problem."""
    check_keys(config, TOP_KEYS, "")
    spec = RunSpec(
        seed=integer(config.get("seed", 0), "seed", minimum=0),
        galaxy=check_galaxy(config.get("galaxy")),
        gas=check_gas(config.get("gas"), config.get("galaxy")),
        observation=check_observation(config.get("observation")),
        telescope=check_telescope(config.get("telescope")),
        ssp=check_ssp(config.get("ssp")),
        pipeline=check_pipeline(config.get("pipeline"), gas=config.get("gas") is not None),
        output=check_output(config.get("output")),
        inference=check_inference(config.get("inference")),
    )
    spec = spec._replace(galaxy=with_smoothing_spec(spec.galaxy, spec.pipeline))
    check_noise_for(spec.telescope, spec.pipeline)
    return spec


# --- building -------------------------------------------------------------------------------


def build_ssp(name: str):
    """The [`rubix_eqx.SSPGrid`][] of a checked `ssp` value (a grid name or an HDF5 path)."""
    from ..ssp import SSPGrid

    return SSPGrid.from_hdf5(name) if name.endswith((".h5", ".hdf5")) else SSPGrid.load(name)


def build_pipeline_from(spec: RunSpec, ssp):
    """The [`rubix_eqx.Pipeline`][] of a checked run config (`check_config`) and its SSP
    grid; crops the telescope first if `pipeline.crop_to_coverage` asks for it."""
    from .._observation import Observation
    from .._pipeline import crop_to_coverage, Pipeline
    from .._stages._deposit import SmoothedDeposit
    from .._stages._noise import ExposureNoise, Noise

    kw = dict(spec.pipeline)
    smoothing = kw.pop("smoothing", None)
    if smoothing is not None:
        kw["deposit"] = SmoothedDeposit(kernel=smoothing["kernel"], stencil=smoothing["stencil"])
    telescope = spec.telescope
    if kw.pop("crop_to_coverage", False):
        # the wavelengths the SSP grid covers at this redshift, LSF and velocity margins included
        redshift = float(Observation(**spec.observation).redshift)
        telescope = crop_to_coverage(
            telescope, ssp, redshift, kw.get("velocity_margin", 1000.0),
            lsf=kw.get("lsf", True), oversample=kw.get("oversample"),
        )  # fmt: skip
    lines = kw.get("emission_lines")
    dust_options = kw.pop("dust", None)
    cloud_options = kw.pop("birth_clouds", None)
    line_options = lines if isinstance(lines, dict) else None
    if line_options is not None:  # the stage is built below, on the pipeline's grid
        kw["emission_lines"] = True
    noise = kw.get("noise")
    if isinstance(noise, dict):
        if is_physical_noise(noise):
            flux_unit = kw.get("flux_unit", 1e-20)
            kw["noise"] = ExposureNoise.from_telescope(telescope, flux_unit=flux_unit, **noise)
        else:
            kw["noise"] = Noise(**noise)
    pipeline = Pipeline(telescope, ssp, **kw)
    if line_options:
        from .._stages._lines import EmissionLines

        stage = EmissionLines.build(pipeline.grid, ssp, telescope.medium, **line_options)
        pipeline = pipeline.without(EmissionLines).with_stage(stage)
    if dust_options is not None:
        from .._stages._dust import GasScreen

        pipeline = pipeline.with_stage(GasScreen.build(pipeline.grid, **dust_options))
    if cloud_options is not None:
        from .._stages._dust import BirthCloud

        pipeline = pipeline.with_stage(BirthCloud.build(pipeline.grid, **cloud_options))
    return pipeline


def build_galaxy(spec: Mapping, seed: int):
    """The galaxy of a checked `galaxy` section, and a dict describing its source. With
    `smoothing_neighbours` (k; set by `check_config` for `deposit: smoothed`), a galaxy
    without a smoothing length gets the k-th-neighbour distance
    ([`rubix_eqx.galaxy.with_smoothing_lengths`][])."""
    from .. import galaxy as gal

    spec = dict(spec)
    k = spec.pop("smoothing_neighbours", None)
    galaxy, info = _build_galaxy(spec, seed)
    if k is not None and galaxy.smoothing_length is None:
        galaxy = gal.with_smoothing_lengths(galaxy, k)
        info = {**info, "smoothing_length": f"distance to the {k}-th neighbour"}
    elif k is not None:
        info = {**info, "smoothing_length": "from the galaxy"}
    return galaxy, info


def _build_galaxy(spec: Mapping, seed: int):
    import jax

    from .. import galaxy as gal

    if spec["source"] == "synthetic":
        params = {k: v for k, v in spec.items() if k != "source"}
        galaxy, _ = gal.synthetic_disk(jax.random.key(seed), **params)
        return galaxy, {"source": "synthetic", **params}
    loader, path = spec["loader"], spec["path"]
    common = {"centre": spec["centre"], "align": spec["align"], "radius": spec.get("radius")}
    if loader == "hdf5":
        galaxy = gal.from_hdf5(path)
        if common["centre"]:
            galaxy = gal.centre(galaxy, radius=common["radius"])
        if common["align"]:
            galaxy = gal.face_on(galaxy, radius=common["radius"])
        return galaxy, {
            "loader": "hdf5",
            "source": path,
            "centred": common["centre"],
            "aligned": common["align"],
        }
    if loader == "tng":
        from ..galaxy._tng import load_tng

        return load_tng(
            path,
            spec.get("subhalo_id"),
            group_id=spec.get("group_id"),
            catalog=spec.get("catalog"),
            **common,
        )
    from ..galaxy._eagle import load_eagle

    return load_eagle(
        path,
        spec.get("group_id"),
        spec.get("subhalo_id"),
        metallicity=spec.get("metallicity", "smoothed"),
        **common,
    )


def build_gas(spec: Mapping | None, galaxy_spec: Mapping, seed: int):
    """The [`rubix_eqx.galaxy.Gas`][] of a checked `gas` section (`None` for none); the
    synthetic disk draws with `jax.random.key(seed + 2)`."""
    import jax

    from .. import galaxy as gal

    if spec is None:
        return None
    if spec["source"] == "synthetic":
        params = {k: v for k, v in spec.items() if k != "source"}
        return gal.synthetic_gas_disk(jax.random.key(seed + 2), **params)
    common = {"centre": galaxy_spec["centre"], "align": galaxy_spec["align"],
              "radius": galaxy_spec.get("radius")}  # fmt: skip
    if "eos_temperature" in spec:
        common["eos_temperature"] = spec["eos_temperature"]
    if galaxy_spec["loader"] == "tng":
        return gal.from_tng_gas(
            galaxy_spec["path"], galaxy_spec.get("subhalo_id"),
            group_id=galaxy_spec.get("group_id"), catalog=galaxy_spec.get("catalog"), **common,
        )  # fmt: skip
    return gal.from_eagle_gas(
        galaxy_spec["path"], galaxy_spec.get("group_id"), galaxy_spec.get("subhalo_id"),
        metallicity=galaxy_spec.get("metallicity", "smoothed"), **common,
    )  # fmt: skip


def build_observation(kwargs: Mapping):
    """The [`rubix_eqx.Observation`][] of a checked `observation` section."""
    from .._observation import Observation

    return Observation(**kwargs)


def build_pipeline(config: Mapping):
    """The pipeline, galaxy and observation a run config describes (checked first)."""
    spec = check_config(config)
    pipeline = build_pipeline_from(spec, build_ssp(spec.ssp))
    galaxy, _ = build_galaxy(spec.galaxy, spec.seed)
    return pipeline, galaxy, build_observation(spec.observation)
