"""Validation helpers: eager checks on concrete arrays, and traced checks under jit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def concrete(x) -> np.ndarray | None:
    """`x` as a NumPy array, or `None` if it is a tracer (built under jit: no value checks)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def describe_bad(name: str, values: np.ndarray, bad: np.ndarray, problem: str) -> str:
    """An error message naming the field, how many entries are bad, and the first one."""
    flat_bad = np.argwhere(bad)
    first = tuple(int(i) for i in flat_bad[0])
    where = first[0] if len(first) == 1 else first
    return (
        f"`{name}` {problem} for {int(bad.sum())} of {bad.size} values "
        f"(first at index {where}: {values[first]!r})."
    )


def require(name: str, values, predicate_bad, problem: str) -> None:
    """Raise `ValueError` if `predicate_bad(values)` flags any concrete entry."""
    arr = concrete(values)
    if arr is None or arr.size == 0:
        return
    bad = np.asarray(predicate_bad(arr))
    if bad.any():
        raise ValueError(describe_bad(name, arr, bad, problem))


def require_finite(name: str, values) -> None:
    require(name, values, lambda a: ~np.isfinite(a), "is NaN or infinite")


def traced_check(x, bad, message: str):
    """`x`, with a runtime error attached if any of `bad` is true (works under jit)."""
    return eqx.error_if(x, jnp.any(bad), message)


def wavelength_window(value, where: str, error: type[ValueError] = ValueError):
    """`(start, stop)` of a wavelength window as two floats, Angstrom: finite, 0 < start <
    stop; else `error` (a `ValueError` subclass) with a message beginning with `where`.
    The one check of a noise window (`Noise(window=...)`, `Telescope.snr_window`, the
    `noise.window` config keys)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise error(f"{where}: must be [start, stop] in Angstrom, got {value!r}.")
    if any(isinstance(v, bool) for v in value):
        raise error(f"{where}: must be [start, stop] in Angstrom (numbers), got {value!r}.")
    try:
        start, stop = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise error(
            f"{where}: must be [start, stop] in Angstrom (numbers), got {value!r}."
        ) from None
    if not (np.isfinite(start) and np.isfinite(stop) and start > 0):
        raise error(f"{where}: must be finite and > 0 Angstrom, got {[start, stop]}.")
    if not start < stop:
        raise error(f"{where}: start must be < stop, got {[start, stop]}.")
    return start, stop
