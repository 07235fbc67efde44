"""The `rubix-eqx` command: `run`, `convert`, `fit`, `telescopes`, `info`.

Progress goes to stderr (one line when a stage starts, one with its time when it ends);
results and the final summary go to stdout. Errors print one line and exit with status 1
(`--debug` shows the full traceback).
"""

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path


class Progress:
    """Stage lines with timings, on stderr."""

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def _print(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.2f} s] {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, key: str | None = None):
        self._print(f"{name} ...")
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[key or name] = dt
        self._print(f"{name}: done in {dt:.2f} s")


def _output_path(directory: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    path = Path(name)
    return path if path.is_absolute() else directory / path


def _run(args) -> int:
    import numpy as np

    from . import _run_config as rc

    progress = Progress()
    with progress.stage("checking config", "check"):
        config = rc.load_config(args.config, args.set or [])
        spec = rc.check_config(config)
    out = Path(args.out or spec.output["directory"])
    paths = {
        key: _output_path(out, spec.output[key])
        for key in ("cube_fits", "cube_hdf5", "quicklook", "summary")
    }
    tel = spec.telescope
    with progress.stage(f"loading SSP grid {spec.ssp!r}", "ssp"):
        ssp = rc.build_ssp(spec.ssp)
    with progress.stage("building pipeline (templates on the working grid)", "pipeline"):
        pipeline = rc.build_pipeline_from(spec, ssp)
    source = (
        "synthetic disk"
        if spec.galaxy["source"] == "synthetic"
        else f"{spec.galaxy['loader']} file"
    )
    with progress.stage(f"building galaxy ({source})", "galaxy"):
        galaxy, galaxy_info = rc.build_galaxy(spec.galaxy, spec.seed)
        observation = rc.build_observation(spec.observation)
    engine = pipeline.engine_for(galaxy.n_particles)
    import jax

    with progress.stage(
        f"computing cube: {galaxy.n_particles} particles -> {tel.n_x}x{tel.n_y} spaxels x "
        f"{tel.n_wave} wavelengths ({engine} engine, incl. compilation)",
        "cube",
    ):
        cube = pipeline(galaxy, observation, key=jax.random.key(spec.seed + 1))
        cube.flux.block_until_ready()
    out.mkdir(parents=True, exist_ok=True)
    if paths["cube_fits"] is not None:
        with progress.stage(f"writing {paths['cube_fits']}", "fits"):
            cube.to_fits(paths["cube_fits"], ssp=ssp, observation=observation)
    if paths["cube_hdf5"] is not None:
        with progress.stage(f"writing {paths['cube_hdf5']}", "hdf5"):
            cube.to_hdf5(paths["cube_hdf5"], ssp=ssp, observation=observation, config=config)
    if paths["quicklook"] is not None:
        from ._maps import truth_maps
        from ._quicklook import quicklook

        with progress.stage(f"truth maps and {paths['quicklook']}", "quicklook"):
            maps = truth_maps(
                galaxy,
                observation,
                tel,
                ssp,
                deposit=pipeline.deposit,
                flux_unit=pipeline.flux_unit,
            )
            quicklook(cube, paths["quicklook"], maps=maps, observation=observation)

    flux = np.asarray(cube.flux, np.float64)
    wave = np.asarray(cube.wavelength, np.float64)
    total = float(np.sum(flux * np.gradient(wave)[None, None, :]))
    diag = {
        k: np.asarray(getattr(cube.diagnostics, k)).item()
        for k in cube.diagnostics.__dataclass_fields__
    }
    from . import __version__

    summary = {
        "rubix_eqx_version": __version__,
        "config": str(args.config),
        "overrides": list(args.set or []),
        "seed": spec.seed,
        "telescope": tel.name,
        "ssp": ssp.name,
        "galaxy": {
            "n_particles": int(galaxy.n_particles),
            "total_initial_mass_msun": float(np.sum(galaxy.mass)),
            **galaxy_info,
        },
        "observation": {k: float(v) for k, v in spec.observation.items()},
        "engine": engine,
        "shape": list(cube.shape),
        "axes": ["x (West)", "y (North)", "wavelength"],
        "flux_unit": cube.unit,
        "wavelength_range_angstrom": [float(wave[0]), float(wave[-1])],
        "total_flux": total,
        "total_flux_unit": f"{cube.flux_unit:g} erg / (s cm2)",
        "diagnostics": diag,
        "outputs": {k: str(v) for k, v in paths.items() if v is not None},
        "seconds": {k: round(v, 3) for k, v in progress.timings.items()},
    }
    summary["galaxy"] = {
        k: v for k, v in summary["galaxy"].items() if isinstance(v, str | int | float | bool)
    }
    if paths["summary"] is not None:
        from ._atomic import atomic_path

        with atomic_path(paths["summary"]) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))

    obs = observation
    lines = [
        f"rubix-eqx run: {args.config} -> {out}/",
        f"  galaxy      {galaxy.n_particles} particles ({source}), "
        f"{float(np.sum(galaxy.mass)):.4g} Msun initial mass",
        f"  observation z = {float(obs.redshift):g}, i = {float(obs.inclination):g} deg, "
        f"PA = {float(obs.position_angle):g} deg, RA/Dec = {obs.ra:g}/{obs.dec:g} deg",
        f'  telescope   {tel.name}: {tel.n_x}x{tel.n_y} spaxels of {tel.spaxel_size:g}", '
        f"{wave[0]:.1f}-{wave[-1]:.1f} A ({tel.n_wave} px, {tel.sampling}); SSP: {ssp.name}",
        f"  cube        shape {tuple(cube.shape)} (x, y, wavelength), unit {cube.unit}",
        f"  total flux  {total:.6g} x {cube.flux_unit:g} erg/s/cm2",
        f"  diagnostics {diag['n_clipped']} particles clipped to the SSP grid "
        f"({100 * diag['clipped_mass_fraction']:.3g}% of mass), {diag['n_outside']} outside "
        f"the field ({100 * diag['outside_mass_fraction']:.3g}% of mass), "
        f"{diag['n_lsf_clipped']} lattice bins with the telescope LSF sharper than the templates",
        f"  time        {time.perf_counter() - progress.start:.2f} s total "
        f"(cube {progress.timings['cube']:.2f} s incl. compilation)",
    ]
    print("\n".join(lines))
    for key, path in paths.items():
        if path is not None:
            print(f"  wrote       {path}")
    return 0


def _convert(args) -> int:
    import numpy as np

    from .galaxy import to_hdf5

    progress = Progress()
    out = Path(args.out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ValueError(f"--out {out}: expected a .h5 or .hdf5 file name.")
    common = {"centre": not args.no_centre, "align": args.align, "radius": args.radius}
    with progress.stage(f"reading {args.sim_file} ({args.loader})", "read"):
        if args.loader == "tng":
            if args.metallicity is not None:
                raise ValueError("--metallicity is for --loader eagle only.")
            from .galaxy._tng import load_tng

            galaxy, info = load_tng(
                args.sim_file,
                args.subhalo_id,
                group_id=args.group_id,
                catalog=args.catalog,
                **common,
            )
        else:
            if args.catalog is not None:
                raise ValueError(
                    "--catalog is for --loader tng only (EAGLE selects by GroupNumber and "
                    "SubGroupNumber)."
                )
            from .galaxy._eagle import load_eagle

            galaxy, info = load_eagle(
                args.sim_file,
                args.group_id,
                args.subhalo_id,
                metallicity=args.metallicity or "smoothed",
                **common,
            )
    with progress.stage(f"writing {out}", "write"):
        to_hdf5(galaxy, out, **info)
    age = np.asarray(galaxy.age)
    z_snap = info["snapshot_redshift"]
    excluded = info.get("n_wind_excluded", info.get("n_unformed_excluded", 0))
    lines = [
        f"rubix-eqx convert: {args.sim_file} -> {out}",
        f"  {galaxy.n_particles} star particles, {float(np.sum(galaxy.mass)):.4g} Msun initial "
        f"mass, ages {age.min():.3g}-{age.max():.3g} Gyr at the snapshot (z = {z_snap:.4g})",
        f"  cosmology: {info['cosmology']}; mass field {info['mass_field']}; {excluded} "
        f"wind/unformed particles excluded; centred: {info['centred']}, "
        f"aligned: {info['aligned']}",
    ]
    print("\n".join(lines))
    return 0


def _fit(args) -> int:
    try:
        from .fit import cli_fit  # pyright: ignore[reportAttributeAccessIssue]
    except ImportError as e:
        raise RuntimeError(
            "`rubix-eqx fit` is not available in this installation: "
            f"rubix_eqx.fit.cli_fit could not be imported ({e})."
        ) from None
    result = cli_fit(args)
    return 0 if result is None else int(result)


def _telescopes(args) -> int:
    from .telescope import presets, Telescope

    print(
        f"{'name':<12} {'spaxel':>7} {'field':>9} {'aperture':>9} {'wavelength (Å)':>18} "
        f"{'n_λ':>5} {'LSF FWHM (Å)':>13}"
    )
    for name in presets():
        t = Telescope.preset(name)
        lsf = f"{float(t.lsf_fwhm.min()):.2f}-{float(t.lsf_fwhm.max()):.2f}"
        print(
            f'{name:<12} {t.spaxel_size:>6g}" {t.n_x:>4}x{t.n_y:<4} {t.aperture:>9} '
            f"{float(t.wavelength[0]):>8.1f}-{float(t.wavelength[-1]):<8.1f} {t.n_wave:>5} "
            f"{lsf:>13}"
        )
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


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="full tracebacks, INFO logging",
    )
    main = argparse.ArgumentParser(
        prog="rubix-eqx", description="Mock IFU cubes of simulated galaxies.", parents=[common]
    )
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="build a cube from a run config",
        description="Build a cube from a run config (schema: docs/configuration.md); writes "
        "cube.fits, cube.h5, quicklook.png and summary.json.",
    )
    run.add_argument("config", help="YAML run config, e.g. configs/default.yaml")
    run.add_argument("--out", help="output directory (default: output.directory of the config)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set galaxy.n_stars=2000 (repeatable)",
    )
    run.set_defaults(func=_run)

    conv = sub.add_parser(
        "convert",
        parents=[common],
        help="simulation snapshot/cutout -> galaxy HDF5",
        description="Read star particles from an IllustrisTNG or EAGLE HDF5 file and write them "
        "in the rubix_eqx galaxy layout (docs/loaders.md).",
    )
    conv.add_argument(
        "sim_file", metavar="SIM_FILE", help="snapshot chunk (e.g. snap_099.0.hdf5) or cutout"
    )
    conv.add_argument("--loader", required=True, choices=("tng", "eagle"))
    conv.add_argument(
        "--subhalo-id", type=int, help="TNG: subhalo index (needs --catalog); EAGLE: SubGroupNumber"
    )
    conv.add_argument(
        "--group-id", type=int, help="TNG: FoF group index (needs --catalog); EAGLE: GroupNumber"
    )
    conv.add_argument(
        "--catalog",
        help="TNG group catalogue (fof_subhalo_tab_099.0.hdf5) for --subhalo-id/--group-id",
    )
    conv.add_argument(
        "--no-centre", action="store_true", help="keep box coordinates and velocities"
    )
    conv.add_argument(
        "--align", action="store_true", help="rotate face-on by the stellar angular momentum"
    )
    conv.add_argument(
        "--radius", type=float, help="kpc, for systemic velocity and angular momentum"
    )
    conv.add_argument(
        "--metallicity", choices=("smoothed", "particle"), help="EAGLE metallicity field"
    )
    conv.add_argument("--out", required=True, help="galaxy HDF5 file to write, e.g. galaxy.h5")
    conv.set_defaults(func=_convert)

    fit = sub.add_parser(
        "fit",
        parents=[common],
        help="fit a cube (rubix_eqx.fit)",
        description="Fit a cube; handled by rubix_eqx.fit.cli_fit(args). Options not "
        "listed here are passed on in args.fit_args.",
    )
    fit.add_argument("cube", help="cube file (FITS or HDF5)")
    fit.add_argument("--out", help="output directory")
    fit.set_defaults(func=_fit)

    sub.add_parser("telescopes", parents=[common], help="list telescope presets").set_defaults(
        func=_telescopes
    )
    sub.add_parser(
        "info", parents=[common], help="versions, devices, cache and presets"
    ).set_defaults(func=_info)
    return main


def main(argv=None) -> int:
    main_parser = parser()
    args, extra = main_parser.parse_known_args(argv)
    if args.command == "fit":
        args.fit_args = extra
    elif extra:
        main_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.INFO if debug else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("rubix-eqx: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line unless --debug
        if debug:
            raise
        from ._config_checks import ConfigError

        lines = str(e).strip().splitlines() or [""]
        prefix = "" if isinstance(e, ConfigError) else f"{type(e).__name__}: "
        print(f"rubix-eqx: error: {prefix}{lines[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
