"""Recovery through the full particle pipeline: particle ages and metallicities (the
RUBIX paper's case), and the generating parameters of a whole synthetic galaxy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._compile import jit
from .._cube import Cube
from .._observation import Observation
from .._pipeline import Pipeline
from ..galaxy import disk_from_draws, DiskDraws, Galaxy, Truth
from ._spaxels import _bounds, _from_unit, _to_unit, SOLVERS, standard_errors


class ParticleFit(eqx.Module):
    """Recovered particle properties.

    **Attributes:** `age` (Gyr), `metallicity` (Z), their 1σ errors in dex
    (`log_age_err`, `log_metallicity_err`, from (JᵀJ)⁻¹), `converged`, `steps`,
    and `galaxy` (the input galaxy with the recovered values).
    """

    age: Float[Array, " n"]
    metallicity: Float[Array, " n"]
    log_age_err: Float[Array, " n"]
    log_metallicity_err: Float[Array, " n"]
    converged: Bool[Array, ""]
    steps: Array
    galaxy: Galaxy


def _weighted_residual(cube: Cube):
    weight = jnp.where(
        cube.variance > 0, 1 / jnp.sqrt(jnp.where(cube.variance > 0, cube.variance, 1)), 0
    )
    return lambda model: ((model - cube.flux) * weight).reshape(-1)


def _errors(residual_fn, theta):
    return standard_errors(jax.jacfwd(residual_fn)(theta))


@jit
def fit_particles(
    cube: Cube,
    pipeline: Pipeline,
    galaxy: Galaxy,
    observation: Observation,
    *,
    key: PRNGKeyArray | None = None,
    solver: str = "levenberg_marquardt",
    rtol: float = 1e-8,
    atol: float = 1e-8,
    max_steps: int = 256,
) -> ParticleFit:
    """Recover every particle's age and metallicity from `cube` by least squares through
    the pipeline, starting from the values in `galaxy` (positions, velocities and masses
    are held fixed). Parameters are log10 age and log10 Z, mapped to the SSP grid's
    range by a logistic transform; residuals are weighted by `cube.variance`. `key`
    must be the one the pipeline's noise stage used, if it has one (the model is then
    compared with noise-free flux: pass a pipeline without noise)."""
    (la_lo, la_hi), (lz_lo, lz_hi) = _bounds(pipeline.ssp)
    residual = _weighted_residual(cube)

    def model(la, lz):
        g = eqx.tree_at(lambda g: (g.age, g.metallicity), galaxy, (10.0**la, 10.0**lz))
        return pipeline(g, observation, key=key).flux

    def fn(p, args):
        n = galaxy.n_particles
        return residual(model(_from_unit(p[:n], la_lo, la_hi), _from_unit(p[n:], lz_lo, lz_hi)))

    p0 = jnp.concatenate(
        [
            _to_unit(jnp.log10(galaxy.age), la_lo, la_hi),
            _to_unit(jnp.log10(galaxy.metallicity), lz_lo, lz_hi),
        ]
    )
    sol = optx.least_squares(fn, SOLVERS[solver](rtol, atol), p0, max_steps=max_steps, throw=False)
    n = galaxy.n_particles
    la = _from_unit(sol.value[:n], la_lo, la_hi)
    lz = _from_unit(sol.value[n:], lz_lo, lz_hi)
    err = _errors(lambda t: residual(model(t[:n], t[n:])), jnp.concatenate([la, lz]))
    fitted = eqx.tree_at(lambda g: (g.age, g.metallicity), galaxy, (10.0**la, 10.0**lz))
    return ParticleFit(
        age=10.0**la,
        metallicity=10.0**lz,
        log_age_err=err[:n],
        log_metallicity_err=err[n:],
        converged=sol.result == optx.RESULTS.successful,
        steps=sol.stats["num_steps"],
        galaxy=fitted,
    )


class GalaxyFit(eqx.Module):
    """Recovered whole-galaxy parameters: `values` and 1σ `errors` (dicts keyed by
    parameter name), `converged`, `steps`."""

    values: dict
    errors: dict
    converged: Bool[Array, ""]
    steps: Array


@jit
def fit_galaxy(
    cube: Cube,
    pipeline: Pipeline,
    draws: DiskDraws,
    start: Truth,
    observation: Observation,
    *,
    parameters: tuple[str, ...] = ("log_age_gradient", "metallicity_gradient", "inclination"),
    solver: str = "levenberg_marquardt",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_steps: int = 100,
) -> GalaxyFit:
    """Recover generating parameters of a synthetic disk (any fields of
    [`rubix_eqx.galaxy.Truth`][], plus `"inclination"` and `"position_angle"` of the
    observation) from `cube`, with the particles redrawn from fixed `draws` at every
    step so the problem is deterministic; gradients flow from the cube through every
    particle. Other parameters stay at their values in `start` / `observation`."""
    residual = _weighted_residual(cube)
    geometry = ("inclination", "position_angle")

    def model(values: dict):
        truth = start
        obs = observation
        for name, value in values.items():
            if name in geometry:
                obs = eqx.tree_at(lambda o, name=name: getattr(o, name), obs, value)
            else:
                truth = eqx.tree_at(lambda t, name=name: getattr(t, name), truth, value)
        return pipeline(disk_from_draws(truth, draws), obs).flux

    def initial(name):
        return getattr(observation if name in geometry else start, name)

    y0 = {name: jnp.asarray(initial(name)) for name in parameters}
    sol = optx.least_squares(
        lambda y, args: residual(model(y)),
        SOLVERS[solver](rtol, atol),
        y0,
        max_steps=max_steps,
        throw=False,
    )
    flat, unravel = jax.flatten_util.ravel_pytree(sol.value)
    err = _errors(lambda t: residual(model(unravel(t))), flat)
    return GalaxyFit(
        values=sol.value,
        errors=unravel(err),
        converged=sol.result == optx.RESULTS.successful,
        steps=sol.stats["num_steps"],
    )
