"""Warnings of the simulation loaders."""

import warnings


class MassFallbackWarning(UserWarning):
    """A loader found no initial (birth) stellar masses and used the current masses.

    SSP spectra are normalised per M☉ formed, so a galaxy built from current masses is
    too faint by the mass its stars have returned to the gas: for old populations about
    28 % of the initial mass with the Salpeter E-MILES grid (its remaining mass fraction
    is ≈ 0.72 at 6–10 Gyr), more for a Chabrier IMF.
    The loader's info dict (and so the galaxy files `rubix-eqx convert` writes) records
    it: `mass_is_initial = False`, `mass_field` and `mass_fallback`.
    """


def record_mass_fallback(info: dict, path, wanted: str, used: str, *, stacklevel: int = 3):
    """Fill the mass provenance of `info`; warn if `used` is not the initial mass `wanted`."""
    info["mass_field"] = used
    info["mass_is_initial"] = used == wanted
    if used == wanted:
        return
    message = (
        f"{path}: no `PartType4/{wanted}` (initial stellar mass); using the current mass "
        f"`{used}` instead. SSP spectra are per M☉ formed, so the stars will be too faint "
        "by the mass they have lost (≈ 28 % for old populations)."
    )
    info["mass_fallback"] = message
    warnings.warn(message, MassFallbackWarning, stacklevel=stacklevel + 1)
