"""A one-page PNG overview of a cube (matplotlib, Agg; no pyplot state)."""

from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from ._cube import Cube


FIGSIZE = (12.0, 7.5)  # inches
DPI = 100  # → 1200 × 750 pixels
V_BAND = (5000.0, 5800.0)  # Angstrom, observed: a V-band-like window


def band_window(wavelength: np.ndarray, band: tuple[float, float] = V_BAND) -> tuple[float, float]:
    """`band` if the cube covers part of it, else the window of the same width closest
    to it inside the cube's range (the whole range if narrower)."""
    lo, hi = float(wavelength[0]), float(wavelength[-1])
    if band[1] > lo and band[0] < hi:
        return max(band[0], lo), min(band[1], hi)
    width = band[1] - band[0]
    if hi - lo <= width:
        return lo, hi
    return (lo, lo + width) if band[1] <= lo else (hi - width, hi)


def _pixel_widths(wave: np.ndarray) -> np.ndarray:
    edges = np.concatenate(
        [
            [1.5 * wave[0] - 0.5 * wave[1]],
            0.5 * (wave[1:] + wave[:-1]),
            [1.5 * wave[-1] - 0.5 * wave[-2]],
        ]
    )
    return np.diff(edges)


HALPHA_AIR = 6562.80  # Å
HALPHA_HALF_WIDTH = 8.0  # Å (rest): the line window
HALPHA_SIDEBANDS = (30.0, 50.0)  # Å (rest) either side: the continuum, clear of [N II]


def halpha_image(flux, wave, redshift: float) -> np.ndarray | None:
    """Hα flux per spaxel (`flux` units × Å) from a cube: the sum over the observed window
    Hα·(1+z) ± 8 Å·(1+z) minus the continuum, the mean of the sidebands 30–50 Å·(1+z)
    either side (clear of [N II] 6548/6583), as narrow-band imaging does; `None` if the
    cube does not cover the sidebands. NumPy; flux (n_x, n_y, n_wave), wave (n_wave,) Å."""
    centre, scale = HALPHA_AIR * (1 + redshift), 1 + redshift
    lo, hi = (d * scale for d in HALPHA_SIDEBANDS)
    if wave[0] > centre - hi or wave[-1] < centre + hi:
        return None
    dlam = _pixel_widths(wave)
    offset = np.abs(wave - centre)
    line = offset <= HALPHA_HALF_WIDTH * scale
    side = (offset >= lo) & (offset <= hi)
    continuum = np.mean(flux[:, :, side], axis=2)
    return np.sum((flux - continuum[:, :, None])[:, :, line] * dlam[line], axis=2)


def quicklook(
    cube: Cube,
    path: str | Path | None = None,
    *,
    maps=None,
    observation=None,
    title: str | None = None,
    halpha: bool = False,
):
    """A quicklook figure of `cube`: white-light image, V-band-like image (5000–5800 Å
    observed, or the closest window the cube covers), light-weighted line-of-sight
    velocity and dispersion maps (from `maps`, if given), and the spectrum of the central
    spaxel. Images are shown with North up and East left (x = West to the right).

    **Arguments:**

    - `cube`: a [`rubix_eqx.Cube`][].
    - `path`: if given, the PNG is written there (atomically); 1200 × 750 pixels.
    - `maps`: a [`rubix_eqx.Maps`][] from [`rubix_eqx.truth_maps`][], for the V and σ panels
      (left blank with a note otherwise).
    - `observation`: the [`rubix_eqx.Observation`][], for inclination and position angle
      in the title.
    - `title`: replaces the default title (telescope, z, i, PA).
    - `halpha`: add a continuum-subtracted Hα image ([`rubix_eqx.halpha_image`][]; for cubes with
      gas emission lines), if the cube covers Hα at its redshift.

    **Returns:** the `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    flux = np.asarray(cube.flux, np.float64)
    wave = np.asarray(cube.wavelength, np.float64)
    n_x, n_y, _ = flux.shape
    dlam = _pixel_widths(wave)
    half_x, half_y = n_x * cube.spaxel_size / 2, n_y * cube.spaxel_size / 2
    extent = (half_x, -half_x, -half_y, half_y)  # East (-x) left, North (+y) up
    unit = f"{cube.flux_unit:g} erg/s/cm²"

    if title is None:
        title = f"{cube.telescope}   z = {float(cube.redshift):.4g}"
        if observation is not None:
            title += (
                f"   i = {float(observation.inclination):.4g}°"
                f"   PA = {float(observation.position_angle):.4g}°"
            )
    line_image = halpha_image(flux, wave, float(cube.redshift)) if halpha else None
    n_col = 4 if line_image is None else 5
    fig = Figure(figsize=(FIGSIZE[0] * n_col / 4, FIGSIZE[1]), dpi=DPI, layout="constrained")
    fig.suptitle(title)
    grid = fig.add_gridspec(2, n_col)

    def image(ax, data, label, cmap="viridis", symmetric=False, mask=None):
        data = np.where(mask, data, np.nan) if mask is not None else data
        finite = data[np.isfinite(data)]
        if symmetric:
            v = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
            vmin, vmax = -(v or 1.0), v or 1.0
        else:
            vmin, vmax = (
                (float(np.percentile(finite, 1)), float(np.percentile(finite, 99.5)))
                if finite.size
                else (0.0, 1.0)
            )
            if not vmax > vmin:
                vmin, vmax = vmin - 0.5, vmax + 0.5
        shown = ax.imshow(data.T, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xlabel("ΔRA (arcsec)")
        ax.set_ylabel("ΔDec (arcsec)")
        fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
        return shown

    def log_image(data):
        positive = data > 0
        floor = data[positive].min() if positive.any() else 1.0
        return np.log10(np.where(positive, data, floor))

    white = np.sum(flux * dlam, axis=2)
    ax = fig.add_subplot(grid[0, 0])
    image(ax, log_image(white), f"log10 flux ({unit})", cmap="magma")
    ax.set_title("white light")

    lo, hi = band_window(wave)
    band = (wave >= lo) & (wave <= hi)
    v_image = np.sum((flux * dlam)[:, :, band], axis=2)
    ax = fig.add_subplot(grid[0, 1])
    image(ax, log_image(v_image), f"log10 flux ({unit})", cmap="magma")
    ax.set_title(f"V-like: {lo:.0f}–{hi:.0f} Å")

    for col, (name, label, cmap, symmetric) in enumerate(
        (
            ("velocity", "light-weighted V (km/s)", "RdBu_r", True),
            ("dispersion", "light-weighted σ (km/s)", "viridis", False),
        ),
        start=2,
    ):
        ax = fig.add_subplot(grid[0, col])
        if maps is None:
            ax.text(0.5, 0.5, "no truth maps", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        mask = np.asarray(maps.mask)
        image(ax, np.asarray(getattr(maps, name), np.float64), label, cmap, symmetric, mask)
        ax.set_title(f"{label.split()[1]} of the particles")

    if line_image is not None:
        ax = fig.add_subplot(grid[0, 4])
        image(ax, log_image(line_image), f"log10 Hα flux ({unit})", cmap="magma")
        ax.set_title("Hα − continuum")

    ix, iy = n_x // 2, n_y // 2
    ax = fig.add_subplot(grid[1, :])
    ax.plot(wave, flux[ix, iy], lw=0.7, color="k")
    ax.set_xlim(wave[0], wave[-1])
    ax.set_xlabel("observed wavelength (Å)")
    ax.set_ylabel(f"flux ({cube.flux_unit:g} erg s$^{{-1}}$ cm$^{{-2}}$ Å$^{{-1}}$)")
    ax.set_title(f"central spaxel (x, y) = ({ix}, {iy}); V-like window shaded")
    ax.axvspan(lo, hi, color="0.9", zorder=0)

    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    return fig
