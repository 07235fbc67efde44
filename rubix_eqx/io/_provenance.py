"""Provenance shared by the cube writers: software version, date, SSP and observation."""

import datetime
import importlib.metadata
from collections.abc import Mapping
from typing import Any


def software_version() -> str:
    try:
        return importlib.metadata.version("rubix-eqx")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "unknown"


def utc_now() -> str:
    """The current UTC time as a FITS `DATE` string (ISO 8601, seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def provenance(ssp=None, observation=None) -> dict[str, Any]:
    """What a written cube records besides its arrays: plain Python values only.

    **Arguments:**

    - `ssp`: the [`rubix_eqx.SSPGrid`][] used (its `name` and `citation`), or `None`.
    - `observation`: the [`rubix_eqx.Observation`][] used (inclination, position angle,
      distance), or `None`.
    """
    out: dict[str, Any] = {
        "software": "rubix_eqx",
        "software_version": software_version(),
        "date": utc_now(),
    }
    if ssp is not None:
        out["ssp_name"] = str(ssp.name)
        out["ssp_citation"] = str(ssp.citation)
    if observation is not None:
        out["inclination"] = float(observation.inclination)
        out["position_angle"] = float(observation.position_angle)
        if observation.distance is not None:
            out["distance"] = float(observation.distance)
    return out


def config_text(config: Mapping | str | None) -> str | None:
    """A run config as YAML text (mappings are dumped in their key order)."""
    if config is None or isinstance(config, str):
        return config
    import yaml

    return yaml.safe_dump(_plain(config), sort_keys=False)


def _plain(value):
    """Mappings/sequences/scalars converted to YAML-safe builtins."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value
