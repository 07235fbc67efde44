"""Resampling operators between pixel grids (NumPy, float64, eager).

Used once per pipeline to build fixed operators; never in the per-particle hot path.

The lattice operators use the cubic convolution kernel of Keys (1981, IEEE Trans. ASSP
29, 1153; a = −1/2). It is a partition of unity and reproduces quadratics, so a
resampling through it conserves flux exactly and adds no variance to a line, whatever
the line's position (phase) relative to either grid: the second moment of the output
equals that of the input. A piecewise-constant (overlap) rebinning adds a
phase-dependent variance instead (between 0 and 1/4 pixel² for a narrow line).
"""

import numpy as np


def pixel_edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges from centres: midpoints, outer edges half a neighbouring step out."""
    c = np.asarray(centres, np.float64)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def cubic_cdf(s) -> np.ndarray:
    """∫_{-∞}^{s} K(t) dt of the Keys cubic kernel K (support [−2, 2], unit integral)."""
    s = np.asarray(s, np.float64)
    a = np.minimum(np.abs(s), 2.0)
    inner = 0.375 * a**4 - (5.0 / 6.0) * a**3 + a
    outer = (0.375 - 5.0 / 6.0 + 1.0) + (
        -0.125 * a**4 + (5.0 / 6.0) * a**3 - 2.0 * a**2 + 2.0 * a - (-0.125 + 5.0 / 6.0)
    )
    half = np.where(a <= 1.0, inner, outer)
    return 0.5 + np.sign(s) * half


def cubic_projection(edges_in: np.ndarray, integrated_in: np.ndarray, n_out: int) -> np.ndarray:
    """Integrated flux on unit bins [m, m+1), m = 0 … n_out−1, of a piecewise-constant
    spectrum with bin edges `edges_in` (in output-bin units, increasing) and integrated
    flux `integrated_in` (…, n_in): bin m receives ∫ ρ(u) K(m + ½ − u) du. Output bins
    whose kernel reaches beyond the input carry only the part inside it."""
    a, b = np.asarray(edges_in[:-1], np.float64), np.asarray(edges_in[1:], np.float64)
    x = np.asarray(integrated_in, np.float64)
    density = x / (b - a)
    out = np.zeros(x.shape[:-1] + (n_out,))
    first = np.floor(a).astype(np.int64) - 2
    span = int(np.max(np.floor(b) - np.floor(a))) + 5
    for offset in range(span):
        m = first + offset
        centre = m + 0.5
        weight = cubic_cdf(centre - a) - cubic_cdf(centre - b)
        ok = (m >= 0) & (m < n_out) & (weight != 0)
        if not ok.any():
            continue
        values = (density[..., ok] * weight[ok]).reshape(-1, int(ok.sum()))
        flat = out.reshape(-1, n_out)
        for row, v in zip(flat, values):
            row += np.bincount(m[ok], weights=v, minlength=n_out)
    return out


def cubic_rebin_matrix(edges_out: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """The operator from unit input bins (integrated flux at centres m + ½, m = 0 … n_in−1,
    interpolated by the cubic kernel) to output bins with edges `edges_out` (in
    input-bin units), in ELL form: `(start (n_out,), fraction (n_out, p))`, output
    integrated flux `sum_j fraction[b, j] * integrated_in[start[b] + j]` (indices past
    the end carry 0)."""
    e = np.asarray(edges_out, np.float64)
    # input centres j + ½ within the kernel's reach (±2) of the output bin
    lo = np.maximum(np.ceil(e[:-1] - 2.5).astype(np.int64), 0)
    hi = np.minimum(np.floor(e[1:] + 1.5).astype(np.int64), n_in - 1)
    p = int(np.max(hi - lo)) + 1
    idx = lo[:, None] + np.arange(p)[None, :]
    centre = idx + 0.5
    fraction = cubic_cdf(e[1:, None] - centre) - cubic_cdf(e[:-1, None] - centre)
    fraction = np.where(idx <= hi[:, None], fraction, 0.0)
    return lo, fraction
