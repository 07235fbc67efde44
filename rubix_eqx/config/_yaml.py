"""YAML reading: safe, YAML 1.2 numbers (`1e5`), syntax errors with line and column."""

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._error import ConfigError


# YAML 1.1 (PyYAML) reads `1e5` and `1.0e10` as strings: its float pattern wants a dot
# and a signed exponent. YAML 1.2 and every other reader take them as numbers, and so do
# we: a loader that adds the 1.2 pattern (an exponent without a dot or a sign).
FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


@functools.cache
def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader with YAML 1.2 floats (`1e5`)."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+0123456789."))
    return Loader


def load_yaml_text(text: str) -> Any:
    """Parse YAML text as `read_yaml` does (safe; `1e5` is a number)."""
    import yaml

    return yaml.load(text, Loader=_loader())


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error reports the line and column. Numbers such as
    `1e5` are numbers (YAML 1.2), not the strings PyYAML's YAML 1.1 resolver makes."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        return load_yaml_text(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{path}: malformed YAML at {where}: {e.problem}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}.") from None


def deep_merge(base: Mapping, overrides: Mapping) -> dict:
    """`base` with `overrides` applied recursively (mappings merge, other values replace)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
