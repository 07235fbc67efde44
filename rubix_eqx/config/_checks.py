"""Checks of values read from YAML or given as mappings: errors name the key path."""

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .._checks import wavelength_window
from ._error import ConfigError
from ._yaml import FLOAT_12


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
    if isinstance(value, str) and FLOAT_12.match(value.strip()):
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


def window(value: Any, path: str) -> tuple[float, float]:
    """A `[start, stop]` wavelength window (Angstrom), checked by the one window check of
    the package ([`rubix_eqx.Noise`][] and `Telescope.snr_window` use it too)."""
    return wavelength_window(value, path, ConfigError)
