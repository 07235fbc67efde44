"""Non-negative mixtures of every SSP of the grid per spaxel, at the LOSVD of a
single-population fit (as pPXF fits weights at fixed kinematics).

The weights solve, per spaxel, min ‖(A w − d)/√var‖² + regul² ‖D w‖² with w ≥ 0: A holds
every template through the fitted LOSVD and the pipeline's stages, normalised as pPXF
recommends (templates and spectrum divided by their medians, so the weights sum to ~1
and `regul` = 1/Δ for an allowed second difference Δ of the weights), D the second
differences of the weights along log age and along log Z of the grid. The quadratic
problem is solved exactly by the Lawson–Hanson active-set method on the normal
equations, in a `lax.while_loop` (jitted once per shape, mapped over spaxels).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._compile import jit
from .._cube import Cube
from .._observation import Observation
from .._pipeline import Pipeline
from .._units import SOLAR_METALLICITY
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._spaxels import (
    _solve,
    _starting_points,
    check_moments,
    prepare,
    SOLVERS,
    spaxel_solver,
    SpaxelFit,
)


class MixtureFit(eqx.Module):
    """Non-negative SSP mixtures per spaxel.

    **Attributes:**

    - `kinematics`: the [`rubix_eqx.fit.SpaxelFit`][] (one SSP, Gaussian or Gauss–Hermite
      LOSVD) whose V, σ (h3, h4) the mixture is fitted at; with `iterate`, its maps hold
      the LOSVD re-fitted at the mixture (the errors and the SSP maps stay those of the
      single-SSP fit).
    - `weights`: mass formed (M☉) in each SSP of the grid, `(n_x, n_y, n_age, n_Z)`.
    - `light_weights`: each SSP's fraction of the model's mean flux over the fitted
      pixels; sums to 1 in fitted spaxels.
    - `log_age`, `metallicity`: light-weighted mean log10(age/yr) and [M/H]
      (= log10 Z/0.019) over the grid's nodes.
    - `log_age_mass`, `metallicity_mass`: the same, weighted by mass formed.
    - `chi2`: χ² of the mixture (without the regularisation term) per pixel, less the
      number of non-zero weights.
    - `iterations`: active-set iterations of the last non-negative solve (with
      `iterate`, warm-started from the first solution).
    - `converged`: kinematic fit converged and the weights satisfy the optimality
      (KKT) conditions.
    """

    kinematics: SpaxelFit
    weights: Float[Array, "n_x n_y n_age n_Z"]
    light_weights: Float[Array, "n_x n_y n_age n_Z"]
    log_age: Float[Array, "n_x n_y"]
    metallicity: Float[Array, "n_x n_y"]
    log_age_mass: Float[Array, "n_x n_y"]
    metallicity_mass: Float[Array, "n_x n_y"]
    chi2: Float[Array, "n_x n_y"]
    iterations: Int[Array, "n_x n_y"]
    converged: Bool[Array, "n_x n_y"]


def second_differences(n_age: int, n_z: int) -> np.ndarray:
    """Rows w[i−1] − 2 w[i] + w[i+1] along log age (for each Z) and along log Z (for
    each age), on the (n_age, n_Z) grid flattened row-major: `(n_rows, n_age·n_Z)`."""
    rows = []
    index = np.arange(n_age * n_z).reshape(n_age, n_z)
    for axis, n in ((0, n_age), (1, n_z)):
        for i in range(1, n - 1):
            for j in range(index.shape[1 - axis]):
                row = np.zeros(n_age * n_z)
                for k, c in zip((i - 1, i, i + 1), (1.0, -2.0, 1.0)):
                    row[index[k, j] if axis == 0 else index[j, k]] = c
                rows.append(row)
    return np.asarray(rows).reshape(-1, n_age * n_z)


def nnls(gram, rhs, max_iterations: int, rtol=1e-10, w0=None):
    """min ½ wᵀ G w − cᵀ w over w ≥ 0 (G = AᵀA positive semi-definite, c = Aᵀd): the
    Lawson–Hanson active-set method, each step an exact solve on the passive set (a
    full-size system with the active rows and columns replaced by the identity, so the
    shapes are static). `w0` (≥ 0, optional): a warm start, e.g. the solution of a nearby
    problem: the method starts from it with its non-zero weights passive (from 0
    otherwise); the solution is the same, in fewer iterations when the support is
    nearly right. Returns (w, iterations, KKT satisfied)."""
    n = rhs.shape[0]
    scale = jnp.sqrt(jnp.clip(jnp.diag(gram), jnp.finfo(gram.dtype).tiny, None))
    # Jacobi scaling: the solve is invariant; tolerances become relative.
    g = gram / (scale[:, None] * scale[None, :])
    c = rhs / scale
    tol = rtol * jnp.maximum(jnp.max(jnp.abs(c)), jnp.finfo(c.dtype).tiny)

    def restricted(passive):
        both = passive[:, None] & passive[None, :]
        m = jnp.where(both, g, 0) + jnp.diag(jnp.where(passive, 0.0, 1.0).astype(g.dtype))
        z = jnp.linalg.solve(m, jnp.where(passive, c, 0))
        return jnp.where(passive, z, 0)

    def cond(state):
        _, _, it, done = state
        return (~done) & (it < max_iterations)

    def body(state):
        w, passive, it, _ = state
        z = restricted(passive)
        feasible = jnp.all(jnp.where(passive, z > 0, True))
        # feasible: accept z, then free the active variable of largest gradient
        grad = c - g @ z
        candidate = (~passive) & (grad > tol)
        best = jnp.argmax(jnp.where(candidate, grad, -jnp.inf))
        grow = passive | ((jnp.arange(n) == best) & jnp.any(candidate))
        # infeasible: step from w towards z until the first weight reaches 0, drop it
        ratio = jnp.where(passive & (z <= 0), w / jnp.where(w - z > 0, w - z, 1), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0, 1)
        w_step = w + alpha * (z - w)
        blocking = jnp.arange(n) == jnp.argmin(ratio)
        shrink = passive & (w_step > tol * 1e-3) & ~blocking
        w_new = jnp.where(feasible, z, jnp.where(shrink, w_step, 0))
        passive_new = jnp.where(feasible, grow, shrink)
        done = feasible & ~jnp.any(candidate)
        return w_new, passive_new, it + 1, done

    if w0 is None:
        w_start, passive0 = jnp.zeros_like(c), jnp.zeros(n, bool)
    else:
        w_start = jnp.where(jnp.isfinite(w0) & (w0 > 0), w0, 0).astype(c.dtype) * scale
        passive0 = w_start > 0
    state = (w_start, passive0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    w, _, it, done = jax.lax.while_loop(cond, body, state)
    grad = c - g @ w
    kkt = (
        done
        & jnp.all(w >= 0)
        & jnp.all(grad <= tol * 10)
        & jnp.all(jnp.where(w > 0, jnp.abs(grad) <= tol * 10, True))
    )
    return w / scale, it, kkt


@jit
def _weights(model, flux, var, vel, disp, h3, h4, active, diff, regul, max_iterations, warm):
    """The non-negative weights per spaxel; `warm` (n_spaxel, n_template): masses (M☉)
    to start the active-set solve from (zeros: a cold start)."""

    def one(d, v, vel, disp, h3, h4, act, warm):
        a = model.templates(vel, disp, h3, h4)  # (n_template, n_wave), per M☉
        v = jnp.where(act, v, 1.0)
        d = jnp.where(act, d, a[0])
        weight = 1 / v  # 0 where the variance is infinite
        good = weight > 0
        norm_a = jnp.nanmedian(jnp.where(good[None, :], a, jnp.nan))
        norm_d = jnp.nanmedian(jnp.where(good, d, jnp.nan))
        norm_a = jnp.where(norm_a > 0, norm_a, 1)
        norm_d = jnp.where(norm_d > 0, norm_d, 1)
        an, dn = a / norm_a, d / norm_d
        wv = weight * norm_d**2
        gram = (an * wv[None, :]) @ an.T + regul**2 * (diff.T @ diff)
        rhs = (an * wv[None, :]) @ dn
        w, it, kkt = nnls(gram, rhs, max_iterations, w0=warm * norm_a / norm_d)
        fit = w @ an
        dof = jnp.maximum(jnp.sum(good) - jnp.sum(w > 0), 1)
        chi2 = jnp.sum(jnp.where(good, (fit - dn) ** 2 * wv, 0)) / dof
        light = w * jnp.sum(jnp.where(good[None, :], an, 0), axis=1)
        light = light / jnp.where(jnp.sum(light) > 0, jnp.sum(light), 1)
        mass = w * norm_d / norm_a
        zero = jnp.zeros_like(w)
        return (jnp.where(act, mass, zero), jnp.where(act, light, zero),
                jnp.where(act, chi2, 0), it, kkt & act)  # fmt: skip

    # one spaxel at a time (`lax.map`, not `vmap`): XLA's batched product of the vmapped
    # templates is ~15× slower than one (n_template, n_wave) product per spaxel, and each
    # active-set loop then stops at its own convergence instead of the batch's slowest
    return jax.lax.map(lambda x: one(*x), (flux, var, vel, disp, h3, h4, active, warm))


@jit
def _refine(model, flux, var, mass, vel, disp, h3, h4, active, moments, steps):
    """V, σ (h3, h4) and an amplitude re-fitted with each spaxel's mixture as the template:
    `steps` damped Gauss–Newton steps from the single-SSP LOSVD (a step is kept only if
    it lowers χ²)."""
    n_free = 3 if moments == 2 else 5  # amplitude, V/100, ln σ, (h3, h4)

    def one(d, v, w, vel, disp, h3, h4, act):
        v = jnp.where(act, v, 1.0)
        mixed = w.astype(model.template_ft.dtype) @ model.template_ft
        full = jnp.stack([jnp.ones_like(vel), vel / 100, jnp.log(disp), h3, h4])

        def residual(p):
            q = jnp.concatenate([p, full[n_free:]])
            spectrum = model._observe(model._broaden(mixed, q[1] * 100, jnp.exp(q[2]), q[3], q[4]))
            return jnp.where(act, (q[0] * spectrum - d) / jnp.sqrt(v), 0)

        def step(_, state):
            p, damping = state
            r = residual(p)
            jac = jax.jacfwd(residual)(p)
            jtj = jac.T @ jac
            dp = -jnp.linalg.solve(jtj + damping * jnp.diag(jnp.diag(jtj)), jac.T @ r)
            dp = jnp.where(jnp.all(jnp.isfinite(dp)), dp, 0)
            better = jnp.sum(residual(p + dp) ** 2) < jnp.sum(r**2)
            return jnp.where(better, p + dp, p), jnp.where(better, damping / 3, damping * 10)

        p, _ = jax.lax.fori_loop(0, steps, step, (full[:n_free], jnp.asarray(1e-3, vel.dtype)))
        q = jnp.concatenate([p, full[n_free:]])
        ok = act & jnp.all(jnp.isfinite(q))
        q = jnp.where(ok, q, full)
        return q[1] * 100, jnp.exp(q[2]), q[3], q[4]

    return jax.vmap(one)(flux, var, mass, vel, disp, h3, h4, active)


def fit_mixture(
    cube: Cube,
    ssp: SSPGrid,
    telescope: Telescope,
    observation: Observation | None = None,
    *,
    pipeline: Pipeline | None = None,
    moments: int = 2,
    regul: float = 0.0,
    iterate: bool = True,
    min_snr: float = 3.0,
    solver: str = "levenberg_marquardt",
    dispersion_start: float = 80.0,
    velocity_grid: tuple[float, float, float] = (-600.0, 600.0, 40.0),
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_steps: int = 200,
) -> MixtureFit:
    """Fit every spaxel with non-negative weights over the whole age × metallicity grid.

    First the LOSVD: [`rubix_eqx.fit.fit_spaxels`][] with one SSP and `moments` (2: V,
    σ; 4: also h3, h4). Then, at that LOSVD, every template of the grid through the
    pipeline's stages ([`rubix_eqx.fit.SpectrumModel.templates`][]) and the weights
    w ≥ 0 minimising χ² + regul² ‖D w‖², D the second differences of the weights along
    log age and log Z (the weights normalised as pPXF's: templates and spectrum divided
    by their medians; `regul` = 1/Δ, Δ the allowed second difference). The non-negative
    least squares is solved exactly (Lawson–Hanson active set, a `lax.while_loop`), all
    spaxels in one jitted call (`lax.map` over spaxels).

    With `iterate` (default), the LOSVD is then re-fitted once with each spaxel's mixture
    as its template (a few damped Gauss–Newton steps; the single SSP's template mismatch
    biases σ by ~2 % on a 1 + 10 Gyr mixture) and the weights solved again at it.

    **Arguments:** as [`rubix_eqx.fit.fit_spaxels`][], plus `regul` (≥ 0; 0: no
    regularisation) and `iterate`.

    **Returns:** a [`rubix_eqx.fit.MixtureFit`][]: weights per spaxel
    `(n_x, n_y, n_age, n_Z)`, light- and mass-weighted mean log age and [M/H] maps.
    """
    moments = check_moments(moments, "fit_mixture")
    if solver not in SOLVERS:
        raise ValueError(
            f"`fit_mixture(solver=...)` must be one of {sorted(SOLVERS)}; got {solver!r}."
        )
    try:
        regul = float(regul)
    except (TypeError, ValueError):
        raise ValueError(f"`fit_mixture(regul=...)` must be a number ≥ 0; got {regul!r}.") from None
    if not (math.isfinite(regul) and regul >= 0):
        raise ValueError(f"`fit_mixture(regul=...)` must be finite and ≥ 0; got {regul!r}.")
    model, flux, var, snr, active = prepare(cube, ssp, telescope, observation, pipeline, min_snr)
    n_x, n_y, _ = cube.flux.shape
    start = _starting_points(model, ssp, flux, var, dispersion_start, velocity_grid)
    kin = _solve(
        model, ssp, flux, var, start, active, spaxel_solver(solver, rtol, atol), max_steps,
        moments,
    )(snr, (n_x, n_y))  # fmt: skip
    n_age, n_z = ssp.age.shape[0], ssp.metallicity.shape[0]
    dtype = flux.dtype
    diff = jnp.asarray(second_differences(n_age, n_z), dtype)
    fitted = active & (kin.status.reshape(-1) != 3)
    flat = lambda x: x.reshape(-1).astype(dtype)
    losvd = tuple(flat(getattr(kin.maps, k)) for k in ("velocity", "dispersion", "h3", "h4"))
    regul = jnp.asarray(regul, dtype)
    cold = jnp.zeros((flux.shape[0], n_age * n_z), dtype)
    mass, light, chi2, it, kkt = _weights(
        model, flux, var, *losvd, fitted, diff, regul, 3 * n_age * n_z, cold
    )
    if iterate:
        losvd = _refine(model, flux, var, mass, *losvd, fitted, moments, 8)
        # the LOSVD moved little: start the active set from the first solution
        mass, light, chi2, it, kkt = _weights(
            model, flux, var, *losvd, fitted, diff, regul, 3 * n_age * n_z, mass
        )
        kin = eqx.tree_at(
            lambda k: (k.maps.velocity, k.maps.dispersion, k.maps.h3, k.maps.h4),
            kin,
            tuple(x.reshape(n_x, n_y) for x in losvd),
        )
    log_age = jnp.repeat(jnp.log10(ssp.age.astype(dtype)) + 9, n_z)
    mh = jnp.tile(jnp.log10(ssp.metallicity.astype(dtype) / SOLAR_METALLICITY), n_age)
    total = jnp.sum(mass, axis=1)
    mass_frac = mass / jnp.where(total > 0, total, 1)[:, None]
    shape = (n_x, n_y)
    return MixtureFit(
        kinematics=kin,
        weights=mass.reshape(n_x, n_y, n_age, n_z),
        light_weights=light.reshape(n_x, n_y, n_age, n_z),
        log_age=(light @ log_age).reshape(shape),
        metallicity=(light @ mh).reshape(shape),
        log_age_mass=(mass_frac @ log_age).reshape(shape),
        metallicity_mass=(mass_frac @ mh).reshape(shape),
        chi2=chi2.reshape(shape),
        iterations=it.reshape(shape),
        converged=(kkt & kin.converged.reshape(-1)).reshape(shape),
    )
