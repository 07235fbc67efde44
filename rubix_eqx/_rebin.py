"""Flux-conserving rebinning of piecewise-constant spectra (NumPy, float64, eager).

Used once per pipeline to build fixed operators; never in the per-particle hot path.
"""

import numpy as np


def pixel_edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges from centres: midpoints, outer edges half a neighbouring step out."""
    c = np.asarray(centres, np.float64)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def overlap_matrix(edges_in: np.ndarray, edges_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rebin operator in ELL form: for each output bin, the first overlapping input
    bin and the fractions of the next `p` input bins' integrated flux that fall in it.

    **Returns:** `(start (n_out,), fraction (n_out, p))`; output integrated flux is
    `sum_j fraction[b, j] * integrated_in[start[b] + j]` (indices past the end carry 0).
    """
    a, b = np.asarray(edges_in, np.float64), np.asarray(edges_out, np.float64)
    n_in = a.size - 1
    lo = np.clip(np.searchsorted(a, b[:-1], side="right") - 1, 0, n_in - 1)
    hi = np.clip(np.searchsorted(a, b[1:], side="left") - 1, 0, n_in - 1)
    p = int(np.max(hi - lo)) + 1
    idx = lo[:, None] + np.arange(p)[None, :]
    valid = idx <= hi[:, None]
    idx_c = np.minimum(idx, n_in - 1)
    left = np.maximum(a[idx_c], b[:-1, None])
    right = np.minimum(a[idx_c + 1], b[1:, None])
    fraction = np.where(valid, np.clip(right - left, 0, None) / (a[idx_c + 1] - a[idx_c]), 0.0)
    return lo, fraction


def rebin_integrated(edges_in, integrated_in, edges_out) -> np.ndarray:
    """Integrated flux per bin from `edges_in` onto `edges_out` (last axis)."""
    start, fraction = overlap_matrix(edges_in, edges_out)
    x = np.asarray(integrated_in, np.float64)
    x = np.concatenate([x, np.zeros(x.shape[:-1] + (fraction.shape[1],))], axis=-1)
    idx = start[:, None] + np.arange(fraction.shape[1])[None, :]
    return np.sum(x[..., idx] * fraction, axis=-1)
