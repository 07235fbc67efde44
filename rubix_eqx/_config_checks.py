"""Checks for dictionaries read from YAML: errors name the key path."""

import difflib
import functools
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names its key path."""


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_keys(
    data: Any, allowed: Iterable[str], path: str, required: Iterable[str] = ()
) -> Mapping:
    """`data` as a mapping whose keys are all in `allowed` (with a did-you-mean hint)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: must be a mapping, got {type(data).__name__}.")
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else f" Allowed: {', '.join(allowed)}."
            raise ConfigError(f"{join(path, str(key))}: unknown key.{hint}")
    for key in required:
        if key not in data:
            raise ConfigError(f"{join(path, key)}: required key is missing.")
    return data


def number(value: Any, path: str, *, positive=False, non_negative=False, lo=None, hi=None) -> float:
    """`value` as a finite float, with optional range checks. Strings such as `1.0e10`
    (which PyYAML's YAML 1.1 resolver leaves as strings) are accepted."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{path}: must be a number, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{path}: must be finite, got {value}.")
    if positive and not value > 0:
        raise ConfigError(f"{path}: must be > 0, got {value:g}.")
    if non_negative and value < 0:
        raise ConfigError(f"{path}: must be >= 0, got {value:g}.")
    if lo is not None and value < lo:
        raise ConfigError(f"{path}: must be >= {lo:g}, got {value:g}.")
    if hi is not None and value > hi:
        raise ConfigError(f"{path}: must be <= {hi:g}, got {value:g}.")
    return value


def integer(value: Any, path: str, *, minimum: int = 1) -> int:
    """`value` as an int. Integral floats (`1e5`, `2000.0`) count as integers, and so do
    strings such as `1e5` that PyYAML's YAML 1.1 resolver leaves as strings (from a
    mapping read with `yaml.safe_load`); `10.5`, `true`, `"40"` (quoted) or `"many"` do
    not."""
    number_ = value
    if isinstance(value, str) and _FLOAT_12.match(value.strip()):
        number_ = float(value.replace("_", ""))
    if isinstance(number_, float) and math.isfinite(number_) and number_.is_integer():
        number_ = int(number_)
    if isinstance(number_, bool) or not isinstance(number_, int):
        raise ConfigError(f"{path}: must be an integer, got {value!r}.")
    if number_ < minimum:
        raise ConfigError(f"{path}: must be >= {minimum}, got {number_}.")
    return number_


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: must be true or false, got {value!r}.")
    return value


def choice(value: Any, path: str, options: Iterable[str]) -> str:
    options = list(options)
    if value not in options:
        raise ConfigError(f"{path}: must be one of {', '.join(options)}; got {value!r}.")
    return value


# YAML 1.1 (PyYAML) reads `1e5` and `1.0e10` as strings: its float pattern wants a dot
# and a signed exponent. YAML 1.2 and every other reader take them as numbers, and so do
# we: a loader that adds the 1.2 pattern (an exponent without a dot or a sign).
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


@functools.cache
def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader with YAML 1.2 floats (`1e5`)."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
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
