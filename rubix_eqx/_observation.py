"""The `Observation` pytree: where a galaxy sits on the sky and how it is viewed."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import cosmology as cosmo
from ._checks import concrete
from ._custom_types import RealScalarLike


DEFAULT_REDSHIFT = 0.05  # without a distance: E-MILES covers all of MUSE for z ≳ 0.045


class Observation(eqx.Module):
    """Redshift (or distance), orientation and sky position of an observed galaxy.

    **Attributes:**

    - `redshift`: cosmological redshift z ≥ 0; shifts the spectra by (1+z). Default:
      0 when a `distance` is given (a nearby galaxy, no shift, no (1+z) dimming), else
      0.05.
    - `inclination`: degrees in [0, 180]; 0 is face-on.
    - `position_angle`: degrees, of the projected major axis from North (+y) through
      East (-x).
    - `distance`: Mpc, or `None` to use the cosmological distances at `redshift`. For a
      nearby galaxy (z → 0) give a distance: it is used as both d_L and d_A.
    - `cosmology`: a [`rubix_eqx.cosmology.Cosmology`][] (default Planck18).
    - `ra`, `dec`: sky position of the galaxy centre, degrees (for the WCS of written cubes).

    Numbers are stored as 0-d float arrays so that `filter_jit` traces rather than
    recompiles them and `filter_grad` can differentiate with respect to them.
    """

    redshift: Float[Array, ""]
    inclination: Float[Array, ""]
    position_angle: Float[Array, ""]
    distance: Float[Array, ""] | None
    cosmology: cosmo.Cosmology
    ra: float
    dec: float

    def __init__(
        self,
        redshift: RealScalarLike | None = None,
        inclination: RealScalarLike = 0.0,
        position_angle: RealScalarLike = 0.0,
        distance: RealScalarLike | None = None,
        cosmology: cosmo.Cosmology = cosmo.PLANCK18,
        ra: float = 150.0,
        dec: float = 2.0,
    ):
        dtype = jnp.result_type(float)

        def scalar(name, value):
            arr = jnp.asarray(value)
            if arr.ndim != 0:
                raise ValueError(f"`Observation.{name}` must be a scalar; got shape {arr.shape}.")
            return arr.astype(dtype) if not jnp.issubdtype(arr.dtype, jnp.floating) else arr

        if redshift is None:
            redshift = 0.0 if distance is not None else DEFAULT_REDSHIFT
        self.redshift = scalar("redshift", redshift)
        self.inclination = scalar("inclination", inclination)
        self.position_angle = scalar("position_angle", position_angle)
        self.distance = None if distance is None else scalar("distance", distance)
        self.cosmology = cosmology
        self.ra = float(ra)
        self.dec = float(dec)

    def __check_init__(self):
        values = {
            name: concrete(getattr(self, name))
            for name in ("redshift", "inclination", "position_angle", "distance")
        }
        for name, value in values.items():
            if value is not None and getattr(self, name) is not None and not jnp.isfinite(value):
                raise ValueError(f"`Observation.{name}` must be finite; got {value}.")
        z, inc, dist = values["redshift"], values["inclination"], values["distance"]
        if z is not None and z < 0:
            raise ValueError(f"`Observation.redshift` must be >= 0; got {z}.")
        if self.distance is None and z is not None and z <= 0:
            raise ValueError(
                f"`Observation.redshift` is {z}: give a redshift > 0, or a `distance` in Mpc "
                "for a nearby galaxy."
            )
        if self.distance is not None and dist is not None and not dist > 0:
            raise ValueError(f"`Observation.distance` must be > 0 Mpc; got {dist}.")
        if inc is not None and not 0 <= inc <= 180:
            raise ValueError(f"`Observation.inclination` must lie in [0, 180] degrees; got {inc}.")
        for name in ("ra", "dec"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"`Observation.{name}` must be finite; got {getattr(self, name)}.")
        if not -90 <= self.dec <= 90:
            raise ValueError(f"`Observation.dec` must lie in [-90, 90] degrees; got {self.dec}.")

    def luminosity_distance(self) -> Float[Array, ""]:
        """d_L in Mpc: `distance` if given, else from the cosmology at `redshift`."""
        if self.distance is not None:
            return self.distance
        return cosmo.luminosity_distance(self.redshift, self.cosmology)

    def angular_diameter_distance(self) -> Float[Array, ""]:
        """d_A in Mpc: `distance` if given, else d_L/(1+z)²."""
        if self.distance is not None:
            return self.distance
        return cosmo.angular_diameter_distance(self.redshift, self.cosmology)

    def checked(self) -> "Observation":
        """This observation with runtime range checks attached (for use under `jit`)."""
        z = eqx.error_if(
            self.redshift,
            ~jnp.isfinite(self.redshift) | (self.redshift < 0),
            "`Observation.redshift` must be finite and >= 0.",
        )
        inc = eqx.error_if(
            self.inclination,
            ~((self.inclination >= 0) & (self.inclination <= 180)),
            "`Observation.inclination` must lie in [0, 180] degrees.",
        )
        pa = eqx.error_if(
            self.position_angle,
            ~jnp.isfinite(self.position_angle),
            "`Observation.position_angle` must be finite.",
        )
        if self.distance is None:
            z = eqx.error_if(
                z, ~(z > 0), "`Observation.redshift` must be > 0 without a `distance`."
            )
            return eqx.tree_at(
                lambda o: (o.redshift, o.inclination, o.position_angle), self, (z, inc, pa)
            )
        distance = eqx.error_if(
            self.distance,
            ~(jnp.isfinite(self.distance) & (self.distance > 0)),
            "`Observation.distance` must be finite and > 0 Mpc.",
        )
        return eqx.tree_at(
            lambda o: (o.redshift, o.inclination, o.position_angle, o.distance),
            self,
            (z, inc, pa, distance),
        )
