"""The `Gas` pytree: gas elements (SPH particles or moving-mesh cells) with physical units."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import require, require_finite, traced_check
from .._units import C_KM_S


FIELDS = (
    "position", "velocity", "mass", "metallicity", "sfr", "temperature", "smoothing_length"
)  # fmt: skip
_RULES = {  # field: (NumPy/JAX predicate of bad values, problem)
    "mass": (lambda a: a < 0, "is negative"),
    "metallicity": (lambda a: a <= 0, "is not positive (Z is a mass fraction > 0)"),
    "sfr": (lambda a: a < 0, "is negative"),
    "temperature": (lambda a: a <= 0, "is not positive (kelvin)"),
    "smoothing_length": (lambda a: a <= 0, "is not positive"),
}


def _as_float(name: str, values) -> Array:
    """NumPy arrays, lists and JAX arrays (also traced) → a JAX float array; integers become
    the default float, other dtypes a `TypeError` naming the field."""
    if not isinstance(values, jax.Array):
        try:
            values = np.asarray(values)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`Gas.{name}` must be an array of numbers; {e}") from None
    dtype = values.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(values)
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(values, jnp.result_type(float))
    raise TypeError(f"`Gas.{name}` must be numeric (real numbers); got dtype {dtype}.")


def _field(name: str):
    return eqx.field(converter=lambda v: _as_float(name, v))


class Gas(eqx.Module):
    """Gas elements of one galaxy, in physical units, in the frame of its stars.

    **Attributes:**

    - `position`: (n, 3) kpc (physical), relative to the galaxy centre.
    - `velocity`: (n, 3) km/s, relative to the systemic velocity.
    - `mass`: (n,) M☉.
    - `metallicity`: (n,) metal mass fraction Z (> 0).
    - `sfr`: (n,) instantaneous star-formation rate, M☉/yr (≥ 0; > 0 marks star-forming
      gas, the emitter of the nebular lines).
    - `temperature`: (n,) K (> 0).
    - `smoothing_length`: (n,) kpc (> 0): the support radius h of the SPH kernel
      (zero beyond h), see docs/loaders.md for each loader's definition.

    Fields are converted to JAX float arrays (integers to the default float; other dtypes a
    `TypeError` naming the field). Construction checks shapes ((n, 3) or (n,), one n: a
    `ValueError` naming the field) and, for concrete values, that every entry is finite,
    |velocity| < c, mass ≥ 0, Z > 0, sfr ≥ 0, T > 0 and h > 0 (a `ValueError` naming the
    field, the count and the first bad value). Under `jit`, use
    [`rubix_eqx.galaxy.Gas.checked`][].
    """

    position: Float[Array, "n 3"] = _field("position")
    velocity: Float[Array, "n 3"] = _field("velocity")
    mass: Float[Array, " n"] = _field("mass")
    metallicity: Float[Array, " n"] = _field("metallicity")
    sfr: Float[Array, " n"] = _field("sfr")
    temperature: Float[Array, " n"] = _field("temperature")
    smoothing_length: Float[Array, " n"] = _field("smoothing_length")

    def __check_init__(self):
        for name in FIELDS:
            shape = getattr(self, name).shape
            want = 2 if name in ("position", "velocity") else 1
            if len(shape) != want or (want == 2 and shape[1] != 3):
                wanted = "(n, 3)" if want == 2 else "(n,)"
                raise ValueError(f"`Gas.{name}` must have shape {wanted}; got shape {shape}.")
        n = self.mass.shape[0]
        for name in FIELDS:
            got = getattr(self, name).shape[0]
            if got != n:
                raise ValueError(f"`Gas.{name}` has {got} elements but `Gas.mass` has {n}.")
        for name in FIELDS:
            require_finite(f"Gas.{name}", getattr(self, name))
        require(
            "Gas.velocity",
            self.velocity,
            lambda a: np.broadcast_to(np.linalg.norm(a, axis=-1, keepdims=True) >= C_KM_S, a.shape),
            "is not below the speed of light (299792.458 km/s)",
        )
        for name, (bad, problem) in _RULES.items():
            require(f"Gas.{name}", getattr(self, name), bad, problem)

    @property
    def n_particles(self) -> int:
        return self.mass.shape[0]

    def checked(self) -> "Gas":
        """This gas with runtime checks attached, for use under `jit` where `__check_init__`
        cannot see values. Raises `EquinoxRuntimeError` naming the field."""
        out = self
        for name in FIELDS:
            value = getattr(self, name)
            bad = ~jnp.isfinite(value)
            problem = "NaN or infinite"
            if name == "velocity":
                bad = bad | (jnp.linalg.norm(value, axis=-1, keepdims=True) >= C_KM_S)
                problem += " or not below the speed of light"
            if name in _RULES:
                bad = bad | _RULES[name][0](value)
                problem += " or " + _RULES[name][1].split(" (")[0].replace("is ", "")
            value = traced_check(value, bad, f"`Gas.{name}` has values that are {problem}.")
            out = eqx.tree_at(lambda g, name=name: getattr(g, name), out, value)
        return out

    def select(self, index) -> "Gas":
        """The elements at `index` (a slice, mask or index array) as a new `Gas`."""
        return Gas(**{name: getattr(self, name)[index] for name in FIELDS})
