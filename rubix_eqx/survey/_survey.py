"""Survey runs (docs/survey.md): plan the items (galaxies × views), run one item, and read
and write the manifest. Everything shared is a run config (`rubix_eqx.config`).

Design, in short:

- **Items.** The survey file lists galaxies (files, globs, TNG/EAGLE selections) and
  views (a grid or a list of redshift, inclination, position angle, telescope, ...). Item
  `g × v` is the run config `run` with the galaxy `g` and the view `v` put in; it is named
  `<galaxy>/<view>` and writes into `DIR/items/<galaxy>/<view>/`.
- **One compilation per shape.** One `Pipeline` per distinct (telescope, ssp, pipeline)
  section is built once and reused; particle counts are padded with zero-mass particles
  up to a bucket (default: the next power of two, at least 1024), and the histogram
  engine's velocity bound is the pipeline's `velocity_margin` for every item, so all
  items of one telescope and bucket share one compiled program.
- **Manifest.** JSON lines appended (and fsync'ed) to `DIR/manifest.jsonl` (or
  `manifest.K-of-N.jsonl` for worker K of N): a `running` record when an item starts,
  then `done` (with output checksums) or `failed` (with the named error). Reading merges
  every `manifest*.jsonl` of `DIR` and keeps each item's latest record.
- **Resume.** An item is skipped when its latest record is `done`, its inputs hash is the
  same and every output's SHA-256 matches; otherwise it is redone (stale temporary files of
  its directory are removed first). A `failed` item with unchanged inputs is skipped
  (its error stands) unless `retry_failed=True`.
"""

import contextlib
import dataclasses
import glob as globlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..config import ConfigError, read_yaml
from ..config._checks import check_keys, integer, join, number


logger = logging.getLogger("rubix_eqx")
item_log = logging.getLogger("rubix_eqx.survey.items")  # one line per item, to the log file
item_log.propagate = False
item_log.setLevel(logging.INFO)

SURVEY_KEYS = ("run", "galaxies", "observations", "particle_buckets", "memory_limit")
VIEW_KEYS = ("redshift", "distance", "inclination", "position_angle", "ra", "dec", "telescope")
GALAXY_EXTRA_KEYS = ("name",)
MIN_BUCKET = 1024
OUTPUT_KEYS = ("cube_fits", "cube_hdf5", "quicklook", "summary")
STATUSES = ("running", "done", "failed", "interrupted")


class SurveyItemError(Exception):
    """Base class of the errors a survey records for one item (and then goes on)."""


class GalaxyFileError(SurveyItemError):
    """The galaxy file cannot be read: not HDF5, wrong layout, missing datasets."""


class GalaxyValueError(SurveyItemError):
    """The galaxy file reads, but its particles are invalid (NaN, negative mass, ...)."""


class EmptyFieldError(SurveyItemError):
    """No particle of the galaxy falls in the telescope's field for this view."""


class MemoryGuardError(SurveyItemError):
    """The item's estimated peak memory exceeds the memory available; refused before
    anything of its size was allocated."""


# --- the plan -------------------------------------------------------------------------------


class SurveyItem(NamedTuple):
    """One cube of a survey.

    - `index`: position in the plan (worker K of N runs the items with
      `index % N == K - 1`).
    - `name`: `<galaxy>/<view>`, also the item's directory under `DIR/items/`.
    - `galaxy`, `view`: the galaxy and view labels.
    - `config`: the item's complete run config (what `rubix-eqx run` would take; also
      written into its HDF5 cube).
    - `spec`: the checked `RunSpec` of `config` (`rubix_eqx.config`).
    - `inputs_hash`: SHA-256 of `config` plus the size and modification time of the
      galaxy (and SSP) file: a changed input means the item is redone.
    """

    index: int
    name: str
    galaxy: str
    view: str
    config: dict
    spec: Any
    inputs_hash: str


class Survey(NamedTuple):
    """A checked survey file: its items and its options."""

    path: str
    items: tuple[SurveyItem, ...]
    n_galaxies: int
    n_views: int
    buckets: str | tuple[int, ...]
    memory_limit: float | None


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or "item"


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        count = seen.get(label, 0)
        seen[label] = count + 1
        out.append(label if count == 0 else f"{label}-{count + 1}")
    return out


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _expand_galaxy(entry, where: str) -> list[tuple[str, dict]]:
    """(label, unchecked galaxy section) for one `galaxies` entry: a path or glob (HDF5
    galaxy files), or a run-config `galaxy` section whose `path` may be a glob and whose
    `subhalo_id` / `group_id` may be lists (TNG/EAGLE selections)."""
    if isinstance(entry, str | Path):
        entry = {"source": "file", "path": str(entry)}
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{where}: must be a file path, a glob or a galaxy mapping, got {entry!r}."
        )
    entry = dict(entry)
    name = entry.pop("name", None)
    if entry.get("source", "file" if "path" in entry else "synthetic") == "synthetic":
        label = str(name) if name is not None else "synthetic"
        return [(label, entry)]
    entry.setdefault("source", "file")
    if "path" not in entry:
        raise ConfigError(f"{where}.path: required for a galaxy file.")
    pattern = str(entry["path"])
    if globlib.has_magic(pattern):
        paths = sorted(globlib.glob(pattern))
        if not paths:
            raise ConfigError(f"{where}.path: the pattern {pattern!r} matches no file.")
    else:
        paths = [pattern]
    loader = entry.get("loader", "hdf5")
    subhalos = _as_list(entry.get("subhalo_id"))
    groups = _as_list(entry.get("group_id"))
    if len(subhalos) > 1 and len(groups) > 1:
        if len(subhalos) != len(groups):
            raise ConfigError(
                f"{where}: `group_id` ({len(groups)} values) and `subhalo_id` "
                f"({len(subhalos)} values) must have the same length to be paired."
            )
        pairs = list(zip(groups, subhalos))
    else:
        pairs = [(g, s) for g in groups for s in subhalos]
    out = []
    for path in paths:
        stem = str(name) if name is not None else Path(path).stem
        for group, subhalo in pairs:
            spec = dict(entry, path=path)
            label = stem
            if loader == "tng" and subhalo is not None and group is None:
                label += f"_sub{subhalo}"
            elif group is not None or subhalo is not None:
                label += "".join(
                    f"_{tag}{v}" for tag, v in (("grp", group), ("sub", subhalo)) if v is not None
                )
            for key, value in (("group_id", group), ("subhalo_id", subhalo)):
                if value is None:
                    spec.pop(key, None)
                else:
                    spec[key] = value
            out.append((label, spec))
    return out


def _views(spec, where: str = "observations") -> list[dict]:
    """The views of `observations`: a mapping of values or lists (every combination, in
    the order telescope, redshift, distance, inclination, position angle, ra, dec) or a
    list of mappings (one view each)."""
    if spec is None:
        return [{}]
    if isinstance(spec, Mapping):
        check_keys(spec, VIEW_KEYS, where)
        keys = [k for k in ("telescope",) + VIEW_KEYS[:-1] if k in spec]
        values = []
        for key in keys:
            options = _as_list(spec[key])
            if not options:
                raise ConfigError(f"{join(where, key)}: an empty list gives no view.")
            values.append(options)
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list gives no view.")
        views = []
        for i, view in enumerate(spec):
            views.append(dict(check_keys({} if view is None else view, VIEW_KEYS, f"{where}[{i}]")))
        return views
    raise ConfigError(
        f"{where}: must be a mapping (every combination of its lists) or a list of views, "
        f"got {type(spec).__name__}."
    )


def _telescope_label(spec) -> str:
    if spec is None:
        return ""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        file = Path(str(spec.get("file", "tel"))).stem
        return str(spec.get("name") or spec.get("preset") or file)
    return "tel"


def _view_label(view: Mapping, varying: set[str]) -> str:
    tags = {"telescope": "", "redshift": "z", "distance": "d", "inclination": "i",
            "position_angle": "pa", "ra": "ra", "dec": "dec"}  # fmt: skip
    parts = []
    for key in ("telescope",) + VIEW_KEYS[:-1]:
        if key in view and key in varying:
            value = view[key]
            text = _telescope_label(value) if key == "telescope" else f"{value:g}" if isinstance(
                value, int | float) else str(value)  # fmt: skip
            parts.append(f"{tags[key]}{text}")
    return _safe("_".join(parts)) if parts else "view"


def _file_stamp(path) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def parse_bytes(value, where: str) -> float:
    """A memory size: a number of bytes, or a string such as `"8 GB"` / `"512MiB"`."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMGT]i?B|B)?\s*", value)
        if match is None:
            raise ConfigError(f"{where}: expected bytes or e.g. '8 GB', got {value!r}.")
        scale = {None: 1, "B": 1}
        for i, p in enumerate("KMGT", 1):
            scale[f"{p}B"], scale[f"{p}iB"] = 1000.0**i, 1024.0**i
        value = float(match[1]) * scale[match[2]]
    return number(value, where, positive=True)


def load_survey(path: str | Path) -> Survey:
    """Read and check a survey file (schema: docs/survey.md) and plan its items, without
    loading any galaxy or SSP grid. Raises `ConfigError` naming the key path of the first
    problem (`galaxies[1].path: the pattern 'x/*.h5' matches no file.`).

    **Returns:** a [`rubix_eqx.survey.Survey`][].
    """
    from ..config import _run as rc

    data = read_yaml(path)
    data = check_keys({} if data is None else data, SURVEY_KEYS, "", required=("galaxies",))
    run = data.get("run")
    if isinstance(run, str | Path):
        shared = rc.load_config(run)
    elif run is None or isinstance(run, Mapping):
        shared = dict(check_keys({} if run is None else run, rc.TOP_KEYS, "run"))
    else:
        raise ConfigError(f"run: must be a run-config file or mapping, got {run!r}.")
    shared.pop("galaxy", None)  # the survey's galaxies replace it
    try:
        base = rc.check_config(shared)
    except ConfigError as e:
        raise ConfigError(f"run.{e}") from None
    for key in OUTPUT_KEYS:
        name = base.output[key]
        if name is not None and (Path(name).is_absolute() or ".." in Path(name).parts):
            raise ConfigError(
                f"run.output.{key}: must be a file name inside each item's directory, got {name!r}."
            )
    if all(base.output[k] is None for k in OUTPUT_KEYS):
        raise ConfigError("run.output: every output is null; the survey would write nothing.")

    galaxies_spec = data["galaxies"]
    if isinstance(galaxies_spec, str):
        galaxies_spec = [galaxies_spec]
    if not isinstance(galaxies_spec, list) or not galaxies_spec:
        raise ConfigError("galaxies: must be a non-empty list of files, globs or selections.")
    galaxies: list[tuple[str, dict]] = []
    for i, entry in enumerate(galaxies_spec):
        where = f"galaxies[{i}]"
        for label, spec in _expand_galaxy(entry, where):
            try:
                checked = rc.check_galaxy(spec)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            checked = rc.with_smoothing_spec(checked, base.pipeline)
            galaxies.append((_safe(label), checked))
    labels = _unique([g[0] for g in galaxies])

    views = _views(data.get("observations"))
    varying = {k for k in VIEW_KEYS if len({_canonical(v.get(k)) for v in views}) > 1}
    view_labels = _unique([_view_label(v, varying) for v in views])
    telescopes: dict[str, Any] = {}
    checked_views = []
    for j, view in enumerate(views):
        where = f"observations[{j}]" if isinstance(data.get("observations"), list) else (
            "observations")  # fmt: skip
        obs = {**(shared.get("observation") or {}), **view}
        obs.pop("telescope", None)
        try:
            observation = rc.check_observation(obs)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        tel_spec = view.get("telescope", shared.get("telescope"))
        key = _canonical(tel_spec)
        if key not in telescopes:
            try:
                telescopes[key] = rc.check_telescope(tel_spec)
                rc.check_noise_for(telescopes[key], base.pipeline)
            except ConfigError as e:
                raise ConfigError(f"{where}.{e}" if str(e).startswith("telescope") else
                                  f"{where}: {e}") from None  # fmt: skip
        checked_views.append((obs, observation, tel_spec, telescopes[key]))

    buckets = data.get("particle_buckets", "auto")
    if buckets in ("auto", "exact"):
        pass
    elif isinstance(buckets, list) and buckets:
        buckets = tuple(sorted(integer(b, "particle_buckets") for b in buckets))
    else:
        raise ConfigError(
            f"particle_buckets: must be 'auto', 'exact' or a list of particle counts, got "
            f"{buckets!r}."
        )
    limit = data.get("memory_limit")
    limit = None if limit is None else parse_bytes(limit, "memory_limit")

    ssp_stamp = _file_stamp(base.ssp) if base.ssp.endswith((".h5", ".hdf5")) else None
    items = []
    for (g_label, g_spec), g_name in zip(galaxies, labels):
        stamp = _file_stamp(g_spec["path"]) if g_spec["source"] == "file" else None
        for (obs, observation, tel_spec, telescope), v_label in zip(checked_views, view_labels):
            config = {
                "seed": base.seed,
                "galaxy": g_spec,
                "observation": obs,
                "telescope": tel_spec,
                "ssp": base.ssp,
                "pipeline": shared.get("pipeline"),
                "output": {**base.output, "directory": "."},
            }
            config = {k: v for k, v in config.items() if v is not None}
            inputs_hash = _sha256(_canonical({"config": config, "galaxy_file": stamp,
                                              "ssp_file": ssp_stamp}))  # fmt: skip
            spec = base._replace(galaxy=g_spec, observation=observation, telescope=telescope)
            items.append(SurveyItem(len(items), f"{g_name}/{v_label}", g_name, v_label,
                                    config, spec, inputs_hash))  # fmt: skip
    return Survey(str(path), tuple(items), len(galaxies), len(views), buckets, limit)


def worker_items(items, worker: tuple[int, int]) -> list[SurveyItem]:
    """The items of worker K of N (1 ≤ K ≤ N): every N-th item, from the (K-1)-th."""
    k, n = worker
    return [item for item in items if item.index % n == k - 1]


def parse_worker(text: str) -> tuple[int, int]:
    """`"K/N"` → (K, N), with 1 ≤ K ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ConfigError(f"--worker {text}: expected K/N, e.g. 1/4 (worker 1 of 4).")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise ConfigError(f"--worker {text}: K must lie in 1..N, got K = {k}, N = {n}.")
    return k, n


def bucket_size(n: int, buckets) -> int:
    """The padded particle count of a galaxy of `n` particles."""
    if buckets == "exact":
        return n
    if buckets == "auto":
        return max(MIN_BUCKET, 2 ** math.ceil(math.log2(max(n, 1))))
    for b in buckets:
        if n <= b:
            return b
    return 2 ** math.ceil(math.log2(max(n, 1)))


# --- the manifest ---------------------------------------------------------------------------


def manifest_path(out: Path, worker: tuple[int, int]) -> Path:
    k, n = worker
    return out / ("manifest.jsonl" if n == 1 else f"manifest.{k}-of-{n}.jsonl")


def log_path(out: Path, worker: tuple[int, int]) -> Path:
    k, n = worker
    return out / ("survey.log" if n == 1 else f"survey.{k}-of-{n}.log")


def read_manifest(out: str | Path, *, history: bool = False):
    """The manifest of a survey directory: every `manifest*.jsonl` in it (one per worker)
    merged. A line that does not parse (the last line of a killed process) is ignored.

    **Returns:** `{item name: latest record}` (by the records' `time`), or with
    `history=True` the list of all records in time order.
    """
    records = []
    for i, path in enumerate(sorted(Path(out).glob("manifest*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for j, line in enumerate(f):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "item" in record:
                    records.append((record.get("time", 0.0), i, j, record))
    records.sort(key=lambda r: r[:3])
    if history:
        return [r[3] for r in records]
    latest: dict[str, dict] = {}
    for *_, record in records:
        latest[record["item"]] = record
    return latest


class _Manifest:
    """Appends records to one worker's manifest file: one `write` per line, flushed and
    fsync'ed, so that a killed process leaves at most a truncated last line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record, default=str) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_outputs(out: str | Path, record: Mapping) -> str | None:
    """Check a `done` record's outputs against the files in `out`.

    **Returns:** `None` if every output exists with its recorded size and SHA-256, else
    the reason (`"missing cube.fits"`, `"checksum mismatch: cube.h5"`).
    """
    outputs = record.get("outputs") or {}
    if not outputs:
        return "no outputs recorded"
    for entry in outputs.values():
        path = Path(out) / entry["path"]
        if not path.is_file():
            return f"missing {entry['path']}"
        if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            return f"checksum mismatch: {entry['path']}"
    return None


# --- memory ---------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes this process may still allocate: `MemAvailable` of /proc/meminfo (else
    `os.sysconf` available pages), capped by a cgroup v2 `memory.max` limit if any."""
    available = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2**62
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, int(limit) - used)
    return int(available)


def estimate_memory(
    n_particles: int, telescope, *, n_work: int | None = None, n_templates: int = 0,
    engine: str = "direct",
) -> dict[str, float]:  # fmt: skip
    """Estimated peak bytes of one item, from its sizes alone (nothing is allocated).

    Terms (float32 on device; the loaders read float64):

    - `particles`: n × 9 fields × 8 bytes × 4 (the file's arrays, the padded copy, the
      device arrays and the copy XLA keeps in the loop state);
    - `lattice`: the work cube on the ln λ lattice, n_spaxel × n_work × 4 bytes × 3
      (the sum, the LSF output and a copy); n_work defaults to 1.3 × n_wave;
    - `cube`: the telescope cube, n_spaxel × n_wave × 4 bytes × 10 (flux, variance, PSF
      and noise temporaries, and the float64 host copies made for the files);
    - `templates`: n_templates × n_work × 4 bytes × 3, plus the histogram and shifted
      basis of the histogram engine when `engine="histogram"` (`"sparse"`: its
      histogram at ≈ 40 shift bins);
    - `chunk`: one direct-engine chunk (`auto_chunk_size` particles) × 4 template
      windows × n_work × 4 bytes × 2.

    **Returns:** the terms and their `total`, in bytes.
    """
    from .._engine import auto_chunk_size

    n_spaxel = int(telescope.n_x) * int(telescope.n_y)
    n_wave = int(telescope.n_wave)
    n_work = int(1.3 * n_wave) if n_work is None else int(n_work)
    terms = {
        "particles": float(n_particles) * 9 * 8 * 4,
        "lattice": float(n_spaxel) * n_work * 4 * 3,
        "cube": float(n_spaxel) * n_wave * 4 * 10,
        "templates": float(n_templates) * n_work * 4 * 3,
        "chunk": float(auto_chunk_size(n_particles, n_work)) * 4 * n_work * 4 * 2,
    }
    if engine == "histogram":
        from .._engine import HISTOGRAM_MAX_BYTES

        terms["templates"] += HISTOGRAM_MAX_BYTES
    elif engine == "sparse":
        from .._engine import SPARSE_MAX_BYTES

        # H and its tile list at ≈ 40 padded shift bins (|v_los| ≲ 700 km/s on MUSE)
        terms["templates"] += min(SPARSE_MAX_BYTES, n_spaxel * n_templates * 40 * 4 * 8 / 7)
    terms["total"] = sum(terms.values())
    return terms


def _guard(estimate: dict, limit: float | None, what: str) -> dict:
    available = available_memory()
    allowed = available if limit is None else min(limit, available)
    info = {"estimate_bytes": int(estimate["total"]), "allowed_bytes": int(allowed),
            "available_bytes": int(available)}  # fmt: skip
    if estimate["total"] > allowed:
        big = max((k for k in estimate if k != "total"), key=lambda k: estimate[k])
        source = "memory_limit" if limit is not None and limit < available else "available RAM"
        raise MemoryGuardError(
            f"{what}: estimated peak memory {estimate['total'] / 1e9:.3g} GB exceeds the "
            f"{source} {allowed / 1e9:.3g} GB (largest term: {big}, "
            f"{estimate[big] / 1e9:.3g} GB); refused before allocating."
        )
    return info


# --- one item -------------------------------------------------------------------------------


def _hdf5_particle_count(path: str) -> int | None:
    """The particle count of a galaxy file from its `particles/mass` shape (no data read);
    `None` if the file does not tell (the reader then names the problem)."""
    from ..galaxy._io import open_galaxy_file, particle_datasets

    try:
        with open_galaxy_file(path) as f:
            return particle_datasets(path, f)[1]
    except (OSError, ValueError):
        return None


def _load_galaxy(spec: Mapping, seed: int):
    """The galaxy of a checked `galaxy` section, with read problems turned into
    `GalaxyFileError` and invalid values into `GalaxyValueError`."""
    import h5py

    from ..config import _run as rc

    if spec["source"] == "file" and spec["loader"] == "hdf5":
        path = spec["path"]
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as e:
            raise GalaxyFileError(f"{path}: not a readable HDF5 file ({e}).") from None
        try:
            return rc.build_galaxy(spec, seed)
        except (ValueError, TypeError, KeyError, OSError) as e:
            # the reader names the file; `Galaxy` names the field of invalid values
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "`Galaxy." in message:
                raise GalaxyValueError(message) from None
            raise GalaxyFileError(message) from None
    try:
        return rc.build_galaxy(spec, seed)
    except (OSError, KeyError) as e:
        raise GalaxyFileError(f"{spec.get('path', 'galaxy')}: {e}") from None
    except ValueError as e:
        raise GalaxyValueError(f"{spec.get('path', 'galaxy')}: {e}") from None


def _padded(galaxy, size: int, ssp):
    """`galaxy` with zero-mass particles appended up to `size`, at the centre, at rest, of
    the SSP grid's middle age and metallicity (so they are neither clipped nor outside)."""
    import jax.numpy as jnp
    import numpy as np

    from ..galaxy import Galaxy

    n = galaxy.n_particles
    if size == n:
        return galaxy
    extra = size - n
    age = float(np.asarray(ssp.age)[len(ssp.age) // 2])
    metallicity = float(np.asarray(ssp.metallicity)[len(ssp.metallicity) // 2])
    fill = {"position": np.zeros((extra, 3)), "velocity": np.zeros((extra, 3)),
            "mass": np.zeros(extra), "age": np.full(extra, age),
            "metallicity": np.full(extra, metallicity)}  # fmt: skip
    if galaxy.smoothing_length is not None:
        fill["smoothing_length"] = np.ones(extra)  # any valid size: the padding has no mass
    fields = {
        name: jnp.asarray(
            np.concatenate([np.asarray(getattr(galaxy, name)),
                            value.astype(getattr(galaxy, name).dtype)])
        )
        for name, value in fill.items()
    }  # fmt: skip
    return Galaxy(**fields)


def survey_cube(pipeline, galaxy, observation, key, n_real: int):
    """`pipeline(galaxy, observation, key=key)` with the histogram engine's velocity bound
    fixed at `velocity_margin` (so that every galaxy shares one compilation), and
    `diagnostics.n_particles` set to the `n_real` particles before padding. Raises
    `EmptyFieldError` if no particle falls in the field."""
    import warnings

    import jax.numpy as jnp
    import numpy as np

    from .._pipeline import FieldWarning

    redshift = float(np.asarray(observation.redshift))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FieldWarning)  # an empty field is raised below
        cube = pipeline(
            galaxy, observation, key=key,
            speed_bound=pipeline.velocity_margin,
        )  # fmt: skip
    diag = dataclasses.replace(
        cube.diagnostics, n_particles=jnp.asarray(n_real, cube.diagnostics.n_particles.dtype)
    )
    cube = dataclasses.replace(cube, diagnostics=diag)
    if n_real > 0 and int(diag.n_outside) >= n_real:
        tel = pipeline.telescope
        raise EmptyFieldError(
            f"all {n_real} particles lie outside the {tel.n_x}x{tel.n_y}-spaxel field of "
            f"{tel.name} at redshift {redshift:g} (the cube would be zero)."
        )
    return cube


class _CompileCounter:
    """Counts XLA backend compilations (jax.monitoring), for the manifest."""

    event = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count, self.seconds = 0, 0.0
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kw) -> None:
        if event == self.event:
            self.count += 1
            self.seconds += duration


_COUNTER: _CompileCounter | None = None


def compile_counter() -> _CompileCounter:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = _CompileCounter()
    return _COUNTER


class _Context:
    """What items share: the SSP grid and one pipeline per (telescope, ssp, pipeline)."""

    def __init__(self, survey: Survey):
        self.survey = survey
        self.ssp = None
        self.pipelines: dict[str, Any] = {}
        self.galaxy_key = None
        self.galaxy = None

    def pipeline(self, item: SurveyItem):
        from ..config import _run as rc

        spec = item.spec
        key = _canonical([item.config.get("telescope"), spec.ssp, spec.pipeline])
        if key not in self.pipelines:
            if self.ssp is None:
                self.ssp = rc.build_ssp(spec.ssp)
            self.pipelines[key] = rc.build_pipeline_from(spec, self.ssp)
        return self.pipelines[key]


def _clean_tmp(directory: Path) -> int:
    """Remove temporary files a killed writer left in `directory` (`atomic_path` names)."""
    removed = 0
    if directory.is_dir():
        for path in directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink()
                removed += 1
    return removed


def run_item(item: SurveyItem, out: Path, context: _Context) -> dict:
    """Build and write one item's cube. **Returns:** the `done` fields of its manifest
    record (outputs with checksums, sizes, timings); raises on failure."""
    import jax
    import numpy as np

    from .. import __version__
    from .._atomic import atomic_path
    from ..config import _run as rc

    spec = item.spec
    tel = spec.telescope
    directory = out / "items" / item.name
    _clean_tmp(directory)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    limit = context.survey.memory_limit
    galaxy_spec = spec.galaxy
    n_known = None
    if galaxy_spec["source"] == "file" and galaxy_spec["loader"] == "hdf5":
        n_known = _hdf5_particle_count(galaxy_spec["path"])
    elif galaxy_spec["source"] == "synthetic":
        n_known = int(galaxy_spec.get("n_stars", 100_000))
    buckets = context.survey.buckets
    memory = _guard(estimate_memory(bucket_size(n_known or 0, buckets), tel), limit, item.name)
    pipeline = context.pipeline(item)
    seconds["pipeline"] = time.perf_counter() - t0
    n_templates = int(pipeline.grid.templates.shape[0])

    def estimate(n):
        size = bucket_size(n, buckets)
        return estimate_memory(size, tel, n_work=pipeline.grid.n_work, n_templates=n_templates,
                               engine=pipeline.engine_for(size))  # fmt: skip

    if n_known is not None:
        memory = _guard(estimate(n_known), limit, item.name)
    t1 = time.perf_counter()
    galaxy_key = _canonical(galaxy_spec)
    if context.galaxy_key != galaxy_key:
        context.galaxy, context.galaxy_key = None, None
        galaxy, galaxy_info = _load_galaxy(galaxy_spec, spec.seed)
        context.galaxy, context.galaxy_key = (galaxy, galaxy_info), galaxy_key
    galaxy, galaxy_info = context.galaxy
    n_real = int(galaxy.n_particles)
    memory = _guard(estimate(n_real), limit, item.name)
    size = bucket_size(n_real, buckets)
    padded = _padded(galaxy, size, pipeline.ssp)
    observation = rc.build_observation(spec.observation)
    seconds["galaxy"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    noise_key = jax.random.fold_in(jax.random.key(spec.seed + 1), int(item.inputs_hash[:7], 16))
    cube = survey_cube(pipeline, padded, observation, noise_key, n_real)
    cube.flux.block_until_ready()
    seconds["cube"] = time.perf_counter() - t2
    paths = {k: spec.output[k] for k in OUTPUT_KEYS if spec.output[k] is not None}
    t3 = time.perf_counter()
    maps = observed = None
    if any(k in paths for k in ("cube_fits", "cube_hdf5", "quicklook")):
        from .._maps import truth_maps
        from .._observed_maps import observed_truth_maps
        from .._stages._deposit import AbstractDeposit
        from .._stages._psf import PSFConvolution

        deposit = pipeline.stage(AbstractDeposit)
        maps = truth_maps(padded, observation, tel, pipeline.ssp, deposit=deposit,
                          flux_unit=pipeline.flux_unit)  # fmt: skip
        psf = pipeline.stage(PSFConvolution)
        if psf is not None:
            observed = observed_truth_maps(maps, tel, psf=psf)
    seconds["truth"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    truth = {"truth": maps, "observed_truth": observed}
    if "cube_fits" in paths:
        from ..io import write_cube_fits

        write_cube_fits(cube, directory / paths["cube_fits"], ssp=pipeline.ssp,
                        observation=observation, **truth)  # fmt: skip
    if "cube_hdf5" in paths:
        from ..io import write_cube_hdf5

        write_cube_hdf5(cube, directory / paths["cube_hdf5"], ssp=pipeline.ssp,
                        observation=observation, config=item.config, **truth)  # fmt: skip
    if "quicklook" in paths:
        from .._quicklook import quicklook

        quicklook(cube, directory / paths["quicklook"], maps=maps, observation=observation)
    diag = {k: np.asarray(getattr(cube.diagnostics, k)).item()
            for k in cube.diagnostics.__dataclass_fields__}  # fmt: skip
    if "summary" in paths:
        summary = {
            "rubix_eqx_version": __version__, "item": item.name, "config": item.config,
            "n_particles": n_real, "padded_to": size, "shape": list(cube.shape),
            "telescope": tel.name, "diagnostics": diag,
            "galaxy": {k: v for k, v in galaxy_info.items()
                       if isinstance(v, str | int | float | bool)},
        }  # fmt: skip
        with atomic_path(directory / paths["summary"]) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    seconds["write"] = time.perf_counter() - t4
    outputs = {}
    for key, name in paths.items():
        path = directory / name
        outputs[key] = {"path": str(path.relative_to(out)), "bytes": path.stat().st_size,
                        "sha256": file_sha256(path)}  # fmt: skip
    seconds["total"] = time.perf_counter() - t0
    return {
        "outputs": outputs,
        "n_particles": n_real,
        "padded_to": size,
        "engine": pipeline.engine_for(size),
        "shape": list(cube.shape),
        "diagnostics": diag,
        "memory": memory,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }


# --- the loop -------------------------------------------------------------------------------


@dataclasses.dataclass
class SurveyResult:
    """What one `run_survey` call did (this worker's items only).

    **Attributes:**

    - `n_items`: items of this worker; `n_total`: items of the survey.
    - `done`: items computed now; `skipped`: already done and verified; `redone`: done
      before but missing/corrupt/changed, computed again (also counted in `done`).
    - `failed`: `{item: "ErrorType: message"}`, now or (inputs unchanged) earlier.
    - `errors`: failures by error type.
    - `interrupted`: stopped by SIGINT/SIGTERM after an item; `remaining`: items not run.
    - `compilations`, `compile_seconds`: XLA compilations during this call.
    - `seconds`: wall time.
    """

    n_items: int = 0
    n_total: int = 0
    done: int = 0
    skipped: int = 0
    redone: int = 0
    failed: dict = dataclasses.field(default_factory=dict)
    errors: dict = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    remaining: int = 0
    compilations: int = 0
    compile_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


class _Stop:
    """SIGINT/SIGTERM set a flag checked between items; a second SIGINT interrupts now."""

    def __init__(self, notify: Callable[[str], None] | None):
        self.requested = False
        self.notify = notify
        self.previous: dict = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.notify is not None:
            self.notify(
                f"{signal.Signals(signum).name}: stopping after the current item "
                "(Ctrl-C again to stop now)."
            )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class _ItemFilter(logging.Filter):
    """Tags log records with the item being run."""

    item = "-"

    def filter(self, record):
        record.item = self.item
        return True


def _error_name(e: BaseException) -> str:
    return type(e).__name__


def run_survey(
    survey: Survey,
    out: str | Path,
    *,
    worker: tuple[int, int] = (1, 1),
    retry_failed: bool = False,
    on_item: Callable[[SurveyItem, str, dict], None] | None = None,
    notify: Callable[[str], None] | None = None,
    handle_signals: bool = True,
) -> SurveyResult:
    """Run this worker's items of `survey` into `out`, skipping what is done and verified.

    **Arguments:**

    - `survey`: from [`rubix_eqx.survey.load_survey`][].
    - `out`: the survey directory (items, manifest, log).
    - `worker`: (K, N): run every N-th item from the (K-1)-th; each worker appends to its
      own manifest file, and every worker reads all of them.
    - `retry_failed`: run failed items again even if their inputs did not change.
    - `on_item(item, outcome, record)`: called after each item; outcome is `"done"`,
      `"skipped"` or `"failed"` (e.g. to advance a progress bar).
    - `notify(text)`: messages for the user (e.g. on Ctrl-C).
    - `handle_signals`: on SIGINT/SIGTERM finish the current item, then stop.

    **Returns:** a [`rubix_eqx.survey.SurveyResult`][].
    """
    from .. import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    items = worker_items(survey.items, worker)
    result = SurveyResult(n_items=len(items), n_total=len(survey.items))
    previous = read_manifest(out)
    counter = compile_counter()
    c0, s0 = counter.count, counter.seconds
    manifest = _Manifest(manifest_path(out, worker))
    log = logging.FileHandler(log_path(out, worker), encoding="utf-8")
    log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(item)s] %(message)s"))
    current = _ItemFilter()
    log.addFilter(current)
    logger.addHandler(log)  # library warnings (clipping, ...) go to the log, not stderr
    propagate, logger.propagate = logger.propagate, False
    item_log.addHandler(log)
    context = _Context(survey)
    base = {"worker": f"{worker[0]}/{worker[1]}", "host": socket.gethostname(),
            "pid": os.getpid(), "rubix_eqx_version": __version__}  # fmt: skip
    try:
        with _Stop(notify) if handle_signals else contextlib.nullcontext() as stop:
            for position, item in enumerate(items):
                current.item = item.name
                if stop is not None and stop.requested:
                    result.interrupted = True
                    result.remaining = len(items) - position
                    break
                old = previous.get(item.name)
                redo_reason = None
                if old is not None and old.get("inputs_hash") == item.inputs_hash:
                    if old.get("status") == "done":
                        redo_reason = verify_outputs(out, old)
                        if redo_reason is None:
                            _clean_tmp(out / "items" / item.name)
                            result.skipped += 1
                            item_log.info("skipped (done, verified)")
                            if on_item is not None:
                                on_item(item, "skipped", old)
                            continue
                    elif old.get("status") == "failed" and not retry_failed:
                        error = old.get("error") or {}
                        kind = error.get("type")
                        result.failed[item.name] = f"{kind}: {error.get('message')}"
                        result.errors[kind] = result.errors.get(kind, 0) + 1
                        item_log.info("skipped (failed before, inputs unchanged)")
                        if on_item is not None:
                            on_item(item, "skipped", old)
                        continue
                    elif old.get("status") in ("running", "interrupted"):
                        redo_reason = "interrupted"
                elif old is not None:
                    redo_reason = "inputs changed"
                record = {
                    "item": item.name, "index": item.index, "galaxy": item.galaxy,
                    "view": item.view, "inputs_hash": item.inputs_hash,
                    "inputs": {"galaxy": item.config["galaxy"],
                               "observation": item.config.get("observation", {}),
                               "telescope": item.spec.telescope.name,
                               "shape": [item.spec.telescope.n_x, item.spec.telescope.n_y,
                                         item.spec.telescope.n_wave]},
                    **base,
                }  # fmt: skip
                if redo_reason is not None:
                    record["redo_reason"] = redo_reason
                manifest.append({**record, "status": "running", "time": time.time()})
                started = time.time()
                c_item, s_item = counter.count, counter.seconds
                try:
                    fields = run_item(item, out, context)
                    status, outcome = "done", "done"
                    result.done += 1
                    result.redone += redo_reason is not None
                except KeyboardInterrupt:
                    error = {"type": "KeyboardInterrupt", "message": "interrupted in the item"}
                    manifest.append({**record, "status": "interrupted", "time": time.time(),
                                     "error": error})  # fmt: skip
                    raise
                except Exception as e:
                    status, outcome = "failed", "failed"
                    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    fields = {"error": {"type": _error_name(e), "message": message}}
                    result.failed[item.name] = f"{_error_name(e)}: {message}"
                    result.errors[_error_name(e)] = result.errors.get(_error_name(e), 0) + 1
                    item_log.debug("%s", traceback.format_exc())
                final = {
                    **record, **fields, "status": status, "started": started,
                    "time": time.time(), "compilations": counter.count - c_item,
                    "compile_seconds": round(counter.seconds - s_item, 4),
                }  # fmt: skip
                manifest.append(final)
                seconds = final.get("seconds", {}).get("total")
                if status == "done":
                    item_log.info("done in %.2f s (%d compilations)", seconds,
                                  final["compilations"])  # fmt: skip
                else:
                    item_log.info("failed: %s", result.failed[item.name])
                if on_item is not None:
                    on_item(item, outcome, final)
    finally:
        logger.removeHandler(log)
        logger.propagate = propagate
        item_log.removeHandler(log)
        log.close()
        manifest.close()
    result.compilations = counter.count - c0
    result.compile_seconds = counter.seconds - s0
    result.seconds = time.perf_counter() - start
    return result
