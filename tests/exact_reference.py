"""Independent float64 NumPy reference for *exact* spectra on telescope pixels.

Test-support module (not a test file).  It imports nothing from ``rubix_eqx``:
it follows the textbook definition so that it can catch rubix_eqx's errors.

Convention (see DESIGN.md §1, LSF bullet)
-----------------------------------------
* A telescope declares ``lsf_fwhm(λ)`` (Å): the TOTAL line spread as measured on
  the cube's pixels (what a Gaussian fit to pixel values gives), pixel
  integration included.  SSP templates declare their own ``ssp_fwhm(λ_rest)``
  (Å), as measured on their own samples.  σ = FWHM / (2 sqrt(2 ln 2)).
* Band-limited convention: native template sample k (rest λ_k, flux density
  f_k in L☉/Å per M☉, native width w_k from midpoint edges, outer edges half a
  step out) is an impulse of integrated flux f_k·w_k at λ_k.  The samples
  already carry the template's resolution.
* The impulse of component p lands at λ0 = λ_k (1+z) exp(v_p/c) with
  integrated flux amplitude_p · f_k · w_k (the shift conserves flux; any
  dimming is the caller's business through ``amplitude``).
  exp(v/c) versus the relativistic sqrt((1+β)/(1−β)): their logarithms differ
  by β³/3 + O(β⁵), i.e. 1.5e-9 relative (1e-5 Å at 7000 Å) at 500 km/s and
  1.2e-8 relative (8e-5 Å) at 1000 km/s -- negligible.  (The classical 1+v/c
  differs from both by β²/2: 1.4e-6 relative, 0.01 Å at 7000 Å, 500 km/s.)
* It is spread by a Gaussian in λ of variance
      s² = (λ0 σ_LOSVD / c)² + σ_k(λ0)²,
      σ_k² = σ_tel(λ0)² − (σ_ssp(λ0/(1+z)) (1+z))² − Δpix(λ0)²/12,
  σ_tel and Δpix (the telescope pixel width) interpolated linearly at λ0,
  σ_ssp at rest λ0/(1+z).  Integrating over a pixel of width Δ adds Δ²/12
  (Sheppard), so the line measured on the pixels has variance σ_tel² (+LOSVD).
  Where σ_k² < 0 it is clipped to 0.
* Each impulse's Gaussian is integrated exactly over each telescope pixel
  (differences of the normal CDF at the pixel edges) and divided by the pixel
  width: flux density per pixel.
"""

import math

import numpy as np


C_KMS = 299792.458  # speed of light [km/s]
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548200450309493
N_SIGMA_WINDOW = 8.0  # impulses are spread over ±8 s only (tail mass < 1.3e-15)
_S_MIN = 1e-9  # Å; a zero-width kernel (clipped LSF, no LOSVD) becomes a delta

__all__ = [
    "C_KMS",
    "FWHM_PER_SIGMA",
    "pixel_edges",
    "normal_cdf",
    "normal_ppf",
    "exact_spectra",
    "kernel_variance",
    "gaussian_population",
    "measure_line_sigma",
    "line_templates",
]


# ----------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------
def pixel_edges(centres):
    """Pixel edges (n+1,) from centres (n,): midpoints, outer edges half a step out."""
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError("need a 1-D grid of at least 2 centres")
    if np.any(np.diff(c) <= 0):
        raise ValueError("grid must be strictly increasing")
    e = np.empty(c.size + 1)
    e[1:-1] = 0.5 * (c[1:] + c[:-1])
    e[0] = c[0] - 0.5 * (c[1] - c[0])
    e[-1] = c[-1] + 0.5 * (c[-1] - c[-2])
    return e


# ----------------------------------------------------------------------------
# Standard normal CDF, vectorised, float64 (no scipy)
# ----------------------------------------------------------------------------
# Table + local Taylor series.  Nodes t_n = -T + n h; around a node
#   Φ(t_n + d) = Φ(t_n) + φ(t_n) Σ_{m≥0} (-1)^m He_m(t_n) d^{m+1} / (m+1)!
# (He: probabilists' Hermite polynomials, φ^{(m)} = (-1)^m He_m φ).  With
# |d| ≤ h/2 = 1/128 and m ≤ 5 the first neglected term is < 1e-17 (Cramér's
# bound |He_m(t)| φ(t) ≤ 0.44 sqrt(m!)); the table values come from math.erfc.
_T_MAX = 9.0  # |t| beyond 9: Φ is 0 or 1 to 1e-19
_H = 1.0 / 64.0
_N_TAYLOR = 6  # Taylor terms d^1 .. d^6


def _build_cdf_table():
    n_nodes = int(round(2 * _T_MAX / _H)) + 1
    t = -_T_MAX + _H * np.arange(n_nodes)
    cdf = np.array([0.5 * math.erfc(-x / math.sqrt(2.0)) for x in t])
    pdf = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    coeffs = np.empty((_N_TAYLOR + 1, n_nodes))
    coeffs[0] = cdf
    he_prev, he = np.zeros_like(t), np.ones_like(t)  # He_{-1} := 0, He_0 = 1
    for m in range(_N_TAYLOR):
        coeffs[m + 1] = pdf * (-1.0) ** m * he / math.factorial(m + 1)
        he_prev, he = he, t * he - m * he_prev  # He_{m+1} = t He_m - m He_{m-1}
    return coeffs


# Coefficients of powers of the offset in units of h, u - n ∈ [-1/2, 1/2].
_CDF_COEFFS = _build_cdf_table() * (_H ** np.arange(_N_TAYLOR + 1))[:, None]


def normal_cdf(t):
    """Standard normal CDF Φ(t), float64, vectorised; absolute error ≤ 2.3e-16."""
    shape = np.shape(t)
    u = np.array(t, dtype=np.float64, ndmin=1) * (1.0 / _H)
    np.clip(u, -_T_MAX / _H, _T_MAX / _H, out=u)
    n = np.rint(u)
    u -= n
    n += _T_MAX / _H
    n = n.astype(np.intp)
    out = _CDF_COEFFS[_N_TAYLOR].take(n)
    for j in range(_N_TAYLOR - 1, -1, -1):
        out *= u
        out += _CDF_COEFFS[j].take(n)
    return out.reshape(shape)


_erfc_vec = np.vectorize(math.erfc, otypes=[np.float64])


def normal_ppf(p):
    """Inverse standard normal CDF for p in (0, 1), float64 (bisection + Newton on erfc)."""
    p = np.asarray(p, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("p must lie in (0, 1)")
    q = np.minimum(p, 1.0 - p)  # solve Φ(t) = q for t ≤ 0, relative accuracy in the tail

    def lower_cdf(x):
        return 0.5 * _erfc_vec(-x / math.sqrt(2.0))

    lo = np.full(q.shape, -40.0)
    hi = np.zeros(q.shape)
    for _ in range(60):  # bracket to 40/2^60
        mid = 0.5 * (lo + hi)
        below = lower_cdf(mid) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    t = 0.5 * (lo + hi)
    for _ in range(2):  # polish
        pdf = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        t = t - (lower_cdf(t) - q) / pdf
    return np.where(p < 0.5, t, -t)


# ----------------------------------------------------------------------------
# Exact spectra
# ----------------------------------------------------------------------------
def kernel_variance(lam_obs, ssp_wavelength, ssp_fwhm, redshift, tel_wavelength, tel_lsf_fwhm):
    """σ_k²(λ_obs) = σ_tel² − (σ_ssp(λ/(1+z))(1+z))² − Δpix²/12 (Å², unclipped)."""
    lam_obs = np.asarray(lam_obs, dtype=np.float64)
    tel = np.asarray(tel_wavelength, dtype=np.float64)
    lam_ssp = np.asarray(ssp_wavelength, dtype=np.float64)
    one_z = 1.0 + float(redshift)
    fwhm_ssp = np.broadcast_to(np.asarray(ssp_fwhm, dtype=np.float64), lam_ssp.shape)
    fwhm_tel = np.broadcast_to(np.asarray(tel_lsf_fwhm, dtype=np.float64), tel.shape)
    dpix = np.diff(pixel_edges(tel))
    s_tel = np.interp(lam_obs, tel, fwhm_tel) / FWHM_PER_SIGMA
    s_ssp = np.interp(lam_obs / one_z, lam_ssp, fwhm_ssp) / FWHM_PER_SIGMA * one_z
    d = np.interp(lam_obs, tel, dpix)
    return s_tel**2 - s_ssp**2 - d**2 / 12.0


def _accumulate(lam0, s, a, edges, out, budget=1 << 13):
    """out[i] += Σ_j a_j (Φ((e_{i+1}-λ0_j)/s_j) − Φ((e_i-λ0_j)/s_j)), banded to ±8 s_j.

    Impulses are processed in blocks of ~``budget`` (impulse, edge) pairs so the
    temporaries stay in cache; each impulse only sees the edges within ±8 s_j.
    """
    n_pix = edges.size - 1
    lo = np.searchsorted(edges, lam0 - N_SIGMA_WINDOW * s, side="right") - 1
    hi = np.searchsorted(edges, lam0 + N_SIGMA_WINDOW * s, side="left")
    lo = np.clip(lo, 0, n_pix)
    hi = np.clip(hi, 0, n_pix)
    n_edges = hi - lo + 1
    i0 = 0
    while i0 < lam0.size:
        sl = slice(i0, i0 + max(16, budget // int(n_edges[i0])))
        i0 = sl.stop
        k = int(n_edges[sl].max())
        if k < 2:
            continue
        idx = np.minimum(lo[sl, None] + np.arange(k), n_pix)  # edge indices (b, k)
        t = (edges[idx] - lam0[sl, None]) / s[sl, None]
        cdf = normal_cdf(t)
        contrib = np.diff(cdf, axis=1) * a[sl, None]  # pixel idx[:, :-1]; 0 where clipped
        out += np.bincount(idx[:, :-1].ravel(), weights=contrib.ravel(), minlength=n_pix + 1)


def exact_spectra(
    ssp_wavelength,
    template_flux,
    ssp_fwhm,
    amplitude,
    velocity,
    redshift,
    tel_wavelength,
    tel_lsf_fwhm,
    losvd_sigma=0.0,
):
    """Exact float64 spectrum on telescope pixels, summed over components.

    Parameters
    ----------
    ssp_wavelength : (n_ssp,) rest-frame native sample wavelengths [Å], increasing.
    template_flux : (n_p, n_ssp) one template per component [L☉/Å per M☉]
        (or (n_ssp,) for a single component).
    ssp_fwhm : (n_ssp,) or scalar, template resolution [Å] at rest λ.
    amplitude : (n_p,) or scalar, multiplies the integrated flux (caller's units).
    velocity : (n_p,) or scalar, line-of-sight velocity [km/s] (positive = away).
    redshift : z.
    tel_wavelength : (n_wave,) observed pixel centres [Å] (linear or log-spaced).
    tel_lsf_fwhm : (n_wave,) or scalar, declared total FWHM on the pixels [Å].
    losvd_sigma : scalar or (n_p,), Gaussian LOSVD σ [km/s] about each velocity.

    Returns
    -------
    flux : (n_wave,) float64 flux density per pixel (integrated flux / pixel width).
    clipped : (n_wave,) bool, σ_k² < 0 at the pixel centre (kernel clipped to 0;
        the telescope is sharper there than the redshifted templates + pixels).
    """
    lam = np.asarray(ssp_wavelength, dtype=np.float64)
    flux_t = np.asarray(template_flux, dtype=np.float64)
    if flux_t.ndim == 1:
        flux_t = flux_t[None, :]
    n_p = flux_t.shape[0]
    if flux_t.shape[1] != lam.size:
        raise ValueError("template_flux must be (n_p, n_ssp)")
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), (n_p,))
    vel = np.broadcast_to(np.asarray(velocity, dtype=np.float64), (n_p,))
    sig_v = np.broadcast_to(np.asarray(losvd_sigma, dtype=np.float64), (n_p,))
    if np.any(sig_v < 0):
        raise ValueError("losvd_sigma must be >= 0")
    tel = np.asarray(tel_wavelength, dtype=np.float64)
    edges = pixel_edges(tel)
    w = np.diff(pixel_edges(lam))
    one_z = 1.0 + float(redshift)

    def kvar(x):
        return kernel_variance(x, lam, ssp_fwhm, redshift, tel, tel_lsf_fwhm)

    out = np.zeros(tel.size + 1)
    for p in range(n_p):
        lam0 = lam * (one_z * math.exp(vel[p] / C_KMS))
        a = amp[p] * flux_t[p] * w
        s2 = (lam0 * (sig_v[p] / C_KMS)) ** 2 + np.maximum(kvar(lam0), 0.0)
        s = np.maximum(np.sqrt(s2), _S_MIN)
        keep = (
            (a != 0.0)
            & (lam0 + N_SIGMA_WINDOW * s > edges[0])
            & (lam0 - N_SIGMA_WINDOW * s < edges[-1])
        )
        if np.any(keep):
            _accumulate(lam0[keep], s[keep], a[keep], edges, out)
    flux = out[:-1] / np.diff(edges)
    clipped = kvar(tel) < 0.0
    return flux, clipped


# ----------------------------------------------------------------------------
# Populations, templates, line fits
# ----------------------------------------------------------------------------
def gaussian_population(velocity_mean, sigma, n):
    """n deterministic velocities at the Gaussian quantiles (i+0.5)/n (no shot noise)."""
    q = (np.arange(int(n)) + 0.5) / int(n)
    return float(velocity_mean) + float(sigma) * normal_ppf(q)


def line_templates(wavelength, line_centres, line_flux=1.0, continuum=0.0, fwhm=0.0):
    """Synthetic template on a native grid: continuum plus emission lines.

    fwhm = 0 (default): each line is a single-sample spike on the native sample
    nearest its centre, flux density line_flux / w_k, so its impulse f_k w_k
    carries exactly ``line_flux``.  Such a template has (essentially) zero
    resolution width, so declare ssp_fwhm ≈ 0 with it.
    fwhm > 0: each line is a Gaussian of that FWHM [Å] centred exactly on
    ``line_centres``, point-sampled on the native grid and normalised so that
    Σ_k f_k w_k = line_flux: a template whose declared resolution ``fwhm`` is
    true in the band-limited convention (for native steps ≲ σ/2 the impulse
    distribution has variance σ² to ~exp(-2π²σ²/w²)).
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    w = np.diff(pixel_edges(lam))
    centres = np.atleast_1d(np.asarray(line_centres, dtype=np.float64))
    fl = np.broadcast_to(np.asarray(line_flux, dtype=np.float64), centres.shape)
    out = np.broadcast_to(np.asarray(continuum, dtype=np.float64), lam.shape).copy()
    if np.any((centres < lam[0]) | (centres > lam[-1])):
        raise ValueError("line centres must lie on the native grid")
    if fwhm == 0:
        k = np.clip(np.searchsorted(lam, centres), 1, lam.size - 1)
        k = np.where(np.abs(lam[k - 1] - centres) <= np.abs(lam[k] - centres), k - 1, k)
        np.add.at(out, k, fl / w[k])
        return out
    sig = float(fwhm) / FWHM_PER_SIGMA
    for c, f in zip(centres, fl):
        sel = np.abs(lam - c) <= 12.0 * sig
        g = np.exp(-0.5 * ((lam[sel] - c) / sig) ** 2)
        out[sel] += f * g / np.sum(g * w[sel])
    return out


def _gauss_lin(x, theta):
    a, mu, sig, b0, b1 = theta
    u = (x - mu) / sig
    g = np.exp(-0.5 * u * u)
    model = a * g + b0 + b1 * x
    jac = np.stack([g, a * g * u / sig, a * g * u * u / sig, np.ones_like(x), x], axis=1)
    return model, jac


def measure_line_sigma(wavelength, flux, centre, half_window):
    """Least-squares fit of a point-sampled Gaussian + linear continuum.

    Fits a exp(−(λ−μ)²/2σ²) + b0 + b1 (λ − centre) to the pixels with
    |λ − centre| ≤ half_window (Levenberg–Marquardt, analytic Jacobian,
    starting values from moments).  Returns (σ [Å], μ [Å], a) where a is the
    peak height above the continuum (flux-density units; negative = absorption).
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    y_all = np.asarray(flux, dtype=np.float64)
    sel = np.abs(lam - centre) <= half_window
    x = lam[sel] - centre
    y = y_all[sel]
    if x.size < 8:
        raise ValueError("fewer than 8 pixels in the fit window")

    # Starting values: continuum through the outer 15 % on each side.
    n_out = max(2, x.size * 15 // 100)
    xo = np.concatenate([x[:n_out], x[-n_out:]])
    yo = np.concatenate([y[:n_out], y[-n_out:]])
    b1, b0 = np.polyfit(xo, yo, 1)
    r = y - (b0 + b1 * x)
    dx = np.gradient(x)
    area = np.sum(r * dx)
    sign = 1.0 if area >= 0 else -1.0
    wgt = np.clip(sign * r, 0.0, None)
    if not np.any(wgt > 0):
        raise ValueError("no line found in the fit window")
    mu = np.sum(wgt * x) / np.sum(wgt)
    a = r[np.argmax(wgt)]
    sig = abs(area) / (abs(a) * math.sqrt(2.0 * math.pi))
    sig = float(np.clip(sig, 0.25 * np.min(dx), half_window))
    theta = np.array([a, mu, sig, b0, b1])

    model, jac = _gauss_lin(x, theta)
    res = model - y
    cost = res @ res
    lam_lm = 1e-3
    for _ in range(500):
        jtj = jac.T @ jac
        grad = jac.T @ res
        scale = np.sqrt(np.diag(jtj)) + 1e-300
        a_mat = jtj / np.outer(scale, scale) + lam_lm * np.eye(5)
        step = -np.linalg.solve(a_mat, grad / scale) / scale
        trial = theta + step
        if trial[2] <= 0:
            lam_lm *= 10.0
            continue
        model_t, jac_t = _gauss_lin(x, trial)
        res_t = model_t - y
        cost_t = res_t @ res_t
        if cost_t <= cost:
            done = np.linalg.norm(jac @ step) <= 1e-13 * (np.linalg.norm(y) + 1e-300)
            theta, jac, res, cost = trial, jac_t, res_t, cost_t
            lam_lm = max(lam_lm / 5.0, 1e-12)
            if done:
                break
        else:
            lam_lm *= 4.0
            if lam_lm > 1e12:
                break
    a, mu, sig = theta[0], theta[1], theta[2]
    return float(abs(sig)), float(mu + centre), float(a)
