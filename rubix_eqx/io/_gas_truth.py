"""Gas truth maps beside the cube: FITS image extensions `GAS_*` and the HDF5 group
`gas_truth` (layout: docs/api.md, "Truth maps"), written and read back exactly.

Each map is (n_y, n_x) in FITS (NaN where `mask` is False), with `BUNIT` and the cube's
celestial WCS; in HDF5 (n_x, n_y) with a `units` attribute and the dataset `mask`.
"""

import jax.numpy as jnp
import numpy as np

from .._gas_maps import GasMaps
from ._header import bunit
from ._truth import nan_outside, zero_outside


GROUP = "gas_truth"  # HDF5 group; the key of `read_truth`'s dict
# GasMaps field → (FITS extension, description)
FIELDS = {
    "halpha": ("GAS_HA", "H-alpha flux after dust"),
    "halpha_intrinsic": ("GAS_HA0", "H-alpha flux before dust"),
    "velocity": ("GAS_VEL", "H-alpha-weighted mean line-of-sight gas velocity"),
    "dispersion": ("GAS_DISP", "H-alpha-weighted gas dispersion (no instrument)"),
    "log_nii_halpha": ("GAS_N2HA", "log10 [NII]6583 / H-alpha after dust"),
    "log_oiii_hbeta": ("GAS_O3HB", "log10 [OIII]5007 / H-beta after dust"),
    "log_sii_halpha": ("GAS_S2HA", "log10 ([SII]6716+6731) / H-alpha after dust"),
    "balmer_decrement": ("GAS_BD", "H-alpha / H-beta after dust"),
    "a_v": ("GAS_AV", "H-alpha-weighted A_V in front of the star-forming gas"),
}


def units(flux_unit: float) -> dict[str, str | None]:
    """`BUNIT` / `units` per field (`None`: dimensionless)."""
    flux = bunit(flux_unit).removesuffix("/Angstrom")
    return {
        "halpha": flux, "halpha_intrinsic": flux, "velocity": "km/s", "dispersion": "km/s",
        "log_nii_halpha": "dex", "log_oiii_hbeta": "dex", "log_sii_halpha": "dex",
        "balmer_decrement": None, "a_v": "mag",
    }  # fmt: skip


def checked(maps, argument: str, shape: tuple[int, int]) -> GasMaps:
    if not isinstance(maps, GasMaps):
        raise TypeError(
            f"`{argument}` must be a `rubix_eqx.GasMaps` (from `rubix_eqx.gas_truth_maps`); "
            f"got {type(maps).__name__}."
        )
    got = tuple(maps.halpha.shape)
    if got != shape:
        raise ValueError(f"`{argument}` has spaxels (n_x, n_y) = {got}; the cube has {shape}.")
    return maps


def arrays(maps: GasMaps) -> dict[str, np.ndarray]:
    """Each map as an (n_x, n_y) NumPy array, NaN where `mask` is False."""
    return nan_outside(maps, FIELDS)


def rebuild(values: dict[str, np.ndarray], where: str) -> GasMaps:
    """`GasMaps` from (n_x, n_y) arrays with NaN on the spaxels without star-forming gas."""
    shape = values["halpha"].shape
    for field, value in values.items():
        if value.ndim != 2 or value.shape != shape:
            raise ValueError(
                f"{where}: gas map `{field}` has shape {value.shape}; `halpha` has {shape}."
            )
    mask = np.isfinite(values["halpha_intrinsic"])
    return GasMaps(**zero_outside(values, mask), mask=jnp.asarray(mask))


def fits_hdus(maps: GasMaps, flux_unit: float, wcs: dict, put, write_keywords) -> list:
    """One image HDU per gas map, (n_y, n_x), with the celestial WCS `wcs`."""
    from astropy.io import fits

    unit_of = units(flux_unit)
    hdus = []
    for field, value in arrays(maps).items():
        name, text = FIELDS[field]
        hdu = fits.ImageHDU(data=np.ascontiguousarray(value.T), name=name)
        if unit_of[field] is not None:
            put(hdu.header, "BUNIT", unit_of[field], "")
        write_keywords(hdu.header, wcs)
        hdu.header.add_comment(f"gas truth: {text}; NaN where no star-forming gas")
        hdus.append(hdu)
    return hdus


def read_fits(hdus, path, native) -> GasMaps | None:
    """The `GAS_*` extensions of an open FITS file, or `None` if it has none."""
    names = [hdu.name for hdu in hdus]
    present = [ext for ext, _ in FIELDS.values() if ext in names]
    if not present:
        return None
    missing = [ext for ext, _ in FIELDS.values() if ext not in names]
    if missing:
        raise ValueError(f"{path}: gas truth extensions {missing} are missing.")
    values = {}
    for field, (ext, _) in FIELDS.items():
        data = hdus[ext].data
        if data is None or data.ndim != 2:
            got = None if data is None else data.shape
            raise ValueError(f"{path}: `{ext}` must be a 2-D image; got shape {got}.")
        values[field] = native(data).T
    return rebuild(values, f"{path}: `GAS_*`")


def write_group(group, maps: GasMaps, flux_unit: float) -> None:
    unit_of = units(flux_unit)
    for field, value in arrays(maps).items():
        group.create_dataset(field, data=value).attrs["units"] = unit_of[field] or "1"
    group.create_dataset("mask", data=np.asarray(maps.mask, bool))


def read_group(group, where: str) -> GasMaps:
    missing = [n for n in (*FIELDS, "mask") if n not in group]
    if missing:
        raise ValueError(f"{where}: missing datasets {missing}.")
    values = {field: np.asarray(group[field][()]) for field in FIELDS}
    if not np.array_equal(np.asarray(group["mask"][()]), np.isfinite(values["halpha_intrinsic"])):
        raise ValueError(f"{where}: dataset `mask` differs from the finite spaxels of the maps.")
    return rebuild(values, where)
