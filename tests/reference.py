"""Independent plain-NumPy float64 reference of the rubix_eqx forward model.

Deliberately simple (Python loops over particles, vectorised over wavelength)
and free of jax / rubix_eqx imports so that it can serve as an independent
check of the JAX implementation.
"""

import numpy as np


C_KMS = 299792.458  # speed of light [km/s]
L_SUN = 3.828e33  # solar luminosity [erg/s]
MPC_CM = 3.0856775814913673e24  # 1 Mpc [cm]
ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0


def pixel_edges(centres):
    """Bin edges from pixel centres (midpoints; outer edges extrapolated)."""
    c = np.asarray(centres, dtype=np.float64)
    mid = 0.5 * (c[1:] + c[:-1])
    first = c[0] - 0.5 * (c[1] - c[0])
    last = c[-1] + 0.5 * (c[-1] - c[-2])
    return np.concatenate([[first], mid, [last]])


def rebin(edges_in, flux_density_in, edges_out):
    """Flux-conserving rebin of a piecewise-constant flux density.

    ``flux_density_in`` has shape (..., len(edges_in) - 1); edges must increase.
    Evaluates the exact cumulative integral of the piecewise-constant input at
    every output edge and differences it, which equals
    ``sum_m in_int[m] * overlap(m, k) / width_in[m]`` per output bin ``k``.
    Output bins without source coverage are exactly zero.
    """
    a = np.asarray(edges_in, dtype=np.float64)
    b = np.asarray(edges_out, dtype=np.float64)
    f = np.asarray(flux_density_in, dtype=np.float64)
    assert f.shape[-1] == a.size - 1
    cum = np.concatenate(
        [np.zeros(f.shape[:-1] + (1,)), np.cumsum(f * np.diff(a), axis=-1)], axis=-1
    )
    e = np.clip(b, a[0], a[-1])
    k = np.clip(np.searchsorted(a, e, side="right") - 1, 0, a.size - 2)
    integral = cum[..., k] + f[..., k] * (e - a[k])
    return np.diff(integral, axis=-1) / np.diff(b)


def orient(position, velocity, inclination, position_angle):
    """Sky coordinates (x West, y North, z away from the observer) of galaxy-frame
    vectors; degrees. Built from physical unit vectors in the right-handed sky basis
    (East, North, away), not from the library's matrices: the line of nodes (galaxy +x)
    points to PA (North through East), the galaxy's +z is tilted by the inclination from
    the direction to the observer towards PA + 90°, and +y = z × x (right-handed)."""
    inc, pa = np.deg2rad(inclination), np.deg2rad(position_angle)
    east, north, away = np.eye(3)  # components in the (East, North, away) basis

    def direction(angle):  # on the sky, from North through East
        return np.cos(angle) * north + np.sin(angle) * east

    x_axis = direction(pa)
    z_axis = np.cos(inc) * -away + np.sin(inc) * direction(pa + np.pi / 2)
    y_axis = np.cross(z_axis, x_axis)
    to_ena = np.stack([x_axis, y_axis, z_axis], axis=1)  # galaxy -> (E, N, away)
    to_sky = np.diag([-1.0, 1.0, 1.0]) @ to_ena  # (E, N, away) -> (West, North, away)
    pos = np.asarray(position, dtype=np.float64) @ to_sky.T
    vel = np.asarray(velocity, dtype=np.float64) @ to_sky.T
    return pos, vel


def _bracket(grid, value):
    """Lower node index, upper node index and fraction for clipped linear interp."""
    if grid.size == 1:
        return 0, 0, 0.0
    v = np.clip(value, grid[0], grid[-1])
    i = int(np.clip(np.searchsorted(grid, v, side="right") - 1, 0, grid.size - 2))
    return i, i + 1, float((v - grid[i]) / (grid[i + 1] - grid[i]))


def ssp_weights(age, metallicity, ssp_age, ssp_metallicity):
    """Bilinear weights in (log10 age, log10 Z): list of (i, j, weight)."""
    with np.errstate(divide="ignore"):
        x = np.log10(np.float64(age))
        y = np.log10(np.float64(metallicity))
        xs = np.log10(np.asarray(ssp_age, dtype=np.float64))
        ys = np.log10(np.asarray(ssp_metallicity, dtype=np.float64))
    i0, i1, tx = _bracket(xs, x)
    j0, j1, ty = _bracket(ys, y)
    return [
        (i0, j0, (1.0 - tx) * (1.0 - ty)),
        (i1, j0, tx * (1.0 - ty)),
        (i0, j1, (1.0 - tx) * ty),
        (i1, j1, tx * ty),
    ]


def deposit_weights(px, py, n_x, n_y, deposit="cic"):
    """Spaxel weights for one particle at pixel coords (px, py): list of (ix, iy, w)."""
    if deposit == "nearest":
        ix, iy = int(np.floor(px)), int(np.floor(py))
        cells = [(ix, iy, 1.0)]
    elif deposit == "cic":
        gx, gy = px - 0.5, py - 0.5
        ix0, iy0 = int(np.floor(gx)), int(np.floor(gy))
        fx, fy = gx - ix0, gy - iy0
        cells = [
            (ix0, iy0, (1.0 - fx) * (1.0 - fy)),
            (ix0 + 1, iy0, fx * (1.0 - fy)),
            (ix0, iy0 + 1, (1.0 - fx) * fy),
            (ix0 + 1, iy0 + 1, fx * fy),
        ]
    else:
        raise ValueError(f"unknown deposit {deposit!r}")
    return [(ix, iy, w) for ix, iy, w in cells if 0 <= ix < n_x and 0 <= iy < n_y]


def _particles(p):
    """Per particle in the field: (flux scale / flux_unit, Doppler D, ssp, deposit)."""
    pos, vel = orient(p["position"], p["velocity"], p["inclination"], p["position_angle"])
    kpc_to_arcsec = ARCSEC_PER_RAD / (p["d_a"] * 1000.0)
    px = pos[:, 0] * kpc_to_arcsec / p["spaxel_size"] + p["n_x"] / 2
    py = pos[:, 1] * kpc_to_arcsec / p["spaxel_size"] + p["n_y"] / 2
    beta = vel[:, 2] / C_KMS
    doppler = (1.0 + p["redshift"]) * np.sqrt((1.0 + beta) / (1.0 - beta))
    d_l_cm = p["d_l"] * MPC_CM
    mass = np.asarray(p["mass"], dtype=np.float64)
    scale = mass * L_SUN / (4.0 * np.pi * d_l_cm**2) / p["flux_unit"]
    out = []
    for n in range(mass.size):
        dep = deposit_weights(px[n], py[n], p["n_x"], p["n_y"], p["deposit"])
        if not dep:
            continue
        ssp = ssp_weights(p["age"][n], p["metallicity"][n], p["ssp_age"], p["ssp_metallicity"])
        out.append((scale[n], doppler[n], ssp, dep))
    return out


def _interp_spectrum(templates, ssp):
    return sum(w * templates[i, j] for i, j, w in ssp)


def reference_cube_direct(
    *,
    position,
    velocity,
    mass,
    age,
    metallicity,
    ssp_age,
    ssp_metallicity,
    ssp_wavelength,
    ssp_flux,
    redshift,
    d_l,
    d_a,
    inclination,
    position_angle,
    spaxel_size,
    n_x,
    n_y,
    telescope_wavelength,
    deposit="cic",
    flux_unit=1e-20,
):
    """Cube (n_x, n_y, W) [flux_unit]: SSP bins scaled by D, rebinned to telescope."""
    p = dict(locals())
    ssp_flux = np.asarray(ssp_flux, dtype=np.float64)
    ssp_edges = pixel_edges(ssp_wavelength)
    tel_edges = pixel_edges(telescope_wavelength)
    cube = np.zeros((n_x, n_y, tel_edges.size - 1))
    for scale, dop, ssp, dep in _particles(p):
        rest = _interp_spectrum(ssp_flux, ssp)
        spec = rebin(ssp_edges * dop, rest * scale / dop, tel_edges)
        for ix, iy, w in dep:
            cube[ix, iy] += w * spec
    return cube


def keys_kernel(s):
    """The cubic convolution kernel of Keys (1981), a = -1/2, support [-2, 2]."""
    a = np.abs(np.asarray(s, dtype=np.float64))
    inner = 1.5 * a**3 - 2.5 * a**2 + 1.0
    outer = -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return np.where(a <= 1.0, inner, np.where(a <= 2.0, outer, 0.0))


def _midpoints(lo, hi, q):
    """(n, q) midpoint-rule nodes of the intervals [lo, hi)."""
    return lo[:, None] + (hi - lo)[:, None] * (np.arange(q) + 0.5)[None, :] / q


def cubic_project(edges_in, flux_density_in, lattice_edges, q=256):
    """Flux density on a ln-uniform lattice of a piecewise-constant spectrum, spread by
    the Keys kernel (in lattice pixels) from every point of every input pixel
    (midpoint quadrature with q nodes per input pixel)."""
    lattice = np.log(np.asarray(lattice_edges, dtype=np.float64))
    step = lattice[1] - lattice[0]
    u = (np.log(np.asarray(edges_in, dtype=np.float64)) - lattice[0]) / step
    f = np.asarray(flux_density_in, dtype=np.float64)
    integrated = f * np.diff(edges_in)
    nodes = _midpoints(u[:-1], u[1:], q)  # (n_in, q)
    n_out = lattice.size - 1
    out = np.zeros(f.shape[:-1] + (n_out,))
    first = np.floor(u[:-1]).astype(int) - 3
    for offset in range(int(np.max(np.floor(u[1:]) - np.floor(u[:-1]))) + 7):
        m = first + offset
        weight = keys_kernel(m[:, None] + 0.5 - nodes).mean(axis=1)
        ok = (m >= 0) & (m < n_out)
        np.add.at(
            np.moveaxis(out, -1, 0), m[ok], np.moveaxis(integrated[..., ok] * weight[ok], -1, 0)
        )
    return out / np.diff(lattice_edges)


def cubic_integrate(lattice_edges, integrated_in, edges_out, q=256):
    """Flux density on output pixels of lattice values interpolated by the Keys kernel
    (each lattice bin's flux as a point at its centre) and integrated over each output
    pixel (midpoint quadrature)."""
    lattice = np.log(np.asarray(lattice_edges, dtype=np.float64))
    step = lattice[1] - lattice[0]
    e = (np.log(np.asarray(edges_out, dtype=np.float64)) - lattice[0]) / step
    nodes = _midpoints(e[:-1], e[1:], q)  # (n_out, q)
    n_in = lattice.size - 1
    j = np.arange(n_in)
    x = np.asarray(integrated_in, dtype=np.float64)
    out = np.zeros(x.shape[:-1] + (e.size - 1,))
    for b in range(e.size - 1):
        near = j[(j + 0.5 > e[b] - 2) & (j + 0.5 < e[b + 1] + 2)]
        weight = keys_kernel(nodes[b][None, :] - (near[:, None] + 0.5)).mean(axis=1)
        out[..., b] = x[..., near] @ (weight * (e[b + 1] - e[b]))
    return out / np.diff(edges_out)


def reference_cube_working_grid(
    *,
    position,
    velocity,
    mass,
    age,
    metallicity,
    ssp_age,
    ssp_metallicity,
    ssp_wavelength,
    ssp_flux,
    redshift,
    d_l,
    d_a,
    inclination,
    position_angle,
    spaxel_size,
    n_x,
    n_y,
    telescope_wavelength,
    rest_log_edges,
    obs_log_edges,
    deposit="cic",
    flux_unit=1e-20,
):
    """Same model via rest/observed working grids with edges exp(*_log_edges): templates
    projected onto the rest lattice by the cubic kernel, each particle shifted by a
    piecewise-constant rebinning onto the observed lattice, the sum interpolated
    (cubic) and integrated over the telescope pixels."""
    p = dict(locals())
    ssp_edges = pixel_edges(ssp_wavelength)
    rest_edges = np.exp(np.asarray(rest_log_edges, dtype=np.float64))
    obs_edges = np.exp(np.asarray(obs_log_edges, dtype=np.float64))
    tel_edges = pixel_edges(telescope_wavelength)
    templates = cubic_project(ssp_edges, ssp_flux, rest_edges)  # (A, B, Lr), once
    work = np.zeros((n_x, n_y, obs_edges.size - 1))
    for scale, dop, ssp, dep in _particles(p):
        rest = _interp_spectrum(templates, ssp)
        spec = rebin(rest_edges * dop, rest * scale / dop, obs_edges)
        for ix, iy, w in dep:
            work[ix, iy] += w * spec
    return cubic_integrate(obs_edges, work * np.diff(obs_edges), tel_edges)
