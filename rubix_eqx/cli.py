"""The `rubix-eqx` command."""

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _run(args) -> int:
    import numpy as np

    from ._run_config import build_pipeline, load_config

    config = load_config(args.config, args.set or [])
    out = Path(args.out or (config.get("output") or {}).get("directory", "out"))
    t0 = time.perf_counter()
    pipeline, galaxy, observation = build_pipeline(config)
    t_build = time.perf_counter() - t0
    print(f"galaxy: {galaxy.n_particles} particles; telescope: {pipeline.telescope.name} "
          f"{pipeline.telescope.n_x}x{pipeline.telescope.n_y} spaxels x {pipeline.telescope.n_wave} "
          f"wavelengths; SSP: {pipeline.ssp.name}")  # fmt: skip
    t0 = time.perf_counter()
    import jax

    seed = int(config.get("seed", 0))
    cube = pipeline(galaxy, observation, key=jax.random.key(seed + 1))
    cube.flux.block_until_ready()
    t_run = time.perf_counter() - t0
    flux = np.asarray(cube.flux, np.float64)
    wave = np.asarray(cube.wavelength, np.float64)
    total = float(np.sum(flux * np.gradient(wave)[None, None, :]))
    diag = {k: float(getattr(cube.diagnostics, k)) for k in cube.diagnostics.__dataclass_fields__}
    summary = {
        "shape": list(cube.shape),
        "flux_unit": cube.unit,
        "wavelength_range_angstrom": [float(wave[0]), float(wave[-1])],
        "total_flux": total,
        "total_flux_unit": f"{cube.flux_unit:g} erg / (s cm2)",
        "build_seconds": t_build,
        "run_seconds": t_run,
        "diagnostics": diag,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"cube: shape {tuple(cube.shape)} (x, y, wavelength), unit {cube.unit}, "
          f"{wave[0]:.1f}-{wave[-1]:.1f} Å")  # fmt: skip
    print(f"total flux: {total:.6g} × {cube.flux_unit:g} erg s⁻¹ cm⁻²")
    print(f"run time: {t_run:.2f} s (setup {t_build:.2f} s, including compilation)")
    print(f"diagnostics: {diag['n_clipped']:.0f} particles clipped to the SSP grid "
          f"({100 * diag['clipped_mass_fraction']:.3g}% of mass), {diag['n_outside']:.0f} outside the field "
          f"({100 * diag['outside_mass_fraction']:.3g}% of mass), {diag['n_lsf_clipped']:.0f} lattice "
          "bins where the telescope LSF is sharper than the templates")  # fmt: skip
    print(f"wrote {out / 'summary.json'}")
    return 0


def _telescopes(args) -> int:
    from .telescope import presets, Telescope

    print(f"{'name':<12} {'spaxel':>7} {'field':>9} {'aperture':>9} {'wavelength (Å)':>18} {'n_λ':>5} "
          f"{'LSF FWHM (Å)':>13}")  # fmt: skip
    for name in presets():
        t = Telescope.preset(name)
        lsf = f"{float(t.lsf_fwhm.min()):.2f}-{float(t.lsf_fwhm.max()):.2f}"
        print(f"{name:<12} {t.spaxel_size:>6g}\" {t.n_x:>4}x{t.n_y:<4} {t.aperture:>9} "
              f"{float(t.wavelength[0]):>8.1f}-{float(t.wavelength[-1]):<8.1f} {t.n_wave:>5} {lsf:>13}")  # fmt: skip
    return 0


def _info(args) -> int:
    import jax

    from . import __version__
    from .ssp import cache_dir
    from .telescope import preset_dir, presets

    print(f"rubix_eqx {__version__}; jax {jax.__version__}; devices: {jax.devices()}")
    print(f"SSP cache: {cache_dir()}")
    print(f"telescope presets ({preset_dir()}): {', '.join(presets())}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rubix-eqx", description="Mock IFU cubes of simulated galaxies.")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build a cube from a run config")
    run.add_argument("config", help="YAML run config, e.g. configs/default.yaml")
    run.add_argument("--out", help="output directory (default: output.directory of the config)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    run.set_defaults(func=_run)
    sub.add_parser("telescopes", help="list telescope presets").set_defaults(func=_telescopes)
    sub.add_parser("info", help="versions, devices, cache and presets").set_defaults(func=_info)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except Exception as e:  # one-line error unless --debug
        if args.debug:
            raise
        print(f"rubix-eqx: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
