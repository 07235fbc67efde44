"""Spaxel-by-spaxel single-SSP fits of a cube: one batched, jitted least-squares solve."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from .._compile import jit
from .._cube import Cube
from .._maps import Maps
from .._observation import Observation
from .._pipeline import Pipeline
from .._units import SOLAR_METALLICITY
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._spectrum_model import SpectrumModel


class WorkQueue(eqx.Module):
    """An optimistix least-squares solver run as a work queue over the spaxels
    (`_run_queue`), not vmapped over the whole batch."""

    solver: optx.AbstractLeastSquaresSolver


SOLVERS = {
    "levenberg_marquardt": lambda rtol, atol: optx.LevenbergMarquardt(rtol=rtol, atol=atol),
    "gauss_newton": lambda rtol, atol: optx.GaussNewton(rtol=rtol, atol=atol),
    "dogleg": lambda rtol, atol: optx.Dogleg(rtol=rtol, atol=atol),
}


def spaxel_solver(name: str, rtol: float, atol: float):
    """The solver of the spaxel fits: optimistix's, run as a `WorkQueue` (see
    `_run_queue`) for `"levenberg_marquardt"`, vmapped over the batch for the others."""
    solver = SOLVERS[name](rtol, atol)
    return WorkQueue(solver) if name == "levenberg_marquardt" else solver


STATUS = {
    0: "converged",
    1: "masked: S/N below min_snr",
    2: "solver did not converge",
    3: "non-finite result",
}
_VELOCITY_SCALE = 100.0  # km/s per unit of the solver's velocity parameter


class SpaxelFit(eqx.Module):
    """Fitted maps with uncertainties.

    **Attributes:**

    - `maps`: a [`rubix_eqx.Maps`][] (`weighting="fit"`): `log_age` (log10 age/yr),
      `metallicity` ([M/H]), `velocity`, `dispersion` (km/s), `flux` (fitted initial
      stellar mass in the spaxel, M☉), `h3`, `h4` (Gauss–Hermite moments with
      `moments=4`; 0 with `moments=2`, a Gaussian LOSVD), `mask` (fitted and converged).
    - `log_age_err`, `metallicity_err` (dex), `velocity_err`, `dispersion_err` (km/s),
      `h3_err`, `h4_err` (0 with `moments=2`): 1σ from (JᵀJ)⁻¹ of the variance-weighted
      residuals at the solution.
    - `converged`: solver converged with finite values.
    - `status`: 0 converged, 1 masked (S/N below `min_snr`), 2 not converged,
      3 non-finite (values reset to the starting point); see `rubix_eqx.fit.STATUS`.
    - `chi2`: reduced χ² per spaxel. `snr`: median S/N per pixel.
    """

    maps: Maps
    log_age_err: Float[Array, "n_x n_y"]
    metallicity_err: Float[Array, "n_x n_y"]
    velocity_err: Float[Array, "n_x n_y"]
    dispersion_err: Float[Array, "n_x n_y"]
    h3_err: Float[Array, "n_x n_y"]
    h4_err: Float[Array, "n_x n_y"]
    converged: Bool[Array, "n_x n_y"]
    status: Int[Array, "n_x n_y"]
    chi2: Float[Array, "n_x n_y"]
    snr: Float[Array, "n_x n_y"]


def _bounds(ssp: SSPGrid):
    """(log10 age/Gyr, log10 Z) ranges of the grid (works under jit)."""
    la, lz = jnp.log10(ssp.age), jnp.log10(ssp.metallicity)
    return (la[0], la[-1]), (lz[0], lz[-1])


def standard_errors(jac: Float[Array, "m p"]) -> Float[Array, " p"]:
    """1σ errors sqrt(diag (JᵀJ)⁻¹) of whitened residuals; columns are scaled to unit norm
    for conditioning; non-finite values (singular J) become 0."""
    norm = jnp.linalg.norm(jac, axis=0)
    norm = jnp.where(norm > 0, norm, 1)
    scaled = jac / norm[None, :]
    cov = jnp.linalg.inv(scaled.T @ scaled) / (norm[:, None] * norm[None, :])
    err = jnp.sqrt(jnp.clip(jnp.diag(cov), 0, None))
    return jnp.where(jnp.isfinite(err), err, 0)


def _to_unit(x, lo, hi, margin=1e-4):
    """The logistic parameter of `x` in [lo, hi], `x` kept `margin` (a fraction of the
    range) inside the bounds."""
    t = jnp.clip((x - lo) / (hi - lo), margin, 1 - margin)
    return jnp.log(t / (1 - t))


def _from_unit(u, lo, hi):
    return lo + (hi - lo) * jax.nn.sigmoid(u)


def fit_spaxels(
    cube: Cube,
    ssp: SSPGrid,
    telescope: Telescope,
    observation: Observation | None = None,
    *,
    pipeline: Pipeline | None = None,
    solver: str = "levenberg_marquardt",
    moments: int = 2,
    min_snr: float = 3.0,
    dispersion_start: float = 80.0,
    velocity_grid: tuple[float, float, float] = (-600.0, 600.0, 40.0),
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_steps: int = 200,
) -> SpaxelFit:
    """Fit every spaxel of `cube` with one SSP: log age, [M/H], V, σ (and h3, h4 with
    `moments=4`) and a mass.

    The model is [`rubix_eqx.fit.SpectrumModel`][]: the pipeline's own templates, LSF
    and rebinning, with a Gaussian LOSVD. Residuals are weighted by `cube.variance`
    (which must be positive: make the cube with a noise stage). Ages and Z are mapped
    to the grid's range by a logistic transform (smooth bounds). Starting points come
    from a coarse search over every template and a velocity grid with the amplitude
    solved linearly (ages and Z kept 3 % of the grid's range inside its edges); then all
    spaxels are solved in one jitted call: with `"levenberg_marquardt"` by optimistix's
    `LevenbergMarquardt` run as a work queue (about n/8 spaxels stepped together; a spaxel
    that terminates frees its slot for the next, and one left unconverged after
    `max_steps` is queued once more, from where it stopped), with the other solvers by
    `jax.vmap` of `optimistix.least_squares`.

    **Arguments:**

    - `cube`, `ssp`, `telescope`: the data, the templates and the instrument.
    - `observation`: for the redshift and distance (default: the cube's redshift, the
      default cosmology).
    - `pipeline`: the pipeline whose LSF and rebinning make the model (default: one for
      `telescope` on the cube's own wavelength grid and medium, with the cube's recorded
      `lsf_fwhm` if it has one, else the telescope's declared LSF resampled onto the
      cube's pixels — see [`rubix_eqx.fit.telescope_for_cube`][]).
    - `solver`: `"levenberg_marquardt"`, `"gauss_newton"` or `"dogleg"`.
    - `moments`: 2 (V, σ: a Gaussian LOSVD) or 4 (also h3, h4: Gauss–Hermite, as pPXF's
      `moments=4`; they start at 0 and are unbounded).
    - `min_snr`: spaxels with a lower median S/N are masked (status 1).
    - `dispersion_start`: km/s; `velocity_grid`: (start, stop, step) km/s of the search.
    - `rtol`, `atol`, `max_steps`: solver controls (`max_steps` per pass of the queue).

    **Returns:** a [`rubix_eqx.fit.SpaxelFit`][]; never NaN (failures are flagged).
    """
    moments = check_moments(moments, "fit_spaxels")
    if solver not in SOLVERS:
        raise ValueError(
            f"`fit_spaxels(solver=...)` must be one of {sorted(SOLVERS)}; got {solver!r}."
        )
    model, flux, var, snr, active = prepare(cube, ssp, telescope, observation, pipeline, min_snr)
    n_x, n_y, _ = cube.flux.shape
    start = _starting_points(model, ssp, flux, var, dispersion_start, velocity_grid)
    result = _solve(
        model, ssp, flux, var, start, active, spaxel_solver(solver, rtol, atol), max_steps,
        moments,
    )  # fmt: skip
    return result(snr, (n_x, n_y))


def prepare(cube, ssp, telescope, observation, pipeline, min_snr):
    """The model, the spectra and variances (n_spaxel, n_wave), median S/N and the fitted
    spaxels, as `fit_spaxels` sets them up."""
    variance = np.asarray(cube.variance)
    if not np.all(variance[np.asarray(cube.mask)] > 0):
        raise ValueError(
            "`fit_spaxels`: `cube.variance` must be > 0 inside the mask (make the cube with noise)."
        )
    if observation is None:
        observation = Observation(redshift=cube.redshift, ra=cube.ra, dec=cube.dec)
    # Solve in the default float precision (float64 when x64 is on: optimistix wants one
    # dtype throughout).
    dtype = jnp.promote_types(cube.flux.dtype, jnp.result_type(float))
    if pipeline is None:
        pipeline = Pipeline(
            telescope_for_cube(cube, telescope), ssp, allow_sharper_lsf=True, psf=False,
            aperture=False, dtype=dtype,
        )  # fmt: skip
    dtype = pipeline.grid.templates.dtype
    model = SpectrumModel(pipeline, observation, lsf_fwhm=cube.lsf_fwhm)
    n_x, n_y, n_wave = cube.flux.shape
    flux = cube.flux.reshape(n_x * n_y, n_wave).astype(dtype)
    var = (
        jnp.where(cube.variance > 0, cube.variance, jnp.inf)
        .reshape(n_x * n_y, n_wave)
        .astype(dtype)
    )
    snr = jnp.median(flux / jnp.sqrt(var), axis=1)
    active = (snr >= min_snr) & cube.mask.reshape(-1)
    return model, flux, var, snr, active


def check_moments(moments, where: str) -> int:
    if isinstance(moments, bool) or moments not in (2, 4):
        raise ValueError(
            f"`{where}(moments=...)` must be 2 (V, σ) or 4 (V, σ, h3, h4); got {moments!r}."
        )
    return int(moments)  # a Python int: static under jit


def telescope_for_cube(cube: Cube, telescope: Telescope) -> Telescope:
    """`telescope` on the cube's wavelength grid, medium, field and spaxel size, with the
    LSF the cube records (`cube.lsf_fwhm`) or else the telescope's declared FWHM
    interpolated onto the cube's pixels."""
    wave = np.asarray(cube.wavelength, np.float64)
    if cube.lsf_fwhm is not None:
        fwhm = np.asarray(cube.lsf_fwhm, np.float64)
    else:
        tel_wave = np.asarray(telescope.wavelength, np.float64)
        if wave[0] < tel_wave[0] * (1 - 1e-3) or wave[-1] > tel_wave[-1] * (1 + 1e-3):
            raise ValueError(
                f"The cube spans {wave[0]:.1f}-{wave[-1]:.1f} Å but telescope "
                f"{telescope.name!r} declares its LSF over {tel_wave[0]:.1f}-{tel_wave[-1]:.1f} Å "
                "only; give a telescope whose `lsf_fwhm` covers the cube."
            )
        fwhm = np.interp(wave, tel_wave, np.asarray(telescope.lsf_fwhm, np.float64))
    n_x, n_y, _ = cube.flux.shape
    return telescope.replace(
        wavelength=jnp.asarray(wave), lsf_fwhm=jnp.asarray(fwhm), medium=cube.medium,
        sampling=cube.wavelength_sampling, n_x=n_x, n_y=n_y,
        spaxel_size=float(cube.spaxel_size), aperture="square", aperture_diameter=None,
    )  # fmt: skip


def _starting_points(model, ssp, flux, var, dispersion, velocity_grid):
    """Best (age, Z on nodes and cell centres; velocity) per spaxel, amplitude linear."""

    def with_midpoints(nodes):
        mid = 0.5 * (nodes[1:] + nodes[:-1])
        return jnp.sort(jnp.concatenate([nodes, mid]))

    # Nodes and cell centres: starting on a node (a kink of the bilinear interpolation)
    # can leave the solver in a local minimum of the age–metallicity degeneracy.
    la_nodes = with_midpoints(jnp.log10(ssp.age))
    lz_nodes = with_midpoints(jnp.log10(ssp.metallicity))
    la, lz = jnp.meshgrid(la_nodes, lz_nodes, indexing="ij")
    la, lz = la.reshape(-1), lz.reshape(-1)
    velocities = jnp.arange(*velocity_grid, dtype=flux.dtype)
    disp = jnp.asarray(dispersion, flux.dtype)
    return _search(model, flux, var, la, lz, velocities, disp)


# The jitted solves live at module level and take the model, the templates' nodes and
# the solver as arguments: a second fit of a same-shaped cube reuses the compilation
# (closures defined per call would be new functions, recompiled every time).


@jit
def _search(model, flux, var, la, lz, velocities, disp):
    # every candidate (nodes and cell centres) is a fixed mix of the grid's templates: one
    # LOSVD and stage pass per template and velocity, then a matrix product
    mixing = model.mixing_weights(la, lz)  # (n_candidate, n_template)

    def at_velocity(v):
        nodes = model.templates(v, disp)  # (n_template, n_wave)
        models = mixing.astype(nodes.dtype) @ nodes  # (n_candidate, n_wave)
        dm = (flux / var) @ models.T  # (n_spaxel, n_template)
        mm = (1 / var) @ (models**2).T
        return dm**2 / jnp.where(mm > 0, mm, 1), dm / jnp.where(mm > 0, mm, 1)

    gain, amplitude = jax.lax.map(at_velocity, velocities)  # (n_v, n_spaxel, n_template)
    n_v, n_s, n_t = gain.shape
    flat = jnp.transpose(gain, (1, 0, 2)).reshape(n_s, n_v * n_t)
    best = jnp.argmax(flat, axis=1)
    iv, it = best // n_t, best % n_t
    amp = jnp.transpose(amplitude, (1, 0, 2)).reshape(n_s, n_v * n_t)[jnp.arange(n_s), best]
    return la[it], lz[it], velocities[iv], jnp.full((n_s,), disp), jnp.maximum(amp, 1e-30)


def _physical(p, a_ref, bounds):
    """Solver parameters → (log age, log Z, V, σ, mass, h3, h4); h3 = h4 = 0 when `p` has
    5 entries (a Gaussian LOSVD)."""
    (la_lo, la_hi), (lz_lo, lz_hi) = bounds
    h3, h4 = (p[5], p[6]) if p.shape[0] == 7 else (jnp.zeros_like(p[0]),) * 2
    return (
        _from_unit(p[0], la_lo, la_hi),
        _from_unit(p[1], lz_lo, lz_hi),
        p[2] * _VELOCITY_SCALE,
        jnp.exp(p[3]),
        p[4] * a_ref,
        h3,
        h4,
    )


def _residual_physical(model, theta, args):
    d, v = args
    la, lz, vel, disp, amp, h3, h4 = theta
    return (amp * model(la, lz, vel, disp, h3, h4) - d) / jnp.sqrt(v)


@jit
def _run(model, flux, var, start, active, bounds, solver, max_steps, moments):
    n_free = 5 if moments == 2 else 7

    def one(d, v, la, lz, vel, disp, amp, act):
        # Masked spaxels fit their own starting model: they converge at once.
        d = jnp.where(act, d, amp * model(la, lz, vel, disp))
        # infinite variance (zero, or masked: `mask_emission_lines`) = zero weight, as in
        # the search; a masked spaxel gets unit weights
        v = jnp.where(act, v, 1.0)
        p0 = _initial(la, lz, vel, disp, n_free, bounds)
        fn = lambda p, args: _residual_physical(model, _physical(p, amp, bounds), args)
        sol = optx.least_squares(fn, solver, p0, args=(d, v), max_steps=max_steps, throw=False)
        ok = sol.result == optx.RESULTS.successful
        return _finish(model, d, v, sol.value, ok, (la, lz, vel, disp, amp), act, bounds, n_free)

    return jax.vmap(one)(flux, var, *start, active)


# Starting ages and Z stay 3 % of the grid's range inside its edges: on an edge node the
# logistic's slope is ~1e-4 and Levenberg–Marquardt crawls off it (E-MILES, moments 4:
# 170–370 steps for the 4 of 64 spaxels the search put on an edge, ≤ 170 for the rest;
# from 3 % inside, ≤ 170 for all and χ² equal or lower).
_START_MARGIN = 0.03


def _initial(la, lz, vel, disp, n_free, bounds):
    """Solver parameters `(n_free,)` of a starting point (h3 = h4 = 0)."""
    (la_lo, la_hi), (lz_lo, lz_hi) = bounds
    zero = jnp.zeros_like(la)
    return jnp.stack([_to_unit(la, la_lo, la_hi, _START_MARGIN),
                      _to_unit(lz, lz_lo, lz_hi, _START_MARGIN),
                      vel / _VELOCITY_SCALE, jnp.log(disp), jnp.ones_like(la),
                      zero, zero][:n_free])  # fmt: skip


def _finish(model, d, v, p, ok, start, act, bounds, n_free):
    """Physical values, 1σ errors, status and reduced χ² of one spaxel at the solution
    `p` (the starting point where it is not finite)."""
    la, lz, vel, disp, amp = start
    zero = jnp.zeros_like(la)
    theta = _physical(p, amp, bounds)
    finite = jnp.all(jnp.isfinite(jnp.stack(theta)))
    theta = jax.tree.map(
        lambda x, x0: jnp.where(finite, x, x0), theta, (la, lz, vel, disp, amp, zero, zero)
    )
    free = lambda t: _residual_physical(model, t + theta[n_free:], (d, v))
    jac = jax.jacfwd(free)(theta[:n_free])
    err = standard_errors(jnp.stack(jac, axis=1))  # J: (n_wave, n_free)
    err = jnp.concatenate([err, jnp.zeros(7 - n_free, err.dtype)])
    r = _residual_physical(model, theta, (d, v))
    chi2 = jnp.sum(r**2) / (r.shape[0] - n_free)
    status = jnp.where(~act, 1, jnp.where(~finite, 3, jnp.where(ok, 0, 2)))
    return theta, err, status, chi2


def queue_slots(n: int) -> int:
    """Spaxels solved side by side by the work-queue solve of `n` spaxels: about n/8 (at
    least 8, at most 256), so that the batch a vectorised step pays for stays small next
    to the few spaxels that need many steps."""
    return int(min(n, max(8, min(256, n // 8))))


def _queue(model, flux, var, amp, p_start, active, bounds, solver, max_steps, slots):
    """Every `active` spaxel solved by the optimistix least-squares `solver` as a work
    queue: `slots` spaxels are stepped together (`solver.step` vmapped over the slots,
    each slot's spectrum, variance and amplitude scale in `args`, one residual function
    for all), in one `lax.while_loop`. A slot whose spaxel terminates (`solver.terminate`,
    a failed or non-finite step, or `max_steps`) writes its solution out and starts
    (`solver.init`) the next spaxel of the queue. A vmapped solve of the whole batch
    instead steps every spaxel until the slowest has converged.

    A spaxel that ends unconverged goes back to the end of the queue once, to continue
    from where it stopped (from its start if that is not finite) with a fresh solver
    state and another `max_steps`: only the failed spaxels are solved again.

    **Arguments:** spectra and variances `(n, n_wave)`, amplitude scales `amp` `(n,)`
    (M☉), starting points `p_start` `(n, n_free)` (solver parameters), `active` `(n,)`,
    `max_steps` (an int or an integer array: one compilation for every value); `slots` a
    Python int.

    **Returns:** solutions `(n, n_free)` (the starting point where not active), converged
    `(n,)`, and the steps of each spaxel's last pass `(n,)` with `retried` `(n,)` (it
    needed the second pass).
    """
    n = flux.shape[0]
    options, tags = {}, frozenset()
    # the queue: active spaxels first, in order; retried spaxels are appended after them
    order = jnp.concatenate([jnp.argsort(~active, stable=True), jnp.full(n, n)]).astype(jnp.int32)
    n_active = jnp.sum(active).astype(jnp.int32)

    def fn(p, args):
        d, v, a = args
        return _residual_physical(model, _physical(p, a, bounds), (d, v)), None

    def data(i):
        j = jnp.minimum(i, n - 1)
        return flux[j], var[j], amp[j]

    def fetch(k, order, tail, out_p):
        """Spaxel at queue position k (n past the tail), its start and whether it is a
        retry."""
        i = jnp.where(k < tail, order[jnp.minimum(k, 2 * n - 1)], n)
        j = jnp.minimum(i, n - 1)
        retry = k >= n_active
        p = jnp.where(retry, out_p[j], p_start[j])
        return i, jnp.where(jnp.all(jnp.isfinite(p)), p, p_start[j]), retry

    def init(y, args):
        f_struct, aux_struct = jax.eval_shape(fn, y, args)
        return solver.init(fn, y, args, options, f_struct, aux_struct, tags)

    def step(y, state, args):
        y, state, _ = solver.step(fn, y, args, options, state, tags)
        stop, result = solver.terminate(fn, y, args, options, state, tags)
        failed = (result != optx.RESULTS.successful) | ~jnp.all(jnp.isfinite(y))
        return y, state, stop & ~failed, stop | failed

    positions = jnp.arange(slots, dtype=jnp.int32)
    index, y, retry = jax.vmap(fetch, (0, None, None, None))(positions, order, n_active, p_start)
    dynamic, static = eqx.partition(eqx.filter_vmap(init)(y, jax.vmap(data)(index)), eqx.is_array)
    zeros = lambda shape, dtype=jnp.int32: jnp.zeros(shape, dtype)
    # slots: spaxel, point, solver state, steps, retry; the queue and its next position,
    # tail and finished count; outputs
    # the next queue position: past the first spaxels, but never past the tail (fewer
    # active spaxels than slots), so that a retry appended there is taken
    first = jnp.minimum(jnp.asarray(slots, jnp.int32), n_active)
    carry = (index, y, dynamic, zeros(slots), retry, order, first,
             n_active, zeros(()), p_start, zeros(n, bool), zeros(n), zeros(n, bool))  # fmt: skip

    def body(carry):
        index, y, dynamic, steps, retry, order, next_k, tail, finished, *out = carry
        out_p, out_ok, out_steps, out_retried = out
        state = eqx.combine(static, dynamic)
        y, state, ok, stop = eqx.filter_vmap(step)(y, state, jax.vmap(data)(index))
        steps = steps + 1
        busy = index < n
        done = busy & (stop | (steps >= max_steps))
        write = jnp.where(done, index, n)
        out_p = out_p.at[write].set(y, mode="drop")
        out_ok = out_ok.at[write].set(ok, mode="drop")
        out_steps = out_steps.at[write].set(steps, mode="drop")
        out_retried = out_retried.at[write].set(retry, mode="drop")
        # unconverged on a first pass: back to the end of the queue
        again = done & ~ok & ~retry
        rank = jnp.cumsum(again).astype(jnp.int32) - 1
        order = order.at[jnp.where(again, tail + rank, 2 * n)].set(index, mode="drop")
        tail = tail + jnp.sum(again).astype(jnp.int32)
        finished = finished + jnp.sum(done & ~again).astype(jnp.int32)
        # free slots take the next spaxels of the queue, from a fresh solver state
        free = done | ~busy
        k = next_k + jnp.cumsum(free).astype(jnp.int32) - 1
        new_index, new_y, new_retry = jax.vmap(fetch, (0, None, None, None))(k, order, tail, out_p)
        fresh = eqx.filter(eqx.filter_vmap(init)(new_y, jax.vmap(data)(new_index)), eqx.is_array)
        dynamic = eqx.filter(state, eqx.is_array)
        pick = lambda a, b: jnp.where(free.reshape(free.shape + (1,) * (a.ndim - 1)), a, b)
        leaves = map(pick, jax.tree.leaves(fresh), jax.tree.leaves(dynamic))
        dynamic = jax.tree.unflatten(jax.tree.structure(dynamic), list(leaves))
        taken = jnp.clip(tail - next_k, 0, jnp.sum(free).astype(jnp.int32))
        return (pick(new_index, index), pick(new_y, y), dynamic, jnp.where(free, 0, steps),
                pick(new_retry, retry), order, next_k + taken, tail, finished, out_p, out_ok,
                out_steps, out_retried)  # fmt: skip

    carry = jax.lax.while_loop(lambda c: c[8] < n_active, body, carry)
    return carry[9:]


@jit
def _run_queue(model, flux, var, start, active, bounds, solver, max_steps, moments, slots):
    """`_queue` over the spaxels of a batch, then the physical values, errors, status and
    χ² of each (as `_run`)."""
    n_free = 5 if moments == 2 else 7
    la0, lz0, vel0, disp0, amp0 = start
    p_start = jax.vmap(lambda *s: _initial(*s, n_free, bounds))(la0, lz0, vel0, disp0)
    var = jnp.where(active[:, None], var, 1.0)
    p, ok, _, _ = _queue(model, flux, var, amp0, p_start, active, bounds, solver, max_steps, slots)

    def fin(d, v, p, ok, la, lz, vel, disp, amp, act):
        # masked spaxels: their own starting model with unit weights, as in `_run`
        d = jnp.where(act, d, amp * model(la, lz, vel, disp))
        return _finish(model, d, v, p, ok, (la, lz, vel, disp, amp), act, bounds, n_free)

    return jax.vmap(fin)(flux, var, p, ok, *start, active)


def _solve(model, ssp, flux, var, start, active, solver, max_steps, moments=2):
    if isinstance(solver, WorkQueue):
        theta, err, status, chi2 = _run_queue(
            model, flux, var, start, active, _bounds(ssp), solver.solver,
            jnp.asarray(max_steps, jnp.int32), moments, queue_slots(flux.shape[0]),
        )  # fmt: skip
    else:
        theta, err, status, chi2 = _run(
            model, flux, var, start, active, _bounds(ssp), solver, max_steps, moments
        )
    la, lz, vel, disp, amp, h3, h4 = theta

    def result(snr, shape):
        converged = status == 0
        maps = Maps(
            log_age=(la + 9).reshape(shape),
            metallicity=(lz - np.log10(SOLAR_METALLICITY)).reshape(shape),
            velocity=vel.reshape(shape),
            dispersion=disp.reshape(shape),
            h3=h3.reshape(shape),
            h4=h4.reshape(shape),
            flux=amp.reshape(shape),
            mask=converged.reshape(shape),
            weighting="fit",
        )
        return SpaxelFit(
            maps=maps,
            log_age_err=err[:, 0].reshape(shape),
            metallicity_err=err[:, 1].reshape(shape),
            velocity_err=err[:, 2].reshape(shape),
            dispersion_err=err[:, 3].reshape(shape),
            h3_err=err[:, 5].reshape(shape),
            h4_err=err[:, 6].reshape(shape),
            converged=converged.reshape(shape),
            status=status.astype(jnp.int32).reshape(shape),
            chi2=jnp.where(jnp.isfinite(chi2), chi2, 0).reshape(shape),
            snr=jnp.where(jnp.isfinite(snr), snr, 0).reshape(shape),
        )

    return result
