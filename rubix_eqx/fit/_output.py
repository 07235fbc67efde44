"""Fit products: maps in FITS (with the cube's celestial WCS) and a PNG of the maps and
their errors. The `rubix-eqx fit` command that writes them is in `rubix_eqx.cli`."""

from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from .._cube import Cube
from .._units import SOLAR_METALLICITY
from ..ssp import SSPGrid
from ._mixture import MixtureFit
from ._spaxels import SpaxelFit, STATUS


MAPS = (
    ("log_age", "log10(age/yr)"),
    ("metallicity", "[M/H] (dex)"),
    ("velocity", "V (km/s)"),
    ("dispersion", "sigma (km/s)"),
)


def write_maps_fits(
    fit: SpaxelFit,
    path: str | Path,
    header: dict | None = None,
    *,
    cube: Cube | None = None,
    bin_index=None,
    mixture: MixtureFit | None = None,
    ssp: SSPGrid | None = None,
) -> None:
    """Write the maps of a spaxel fit as FITS: one image extension per map and error
    (`LOG_AGE`, `LOG_AGE_ERR`, `METALLICITY`, ..., `H3`, `H4` and their errors — 0 for a
    Gaussian LOSVD; axes as the cube: NAXIS1 = x), plus `MASS`, `STATUS` (see
    `rubix_eqx.fit.STATUS`, also listed in the primary header as `STATUS0`...), `CHI2`,
    `SNR` and, with `bin_index`, `BIN`.

    **Arguments:**

    - `fit`: a [`rubix_eqx.fit.SpaxelFit`][].
    - `path`: the file (written atomically).
    - `header`: keywords for the primary header (e.g. provenance); names of up to 8
      characters, values FITS can hold (long strings continue over several cards).
    - `cube`: the fitted [`rubix_eqx.Cube`][]: every image then carries its celestial WCS,
      as our cube files do (RA---TAN/DEC--TAN, `CD1_1 = −spaxel/3600`,
      `CD2_2 = +spaxel/3600`, CRPIX at the field centre, CRVAL = the cube's RA/Dec).
    - `bin_index`: the Voronoi bin of each spaxel (`rubix_eqx.fit.VoronoiBins.bin_index`,
      −1 not binned), written as the `BIN` image.
    - `mixture`: a [`rubix_eqx.fit.MixtureFit`][] (its `kinematics` is `fit`), with the
      `ssp` it was fitted with: adds the mean-population maps `LOG_AGE_LW`,
      `METALLICITY_LW` (light-weighted), `LOG_AGE_MW`, `METALLICITY_MW` (mass-weighted),
      `MIX_CHI2`, `MIX_CONV` (1: the weights converged), and the weights per spaxel:
      `WEIGHTS` (initial mass, M☉) and `LIGHT_WEIGHTS` (fractions summing to 1), each an
      image with NAXIS1 = x, NAXIS2 = y, NAXIS3 = age, NAXIS4 = metallicity
      (`data[k, j, y, x]` in astropy), the grid in header cards `LOGAGEj` (log10 age/yr,
      j = 1 … n_age) and `MHk` ([M/H], k = 1 … n_Z).
    """
    from astropy.io import fits

    from ..io._header import celestial_keywords, exact, put, write_keywords

    primary = fits.PrimaryHDU()
    for key, value in (header or {}).items():
        put(primary.header, key, *(value if isinstance(value, tuple) else (value,)))
    for code, text in STATUS.items():
        primary.header[f"STATUS{code}"] = text
    hdus = [primary]
    sky = None
    if cube is not None:
        n_x, n_y = cube.flux.shape[:2]
        if np.shape(fit.status) != (n_x, n_y):
            raise ValueError(
                f"`write_maps_fits(cube=...)`: the maps are {np.shape(fit.status)} spaxels but "
                f"the cube has {(n_x, n_y)}."
            )
        sky = celestial_keywords(n_x, n_y, exact(cube.spaxel_size), exact(cube.ra), exact(cube.dec))
        sky = {"WCSAXES": 2, **sky, "RADESYS": "ICRS"}

    def add(hdu, unit):
        if unit is not None:
            hdu.header["BUNIT"] = unit
        if sky is not None:
            write_keywords(hdu.header, sky)
        hdus.append(hdu)

    def image(name, values, unit):
        add(fits.ImageHDU(np.asarray(values, np.float64).T, name=name), unit)

    for name, unit in MAPS:
        image(name.upper(), getattr(fit.maps, name), unit)
        image(f"{name.upper()}_ERR", getattr(fit, f"{name}_err"), unit)
    for name in ("h3", "h4"):
        image(name.upper(), getattr(fit.maps, name), "")
        image(f"{name.upper()}_ERR", getattr(fit, f"{name}_err"), "")
    image("MASS", fit.maps.flux, "Msun (initial)")
    add(fits.ImageHDU(np.asarray(fit.status, np.int16).T, name="STATUS"), None)
    image("CHI2", fit.chi2, "")
    image("SNR", fit.snr, "")
    if bin_index is not None:
        add(fits.ImageHDU(np.asarray(bin_index, np.int32).T, name="BIN"), None)
    if mixture is not None:
        if ssp is None:
            raise ValueError("`write_maps_fits(mixture=...)` needs the `ssp` of the fit.")
        for name, values in (("LOG_AGE_LW", mixture.log_age), ("LOG_AGE_MW", mixture.log_age_mass)):
            image(name, values, "log10(age/yr)")
        for name, values in (("METALLICITY_LW", mixture.metallicity),
                             ("METALLICITY_MW", mixture.metallicity_mass)):  # fmt: skip
            image(name, values, "[M/H] (dex)")
        image("MIX_CHI2", mixture.chi2, "")
        add(fits.ImageHDU(np.asarray(mixture.converged, np.int16).T, name="MIX_CONV"), None)
        log_age = np.log10(np.asarray(ssp.age, np.float64)) + 9
        mh = np.log10(np.asarray(ssp.metallicity, np.float64) / SOLAR_METALLICITY)
        for name, values, unit in (("WEIGHTS", mixture.weights, "Msun (initial)"),
                                   ("LIGHT_WEIGHTS", mixture.light_weights, "")):  # fmt: skip
            # (n_x, n_y, n_age, n_Z) → astropy's (n_Z, n_age, n_y, n_x): NAXIS1 = x
            hdu = fits.ImageHDU(np.asarray(values, np.float64).transpose(3, 2, 1, 0), name=name)
            hdu.header["BUNIT"] = unit
            for j, value in enumerate(log_age, 1):
                hdu.header[f"LOGAGE{j}"] = (float(value), "log10(age/yr) at NAXIS3 = j")
            for k, value in enumerate(mh, 1):
                hdu.header[f"MH{k}"] = (float(value), "[M/H] at NAXIS4 = k")
            hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def plot_maps(fit: SpaxelFit, path: str | Path, title: str = "") -> None:
    """A PNG: age, [M/H], V, σ (top) and their 1σ errors (bottom); unconverged spaxels blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.asarray(fit.converged).T
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5), constrained_layout=True)
    for column, (name, label) in enumerate(MAPS):
        for row, (values, suffix) in enumerate(
            ((getattr(fit.maps, name), ""), (getattr(fit, f"{name}_err"), " error"))
        ):
            data = np.where(ok, np.asarray(values).T, np.nan)
            cmap = "RdBu_r" if name == "velocity" and row == 0 else "viridis"
            im = axes[row, column].imshow(data, origin="lower", cmap=cmap)
            axes[row, column].set_title(label + suffix)
            axes[row, column].set_xlabel("x (spaxel)")
            axes[row, column].set_ylabel("y (spaxel)")
            fig.colorbar(im, ax=axes[row, column], shrink=0.8)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
