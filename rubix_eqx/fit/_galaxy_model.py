"""A small parametric galaxy model for posterior inference: ten physical parameters that
generate every particle's properties differentiably from fixed random draws, each with
a prior declared beside it (bounded priors are sampled through a bijection to ℝ)."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._observation import Observation
from .._units import SOLAR_METALLICITY
from ..galaxy import disk_from_draws, DiskDraws, Galaxy, Truth


class PriorRangeError(ValueError):
    """A prior that allows values outside the model's valid range for its parameter (or
    names a parameter the model does not have)."""


class AbstractPrior(eqx.Module):
    """A prior on one scalar parameter, with its bijection to the real line.

    `forward(u) -> (x, log|dx/du|)` maps an unconstrained `u` ∈ ℝ to the parameter;
    `inverse(x)` maps back; `log_prob(x)` is the log density (normalised).
    `support` is the closed interval of values the prior allows; `quantile(q)` the value
    below which a fraction q ∈ (0, 1) of the prior lies (NumPy, for start screens).
    """

    @abc.abstractmethod
    def log_prob(self, x): ...

    @abc.abstractmethod
    def forward(self, u): ...

    @abc.abstractmethod
    def inverse(self, x): ...

    @abc.abstractmethod
    def quantile(self, q: np.ndarray) -> np.ndarray: ...

    @property
    @abc.abstractmethod
    def support(self) -> tuple[float, float]: ...

    @property
    @abc.abstractmethod
    def centre(self) -> float: ...


class Uniform(AbstractPrior):
    """Uniform prior on [`low`, `high`]; sampled through u ↦ low + (high - low)·σ(u)
    (logistic σ), so every sample lies strictly inside the bounds."""

    low: float
    high: float

    def __check_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise PriorRangeError(
                f"`Uniform(low={self.low}, high={self.high})` needs finite low < high."
            )

    def log_prob(self, x):
        inside = (x >= self.low) & (x <= self.high)
        return jnp.where(inside, -math.log(self.high - self.low), -jnp.inf)

    def forward(self, u):
        width = self.high - self.low
        x = self.low + width * jax.nn.sigmoid(u)
        log_jac = math.log(width) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
        return x, log_jac

    def inverse(self, x):
        t = jnp.clip((x - self.low) / (self.high - self.low), 1e-9, 1 - 1e-9)
        return jnp.log(t) - jnp.log1p(-t)

    def quantile(self, q):
        return self.low + (self.high - self.low) * np.asarray(q, np.float64)

    @property
    def support(self):
        return (float(self.low), float(self.high))

    @property
    def centre(self):
        return 0.5 * (self.low + self.high)


class Normal(AbstractPrior):
    """Gaussian prior N(`mean`, `sigma`²) on an unbounded parameter (identity bijection)."""

    mean: float
    sigma: float

    def __check_init__(self):
        if not (math.isfinite(self.mean) and self.sigma > 0 and math.isfinite(self.sigma)):
            raise PriorRangeError(
                f"`Normal(mean={self.mean}, sigma={self.sigma})` needs a finite mean and "
                "0 < sigma < inf."
            )

    def log_prob(self, x):
        d = (x - self.mean) / self.sigma
        return -0.5 * d**2 - math.log(self.sigma * math.sqrt(2 * math.pi))

    def forward(self, u):
        return u, jnp.zeros_like(u)

    def inverse(self, x):
        return jnp.asarray(x)

    def quantile(self, q):
        from scipy.special import ndtri

        return self.mean + self.sigma * ndtri(np.asarray(q, np.float64))

    @property
    def support(self):
        return (-math.inf, math.inf)

    @property
    def centre(self):
        return float(self.mean)


# name: (unit, valid range of the model, default prior, description). The valid range is
# where the model is defined; age and [M/H] are further limited to the SSP grid when a
# pipeline is known (`check_against`).
PARAMETERS: dict[str, tuple[str, tuple[float, float], AbstractPrior, str]] = {
    "log_age": ("dex", (-math.inf, math.inf), Uniform(-0.3, 1.1),
                "star-formation history: mean log10(age/Gyr) at R = 0"),
    "log_age_width": ("dex", (0.0, 2.0), Uniform(0.01, 0.5),
                      "star-formation history: log-normal width (σ of log10 age)"),
    "log_age_gradient": ("dex/kpc", (-math.inf, math.inf), Uniform(-0.3, 0.3),
                         "radial gradient of log10 age"),
    "metallicity": ("dex", (-math.inf, math.inf), Uniform(-0.7, 0.25),
                    "[M/H] at R = 0"),
    "metallicity_gradient": ("dex/kpc", (-math.inf, math.inf), Uniform(-0.3, 0.3),
                             "radial gradient of [M/H]"),
    "log_mass": ("dex", (-math.inf, math.inf), Uniform(8.0, 12.0),
                 "log10 of the total initial stellar mass / M☉"),
    "v_flat": ("km/s", (0.0, 1000.0), Uniform(0.0, 400.0),
               "rotation-curve amplitude, v_c = v_flat tanh(R / r_turn)"),
    "dispersion": ("km/s", (1.0, 1000.0), Uniform(5.0, 200.0),
                   "isotropic velocity dispersion of the disk"),
    "inclination": ("deg", (0.0, 90.0), Uniform(5.0, 85.0), "0 = face-on"),
    "position_angle": ("deg", (-360.0, 360.0), Uniform(-180.0, 180.0),
                       "of the receding major axis, North through East"),
}  # fmt: skip

_GEOMETRY = ("inclination", "position_angle")
# Parameter blocks that the MAP's global start re-screens one at a time
# ([`rubix_eqx.fit.laplace`][]): stellar populations and mass / kinematics and geometry.
BLOCKS = (
    ("log_age", "log_age_width", "log_age_gradient", "metallicity", "metallicity_gradient",
     "log_mass"),
    ("v_flat", "dispersion", "inclination", "position_angle"),
)  # fmt: skip


def _default_value(name: str, structure: Truth, observation: Observation):
    if name in _GEOMETRY:
        return getattr(observation, name)
    field, convert = _TRUTH_FIELD[name]
    return convert(getattr(structure, field))


_TRUTH_FIELD = {
    "log_age": ("log_age_centre", lambda v: v),
    "log_age_width": ("log_age_scatter", lambda v: v),
    "log_age_gradient": ("log_age_gradient", lambda v: v),
    "metallicity": ("metallicity_centre", lambda v: v),
    "metallicity_gradient": ("metallicity_gradient", lambda v: v),
    "log_mass": ("total_mass", lambda v: jnp.log10(v)),
    "v_flat": ("v_flat", lambda v: v),
    "dispersion": ("dispersion", lambda v: v),
}


class GalaxyModel(eqx.Module):
    """A synthetic exponential disk (see [`rubix_eqx.galaxy.synthetic_disk`][]) whose
    free parameters generate the particles from fixed `draws`, deterministically and
    differentiably, plus the viewing geometry.

    Construct with [`rubix_eqx.fit.galaxy_model`][].

    **Attributes:**

    - `names`: the free parameters, in vector order (a subset of `PARAMETERS`).
    - `priors`: one prior per free parameter.
    - `draws`: the fixed random numbers behind the particles.
    - `structure`: a [`rubix_eqx.galaxy.Truth`][] holding the fixed parameters (scale
      lengths, r_turn, bulge, metallicity scatter, and any model parameter not free).
    - `observation`: redshift, distance and the geometry when not free.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    priors: tuple[AbstractPrior, ...]
    draws: DiskDraws
    structure: Truth
    observation: Observation

    def __check_init__(self):
        if len(self.names) != len(self.priors):
            raise ValueError("`GalaxyModel`: one prior per name is needed.")

    @property
    def n_parameters(self) -> int:
        return len(self.names)

    def vector(self, values: dict) -> Float[Array, " p"]:
        """A dict of physical values → the parameter vector (in `names` order)."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(f"`values` lacks the free parameters {missing}.")
        return jnp.stack([jnp.asarray(values[n], jnp.result_type(float)) for n in self.names])

    def as_dict(self, theta) -> dict:
        return {n: theta[..., i] for i, n in enumerate(self.names)}

    def defaults(self) -> dict:
        """The values held in `structure` / `observation` for every model parameter."""
        return {n: _default_value(n, self.structure, self.observation) for n in PARAMETERS}

    def to_physical(self, u):
        """Unconstrained vector `u` → (physical θ, Σ log|dθ/du|)."""
        out = [p.forward(u[i]) for i, p in enumerate(self.priors)]
        return jnp.stack([x for x, _ in out]), sum(j for _, j in out)

    def to_unconstrained(self, theta):
        return jnp.stack([p.inverse(theta[i]) for i, p in enumerate(self.priors)])

    def log_prior(self, theta):
        return sum(p.log_prob(theta[i]) for i, p in enumerate(self.priors))

    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """Indices of the free parameters in each of `BLOCKS` (empty blocks dropped)."""
        out = (tuple(i for i, n in enumerate(self.names) if n in block) for block in BLOCKS)
        return tuple(b for b in out if b)

    def prior_centre(self):
        return jnp.asarray([p.centre for p in self.priors])

    def galaxy_and_observation(self, theta) -> tuple[Galaxy, Observation]:
        """The particles and the observation at physical parameters `theta`."""
        truth, obs = self.structure, self.observation
        for i, name in enumerate(self.names):
            value = theta[i]
            if name in _GEOMETRY:
                obs = eqx.tree_at(lambda o, name=name: getattr(o, name), obs, value)
                continue
            field, _ = _TRUTH_FIELD[name]
            if name == "log_mass":
                value = 10.0**value
            truth = eqx.tree_at(lambda t, field=field: getattr(t, field), truth, value)
        return disk_from_draws(truth, self.draws), obs

    def check_against(self, ssp) -> None:
        """Raise [`rubix_eqx.fit.PriorRangeError`][] if the age or [M/H] prior reaches
        beyond the SSP grid (where the model would only see clipped templates)."""
        la = np.log10(np.asarray(ssp.age, np.float64))
        mh = np.log10(np.asarray(ssp.metallicity, np.float64) / SOLAR_METALLICITY)
        limits = {"log_age": (la[0], la[-1]), "metallicity": (mh[0], mh[-1])}
        for name, prior in zip(self.names, self.priors):
            if name not in limits:
                continue
            lo, hi = limits[name]
            plo, phi = prior.support
            if plo < lo - 0.05 or phi > hi + 0.05:
                raise PriorRangeError(
                    f"prior on `{name}` = {prior} allows [{plo:g}, {phi:g}] but the SSP grid "
                    f"{getattr(ssp, 'name', '')!r} spans [{lo:.3f}, {hi:.3f}] (±0.05 allowed): "
                    "outside it every particle would see the clipped edge templates."
                )


def galaxy_model(
    draws: DiskDraws,
    structure: Truth,
    observation: Observation,
    priors: dict[str, AbstractPrior] | None = None,
) -> GalaxyModel:
    """A [`rubix_eqx.fit.GalaxyModel`][] with the parameters named in `priors` free.

    **Arguments:**

    - `draws`: from [`rubix_eqx.galaxy.draw_disk`][] (fixed for the whole inference).
    - `structure`: the fixed parameters (a [`rubix_eqx.galaxy.Truth`][], e.g. from
      `synthetic_disk`); free parameters take their values from the sampler instead.
    - `observation`: redshift/distance (fixed) and the geometry when not free.
    - `priors`: `{name: prior}` for the free parameters (default: all ten, with the
      default priors of `PARAMETERS`). Names: `log_age` (mean log10 age/Gyr of the
      log-normal star-formation history at R = 0), `log_age_width` (its σ, dex),
      `log_age_gradient` (dex/kpc), `metallicity` ([M/H] at R = 0),
      `metallicity_gradient` (dex/kpc), `log_mass` (log10 M☉, initial), `v_flat` and
      `dispersion` (km/s), `inclination` and `position_angle` (degrees).

    Raises [`rubix_eqx.fit.PriorRangeError`][] naming the parameter for an unknown name
    or a prior reaching outside the model's valid range.
    """
    if priors is None:
        priors = {name: spec[2] for name, spec in PARAMETERS.items()}
    if not priors:
        raise PriorRangeError("`galaxy_model(priors=...)` needs at least one free parameter.")
    for name, prior in priors.items():
        if name not in PARAMETERS:
            raise PriorRangeError(
                f"`galaxy_model(priors=...)`: unknown parameter {name!r}; the model has "
                f"{sorted(PARAMETERS)}."
            )
        if not isinstance(prior, AbstractPrior):
            raise PriorRangeError(
                f"`galaxy_model(priors={{{name!r}: ...}})` must be a Uniform or Normal prior; "
                f"got {prior!r}."
            )
        unit, (lo, hi), _, _ = PARAMETERS[name]
        plo, phi = prior.support
        if plo < lo or phi > hi:
            raise PriorRangeError(
                f"prior on `{name}` = {prior} allows [{plo:g}, {phi:g}] {unit}, outside the "
                f"model's valid range [{lo:g}, {hi:g}] {unit}."
            )
    names = tuple(priors)
    return GalaxyModel(
        names=names,
        priors=tuple(priors[n] for n in names),
        draws=draws,
        structure=structure,
        observation=observation,
    )
