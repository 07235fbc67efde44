"""Truth maps beside the cube (FITS image extensions, HDF5 groups): what is written for each
map, the checks, and the `Maps` rebuilt on reading. Layout: docs/api.md, "Truth maps".

Names: `TRUE_*` for the particles' maps, `OBS_*` for the seeing-convolved ones. SimSpin
writes `RAW_FLUX`, `RAW_VEL`, `RAW_DISP`, `RAW_AGE`, `RAW_Z`, but its `RAW_AGE` is in Gyr
and `RAW_Z` in Z/Z☉ (linear), where ours are log10(age/yr) and [M/H]: the same names
would let a SimSpin script read different quantities without an error, so ours differ.
"""

import jax.numpy as jnp
import numpy as np

from .._maps import Maps
from ._header import bunit


# (argument of the writers, FITS prefix, key of `read_truth`'s dict)
KINDS = (("truth", "TRUE"), ("observed_truth", "OBS"))
# Maps field → (FITS suffix, description); the weight map's suffix is FLUX or MASS.
FIELDS = {
    "flux": (None, None),
    "velocity": ("VEL", "mean line-of-sight velocity (positive = receding)"),
    "dispersion": ("DISP", "line-of-sight velocity dispersion"),
    "h3": ("H3", "Gauss-Hermite h3 = skewness / (4 sqrt 3) of the LOSVD"),
    "h4": ("H4", "Gauss-Hermite h4 = excess kurtosis / (8 sqrt 6) of the LOSVD"),
    "log_age": ("AGE", "log10(age / yr), weighted mean"),
    "metallicity": ("MH", "[M/H] = log10(Z / Zsun), weighted mean"),
}
WEIGHT_SUFFIX = {"light": "FLUX", "mass": "MASS"}
WEIGHT_TEXT = {
    "light": "flux over the telescope's wavelength range (light weights)",
    "mass": "initial stellar mass (mass weights)",
}


def units(weighting: str, flux_unit: float) -> dict[str, str | None]:
    """`BUNIT` (FITS) / `units` (HDF5) per field; `None` for dimensionless h3, h4. The
    light weight is a band-integrated flux in `flux_unit` erg s⁻¹ cm⁻² (the cube's unit
    times Angstrom), e.g. `10**(-20)*erg/s/cm**2`."""
    weight = bunit(flux_unit).removesuffix("/Angstrom") if weighting == "light" else "solMass"
    return {
        "flux": weight,
        "velocity": "km/s",
        "dispersion": "km/s",
        "h3": None,
        "h4": None,
        "log_age": "dex(yr)",
        "metallicity": "dex",
    }


def extension_names(prefix: str, weighting: str) -> dict[str, str]:
    """Maps field → extension name, e.g. `flux` → `TRUE_FLUX` (`TRUE_MASS` by mass)."""
    return {
        field: f"{prefix}_{WEIGHT_SUFFIX[weighting] if suffix is None else suffix}"
        for field, (suffix, _) in FIELDS.items()
    }


def checked(maps, argument: str, shape: tuple[int, int]) -> Maps:
    """`maps` if it is light- or mass-weighted `Maps` on the cube's spaxels."""
    if not isinstance(maps, Maps):
        raise TypeError(
            f"`{argument}` must be a `rubix_eqx.Maps` (from `rubix_eqx.truth_maps`); got "
            f"{type(maps).__name__}."
        )
    if maps.weighting not in WEIGHT_SUFFIX:
        raise ValueError(
            f"`{argument}` must be light- or mass-weighted truth maps; got `Maps.weighting` "
            f"= {maps.weighting!r} (fitted maps are not the particles' truth)."
        )
    got = tuple(maps.flux.shape)
    if got != shape:
        raise ValueError(f"`{argument}` has spaxels (n_x, n_y) = {got}; the cube has {shape}.")
    return maps


def nan_outside(maps, fields) -> dict[str, np.ndarray]:
    """Each of `fields` of `maps` as a NumPy (n_x, n_y) array of its dtype, NaN where
    `maps.mask` is False (as the files store them)."""
    empty = ~np.asarray(maps.mask, bool)
    out = {}
    for field in fields:
        value = np.array(getattr(maps, field), copy=True)
        value[empty] = np.nan
        out[field] = value
    return out


def zero_outside(values: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    """The maps read from a file as JAX arrays, 0 where `mask` is False (as in memory)."""
    fields = {}
    for field, value in values.items():
        value = np.array(value, copy=True)
        value[~mask] = 0
        fields[field] = jnp.asarray(value)
    return fields


def arrays(maps: Maps) -> dict[str, np.ndarray]:
    """Each map as a NumPy (n_x, n_y) array of its dtype, NaN where `mask` is False."""
    return nan_outside(maps, FIELDS)


def scalar(value):
    """`n_clipped` / `clipped_mass_fraction` as a NumPy scalar, or `None`."""
    return None if value is None else np.asarray(value)[()]


def rebuild(values: dict[str, np.ndarray], weighting: str, n_clipped, clipped_fraction,
            where: str) -> Maps:  # fmt: skip
    """`Maps` from (n_x, n_y) arrays with NaN on the empty spaxels (the weight map's NaNs
    define `mask`; the other maps are 0 there, as `truth_maps` returns them)."""
    if weighting not in WEIGHT_SUFFIX:
        raise ValueError(f"{where}: truth weighting {weighting!r} must be 'light' or 'mass'.")
    shape = values["flux"].shape
    for field, value in values.items():
        if value.ndim != 2 or value.shape != shape:
            raise ValueError(
                f"{where}: map `{field}` has shape {value.shape}; the weight map has {shape}."
            )
    mask = np.isfinite(values["flux"])
    if isinstance(clipped_fraction, float):  # a FITS keyword: in the maps' dtype
        clipped_fraction = np.asarray(clipped_fraction, values["flux"].dtype)
    return Maps(
        **zero_outside(values, mask),
        mask=jnp.asarray(mask),
        weighting=weighting,
        n_clipped=None if n_clipped is None else jnp.asarray(n_clipped, jnp.int32),
        clipped_mass_fraction=None if clipped_fraction is None else jnp.asarray(clipped_fraction),
    )
