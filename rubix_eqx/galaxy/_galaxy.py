"""The `Galaxy` pytree: star particles with physical units."""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, jaxtyped

from .._checks import require, require_finite, traced_check
from .._typecheck import typechecker
from .._units import C_KM_S


FIELDS = ("position", "velocity", "mass", "age", "metallicity")
OPTIONAL_FIELDS = ("smoothing_length",)  # may be `None`
# The value rules of a galaxy, besides "finite": field -> (bad(xp, values) with xp NumPy
# or jax.numpy, the eager message, its short form in the traced message).
RULES = {
    "velocity": (
        lambda xp, a: xp.linalg.norm(a, axis=-1, keepdims=True) >= C_KM_S,
        f"is not below the speed of light ({C_KM_S} km/s)",
        "not below the speed of light",
    ),
    "mass": (lambda xp, a: a < 0, "is negative", "negative"),
    "age": (lambda xp, a: a < 0, "is negative", "negative"),
    "metallicity": (
        lambda xp, a: a <= 0,
        "is not positive (Z is a mass fraction > 0)",
        "not positive",
    ),
    "smoothing_length": (
        lambda xp, a: a <= 0,
        "is not positive (a smoothing length is a radius > 0 kpc)",
        "not positive",
    ),
}


def bad_values(name: str, values, xp=np):
    """Where the values of field `name` break a rule (NaN, infinite, or the field's own
    rule in `RULES`), broadcast to the shape of `values`; `xp` is `numpy` or `jax.numpy`."""
    bad = ~xp.isfinite(values)
    if name in RULES:
        bad = bad | xp.broadcast_to(RULES[name][0](xp, values), values.shape)
    return bad


def problem(name: str) -> str:
    """What `bad_values(name, ...)` flags, in words: "NaN, infinite or negative"."""
    return f"NaN, infinite or {RULES[name][2]}" if name in RULES else "NaN or infinite"


def check_values(galaxy) -> None:
    """`ValueError` naming the field, the count and the first bad entry if a concrete
    field of `galaxy` breaks a rule (first "finite" for every field, then `RULES`)."""
    for name in FIELDS + OPTIONAL_FIELDS:
        if getattr(galaxy, name) is not None:
            require_finite(f"Galaxy.{name}", getattr(galaxy, name))
    for name, (rule, message, _) in RULES.items():
        values = getattr(galaxy, name)
        if values is None:
            continue
        require(
            f"Galaxy.{name}",
            values,
            lambda a, rule=rule: np.broadcast_to(rule(np, a), a.shape),
            message,
        )


def _as_float(name: str, values) -> Array:
    """A field converter: NumPy arrays, lists and JAX arrays (also traced) to a JAX float
    array. Float dtypes are kept (as JAX holds them), integers become the default float;
    booleans, complex numbers and strings are a `TypeError` naming the field."""
    if isinstance(values, jax.Array):
        dtype = values.dtype
        if jnp.issubdtype(dtype, jnp.floating):
            return values  # as given (also sharded over devices or hosts)
    else:
        try:
            values = np.asarray(values)
        except (TypeError, ValueError) as e:  # ragged lists
            raise TypeError(f"`Galaxy.{name}` must be an array of numbers; {e}") from None
        dtype = values.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(values)
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(values, jnp.result_type(float))
    raise TypeError(f"`Galaxy.{name}` must be numeric (real numbers); got dtype {dtype}.")


def _as_optional_float(name: str, values) -> Array | None:
    return None if values is None else _as_float(name, values)


def _field(name: str):
    return eqx.field(converter=ft.partial(_as_float, name))


def _check_fields(
    position: Float[Array, "n 3"],
    velocity: Float[Array, "n 3"],
    mass: Float[Array, " n"],
    age: Float[Array, " n"],
    metallicity: Float[Array, " n"],
    smoothing_length: Float[Array, " n"] | None,
) -> None:
    """The shapes of `Galaxy`'s fields (a converted field is not checked by the generated
    `__init__`): a `jaxtyping.TypeCheckError` names the first parameter that disagrees."""


# The error then reads "... checking the parameters of ...Galaxy.__init__", as it did
# before the fields had converters.
_check_fields.__qualname__ = "Galaxy.__init__"
_check_fields = jaxtyped(_check_fields, typechecker=typechecker)


@jaxtyped(typechecker=typechecker)
class Galaxy(eqx.Module):
    """Star particles of one galaxy, in physical units, relative to its centre.

    **Attributes:**

    - `position`: kpc (physical), relative to the galaxy centre.
    - `velocity`: km/s, relative to the systemic velocity.
    - `mass`: initial (birth) mass in M☉; SSP spectra are per M☉ formed.
    - `age`: Gyr since birth at the epoch of observation.
    - `metallicity`: metal mass fraction Z (Z☉ = 0.019 for the Padova-based MILES grid).
    - `smoothing_length`: optional, kpc (physical): each particle's kernel support
      radius h for [`rubix_eqx.SmoothedDeposit`][] (e.g. from
      [`rubix_eqx.galaxy.with_smoothing_lengths`][]), or `None` (default).

    Each field takes a JAX array, a NumPy array or a (nested) list: it is converted to a
    JAX float array (float dtypes kept, integers to the default float; other dtypes are a
    `TypeError` naming the field). Construction then checks shapes (jaxtyping: a wrong
    rank, trailing dimension or length raises a `jaxtyping.TypeCheckError` naming the
    field; `from_arrays` raises a `ValueError` with both lengths) and, for concrete
    values, that every entry is finite, `mass ≥ 0`, `age ≥ 0`, `metallicity > 0` and
    `smoothing_length > 0`.
    Under `jit`, use [`rubix_eqx.Galaxy.checked`][] to attach the same checks to traced
    values.
    """

    position: Float[Array, "n 3"] = _field("position")
    velocity: Float[Array, "n 3"] = _field("velocity")
    mass: Float[Array, " n"] = _field("mass")
    age: Float[Array, " n"] = _field("age")
    metallicity: Float[Array, " n"] = _field("metallicity")
    smoothing_length: Float[Array, " n"] | None = eqx.field(
        default=None, converter=ft.partial(_as_optional_float, "smoothing_length")
    )

    def __check_init__(self):
        _check_fields(
            self.position, self.velocity, self.mass, self.age, self.metallicity,
            self.smoothing_length,
        )  # fmt: skip
        n = self.mass.shape[0]
        for name in ("position", "velocity", "age", "metallicity", "smoothing_length"):
            if getattr(self, name) is None:
                continue
            got = getattr(self, name).shape[0]
            if got != n:
                raise ValueError(f"`Galaxy.{name}` has {got} particles but `Galaxy.mass` has {n}.")
        check_values(self)

    @property
    def n_particles(self) -> int:
        return self.mass.shape[0]

    @classmethod
    def from_arrays(cls, position, velocity, mass, age, metallicity, dtype=None) -> "Galaxy":
        """Build a `Galaxy` from array-likes (NumPy, lists, JAX), cast to one float dtype.

        **Arguments:** as the attributes; `dtype` defaults to JAX's default float.
        """
        dtype = jnp.result_type(float) if dtype is None else dtype
        expected_ndim = {"position": 2, "velocity": 2, "mass": 1, "age": 1, "metallicity": 1}
        for name, x in zip(expected_ndim, (position, velocity, mass, age, metallicity)):
            if np.ndim(x) != expected_ndim[name]:
                shape = "(n, 3)" if expected_ndim[name] == 2 else "(n,)"
                raise ValueError(
                    f"`Galaxy.{name}` must have shape {shape}; got shape {np.shape(x)}."
                )
        lengths = {
            name: np.shape(x)[0] if np.ndim(x) else 0
            for name, x in zip(
                ("position", "velocity", "mass", "age", "metallicity"),
                (position, velocity, mass, age, metallicity),
            )
        }
        for name, length in lengths.items():
            if length != lengths["mass"]:
                raise ValueError(
                    f"`Galaxy.{name}` has {length} particles but `Galaxy.mass` has "
                    f"{lengths['mass']}."
                )

        def as_array(name, x):
            arr = np.asarray(x)
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"`Galaxy.{name}` must be numeric; got dtype {arr.dtype}.")
            return jnp.asarray(arr, dtype=dtype)

        return cls(
            position=as_array("position", position),
            velocity=as_array("velocity", velocity),
            mass=as_array("mass", mass),
            age=as_array("age", age),
            metallicity=as_array("metallicity", metallicity),
        )

    def checked(self) -> "Galaxy":
        """This galaxy with runtime checks attached, for use under `jit` where
        `__check_init__` cannot see values. Raises `EquinoxRuntimeError` naming the field."""
        out = self
        for name in FIELDS + OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            value = traced_check(
                value,
                bad_values(name, value, jnp),
                f"`Galaxy.{name}` has values that are {problem(name)}.",
            )
            out = eqx.tree_at(lambda g, name=name: getattr(g, name), out, value)
        return out

    def select(self, index) -> "Galaxy":
        """The particles at `index` (a slice, mask or index array) as a new `Galaxy`."""
        return Galaxy(
            position=self.position[index],
            velocity=self.velocity[index],
            mass=self.mass[index],
            age=self.age[index],
            metallicity=self.metallicity[index],
            smoothing_length=None
            if self.smoothing_length is None
            else self.smoothing_length[index],
        )
