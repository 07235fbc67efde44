"""The telescope's vocabulary: allowed names and the dtype and sampling rules shared by the
`Telescope` container and the telescope schema (a leaf module: imports nothing of ours)."""

import jax
import jax.numpy as jnp
import numpy as np


APERTURES = ("square", "hexagon", "circle")
SAMPLINGS = ("linear", "log")
PSF_KINDS = ("gaussian", "moffat")
MEDIA = ("air", "vacuum")


def float_dtype(values):
    """The float dtype of `values` as JAX holds it (float64 → float32 without x64), else
    float32."""
    dtype = getattr(values, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return jnp.float32
    return jax.dtypes.canonicalize_dtype(dtype)


def infer_sampling(wavelength, default: str) -> str:
    """`"linear"` if the pixel centres are evenly spaced in λ, `"log"` if in log λ (the
    closer of the two, to 1e-6 or the rounding of the array's dtype), else `default`."""
    values = np.asarray(wavelength)
    wave = values.astype(np.float64)
    if wave.size < 3:
        return default
    eps = np.finfo(values.dtype).eps if np.issubdtype(values.dtype, np.floating) else 0.0
    spreads = {}
    for sampling, axis in (("linear", wave), ("log", np.log(wave))):
        d = np.diff(axis)
        spreads[sampling] = float(np.max(np.abs(d - d.mean())) / abs(d.mean()))
    rounding = 8 * eps * float(wave[-1] / np.min(np.diff(wave)))
    best = min(spreads, key=spreads.get)
    return best if spreads[best] <= max(1e-6, rounding) else default
