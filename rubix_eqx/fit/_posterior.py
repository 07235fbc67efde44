"""Posteriors of galaxy-level parameters through the full particle pipeline.

The likelihood is Gaussian with the cube's own variance, and the model cube comes from
the same pipeline (same stages, same engine) that made the data, without its noise
stage. Two front ends share it: MAP (optimistix) + Laplace approximation, and NUTS
(blackjax) in the unconstrained parameterisation of [`rubix_eqx.fit.GalaxyModel`][].
"""

import math
import time
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._compile import jit
from .._cube import Cube
from .._pipeline import Pipeline
from .._stages._noise import AbstractNoise
from ._galaxy_model import GalaxyModel, Normal


class GridMismatchError(ValueError):
    """The cube's shape or wavelength grid is not the one the pipeline makes."""


class Posterior(eqx.Module):
    """The log posterior of a [`rubix_eqx.fit.GalaxyModel`][] given a cube.

    Build with [`rubix_eqx.fit.posterior`][]. `log_likelihood(θ)` =
    −½ Σ (model − data)² / variance over voxels with variance > 0 inside the aperture
    (the normalising constant is dropped); `log_density(u)` is the log posterior in the
    unconstrained coordinates u (with the log-Jacobian of the bijections), which NUTS
    samples.

    **Attributes:** `model`, `pipeline` (noise stage removed), `data` (flux),
    `weight` (1/σ per voxel, 0 where unused).
    """

    model: GalaxyModel
    pipeline: Pipeline
    data: Float[Array, "n_x n_y n_wave"]
    weight: Float[Array, "n_x n_y n_wave"]

    def model_flux(self, theta):
        galaxy, obs = self.model.galaxy_and_observation(theta)
        return self.pipeline(galaxy, obs).flux

    def residuals(self, theta):
        """Whitened residuals (model − data)/σ, flattened."""
        return ((self.model_flux(theta) - self.data) * self.weight).reshape(-1)

    def prior_residuals(self, theta):
        """(θ − μ)/σ for the Gaussian priors (uniform priors are flat)."""
        rows = [
            (theta[i] - p.mean) / p.sigma
            for i, p in enumerate(self.model.priors)
            if isinstance(p, Normal)
        ]
        return jnp.stack(rows) if rows else jnp.zeros((0,), theta.dtype)

    def log_likelihood(self, theta):
        r = self.residuals(theta)
        return -0.5 * jnp.sum(r**2)

    def log_posterior(self, theta):
        return self.log_likelihood(theta) + self.model.log_prior(theta)

    def log_density(self, u):
        theta, log_jac = self.model.to_physical(u)
        value = self.log_likelihood(theta) + self.model.log_prior(theta) + log_jac
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def check_grid(cube: Cube, pipeline: Pipeline) -> None:
    """Raise [`rubix_eqx.fit.GridMismatchError`][] unless `cube` has the pipeline's
    telescope grid (shape and wavelengths) and a usable variance."""
    tel = pipeline.telescope
    want = (tel.n_x, tel.n_y, tel.n_wave)
    if tuple(cube.flux.shape) != want:
        raise GridMismatchError(
            f"`cube.flux` has shape {tuple(cube.flux.shape)} but the pipeline's telescope "
            f"{tel.name!r} makes (n_x, n_y, n_wave) = {want}."
        )
    wave, tw = np.asarray(cube.wavelength, np.float64), np.asarray(tel.wavelength, np.float64)
    step = float(np.min(np.abs(np.diff(tw)))) if tw.size > 1 else 1.0
    worst = float(np.max(np.abs(wave - tw)))
    if worst > 1e-3 * step:
        raise GridMismatchError(
            f"`cube.wavelength` differs from the pipeline's telescope grid by up to {worst:.4g} Å "
            f"(cube {wave[0]:.2f}-{wave[-1]:.2f} Å, pipeline {tw[0]:.2f}-{tw[-1]:.2f} Å)."
        )
    if abs(float(cube.flux_unit) / pipeline.flux_unit - 1) > 1e-6:
        raise GridMismatchError(
            f"`cube.flux_unit` = {cube.flux_unit:g} but the pipeline makes {pipeline.flux_unit:g}."
        )
    var = np.asarray(cube.variance)
    if not np.any(var > 0):
        raise ValueError(
            "`cube.variance` is zero everywhere: the likelihood needs the noise variance "
            "(make the cube with a noise stage, or read one with a variance extension)."
        )


def posterior(cube: Cube, pipeline: Pipeline, model: GalaxyModel) -> Posterior:
    """The [`rubix_eqx.fit.Posterior`][] of `model` given `cube`, through `pipeline`
    (its noise stage, if any, is dropped for the model cube: the likelihood uses the
    cube's variance). Checks the grid ([`rubix_eqx.fit.GridMismatchError`][]) and the
    priors against the SSP grid ([`rubix_eqx.fit.PriorRangeError`][])."""
    check_grid(cube, pipeline)
    model.check_against(pipeline.ssp)
    noiseless = pipeline.without(AbstractNoise)
    dtype = pipeline.grid.templates.dtype
    var = jnp.asarray(cube.variance, dtype)
    use = (var > 0) & jnp.asarray(cube.mask)[:, :, None]
    weight = jnp.where(use, 1 / jnp.sqrt(jnp.where(use, var, 1)), 0).astype(dtype)
    return Posterior(
        model=model,
        pipeline=noiseless,
        data=jnp.where(use, jnp.asarray(cube.flux, dtype), 0),
        weight=weight,
    )


# --- MAP + Laplace ------------------------------------------------------------------------


class LaplacePosterior(eqx.Module):
    """A Gaussian approximation at the maximum a posteriori.

    **Attributes:**

    - `names`: parameter names (vector order).
    - `mean`: the MAP θ (physical units).
    - `covariance`: (JᵀJ + prior precision)⁻¹ (Gauss–Newton) or the inverse Hessian of
      −log p(θ | data), in physical units.
    - `chi2`: Σ r² at the MAP; `n_data`: voxels used.
    - `converged`, `steps`: of the optimistix solve.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    mean: Float[Array, " p"]
    covariance: Float[Array, "p p"]
    chi2: Float[Array, ""]
    n_data: Array
    converged: Bool[Array, ""]
    steps: Array

    @property
    def errors(self) -> Float[Array, " p"]:
        return jnp.sqrt(jnp.clip(jnp.diag(self.covariance), 0, None))

    @property
    def dof(self) -> int:
        """ν = voxels − parameters (at least 1)."""
        return max(int(self.n_data) - self.mean.size, 1)

    @property
    def reduced_chi2(self) -> float:
        """χ²/ν at the MAP (≈ 1 ± √(2/ν) for a good fit)."""
        return float(self.chi2) / self.dof

    @property
    def correlation(self) -> Float[Array, "p p"]:
        e = self.errors
        return self.covariance / (e[:, None] * e[None, :])

    def values(self) -> dict:
        return {n: self.mean[i] for i, n in enumerate(self.names)}

    def interval(self, level: float = 0.68) -> tuple[Array, Array]:
        """Central `level` interval per parameter: mean ∓ z·σ."""
        z = _normal_quantile(0.5 + level / 2)
        return self.mean - z * self.errors, self.mean + z * self.errors

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n p"]:
        chol = jnp.linalg.cholesky(self.covariance + 1e-30 * jnp.eye(self.mean.size))
        return self.mean + jr.normal(key, (n, self.mean.size), self.mean.dtype) @ chol.T


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def _whitened_theta(theta, post: Posterior):
    """Whitened data and Gaussian-prior residuals at physical θ."""
    return jnp.concatenate([post.residuals(theta), post.prior_residuals(theta)])


def _whitened(u, post: Posterior):
    return _whitened_theta(post.model.to_physical(u)[0], post).astype(u.dtype)


@jit
def _lm_steps(post: Posterior, u0, rtol, atol, max_steps: int):
    """Up to `max_steps` Levenberg–Marquardt steps from `u0` → (u, −2 log posterior up
    to a constant, Cauchy-converged?, steps)."""
    sol = optx.least_squares(
        lambda u, args: _whitened(u, post), optx.LevenbergMarquardt(rtol=rtol, atol=atol), u0,
        max_steps=max_steps, throw=False,
    )  # fmt: skip
    return (
        sol.value,
        jnp.sum(_whitened(sol.value, post) ** 2),
        sol.result == optx.RESULTS.successful,
        sol.stats["num_steps"],
    )


@jit
def _curvature(post: Posterior, theta, curvature: str):
    """(covariance, χ², voxels used) at θ."""

    full = lambda t: _whitened_theta(t, post)
    if curvature == "gauss_newton":
        jac = jax.jacfwd(full)(theta)
        precision = jac.T @ jac
    else:  # Hessian of −log posterior (flat uniform priors contribute nothing inside)
        precision = jax.hessian(lambda t: 0.5 * jnp.sum(full(t) ** 2))(theta)
    scale = jnp.sqrt(jnp.clip(jnp.diag(precision), 1e-300, None))
    cov = jnp.linalg.inv(precision / (scale[:, None] * scale[None, :]))
    cov = cov / (scale[:, None] * scale[None, :])
    r = post.residuals(theta)
    return 0.5 * (cov + cov.T), jnp.sum(r**2), jnp.sum(post.weight > 0)


# LM runs in blocks of this many steps, and stops when a block lowers χ² by less than
# `dchi2` (the model is piecewise smooth — linear interpolation in the templates and the
# spatial deposit — so steps stay accepted long after χ² has settled, and the per-voxel
# Cauchy criterion of optimistix can take hundreds of them to trigger).
_LM_BLOCK = 20


def _map_solve(post: Posterior, u0, rtol, atol, max_steps: int, dchi2: float):
    """LM from `u0` → (u, −2 log posterior, converged?, steps)."""
    u, previous, steps = u0, math.inf, 0
    while True:
        u, objective, cauchy, n = _lm_steps(post, u, rtol, atol, _LM_BLOCK)
        steps += int(n)
        settled = previous - float(objective) < dchi2
        if bool(cauchy) or settled or steps >= max_steps:
            return u, float(objective), bool(cauchy) or settled, steps
        previous = float(objective)


class PoorFitWarning(UserWarning):
    """χ² at the MAP far above its expectation: a local optimum, or a model that does not
    describe the data; the Laplace intervals are then too narrow."""


def screen_starts(
    post: Posterior, n: int, seed: int = 0, *, around=None, vary: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Starting points for the MAP: `n` scrambled-Halton draws from the prior (each
    parameter at its prior quantile) and the prior centre, scored by −2 log posterior
    with the mass profiled out.

    With `around` (a θ) and `vary` (parameter indices) only those parameters are drawn
    (and the centre of their priors is the extra point); the others keep `around`'s
    values. The model cube is linear in the total mass 10^log_mass (every stage is linear
    in the particle masses once the noise is dropped), so when `log_mass` is free each
    point takes its best mass analytically, s = Σ w²md / Σ w²m², kept inside the mass
    prior. Returns (θ (n + 1, p) sorted best first, their scores (n + 1,)).
    """
    from scipy.stats import qmc

    model = post.model
    vary = tuple(range(model.n_parameters)) if vary is None else tuple(vary)
    base = np.asarray(model.prior_centre() if around is None else around, np.float64)
    points = np.repeat(base[None], n + 1, axis=0)
    centre = np.asarray(model.prior_centre(), np.float64)
    q = qmc.Halton(d=len(vary), scramble=True, seed=seed).random(n)
    for k, i in enumerate(vary):
        points[0, i] = centre[i]
        points[1:, i] = model.priors[i].quantile(q[:, k])
    dtype = jnp.promote_types(post.data.dtype, jnp.result_type(float))
    mass = model.names.index("log_mass") if "log_mass" in model.names else -1
    theta, score = _screen(post, jnp.asarray(points, dtype), mass)
    order = np.argsort(np.where(np.isfinite(score), score, np.inf), kind="stable")
    return np.asarray(theta)[order], np.asarray(score)[order]


@jit
def _screen(post: Posterior, points, mass: int):
    d = post.data * post.weight

    def one(theta):
        m = post.model_flux(theta) * post.weight
        if mass >= 0:
            lo, hi = post.model.priors[mass].support
            s = jnp.sum(m * d) / jnp.maximum(jnp.sum(m * m), jnp.finfo(m.dtype).tiny)
            log_m = jnp.clip(theta[mass] + jnp.log10(jnp.maximum(s, 1e-30)), lo, hi)
            m = m * 10.0 ** (log_m - theta[mass])
            theta = theta.at[mass].set(log_m)
        return theta, jnp.sum((m - d) ** 2) + jnp.sum(post.prior_residuals(theta) ** 2)

    return jax.lax.map(one, points, batch_size=8)


def laplace(
    post: Posterior,
    init: dict | None = None,
    *,
    screen: int = 63,
    starts: int = 3,
    seed: int = 0,
    curvature: str = "gauss_newton",
    rtol: float = 1e-7,
    atol: float = 1e-7,
    dchi2: float = 0.01,
    max_steps: int = 200,
) -> LaplacePosterior:
    """MAP by Levenberg–Marquardt (optimistix) in the unconstrained coordinates, then a
    Laplace approximation in the physical ones.

    **Arguments:**

    - `post`: a [`rubix_eqx.fit.Posterior`][].
    - `init`: starting values `{name: value}`: one solve from there. Default: a global
      start, [`rubix_eqx.fit.screen_starts`][] scores the prior centre and `screen`
      draws from the prior (mass profiled out), LM runs from the best `starts` of them
      and the best optimum is kept (`screen=0, starts=1`: from the prior centre only).
      LM alone finds the nearest optimum, and the posterior of the geometry and
      kinematics is multimodal: from a position angle 60° off, LM drives `v_flat` to 0,
      where the position angle no longer matters.
    - `seed`: of the screen's scrambled Halton sequence.
    - `rtol`, `atol`: optimistix's Cauchy termination; `dchi2`: LM also stops once 20
      steps lower −2 log p by less than this; `max_steps`: per start. `converged` is
      True when either criterion was met.
    - `curvature`: `"gauss_newton"` (JᵀJ of the whitened residuals, plus the Gaussian
      priors' precision; default) or `"hessian"` (the exact Hessian of −log p by JAX).

    Warns ([`rubix_eqx.fit.PoorFitWarning`][]) when χ²/ν at the MAP lies more than 5σ
    above 1 (ν = voxels − parameters): then the intervals are not to be trusted. With
    uniform priors the MAP is the maximum-likelihood point inside the bounds; a MAP on
    a bound makes the Gaussian a poor description there (check `errors` against the
    prior width).
    """
    if curvature not in ("gauss_newton", "hessian"):
        raise ValueError(
            f"`laplace(curvature=...)` must be 'gauss_newton' or 'hessian'; got {curvature!r}."
        )
    if screen < 0 or starts < 1 or starts > screen + 1:
        raise ValueError(
            f"`laplace(screen={screen}, starts={starts})` needs screen ≥ 0 and "
            "1 ≤ starts ≤ screen + 1."
        )
    model = post.model
    # the solve runs in the default float precision (float64 when x64 is on, whatever the
    # cube's dtype): optimistix wants one dtype throughout
    dtype = jnp.promote_types(post.data.dtype, jnp.result_type(float))
    if init is not None:
        candidates = [model.vector(init)]
    elif screen == 0:
        candidates = [model.prior_centre()]
    else:
        candidates = list(screen_starts(post, screen, seed)[0][:starts])

    def solve(theta0):
        u0 = model.to_unconstrained(jnp.asarray(theta0, dtype))
        u, objective, ok, steps = _map_solve(post, u0, rtol, atol, max_steps, dchi2)
        return objective, (u, ok, steps)

    best = min((solve(t) for t in candidates), key=lambda x: x[0])
    blocks = model.blocks()
    if init is None and screen > 0 and len(blocks) > 1:
        # second round: one block at a time re-drawn around the optimum (e.g. the
        # populations once the geometry is right), LM from the best of each block
        for i, block in enumerate(blocks):
            around = model.to_physical(best[1][0])[0]
            points, _ = screen_starts(post, screen, seed + 1 + i, around=around, vary=block)
            best = min([best, *(solve(t) for t in points[:starts])], key=lambda x: x[0])
    u, ok, steps = best[1]
    theta = model.to_physical(u)[0]
    cov, chi2, n_data = _curvature(post, theta, curvature)
    lap = LaplacePosterior(
        names=model.names, mean=theta, covariance=cov, chi2=chi2, n_data=n_data,
        converged=jnp.asarray(ok), steps=jnp.asarray(steps),
    )  # fmt: skip
    nu = lap.dof
    if lap.reduced_chi2 > 1 + 5 * math.sqrt(2 / nu):
        warnings.warn(
            f"χ²/ν = {lap.reduced_chi2:.3f} at the MAP (ν = {nu}; expected 1 ± "
            f"{math.sqrt(2 / nu):.3f}): a local optimum or a model that does not describe "
            "the data, so the Laplace intervals are too narrow. Try more `screen` points "
            "and `starts`, or an `init` near the answer.",
            PoorFitWarning,
            stacklevel=2,
        )
    return lap


# --- NUTS (blackjax) ------------------------------------------------------------------------


class NUTSPosterior(eqx.Module):
    """Samples from NUTS, with diagnostics.

    **Attributes:**

    - `names`: parameter names.
    - `samples`: physical θ, shape (chains, draws, p).
    - `rhat`: rank-normalised split R̂ per parameter; `ess`: bulk effective sample size.
    - `divergences`: count over all chains; `acceptance`: mean acceptance rate;
      `step_size`: per chain; `n_gradients`: total leapfrog steps (gradient evaluations)
      in the sampling phase.
    - `seconds`: wall time of warm-up and sampling (incl. compilation: `"warmup"`,
      `"sampling"`).
    """

    names: tuple[str, ...] = eqx.field(static=True)
    samples: Float[Array, "chains draws p"]
    rhat: Float[Array, " p"]
    ess: Float[Array, " p"]
    divergences: Array
    acceptance: Array
    step_size: Array
    n_gradients: Array
    seconds: dict

    def values(self) -> dict:
        return {n: self.samples[..., i].reshape(-1) for i, n in enumerate(self.names)}

    @property
    def mean(self):
        return self.samples.reshape(-1, self.samples.shape[-1]).mean(0)

    @property
    def covariance(self):
        return jnp.cov(self.samples.reshape(-1, self.samples.shape[-1]).T)

    @property
    def correlation(self):
        c = self.covariance
        e = jnp.sqrt(jnp.diag(c))
        return c / (e[:, None] * e[None, :])

    def interval(self, level: float = 0.68):
        flat = self.samples.reshape(-1, self.samples.shape[-1])
        lo, hi = 0.5 - level / 2, 0.5 + level / 2
        return jnp.quantile(flat, lo, axis=0), jnp.quantile(flat, hi, axis=0)


def _unconstrained_covariance(model: GalaxyModel, theta, cov):
    """Laplace covariance mapped to u: du/dθ is diagonal (one bijection per parameter)."""
    dudtheta = jax.vmap(lambda i: jax.grad(lambda t: model.to_unconstrained(t)[i])(theta))(
        jnp.arange(theta.size)
    )
    return dudtheta @ cov @ dudtheta.T


@jit
def _window_warmup(post: Posterior, u0, keys, inverse_mass, num_steps: int,
                   max_doublings: int, target: float):  # fmt: skip
    import blackjax

    def window(u, key):  # Stan's windowed adaptation of step size and dense mass matrix
        adapt = blackjax.window_adaptation(
            blackjax.nuts,
            post.log_density,
            is_mass_matrix_diagonal=False,
            initial_inverse_mass_matrix=inverse_mass,
            initial_step_size=0.5,
            target_acceptance_rate=target,
            max_num_doublings=max_doublings,
        )
        (state, params), _ = adapt.run(key, u, num_steps=num_steps)
        return state, params["step_size"], params["inverse_mass_matrix"]

    return jax.vmap(window)(u0, keys)


@jit
def _block(post: Posterior, state, da, inverse_mass, keys, adapt, max_doublings: int,
           target: float):  # fmt: skip
    """NUTS steps for every chain; while `adapt[k]`, step k also updates the dual
    averaging of ε and uses its current iterate, afterwards its average. One compiled
    function serves warm-up and sampling (blocks of a fixed length)."""
    import blackjax
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    _, da_update, _ = dual_averaging_adaptation(target)

    def chain(state, da, inverse_mass, key):
        def step(carry, xs):
            s, da = carry
            k, adapting = xs
            eps = jnp.exp(jnp.where(adapting, da.log_step_size, da.log_step_size_avg))
            kernel = blackjax.nuts(
                post.log_density, step_size=eps, inverse_mass_matrix=inverse_mass,
                max_num_doublings=max_doublings,
            )  # fmt: skip
            s, info = kernel.step(k, s)
            new = da_update(da, info.acceptance_rate)
            da = jax.tree.map(lambda n, o: jnp.where(adapting, n, o), new, da)
            out = (s.position, info.is_divergent, info.acceptance_rate,
                   info.num_integration_steps)  # fmt: skip
            return (s, da), out

        return jax.lax.scan(step, (state, da), (jr.split(key, adapt.shape[0]), adapt))

    return jax.vmap(chain, in_axes=(0, 0, 0, 0))(state, da, inverse_mass, keys)


def chain_diagnostics(samples) -> tuple[Array, Array]:
    """(R̂, bulk ESS) per parameter of `samples` (chains, draws, p), by blackjax's
    rank-normalised split-R̂ and bulk-ESS estimators (Vehtari et al. 2021)."""
    from blackjax.diagnostics import ess_bulk, rhat

    s = jnp.asarray(samples)
    r = jnp.stack([rhat(s[..., i], chain_axis=0, sample_axis=1) for i in range(s.shape[-1])])
    e = jnp.stack([ess_bulk(s[..., i], chain_axis=0, sample_axis=1) for i in range(s.shape[-1])])
    return r, e


def nuts(
    post: Posterior,
    key: PRNGKeyArray,
    *,
    start: LaplacePosterior | None = None,
    num_chains: int = 4,
    num_warmup: int = 300,
    num_samples: int = 500,
    max_doublings: int = 6,
    adapt_mass_matrix: bool = False,
    target_acceptance: float = 0.8,
    block: int = 50,
    progress: Callable[[str], None] | None = None,
) -> NUTSPosterior:
    """Sample the posterior with the No-U-Turn sampler (blackjax), in the unconstrained
    coordinates, with a dense mass matrix.

    **Arguments:**

    - `post`: a [`rubix_eqx.fit.Posterior`][].
    - `key`: PRNG key (chains, warm-up and sampling derive from it).
    - `start`: a Laplace fit (default: computed here). Chains start at its mean
      scattered by its covariance, and its covariance (mapped to u) is the initial
      inverse mass matrix of Stan-style window adaptation.
    - `num_chains`, `num_warmup`, `num_samples`: per chain.
    - `max_doublings`: tree depth limit (≤ 2^max_doublings − 1 gradients per draw).
    - `adapt_mass_matrix`: `False` (default) keeps the Laplace covariance as the dense
      inverse mass matrix and tunes only the step size by dual averaging (Hoffman &
      Gelman 2014) during warm-up: near-Gaussian posteriors then need a few gradients
      per draw even with strong degeneracies (age–mass, [M/H]–gradient). `True` runs
      Stan's windowed adaptation of both (blackjax `window_adaptation`), which needs a
      longer warm-up (≳ 500 steps) to estimate a dense matrix.
    - `target_acceptance`: of the step-size adaptation.
    - `block`: draws per compiled call; `progress` receives one line per block.
    """
    say = progress or (lambda s: None)
    model = post.model
    if start is None:
        say("MAP + Laplace for the starting point and mass matrix")
        start = laplace(post)
    cov_u = _unconstrained_covariance(model, start.mean, start.covariance)
    cov_u = 0.5 * (cov_u + cov_u.T) + 1e-12 * jnp.eye(model.n_parameters)
    u_map = model.to_unconstrained(start.mean)
    k_init, k_warm, k_sample = jr.split(key, 3)
    chol = jnp.linalg.cholesky(cov_u)
    u0 = u_map[None, :] + 0.5 * jr.normal(k_init, (num_chains, u_map.size), u_map.dtype) @ chol.T
    import blackjax
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    da_init = dual_averaging_adaptation(target_acceptance)[0]
    t0 = time.perf_counter()
    with jax.numpy_rank_promotion("allow"):  # blackjax relies on NumPy broadcasting
        if adapt_mass_matrix:
            say(f"warm-up: {num_chains} chains x {num_warmup} steps (window adaptation)")
            state, step_size, inv_mass = _window_warmup(
                post, u0, jr.split(k_warm, num_chains), cov_u, num_warmup, max_doublings,
                target_acceptance,
            )  # fmt: skip
            da = jax.vmap(da_init)(step_size)
            da = da._replace(log_step_size_avg=jnp.log(step_size))
            n_adapt = 0
        else:
            state = jax.vmap(lambda u: blackjax.nuts.init(u, post.log_density))(u0)
            inv_mass = jnp.broadcast_to(cov_u, (num_chains, *cov_u.shape))
            da = jax.vmap(da_init)(jnp.full((num_chains,), 0.8, u0.dtype))
            n_adapt = num_warmup
    total = n_adapt + num_samples
    positions, divergent, accept, n_steps = [], [], [], []
    done = 0
    t1 = time.perf_counter()
    while done < total:
        adapt = jnp.arange(done, done + block) < n_adapt
        with jax.numpy_rank_promotion("allow"):
            (state, da), (pos, div, acc, nst) = _block(
                post, state, da, inv_mass, jr.split(jr.fold_in(k_sample, done), num_chains),
                adapt, max_doublings, target_acceptance,
            )  # fmt: skip
        jax.block_until_ready(pos)
        keep = slice(max(0, n_adapt - done), min(block, total - done))
        positions.append(pos[:, keep]), divergent.append(div[:, keep])
        accept.append(acc[:, keep]), n_steps.append(nst[:, keep])
        done += block
        if done <= n_adapt:
            t1 = time.perf_counter()
            say(f"warm-up: {min(done, n_adapt)}/{n_adapt} steps (step size by dual averaging, "
                f"Laplace mass matrix; {t1 - t0:.1f} s)")  # fmt: skip
        else:
            say(f"sampling: {min(done, total) - n_adapt}/{num_samples} draws per chain "
                f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    t2 = time.perf_counter()
    step_size = jnp.exp(da.log_step_size_avg)
    u = jnp.concatenate(positions, axis=1)
    theta = jax.vmap(jax.vmap(lambda v: model.to_physical(v)[0]))(u)
    with jax.numpy_rank_promotion("allow"):
        rhat, ess = chain_diagnostics(theta)
    return NUTSPosterior(
        names=model.names,
        samples=theta,
        rhat=rhat,
        ess=ess,
        divergences=jnp.sum(jnp.concatenate(divergent, axis=1)),
        acceptance=jnp.mean(jnp.concatenate(accept, axis=1)),
        step_size=step_size,
        n_gradients=jnp.sum(jnp.concatenate(n_steps, axis=1)),
        seconds={"warmup": t1 - t0, "sampling": t2 - t1},
    )


# --- summaries and files -----------------------------------------------------------------


def posterior_summary(
    result: LaplacePosterior | NUTSPosterior, truth: dict | None = None
) -> list[dict]:
    """One row per parameter: mean, σ, 68 % and 95 % intervals (and R̂, ESS for NUTS;
    the truth if given)."""
    lo68, hi68 = result.interval(0.68)
    lo95, hi95 = result.interval(0.95)
    err = jnp.sqrt(jnp.diag(result.covariance))
    rows = []
    for i, name in enumerate(result.names):
        row = {
            "parameter": name,
            "mean": float(result.mean[i]),
            "sigma": float(err[i]),
            "lo68": float(lo68[i]), "hi68": float(hi68[i]),
            "lo95": float(lo95[i]), "hi95": float(hi95[i]),
        }  # fmt: skip
        if isinstance(result, NUTSPosterior):
            row["rhat"] = float(result.rhat[i])
            row["ess"] = float(result.ess[i])
        if truth is not None and name in truth:
            row["truth"] = float(truth[name])
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of `summary` rows."""
    cols = [c for c in ("parameter", "truth", "mean", "sigma", "lo68", "hi68", "lo95", "hi95",
                        "rhat", "ess") if any(c in r for r in rows)]  # fmt: skip
    lines = ["  ".join(f"{c:>20}" if c == "parameter" else f"{c:>10}" for c in cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "parameter":
                cells.append(f"{v:>20}")
            else:
                cells.append(f"{v:>10.4g}" if v != "" else " " * 10)
        lines.append("  ".join(cells))
    return "\n".join(lines)


def corner_plot(samples, names, path, *, truth: dict | None = None, laplace=None) -> None:
    """A corner plot (matplotlib) of `samples` (n, p): histograms on the diagonal, 2-D
    histograms below, truths as lines, and the Laplace 1σ/2σ ellipses if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(samples, np.float64).reshape(-1, len(names))
    p = len(names)
    fig, axes = plt.subplots(p, p, figsize=(1.9 * p + 1, 1.9 * p + 1), squeeze=False)
    t = [None if truth is None else truth.get(n) for n in names]
    for i in range(p):
        for j in range(p):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(s[:, i], bins=30, color="0.3", histtype="step", density=True)
                if laplace is not None:
                    m, e = float(laplace.mean[i]), float(laplace.errors[i])
                    x = np.linspace(s[:, i].min(), s[:, i].max(), 200)
                    ax.plot(x, np.exp(-0.5 * ((x - m) / e) ** 2) / (e * math.sqrt(2 * math.pi)),
                            color="C1", lw=1)  # fmt: skip
                if t[i] is not None:
                    ax.axvline(float(t[i]), color="C0")
                ax.set_yticks([])
            else:
                ax.hist2d(s[:, j], s[:, i], bins=30, cmap="Greys")
                if laplace is not None:
                    idx = [j, i]
                    c = np.asarray(laplace.covariance)[np.ix_(idx, idx)]
                    w, v = np.linalg.eigh(c)
                    a = np.linspace(0, 2 * np.pi, 100)
                    for k in (1.0, 2.0):
                        ell = (v @ (k * np.sqrt(np.clip(w, 0, None))[:, None] *
                                    np.stack([np.cos(a), np.sin(a)])))  # fmt: skip
                        ax.plot(float(laplace.mean[j]) + ell[0], float(laplace.mean[i]) + ell[1],
                                color="C1", lw=0.8)  # fmt: skip
                if t[i] is not None and t[j] is not None:
                    ax.axvline(float(t[j]), color="C0", lw=0.8)
                    ax.axhline(float(t[i]), color="C0", lw=0.8)
            if i == p - 1:
                ax.set_xlabel(names[j], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_samples_hdf5(path, result: NUTSPosterior, lap: LaplacePosterior | None = None,
                       attrs: dict | None = None) -> None:  # fmt: skip
    """Samples (chains, draws) per parameter under `/samples/<name>`, R̂ and ESS under
    `/diagnostics`, the Laplace mean and covariance under `/laplace`."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("samples")
        for i, n in enumerate(result.names):
            g.create_dataset(n, data=np.asarray(result.samples[..., i]))
        d = f.create_group("diagnostics")
        d.create_dataset("rhat", data=np.asarray(result.rhat))
        d.create_dataset("ess", data=np.asarray(result.ess))
        d.attrs["divergences"] = int(result.divergences)
        d.attrs["acceptance"] = float(result.acceptance)
        d.attrs["n_gradients"] = int(result.n_gradients)
        f.attrs["names"] = [n.encode() for n in result.names]
        f.attrs["axes"] = "chain, draw"
        if lap is not None:
            g = f.create_group("laplace")
            g.create_dataset("mean", data=np.asarray(lap.mean))
            g.create_dataset("covariance", data=np.asarray(lap.covariance))
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
