"""Fit products: maps in FITS, a PNG of the maps and their errors, and `rubix-eqx fit`."""

import argparse
import json
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ._spaxels import SpaxelFit, STATUS


MAPS = (
    ("log_age", "log10(age/yr)"),
    ("metallicity", "[M/H] (dex)"),
    ("velocity", "V (km/s)"),
    ("dispersion", "sigma (km/s)"),
)


def write_maps_fits(fit: SpaxelFit, path: str | Path, header: dict | None = None) -> None:
    """One image extension per map and error (axes as the cube: NAXIS1 = x), plus
    `STATUS` (see `rubix_eqx.fit.STATUS`), `CHI2` and `SNR`."""
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    for key, value in (header or {}).items():
        primary.header[key] = value
    for code, text in STATUS.items():
        primary.header[f"STATUS{code}"] = text
    hdus = [primary]

    def image(name, values, unit):
        hdu = fits.ImageHDU(np.asarray(values, np.float64).T, name=name)
        hdu.header["BUNIT"] = unit
        return hdu

    for name, unit in MAPS:
        hdus.append(image(name.upper(), getattr(fit.maps, name), unit))
        hdus.append(image(f"{name.upper()}_ERR", getattr(fit, f"{name}_err"), unit))
    hdus.append(image("MASS", fit.maps.flux, "Msun (initial)"))
    hdus.append(fits.ImageHDU(np.asarray(fit.status, np.int16).T, name="STATUS"))
    hdus.append(image("CHI2", fit.chi2, ""))
    hdus.append(image("SNR", fit.snr, ""))
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


def cli_fit(args) -> int:
    """`rubix-eqx fit CUBE --out DIR [--ssp miles] [--telescope PRESET] [--min-snr 3]
    [--solver levenberg_marquardt]`: writes maps.fits, maps.png and fit_summary.json."""
    import jax.numpy as jnp

    from .. import io
    from .._observation import Observation
    from ..ssp import SSPGrid
    from ..telescope import presets, Telescope
    from ._spaxels import fit_spaxels

    parser = argparse.ArgumentParser(prog="rubix-eqx fit")
    parser.add_argument("--ssp", default="miles")
    parser.add_argument(
        "--telescope", default=None, help="preset for the LSF (default: the cube's)"
    )
    parser.add_argument("--min-snr", type=float, default=3.0)
    parser.add_argument("--solver", default="levenberg_marquardt")
    options = parser.parse_args(getattr(args, "fit_args", []) or [])
    cube = io.read_cube(args.cube)
    out = Path(args.out or "fit")
    ssp = (
        SSPGrid.from_hdf5(options.ssp)
        if options.ssp.endswith((".h5", ".hdf5"))
        else SSPGrid.load(options.ssp)
    )
    name = options.telescope or cube.telescope
    if name not in presets():
        raise ValueError(
            f"Telescope {name!r} of the cube is not a preset: pass --telescope with one of {presets()}."
        )
    preset = Telescope.preset(name)
    wave = np.asarray(cube.wavelength, np.float64)
    lsf = np.interp(
        wave, np.asarray(preset.wavelength, np.float64), np.asarray(preset.lsf_fwhm, np.float64)
    )
    telescope = preset.replace(
        spaxel_size=float(cube.spaxel_size), n_x=cube.shape[0], n_y=cube.shape[1],
        wavelength=jnp.asarray(wave, cube.flux.dtype), lsf_fwhm=jnp.asarray(lsf, cube.flux.dtype),
        sampling=cube.wavelength_sampling,
    )  # fmt: skip
    observation = Observation(redshift=float(cube.redshift), ra=cube.ra, dec=cube.dec)
    print(f"fitting {cube.shape[0]}x{cube.shape[1]} spaxels x {cube.shape[2]} wavelengths ...")
    fit = fit_spaxels(
        cube, ssp, telescope, observation, solver=options.solver, min_snr=options.min_snr
    )
    out.mkdir(parents=True, exist_ok=True)
    write_maps_fits(fit, out / "maps.fits", {"REDSHIFT": float(cube.redshift), "TELESCOP": name})
    plot_maps(fit, out / "maps.png", title=f"{name}, z = {float(cube.redshift):g}")
    ok = np.asarray(fit.converged)
    status = np.asarray(fit.status)
    summary = {
        "n_spaxels": int(status.size),
        "status_counts": {STATUS[k]: int(np.sum(status == k)) for k in STATUS},
        "median_reduced_chi2": float(np.median(np.asarray(fit.chi2)[ok])) if ok.any() else None,
        "median_errors": {
            name: float(np.median(np.asarray(getattr(fit, f"{name}_err"))[ok]))
            if ok.any()
            else None
            for name, _ in MAPS
        },
    }
    (out / "fit_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'maps.fits'}, {out / 'maps.png'}, {out / 'fit_summary.json'}")
    return 0
