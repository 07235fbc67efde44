"""Population-mixture fits per spaxel: non-negative weights over the whole age × Z grid
and a Gauss–Hermite LOSVD, optionally regularised (star-formation histories, as pPXF).

Per spaxel the weights enter linearly: for a given LOSVD θ they are the exact solution of
a non-negative least-squares problem (Lawson & Hanson 1974, active set, on the normal
equations in float64), and θ is fitted by Levenberg–Marquardt on the variable-projection
residual (Golub & Pereyra 1973) with Kaufman's (1975) Jacobian: at θ the residual is that
of the NNLS-optimal weights, and its derivative is (I − P_F) ∂B/∂θ x, P_F the projection
onto the columns of the free (positive) weights. Jacobian and covariance of θ are thereby
those of the profile likelihood over the weights.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from .._cube import Cube
from .._maps import Maps
from .._observation import Observation
from .._pipeline import Pipeline
from ..galaxy._synthetic import SOLAR_METALLICITY
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._spaxels import _search, H_BOUND, prepare_spaxels, standard_errors


class MixtureFit(eqx.Module):
    """Population-mixture maps, weight distributions and kinematic uncertainties.

    **Attributes:**

    - `maps`: a [`rubix_eqx.Maps`][] (`weighting="fit"`): light-weighted `log_age`
      (mean log10 age/yr) and `metallicity` (mean [M/H]), `velocity`, `dispersion`
      (km/s), `h3`, `h4` (0 for `moments=2`), `flux` (total initial stellar mass, M☉),
      `mask` (converged).
    - `mass_log_age`, `mass_metallicity`: the same means weighted by initial mass.
    - `light_weights`, `mass_weights`: (n_x, n_y, n_age, n_Z) fractions of the light
      (mean flux over the fitted pixels) and of the initial mass in each template: the
      star-formation and metallicity histories; each sums to 1 where fitted.
    - `velocity_err`, `dispersion_err` (km/s), `h3_err`, `h4_err`: 1σ, marginalised
      over the weights (variable-projection Jacobian).
    - `converged`, `status` (as [`rubix_eqx.fit.STATUS`][]), `chi2` (reduced, pixels
      only, not the regularisation), `snr` (median S/N per pixel), `n_templates`
      (templates with non-zero weight).
    """

    maps: Maps
    mass_log_age: Float[Array, "n_x n_y"]
    mass_metallicity: Float[Array, "n_x n_y"]
    light_weights: Float[Array, "n_x n_y n_age n_Z"]
    mass_weights: Float[Array, "n_x n_y n_age n_Z"]
    velocity_err: Float[Array, "n_x n_y"]
    dispersion_err: Float[Array, "n_x n_y"]
    h3_err: Float[Array, "n_x n_y"]
    h4_err: Float[Array, "n_x n_y"]
    converged: Bool[Array, "n_x n_y"]
    status: Int[Array, "n_x n_y"]
    chi2: Float[Array, "n_x n_y"]
    snr: Float[Array, "n_x n_y"]
    n_templates: Int[Array, "n_x n_y"]


def nnls(gram: Float[Array, "n n"], rhs: Float[Array, " n"], max_iterations: int):
    """argmin_{x ≥ 0} ½ xᵀGx − bᵀx (= min ‖Bx − y‖² with G = BᵀB, b = Bᵀy) by the
    Lawson–Hanson active-set method; each step solves exactly on the free set. Returns
    (x, KKT satisfied within `max_iterations` additions)."""
    n = rhs.shape[0]
    eye = jnp.eye(n, dtype=gram.dtype)
    tol = 1e-11 * jnp.max(jnp.abs(rhs)) * n

    def solve_on(free):
        g = jnp.where(free[:, None] & free[None, :], gram, eye)
        return jnp.where(free, jnp.linalg.solve(g, jnp.where(free, rhs, 0)), 0)

    def inner(state):
        x, free, s, k = state
        bad = free & (s <= 0)
        ratio = jnp.where(bad, x / jnp.where(x - s > 0, x - s, 1), jnp.inf)
        j = jnp.argmin(ratio)
        x = x + ratio[j] * (s - x)
        free = free.at[j].set(False) & (x > 0)
        x = jnp.where(free, x, 0)
        return x, free, solve_on(free), k + 1

    def outer(state):
        x, free, _, it = state
        grad = jnp.where(free, -jnp.inf, rhs - gram @ x)
        j = jnp.argmax(grad)
        add = grad[j] > tol
        free = free.at[j].set(free[j] | add)
        s = solve_on(free)
        x, free, s, _ = jax.lax.while_loop(
            lambda st: jnp.any(st[1] & (st[2] <= 0)) & (st[3] < n), inner, (x, free, s, 0)
        )
        return jnp.where(add, s, x), free, ~add, it + 1

    x0 = jnp.zeros_like(rhs)
    x, _, done, _ = jax.lax.while_loop(
        lambda st: ~st[2] & (st[3] < max_iterations),
        outer,
        (x0, jnp.zeros(n, bool), jnp.asarray(False), 0),
    )
    return x, done


def second_differences(n_age: int, n_z: int) -> np.ndarray:
    """Rows of second differences of a (n_age, n_Z) weight grid (flattened age-major),
    along age for every Z and along Z for every age (where that axis has ≥ 3 nodes)."""
    rows = []
    for i in range(n_age):
        for j in range(n_z):
            for di, dj, n_axis, k in ((1, 0, n_age, i), (0, 1, n_z, j)):
                if 0 < k < n_axis - 1:
                    row = np.zeros((n_age, n_z))
                    row[i - di, j - dj], row[i, j], row[i + di, j + dj] = 1.0, -2.0, 1.0
                    rows.append(row.reshape(-1))
    return np.array(rows).reshape(-1, n_age * n_z)


def fit_mixture(
    cube: Cube,
    ssp: SSPGrid,
    telescope: Telescope,
    observation: Observation | None = None,
    *,
    pipeline: Pipeline | None = None,
    moments: int = 2,
    regul: float = 0.0,
    min_snr: float = 3.0,
    dispersion_start: float = 80.0,
    velocity_grid: tuple[float, float, float] = (-600.0, 600.0, 40.0),
    rtol: float = 1e-7,
    atol: float = 1e-7,
    max_steps: int = 100,
) -> MixtureFit:
    """Fit every spaxel with non-negative weights over all templates of `ssp` and one
    LOSVD (V, σ[, h3, h4]); see the module docstring for the solver.

    The templates are [`rubix_eqx.fit.SpectrumModel`][] at the grid's nodes (the
    pipeline's LSF and rebinning), each normalised to unit mean flux over the cube's
    pixels and the spectrum to its own mean, so the weights are light fractions (≈ sum 1)
    as with pPXF's templates normalised one by one.

    **Arguments:**

    - `cube`, `ssp`, `telescope`, `observation`, `pipeline`, `min_snr`,
      `dispersion_start`, `velocity_grid`: as [`rubix_eqx.fit.fit_spaxels`][] (the start
      velocity is the best single template's on the grid).
    - `moments`: 2 (V, σ) or 4 (V, σ, h3, h4, |h| < 0.3).
    - `regul`: strength of the regularisation: χ² + regul² Σ (Δ² w)², the second
      differences of the light fractions w along age and along Z (pPXF's `regul`, with
      its convention of fractions of order 1). 0: plain NNLS.
    - `rtol`, `atol`, `max_steps`: Levenberg–Marquardt controls.

    **Returns:** a [`rubix_eqx.fit.MixtureFit`][]; never NaN (failures are flagged).
    """
    if moments not in (2, 4):
        raise ValueError(f"`fit_mixture(moments=...)` must be 2 or 4; got {moments!r}.")
    if not (np.isfinite(regul) and regul >= 0):
        raise ValueError(f"`fit_mixture(regul=...)` must be finite and >= 0; got {regul!r}.")
    model, flux, var, snr, active, shape = prepare_spaxels(
        cube, ssp, telescope, observation, pipeline, min_snr, "fit_mixture"
    )
    dtype = flux.dtype
    n_age, n_z = ssp.age.shape[0], ssp.metallicity.shape[0]
    la, lz = jnp.meshgrid(jnp.log10(ssp.age), jnp.log10(ssp.metallicity), indexing="ij")
    la, lz = la.reshape(-1).astype(dtype), lz.reshape(-1).astype(dtype)
    velocities = jnp.arange(*velocity_grid, dtype=dtype)
    disp = jnp.asarray(dispersion_start, dtype)
    start = _search(model, flux, var, la, lz, velocities, disp)
    penalty = jnp.asarray(second_differences(n_age, n_z), dtype) * jnp.asarray(regul, dtype)
    out = _run_mixture(model, flux, var, start, active, la, lz, penalty, moments, max_steps,
                       optx.LevenbergMarquardt(rtol=rtol, atol=atol))  # fmt: skip
    return _result(out, la, lz, snr, shape, (n_age, n_z))


def _kinematics(p, moments):
    """(V, σ[, h3, h4]) from the solver's parameters (V/100, ln σ, atanh-scaled h)."""
    h = tuple(H_BOUND * jnp.tanh(p[2:] / H_BOUND)) if moments == 4 else ()
    return (p[0] * 100.0, jnp.exp(p[1]), *h)


def _design(model, la, lz, norm, theta, whiten):
    """Whitened templates (n_wave, n_template) at LOSVD θ, each per unit mean flux."""
    t = jax.vmap(lambda a, z: model(a, z, *theta))(la, lz) / norm[:, None]
    return t.T * whiten[:, None]


def _profile_residual(model, la, lz, norm, penalty, theta, d_white, whiten, max_nnls):
    """The variable-projection residual at θ: [B(θ) x − y] with x = NNLS(B(θ), y); its
    derivative is Kaufman's (I − P_F) ∂B x (the weights held at their optimum)."""
    top = _design(model, la, lz, norm, theta, whiten)
    b = jnp.concatenate([top, penalty], axis=0)
    y = jnp.concatenate([d_white, jnp.zeros(penalty.shape[0], d_white.dtype)])
    b0 = jax.lax.stop_gradient(b)
    gram = b0.T @ b0
    x, done = nnls(gram, b0.T @ y, max_nnls)
    x = jax.lax.stop_gradient(x)
    free = x > 0
    db_x = (b - b0) @ x  # value 0; tangent ∂B x
    g_free = jnp.where(
        free[:, None] & free[None, :], gram, jnp.eye(gram.shape[0], dtype=gram.dtype)
    )
    coef = jnp.where(free, jnp.linalg.solve(g_free, jnp.where(free, b0.T @ db_x, 0)), 0)
    r = b0 @ x - y + db_x - b0 @ coef
    return r, x, done


@eqx.filter_jit
def _run_mixture(model, flux, var, start, active, la, lz, penalty, moments, max_steps, solver):
    n_t = la.shape[0]
    max_nnls = 3 * n_t
    # unit mean flux per template at the start dispersion, V = 0 (light fractions)
    ref = jax.vmap(lambda a, z: model(a, z, 0.0, start[3][0]))(la, lz)
    norm = jnp.mean(ref, axis=1)
    zero = jnp.zeros((), flux.dtype)

    def one(d, v, la0, lz0, vel0, disp0, amp0, act):
        d = jnp.where(act, d, amp0 * model(la0, lz0, vel0, disp0))
        v = jnp.where(jnp.isfinite(v), v, 1.0)
        scale = jnp.mean(d)
        scale = jnp.where(scale > 0, scale, jnp.max(jnp.abs(d)) + 1e-300)
        whiten = scale / jnp.sqrt(v)
        d_white = d / jnp.sqrt(v)
        p0 = jnp.stack([vel0 / 100.0, jnp.log(disp0), *([zero, zero] if moments == 4 else [])])

        def fn(p, _):
            theta = _kinematics(p, moments)
            return _profile_residual(
                model, la, lz, norm, penalty, theta, d_white, whiten, max_nnls
            )[0]

        sol = optx.least_squares(fn, solver, p0, max_steps=max_steps, throw=False)
        finite = jnp.all(jnp.isfinite(sol.value))
        p = jnp.where(finite, sol.value, p0)
        theta = _kinematics(p, moments)
        r, x, done = _profile_residual(
            model, la, lz, norm, penalty, theta, d_white, whiten, max_nnls
        )
        jac = jax.jacfwd(
            lambda t: _profile_residual(model, la, lz, norm, penalty, t, d_white, whiten, max_nnls)[
                0
            ]
        )(theta)
        err = standard_errors(jnp.stack(jac, axis=1))
        n_pix = d.shape[0]
        n_free = jnp.sum(x > 0)
        chi2 = jnp.sum(r[:n_pix] ** 2) / jnp.maximum(n_pix - n_free - len(theta), 1)
        ok = (sol.result == optx.RESULTS.successful) & done
        status = jnp.where(~act, 1, jnp.where(~finite, 3, jnp.where(ok, 0, 2)))
        mass = x * scale / norm  # initial mass (M☉) per template
        return jnp.stack(theta), err, x, mass, status, chi2

    return jax.vmap(one)(flux, var, *start, active)


def _result(out, la, lz, snr, shape, grid_shape):
    theta, err, light, mass, status, chi2 = out
    n_s = theta.shape[0]
    zero = jnp.zeros(n_s, theta.dtype)
    h3, h4 = (theta[:, 2], theta[:, 3]) if theta.shape[1] == 4 else (zero, zero)
    h3_err, h4_err = (err[:, 2], err[:, 3]) if theta.shape[1] == 4 else (zero, zero)

    def fractions(w):
        total = jnp.sum(w, axis=1, keepdims=True)
        return jnp.where(total > 0, w / jnp.where(total > 0, total, 1), 0)

    lf, mf = fractions(light), fractions(mass)
    log_age, mh = la + 9.0, lz - np.log10(SOLAR_METALLICITY)
    converged = status == 0
    grid = lambda w: w.reshape(*shape, *grid_shape)
    r = lambda a: a.reshape(shape)
    maps = Maps(
        log_age=r(lf @ log_age), metallicity=r(lf @ mh), velocity=r(theta[:, 0]),
        dispersion=r(theta[:, 1]), h3=r(h3), h4=r(h4), flux=r(jnp.sum(mass, axis=1)),
        mask=r(converged), weighting="fit",
    )  # fmt: skip
    return MixtureFit(
        maps=maps, mass_log_age=r(mf @ log_age), mass_metallicity=r(mf @ mh),
        light_weights=grid(lf), mass_weights=grid(mf), velocity_err=r(err[:, 0]),
        dispersion_err=r(err[:, 1]), h3_err=r(h3_err), h4_err=r(h4_err),
        converged=r(converged), status=r(status.astype(jnp.int32)),
        chi2=r(jnp.where(jnp.isfinite(chi2), chi2, 0)),
        snr=r(jnp.where(jnp.isfinite(snr), snr, 0)),
        n_templates=r(jnp.sum(light > 0, axis=1).astype(jnp.int32)),
    )  # fmt: skip
