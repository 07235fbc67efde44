"""The `rubix-eqx` command: `run`, `convert`, `fit`, `survey`, `telescopes`, `info`,
`--version`.

Progress goes to stderr (one line when a stage starts, one with its time when it ends;
`fit` adds a progress bar over its batches of spaxels); results and the final summary go
to stdout. Errors print one line and exit with status 1
(`--debug` shows the full traceback).
"""

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path


def gas_summary(maps, flux_unit: float) -> dict:
    """Totals of the gas truth maps for the run summary (empty without them)."""
    if maps is None:
        return {}
    import numpy as np

    halpha, halpha0 = np.asarray(maps.halpha, np.float64), np.asarray(maps.halpha_intrinsic)
    return {
        "halpha_flux": float(halpha.sum()),
        "halpha_flux_intrinsic": float(np.sum(halpha0)),
        "halpha_flux_unit": f"{flux_unit:g} erg / (s cm2)",
        "halpha_weighted_a_v_mag": float(np.sum(halpha0 * np.asarray(maps.a_v)) / halpha0.sum())
        if halpha0.sum() > 0
        else 0.0,
    }


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

    from . import config as rc

    progress = Progress()
    with progress.stage("checking config", "check"):
        config = rc.load_config(args.config, args.set or [])
        spec = rc.check_config(config)
    out = Path(args.out or spec.output["directory"])
    paths = {
        key: _output_path(out, spec.output[key])
        for key in ("cube_fits", "cube_hdf5", "quicklook", "summary")
    }
    with progress.stage(f"loading SSP grid {spec.ssp!r}", "ssp"):
        ssp = rc.build_ssp(spec.ssp)
    with progress.stage("building pipeline (templates on the working grid)", "pipeline"):
        pipeline = rc.build_pipeline_from(spec, ssp)
    tel = pipeline.telescope  # cropped, if the config asks for it
    source = (
        "synthetic disk"
        if spec.galaxy["source"] == "synthetic"
        else f"{spec.galaxy['loader']} file"
    )
    with progress.stage(f"building galaxy ({source})", "galaxy"):
        galaxy, galaxy_info = rc.build_galaxy(spec.galaxy, spec.seed)
        observation = rc.build_observation(spec.observation)
    gas = None
    if spec.gas is not None:
        with progress.stage(f"building gas ({spec.gas['source']})", "gas"):
            gas = rc.build_gas(spec.gas, spec.galaxy, spec.seed)
    engine = pipeline.engine_for(galaxy.n_particles)
    import jax

    with progress.stage(
        f"computing cube: {galaxy.n_particles} particles"
        f"{'' if gas is None else f' + {gas.n_particles} gas elements'} -> "
        f"{tel.n_x}x{tel.n_y} spaxels x "
        f"{tel.n_wave} wavelengths ({engine} engine, incl. compilation)",
        "cube",
    ):
        cube = pipeline(galaxy, observation, gas=gas, key=jax.random.key(spec.seed + 1))
        cube.flux.block_until_ready()
    out.mkdir(parents=True, exist_ok=True)
    maps = observed_maps = None
    if any(paths[k] is not None for k in ("cube_fits", "cube_hdf5", "quicklook")):
        from ._maps import truth_maps
        from ._observed_maps import observed_truth_maps
        from ._stages._deposit import AbstractDeposit
        from ._stages._psf import PSFConvolution

        with progress.stage("truth maps (and seeing-convolved, with a PSF)", "truth"):
            maps = truth_maps(
                galaxy,
                observation,
                tel,
                ssp,
                deposit=pipeline.stage(AbstractDeposit),
                flux_unit=pipeline.flux_unit,
            )
            psf = pipeline.stage(PSFConvolution)
            if psf is not None:
                observed_maps = observed_truth_maps(maps, tel, psf=psf)
    truth = {"truth": maps, "observed_truth": observed_maps}  # TRUE_*, OBS_* in the files
    if maps is not None and gas is not None and pipeline.line_stage is not None:
        from ._gas_maps import gas_truth_maps

        with progress.stage("gas truth maps (Hα, gas V and σ, line ratios, A_V)", "gas_truth"):
            truth["gas_truth"] = gas_truth_maps(pipeline, gas, observation)  # GAS_* in the files
    if paths["cube_fits"] is not None:
        from .io import write_cube_fits

        with progress.stage(f"writing {paths['cube_fits']}", "fits"):
            write_cube_fits(cube, paths["cube_fits"], ssp=ssp, observation=observation, **truth)
    if paths["cube_hdf5"] is not None:
        from .io import write_cube_hdf5

        with progress.stage(f"writing {paths['cube_hdf5']}", "hdf5"):
            write_cube_hdf5(cube, paths["cube_hdf5"], ssp=ssp, observation=observation,
                            config=config, **truth)  # fmt: skip
    if paths["quicklook"] is not None:
        from ._quicklook import quicklook

        with progress.stage(f"writing {paths['quicklook']}", "quicklook"):
            quicklook(cube, paths["quicklook"], maps=maps, observation=observation,
                      halpha=gas is not None)  # fmt: skip

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
        "gas": None if gas is None else {
            "n_elements": int(gas.n_particles),
            "total_mass_msun": float(np.sum(gas.mass)),
            "total_sfr_msun_per_yr": float(np.sum(gas.sfr)),
            "source": spec.gas["source"],
            **gas_summary(truth.get("gas_truth"), cube.flux_unit),
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


# --- fit ----------------------------------------------------------------------------------

FIT_SOLVERS = ("levenberg_marquardt", "gauss_newton", "dogleg")  # = rubix_eqx.fit SOLVERS
FIT_DEFAULTS = {"out": "fit", "ssp": "miles", "min_snr": 3.0, "solver": FIT_SOLVERS[0],
                "batch_size": 64, "moments": 2, "regul": 0.0}  # fmt: skip
HDF5_FORMAT = "rubix_eqx.cube"


def _metadata_value(meta: dict, key: str):
    """`key` of a file's metadata, whatever its case (FITS `REDSHIFT`, HDF5 `distance`)."""
    for k, v in meta.items():
        if str(k).upper() == key.upper():
            return v
    return None


def fit_observation(args, cube, meta: dict, path: Path):
    """The observation of `rubix-eqx fit`, and where its redshift and distance came from.

    With `--redshift` and/or `--distance` the options decide both (a distance alone means
    z = 0; a redshift alone, the cosmological distances). Without them, the file's
    `REDSHIFT` and `DISTANCE` (our files); a cube from another pipeline has neither."""
    from ._observation import Observation
    from .config import ConfigError

    z, d = args.redshift, args.distance
    if z is not None or d is not None:
        source = "options"
        if z is None:
            z = 0.0
        if z == 0 and d is None:
            raise ConfigError(
                "--redshift 0: a galaxy at z = 0 needs --distance (Mpc) for its flux "
                "dimming; give --distance, or a redshift > 0."
            )
    else:
        source = "file"
        z = _metadata_value(meta, "REDSHIFT")
        if z is None and _metadata_value(meta, "FORMAT") == HDF5_FORMAT:
            z = float(cube.redshift)  # our HDF5 cube: a dataset, not an attribute
        d = _metadata_value(meta, "DISTANCE")
        if z is None and d is None:
            raise ConfigError(
                f"{path}: the file records no redshift or distance (a cube from another "
                "pipeline): give --redshift Z, or --distance MPC for a nearby galaxy "
                "(both may be given)."
            )
        z = 0.0 if z is None else float(z)
        d = None if d is None else float(d)
        if z <= 0 and d is None:
            raise ConfigError(
                f"{path}: the file records redshift {z:g} and no distance: give --redshift Z "
                "(> 0) or --distance MPC."
            )
    observation = Observation(redshift=z, distance=d, ra=cube.ra, dec=cube.dec)
    return observation, {"redshift": float(z), "distance": d, "source": source}


def fit_lsf(value: str | None, cube):
    """`cube` with the `--lsf-fwhm` LSF (a constant in Å, or a text file of two columns
    λ and FWHM in Å, interpolated onto the cube's pixels), and a description of the LSF
    used (`None`: the telescope's, resampled by `rubix_eqx.fit.telescope_for_cube`)."""
    import dataclasses

    import jax.numpy as jnp
    import numpy as np

    from .config import ConfigError

    wave = np.asarray(cube.wavelength, np.float64)
    if value is None:
        return cube, ("recorded in the cube" if cube.lsf_fwhm is not None else None)
    try:
        constant = float(value)
    except ValueError:
        constant = None
    if constant is not None:
        if not (np.isfinite(constant) and constant > 0):
            raise ConfigError(f"--lsf-fwhm: must be > 0 Angstrom (or a file), got {value}.")
        fwhm = np.full(wave.shape, constant)
        described = f"{constant:g} A (--lsf-fwhm)"
    else:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(
                f"--lsf-fwhm {value}: not a number and no such file (give a FWHM in Angstrom "
                "or a text file of two columns: wavelength, FWHM in Angstrom)."
            )
        try:
            table = np.loadtxt(path, ndmin=2, dtype=np.float64)
        except ValueError as e:
            raise ConfigError(f"--lsf-fwhm {value}: unreadable as numbers ({e}).") from None
        if table.ndim != 2 or table.shape[1] != 2 or table.shape[0] < 2:
            raise ConfigError(
                f"--lsf-fwhm {value}: expected >= 2 rows of two columns (wavelength, FWHM in "
                f"Angstrom); got shape {table.shape}."
            )
        grid, values = table[:, 0], table[:, 1]
        if not (np.all(np.isfinite(table)) and np.all(np.diff(grid) > 0)):
            raise ConfigError(
                f"--lsf-fwhm {value}: wavelengths must be finite and strictly increasing."
            )
        if not np.all(values > 0):
            raise ConfigError(f"--lsf-fwhm {value}: FWHM values must be > 0 Angstrom.")
        if grid[0] > wave[0] * (1 + 1e-6) or grid[-1] < wave[-1] * (1 - 1e-6):
            raise ConfigError(
                f"--lsf-fwhm {value}: the table covers {grid[0]:g}-{grid[-1]:g} Angstrom but "
                f"the cube spans {wave[0]:g}-{wave[-1]:g} Angstrom."
            )
        fwhm = np.interp(wave, grid, values)
        described = f"{path} (--lsf-fwhm)"
    lsf = jnp.asarray(fwhm, cube.wavelength.dtype)
    return dataclasses.replace(cube, lsf_fwhm=lsf), described


def fit_telescope(value: str | None, cube):
    """The telescope of `rubix-eqx fit`: `--telescope` (a preset name or a YAML file), else
    the cube's (`TELMODEL`, or the preset its `INSTRUME` names). A cube of an unknown
    instrument whose LSF is known (recorded, or `--lsf-fwhm`) gets a plain telescope of
    its own sampling. Returns the telescope and where it came from."""
    import difflib

    from .config import ConfigError
    from .telescope import presets, Telescope

    names = presets()
    if value is not None:
        path = Path(value)
        if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"--telescope {value}: file not found.")
            return Telescope.from_yaml(path), f"{path} (--telescope)"
        if value not in names:
            close = difflib.get_close_matches(value, names, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(
                f"--telescope {value}: unknown preset.{hint} Give one of {', '.join(names)}, "
                "or a telescope YAML file."
            )
        return Telescope.preset(value), "--telescope"
    if cube.telescope in names:
        return Telescope.preset(cube.telescope), "the cube's"
    if cube.lsf_fwhm is not None:
        import jax.numpy as jnp

        n_x, n_y = cube.shape[:2]
        telescope = Telescope(
            name=str(cube.telescope), spaxel_size=float(cube.spaxel_size), n_x=n_x, n_y=n_y,
            wavelength=jnp.asarray(cube.wavelength), lsf_fwhm=jnp.asarray(cube.lsf_fwhm),
            sampling=cube.wavelength_sampling, medium=cube.medium,
        )  # fmt: skip
        return telescope, "the cube's sampling and LSF (no preset)"
    raise ConfigError(
        f"The cube's telescope {cube.telescope!r} is not a preset and the cube records no "
        f"LSF: give --telescope (one of {', '.join(names)}, or a YAML file) or --lsf-fwhm."
    )


def fit_in_batches(
    cube, ssp, telescope, observation, *, batch_size: int, progress=True, mixture=False, **kw
):
    """[`rubix_eqx.fit.fit_spaxels`][] (or, with `mixture`, [`rubix_eqx.fit.fit_mixture`][])
    over batches of `batch_size` spaxels, stitched into one `SpaxelFit` (`MixtureFit`) of
    the cube's shape. Every batch has the same shape (the last is padded with masked
    spaxels), so the solve compiles once; one model (`Pipeline`) serves them all. A tqdm
    progress bar with the ETA goes to stderr. Also returns the seconds of the first batch
    (with compilation) and of the rest."""
    import dataclasses
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    from ._pipeline import Pipeline
    from .config import ConfigError
    from .fit import fit_mixture, fit_spaxels, telescope_for_cube

    n_x, n_y, n_wave = cube.shape
    n = n_x * n_y
    size = min(batch_size, n)
    n_batches = math.ceil(n / size)
    padded = n_batches * size
    flux = np.asarray(cube.flux).reshape(n, n_wave)
    variance = np.asarray(cube.variance).reshape(n, n_wave)
    mask = np.asarray(cube.mask).reshape(n)
    if padded > n:  # masked spaxels: not fitted (status 1), dropped when stitching
        flux = np.concatenate([flux, np.zeros((padded - n, n_wave), flux.dtype)])
        variance = np.concatenate([variance, np.zeros((padded - n, n_wave), variance.dtype)])
        mask = np.concatenate([mask, np.zeros(padded - n, bool)])

    def batch(i):
        rows = slice(i * size, (i + 1) * size)
        return dataclasses.replace(
            cube,
            flux=jnp.asarray(flux[rows].reshape(size, 1, n_wave)),
            variance=jnp.asarray(variance[rows].reshape(size, 1, n_wave)),
            mask=jnp.asarray(mask[rows].reshape(size, 1)),
        )

    first = batch(0)
    try:
        model_telescope = telescope_for_cube(first, telescope)
    except ValueError as e:
        raise ConfigError(f"{e} Or give the LSF with --lsf-fwhm.") from None
    # as `fit_spaxels` builds it, once for all batches
    dtype = jnp.promote_types(cube.flux.dtype, jnp.result_type(float))
    pipeline = Pipeline(
        model_telescope, ssp, allow_sharper_lsf=True, psf=False, aperture=False, dtype=dtype
    )
    fits, seconds = [], []
    with tqdm(
        total=n, unit="spaxel", desc="fitting", file=sys.stderr, disable=not progress,
        dynamic_ncols=True, mininterval=0.5,
    ) as bar:  # fmt: skip
        bar.set_postfix_str(f"{n_batches} batches of {size}; the first compiles")
        for i in range(n_batches):
            t0 = time.perf_counter()
            fit = (fit_mixture if mixture else fit_spaxels)(
                first if i == 0 else batch(i), ssp, telescope, observation,
                pipeline=pipeline, **kw,
            )  # fmt: skip
            fits.append(jax.block_until_ready(fit))
            seconds.append(time.perf_counter() - t0)
            if i == 0:
                bar.set_postfix_str(f"{n_batches} batches of {size}")
            bar.update(min(size, n - i * size))

    def stitch(*leaves):  # each (size, 1, ...): a mixture's weights have (n_age, n_Z) more
        rest = leaves[0].shape[2:]
        flat = np.concatenate([np.asarray(leaf).reshape(size, *rest) for leaf in leaves])
        return jnp.asarray(flat[:n].reshape(n_x, n_y, *rest))

    return jax.tree.map(stitch, *fits), seconds[0], sum(seconds[1:])


def _fit(args) -> int:
    import numpy as np

    from . import __version__, io
    from ._atomic import atomic_path
    from .config import build_ssp, ConfigError
    from .config._run import check_ssp
    from .fit import plot_maps, STATUS, write_maps_fits
    from .fit._output import MAPS
    from .io._provenance import utc_now

    progress = Progress()
    path, out = Path(args.cube), Path(args.out)
    if not (np.isfinite(args.min_snr) and args.min_snr >= 0):
        raise ConfigError(f"--min-snr: must be finite and >= 0, got {args.min_snr:g}.")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1 spaxel, got {args.batch_size}.")
    if args.target_sn is not None and not (np.isfinite(args.target_sn) and args.target_sn > 0):
        raise ConfigError(f"--target-sn: must be finite and > 0, got {args.target_sn:g}.")
    if not (np.isfinite(args.regul) and args.regul >= 0):
        raise ConfigError(f"--regul: must be finite and >= 0, got {args.regul:g}.")
    if args.regul > 0 and not args.mixture:
        raise ConfigError("--regul: regularises the weights of --mixture; add --mixture.")
    if args.redshift is not None and not (np.isfinite(args.redshift) and args.redshift >= 0):
        raise ConfigError(f"--redshift: must be finite and >= 0, got {args.redshift:g}.")
    if args.distance is not None and not (np.isfinite(args.distance) and args.distance > 0):
        raise ConfigError(f"--distance: must be > 0 (Mpc), got {args.distance:g}.")
    try:
        ssp_name = check_ssp(args.ssp)
    except ConfigError as e:
        raise ConfigError(f"--{e}") from None
    with progress.stage(f"reading {path}", "read"):
        cube = io.read_cube(path)
        meta = io.read_metadata(path)
    observation, obs_info = fit_observation(args, cube, meta, path)
    cube, lsf_source = fit_lsf(args.lsf_fwhm, cube)
    telescope, telescope_source = fit_telescope(args.telescope, cube)
    if lsf_source is None:
        lsf_source = f"declared by telescope {telescope.name}"
    with progress.stage(f"loading SSP grid {ssp_name!r}", "ssp"):
        ssp = build_ssp(ssp_name)
    n_x, n_y, n_wave = cube.shape
    wave = np.asarray(cube.wavelength, np.float64)
    bins, fitted = None, cube
    if args.target_sn is not None:
        from .fit import bin_spectra, BinningError, voronoi_bins

        with progress.stage(f"Voronoi binning to S/N {args.target_sn:g} per pixel", "bin"):
            try:
                bins = voronoi_bins(cube, args.target_sn)
            except BinningError as e:
                raise ConfigError(f"--target-sn: {e}") from None
            fitted = bin_spectra(cube, bins)
    n_fit = fitted.shape[0] * fitted.shape[1]
    what = f"{n_x}x{n_y} spaxels" if bins is None else f"{n_fit} Voronoi bins of {n_x}x{n_y}"
    n_ssp = ssp.age.shape[0] * ssp.metallicity.shape[0]
    kind = f"mixtures of all {n_ssp} SSPs to " if args.mixture else ""
    mixture_kw = {"regul": args.regul} if args.mixture else {}
    with progress.stage(
        f"fitting {kind}{what} x {n_wave} wavelengths in batches of "
        f"{min(args.batch_size, n_fit)} (incl. compilation)",
        "fit",
    ):
        fit, first_seconds, rest_seconds = fit_in_batches(
            fitted, ssp, telescope, observation, batch_size=args.batch_size,
            solver=args.solver, min_snr=args.min_snr, moments=args.moments,
            mixture=args.mixture, **mixture_kw,
        )  # fmt: skip
    if bins is not None:
        from .fit import unbin

        fit = unbin(fit, bins)
    mixture, fit = (fit, fit.kinematics) if args.mixture else (None, fit)

    options = {
        "redshift": obs_info["redshift"],
        "distance_mpc": obs_info["distance"],
        "redshift_source": obs_info["source"],
        "telescope": telescope.name,
        "telescope_source": telescope_source,
        "lsf": lsf_source,
        "ssp": ssp.name,
        "min_snr": args.min_snr,
        "solver": args.solver,
        "batch_size": args.batch_size,
        "moments": args.moments,
        "target_sn": args.target_sn,
        "mixture": args.mixture,
        "regul": args.regul if args.mixture else None,
    }
    command = ["rubix-eqx", "fit", str(path), "--out", str(out)]
    for option in ("redshift", "distance", "telescope", "lsf_fwhm", "ssp", "min_snr", "solver",
                   "batch_size", "moments", "target_sn"):  # fmt: skip
        value = getattr(args, option)
        if value is not None:
            command += [f"--{option.replace('_', '-')}", str(value)]
    if args.mixture:
        command += ["--mixture", "--regul", str(args.regul)]
    header = {
        "PROGRAM": ("rubix_eqx", "software that made these maps"),
        "PROGVER": (__version__, "its version"),
        "DATE": (utc_now(), "UTC date the file was written"),
        "INFILE": (str(path.resolve()), "the fitted cube"),
        "COMMAND": (" ".join(command), "the command, with every option"),
        "REDSHIFT": (obs_info["redshift"], "redshift of the fit"),
        "ZSOURCE": (obs_info["source"], "redshift/distance from: options or file"),
        "TELMODEL": (telescope.name, "rubix_eqx telescope model"),
        "LSFSRC": (lsf_source, "line-spread function of the model"),
        "SSPNAME": (ssp.name, "SSP template grid"),
        "MINSNR": (args.min_snr, "spaxels of lower median S/N not fitted"),
        "SOLVER": (args.solver, "least-squares solver (optimistix)"),
        "BATCH": (args.batch_size, "spaxels per solve"),
        "MOMENTS": (args.moments, "LOSVD moments: 2 (V, sigma) or 4 (+ h3, h4)"),
        "TARGETSN": (
            "none" if args.target_sn is None else args.target_sn,
            "Voronoi target S/N per pixel (none: unbinned)",
        ),
        "MIXTURE": (args.mixture, "weights of all SSPs (else one SSP)"),
    }
    if args.mixture:
        header["REGUL"] = (args.regul, "regularisation of the weights (0: none)")
    if bins is not None:
        header["NBINS"] = (bins.n_bins, "Voronoi bins")
    if obs_info["distance"] is not None:
        header["DISTANCE"] = (obs_info["distance"], "[Mpc] distance given instead of cosmology")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"maps_fits": out / "maps.fits", "maps_png": out / "maps.png",
             "summary": out / "fit_summary.json"}  # fmt: skip
    with progress.stage(f"writing {paths['maps_fits']} and {paths['maps_png']}", "write"):
        write_maps_fits(
            fit, paths["maps_fits"], header, cube=cube,
            bin_index=None if bins is None else bins.bin_index, mixture=mixture, ssp=ssp,
        )  # fmt: skip
        title = f"{path.name}: {telescope.name}, z = {obs_info['redshift']:g}"
        plot_maps(fit, paths["maps_png"], title=title)

    ok = np.asarray(fit.converged)
    status = np.asarray(fit.status)
    counts = {STATUS[k]: int(np.sum(status == k)) for k in STATUS}
    medians = {
        name: float(np.median(np.asarray(getattr(fit, f"{name}_err"))[ok])) if ok.any() else None
        for name, _ in MAPS
    }
    chi2 = float(np.median(np.asarray(fit.chi2)[ok])) if ok.any() else None
    voronoi, bins_line = None, "none (every spaxel fitted)"
    if bins is not None:
        bin_snr = np.asarray(bins.snr)
        voronoi = {
            "n_bins": bins.n_bins,
            "target_sn": args.target_sn,
            "bin_sn_median": float(np.median(bin_snr)),
            "bin_sn_min": float(np.min(bin_snr)),
            "bin_sn_max": float(np.max(bin_snr)),
            "spaxels_not_binned": int(np.sum(np.asarray(bins.bin_index) < 0)),
        }
        bins_line = (
            f"{bins.n_bins} Voronoi bins to S/N {args.target_sn:g} per pixel (median bin "
            f"S/N {np.median(bin_snr):.3g})"
        )
    populations = None
    if mixture is not None:
        mixed = np.asarray(mixture.converged)
        median = lambda x: float(np.median(np.asarray(x)[mixed])) if mixed.any() else None  # noqa: E731
        populations = {
            "regul": args.regul,
            "n_converged": int(mixed.sum()),
            "median_log_age_light": median(mixture.log_age),
            "median_metallicity_light": median(mixture.metallicity),
            "median_log_age_mass": median(mixture.log_age_mass),
            "median_metallicity_mass": median(mixture.metallicity_mass),
            "median_reduced_chi2": median(mixture.chi2),
        }
    summary = {
        "rubix_eqx_version": __version__,
        "input": str(path.resolve()),
        "command": " ".join(command),
        "options": options,
        "shape": [n_x, n_y, n_wave],
        "wavelength_range_angstrom": [float(wave[0]), float(wave[-1])],
        "medium": cube.medium,
        "n_spaxels": int(status.size),
        "voronoi": voronoi,
        "mixture": populations,
        "status_counts": counts,
        "median_reduced_chi2": chi2,
        "median_errors": medians,
        "outputs": {k: str(v) for k, v in paths.items()},
        "seconds": {
            **{k: round(v, 3) for k, v in progress.timings.items()},
            "first_batch_incl_compilation": round(first_seconds, 3),
            "other_batches": round(rest_seconds, 3),
        },
    }
    with atomic_path(paths["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))

    distance = "" if obs_info["distance"] is None else f", d = {obs_info['distance']:g} Mpc"
    fmt = lambda v, unit="": "n/a" if v is None else f"{v:.3g}{unit}"  # noqa: E731
    mixture_lines = []
    if populations is not None:
        age_l, age_m, mh_l, mh_m = (fmt(populations[f"median_{k}"]) for k in (
            "log_age_light", "log_age_mass", "metallicity_light", "metallicity_mass"))  # fmt: skip
        mixture_lines.append(
            f"  mixture     regul {args.regul:g}; {populations['n_converged']} converged; median "
            f"log age {age_l} (light), {age_m} (mass); [M/H] {mh_l} (light), {mh_m} (mass)"
        )
    lines = [
        f"rubix-eqx fit: {path} -> {out}/",
        f"  cube        {n_x}x{n_y} spaxels x {n_wave} wavelengths, {wave[0]:.1f}-"
        f"{wave[-1]:.1f} A ({cube.medium}); telescope {telescope.name} ({telescope_source})",
        f"  redshift    z = {obs_info['redshift']:g}{distance} (from the {obs_info['source']})",
        f"  LSF         {lsf_source}; SSP {ssp.name}; solver {args.solver}, "
        f"min S/N {args.min_snr:g}, moments {args.moments}",
        f"  bins        {bins_line}",
        *mixture_lines,
        "  status      " + ", ".join(f"{v} {k}" for k, v in counts.items()),
        f"  median      reduced chi2 {fmt(chi2)}; 1-sigma errors: log age "
        f"{fmt(medians['log_age'], ' dex')}, [M/H] {fmt(medians['metallicity'], ' dex')}, "
        f"V {fmt(medians['velocity'], ' km/s')}, sigma {fmt(medians['dispersion'], ' km/s')}",
        f"  time        {time.perf_counter() - progress.start:.2f} s total (first batch "
        f"{first_seconds:.2f} s incl. compilation, other batches {rest_seconds:.2f} s)",
    ]
    print("\n".join(lines))
    for p in paths.values():
        print(f"  wrote       {p}")
    return 0


# --- survey -------------------------------------------------------------------------------


def _survey(args) -> int:
    from tqdm import tqdm

    from .survey import load_survey, run_survey
    from .survey._survey import log_path, manifest_path, parse_worker, worker_items

    start = time.perf_counter()
    worker = parse_worker(args.worker) if args.worker else (1, 1)
    survey = load_survey(args.survey)
    out = Path(args.out)
    items = worker_items(survey.items, worker)
    k, n = worker
    share = "" if n == 1 else f"; worker {k}/{n}: {len(items)} of them"
    print(f"survey {args.survey}: {survey.n_galaxies} galaxies x {survey.n_views} views = "
          f"{len(survey.items)} items{share}", file=sys.stderr, flush=True)  # fmt: skip
    counts = {"done": 0, "skipped": 0, "failed": 0}
    with tqdm(total=len(items), unit="item", desc="survey", file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar:  # fmt: skip

        def on_item(item, outcome, record):
            counts[outcome if outcome != "skipped" or record.get("status") == "done"
                   else "failed"] += 1  # fmt: skip
            bar.set_postfix(counts, refresh=False)
            bar.update()

        result = run_survey(
            survey, out, worker=worker, retry_failed=args.retry_failed, on_item=on_item,
            notify=lambda text: bar.write(f"rubix-eqx survey: {text}", file=sys.stderr),
        )  # fmt: skip
    lines = [f"rubix-eqx survey: {args.survey} -> {out}/ (worker {k}/{n})"]
    if result.done == 0 and not result.failed and result.skipped == result.n_items:
        lines.append(f"  nothing to do: all {result.n_items} items are done and verified")
    lines.append(
        f"  items       {result.n_items} (of {result.n_total}): {result.done} computed now "
        f"({result.redone} redone: missing, corrupt, changed or interrupted), "
        f"{result.skipped} already done and verified, "
        f"{len(result.failed)} failed"
    )
    if result.failed:
        why = ", ".join(f"{count} {kind}" for kind, count in sorted(result.errors.items()))
        lines.append(f"  failed      {len(result.failed)}: {why}")
        lines += [f"    {name}: {error}" for name, error in result.failed.items()]
    if result.interrupted:
        lines.append(
            f"  interrupted stopped after the current item; {result.remaining} items not run "
            "(run the same command again to go on)"
        )
    lines += [
        f"  compile     {result.compilations} XLA compilations, {result.compile_seconds:.2f} s",
        f"  time        {time.perf_counter() - start:.2f} s total",
        f"  manifest    {manifest_path(out, worker)} (log: {log_path(out, worker)})",
    ]
    print("\n".join(lines))
    return result.exit_code


def _infer_prior(spec: tuple) -> object:
    """A checked `inference.priors` entry (kind, a, b) → the prior."""
    from .fit import Normal, Uniform

    kind, a, b = spec
    return Uniform(a, b) if kind == "uniform" else Normal(a, b)


def infer_run(
    config_path,
    cube_path,
    out,
    *,
    free: list[str] | None = None,
    num_chains: int = 2,
    num_warmup: int = 200,
    num_samples: int = 300,
    seed: int = 0,
    screen: int = 63,
    starts: int = 3,
    progress=print,
) -> dict:
    """Posterior of the synthetic-disk model of the run config `config_path` given the
    cube at `cube_path`, through the config's own pipeline. An optional `inference:`
    section of the config holds `priors: {name: [low, high] | {normal: [mu, sigma]}}`
    (default: `PARAMETERS`' priors for the `free` names, default all ten). Writes
    `posterior.txt` (table), `posterior.json`, `corner.png` and `samples.h5` to `out`.
    `screen`, `starts`: the MAP's global start ([`rubix_eqx.fit.laplace`][]). Returns
    the summary dict."""
    import jax
    import numpy as np
    import yaml

    from . import config as rc, galaxy as gal
    from .fit import (
        corner_plot,
        format_table,
        galaxy_model,
        laplace,
        nuts,
        PARAMETERS,
        posterior,
        posterior_summary,
        write_samples_hdf5,
    )
    from .io import read_cube

    t0 = time.perf_counter()
    spec = rc.check_config(yaml.safe_load(Path(config_path).read_text()) or {})
    if spec.galaxy["source"] != "synthetic":
        raise ValueError(
            f"galaxy.source: `infer` fits the synthetic-disk model; got {spec.galaxy['source']!r}."
        )
    priors_spec = spec.inference["priors"]
    names = free or list(priors_spec) or list(PARAMETERS)
    priors = {n: _infer_prior(priors_spec[n]) if n in priors_spec else PARAMETERS[n][2]
              for n in names}  # fmt: skip
    progress(f"loading SSP grid {spec.ssp!r} and building the pipeline")
    ssp = rc.build_ssp(spec.ssp)
    pipe = rc.build_pipeline_from(spec, ssp)
    params = {k: v for k, v in spec.galaxy.items() if k != "source"}
    progress("drawing the model's particles (fixed draws of the config's seed)")
    _, structure = gal.synthetic_disk(jax.random.key(spec.seed), **params)
    n = int(params.get("n_stars", 10_000))
    bulge = float(structure.bulge_fraction)
    draws = gal.draw_disk(jax.random.key(spec.seed), n, bulge, structure.total_mass.dtype)
    obs = rc.build_observation(spec.observation)
    cube = read_cube(cube_path)
    model = galaxy_model(draws, structure, obs, priors)
    post = posterior(cube, pipe, model)
    progress(f"MAP + Laplace over {len(names)} parameters: {', '.join(names)} (global start: "
             f"{screen} prior draws screened, LM from the best {starts})")  # fmt: skip
    lap = laplace(post, screen=screen, starts=starts)
    progress(f"MAP converged={bool(lap.converged)} in {int(lap.steps)} steps, "
             f"chi2/nu = {lap.reduced_chi2:.3f}")  # fmt: skip
    for name, prior, value in zip(model.names, model.priors, np.asarray(lap.mean)):
        lo, hi = prior.support
        if np.isfinite(lo) and np.isfinite(hi) and min(value - lo, hi - value) < 0.01 * (hi - lo):
            progress(f"warning: the MAP of {name} = {value:.4g} lies at its prior bound "
                     f"[{lo:g}, {hi:g}]: widen the prior (inference.priors.{name}); the "
                     "sampler mixes poorly against a bound")  # fmt: skip
    res = nuts(post, jax.random.key(seed), start=lap, num_chains=num_chains,
               num_warmup=num_warmup, num_samples=num_samples, progress=progress)  # fmt: skip
    truth = {k: float(v) for k, v in model.defaults().items()}
    rows = posterior_summary(res, truth=truth)
    table = format_table(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "posterior.txt").write_text(table + "\n")
    corner_plot(res.samples, res.names, out / "corner.png", laplace=lap)
    write_samples_hdf5(out / "samples.h5", res, lap, attrs={"config": str(config_path),
                                                            "cube": str(cube_path)})  # fmt: skip
    corr = np.asarray(res.correlation)
    summary = {
        "parameters": rows,
        "laplace": {
            "mean": np.asarray(lap.mean).tolist(),
            "errors": np.asarray(lap.errors).tolist(),
            "converged": bool(lap.converged),
        },
        "correlation": corr.tolist(),
        "names": list(res.names),
        "divergences": int(res.divergences),
        "acceptance": float(res.acceptance),
        "n_gradients": int(res.n_gradients),
        "seconds": {**res.seconds, "total": time.perf_counter() - t0},
    }
    (out / "posterior.json").write_text(json.dumps(summary, indent=2))
    return summary


def _infer(args) -> int:
    from .config import ConfigError

    if args.screen < 0:
        raise ConfigError(f"--screen: must be >= 0 prior draws, got {args.screen}.")
    if not 1 <= args.starts <= args.screen + 1:
        raise ConfigError(
            f"--starts: must lie in [1, --screen + 1] = [1, {args.screen + 1}], got {args.starts}."
        )
    progress = Progress()
    free = [n.strip() for n in args.free.split(",")] if args.free else None
    summary = infer_run(
        args.config, args.cube, args.out, free=free, num_chains=args.chains,
        num_warmup=args.warmup, num_samples=args.samples, seed=args.seed,
        screen=args.screen, starts=args.starts, progress=progress._print,
    )  # fmt: skip
    print((Path(args.out) / "posterior.txt").read_text(), end="")
    print(f"wrote {args.out}/posterior.txt, posterior.json, corner.png, samples.h5 "
          f"({summary['seconds']['total']:.1f} s)")  # fmt: skip
    return 0


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
    from . import __version__

    main = argparse.ArgumentParser(
        prog="rubix-eqx", description="Mock IFU cubes of simulated galaxies.", parents=[common]
    )
    main.add_argument(
        "--version", action="version", version=f"rubix-eqx {__version__}",
        help="print the version and exit",
    )  # fmt: skip
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="build a cube from a run config",
        description="Build a cube from a run config (schema: docs/configuration.md); writes "
        "cube.fits, cube.h5, quicklook.png and summary.json. The spatial deposit is "
        "pipeline.deposit: cic (default), nearest, or smoothed (each particle over a kernel "
        "of its smoothing length; pipeline.smoothing: {kernel: cubic_spline|gaussian, "
        "stencil: 5, neighbours: 32}), e.g. --set pipeline.deposit=smoothed.",
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
    conv.add_argument(
        "--loader",
        required=True,
        choices=("tng", "eagle"),
        help="simulation the file comes from: %(choices)s (required)",
    )
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
        help="fit age, [M/H], V and sigma maps to any cube",
        description="Fit every spaxel of a cube with one SSP (log age, [M/H], V, sigma and a "
        "mass; rubix_eqx.fit.fit_spaxels), in batches of spaxels with a progress bar. Writes "
        "maps.fits (one image per map and error, with the cube's celestial WCS and the "
        "provenance), maps.png and fit_summary.json into --out.",
    )
    fit.add_argument(
        "cube",
        help="cube file: ours (FITS or HDF5), a MUSE DRP cube or a MaNGA DRP LOGCUBE",
    )
    fit.add_argument(
        "--out",
        metavar="DIR",
        default=FIT_DEFAULTS["out"],
        help="output directory (default: %(default)s)",
    )
    fit.add_argument(
        "--redshift",
        type=float,
        metavar="Z",
        help="redshift of the galaxy (default: the file's REDSHIFT keyword; a cube from "
        "another pipeline needs --redshift or --distance)",
    )
    fit.add_argument(
        "--distance",
        type=float,
        metavar="MPC",
        help="distance in Mpc, for the flux dimming; alone it means z = 0 (default: the "
        "file's DISTANCE, else the Planck18 distances at the redshift)",
    )
    fit.add_argument(
        "--telescope",
        metavar="NAME|FILE",
        help="telescope preset (see `rubix-eqx telescopes`) or a YAML file in the preset "
        "schema (default: the cube's, from its TELMODEL or INSTRUME keyword)",
    )
    fit.add_argument(
        "--lsf-fwhm",
        metavar="ANGSTROM|FILE",
        help="line-spread FWHM in Angstrom: a constant, or a text file with two columns, "
        "wavelength and FWHM in Angstrom, interpolated onto the cube (default: the LSF "
        "the cube records, if any, else the telescope's)",
    )
    fit.add_argument(
        "--ssp",
        metavar="NAME|FILE",
        default=FIT_DEFAULTS["ssp"],
        help="SSP templates: miles (E-MILES) or an SSP HDF5 file (default: %(default)s)",
    )
    fit.add_argument(
        "--min-snr",
        type=float,
        metavar="SNR",
        default=FIT_DEFAULTS["min_snr"],
        help="spaxels whose median S/N per pixel is lower are not fitted (status 1) "
        "(default: %(default)g)",
    )
    fit.add_argument(
        "--solver",
        choices=FIT_SOLVERS,
        default=FIT_DEFAULTS["solver"],
        help="least-squares solver, one of %(choices)s (default: %(default)s)",
    )
    fit.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        default=FIT_DEFAULTS["batch_size"],
        help="spaxels per solve; every batch has this size (the last is padded), so the "
        "solve compiles once (default: %(default)s)",
    )
    fit.add_argument(
        "--moments",
        type=int,
        choices=(2, 4),
        default=FIT_DEFAULTS["moments"],
        help="LOSVD moments: 2 (V, sigma; Gaussian) or 4 (also h3, h4; Gauss-Hermite, as "
        "pPXF's moments) (default: %(default)s)",
    )
    fit.add_argument(
        "--target-sn",
        type=float,
        metavar="SN",
        help="Voronoi-bin the spaxels (vorbin) to this S/N per pixel (mean flux over RMS "
        "noise of a bin's summed spectrum, whole cube) and fit one summed spectrum per "
        "bin; the maps are put back on the spaxel grid and maps.fits gets a BIN image "
        "(default: no binning)",
    )
    fit.add_argument(
        "--mixture",
        action="store_true",
        help="fit each spaxel (bin) with non-negative weights of every SSP of the grid at "
        "its LOSVD, as pPXF does (rubix_eqx.fit.fit_mixture); maps.fits then also holds "
        "light- and mass-weighted mean log age and [M/H] maps and the weights per spaxel "
        "(default: one SSP per spaxel)",
    )
    fit.add_argument(
        "--regul",
        type=float,
        metavar="R",
        default=FIT_DEFAULTS["regul"],
        help="with --mixture: regularisation of the weights (second differences along log "
        "age and log Z, pPXF's regul = 1/Delta); 0 for none (default: %(default)g)",
    )
    fit.set_defaults(func=_fit)

    survey = sub.add_parser(
        "survey",
        parents=[common],
        help="many galaxies x views, one cube each, resumable",
        description="Make one cube per galaxy x view of a survey file (schema: "
        "docs/survey.md), sharing one compilation per telescope and particle-count bucket. "
        "Records each item in DIR/manifest.jsonl (JSON lines: inputs, status, timings, "
        "output checksums, error); running the same command again skips what is done and "
        "verified and redoes what is missing or corrupt. Ctrl-C stops after the current "
        "item. Exit status 1 if any item failed, 130 if interrupted.",
    )
    survey.add_argument("survey", help="survey YAML file, e.g. survey.yaml")
    survey.add_argument(
        "--out", required=True, metavar="DIR",
        help="survey directory: items/<galaxy>/<view>/, manifest and log (required)",
    )  # fmt: skip
    survey.add_argument(
        "--worker",
        metavar="K/N",
        help="run only every N-th item, from item K-1 (1 <= K <= N), e.g. 2/4; start N "
        "independent processes with 1/N ... N/N on the same --out: each writes "
        "manifest.K-of-N.jsonl and all read every manifest (default: all items)",
    )
    survey.add_argument(
        "--retry-failed",
        action="store_true",
        help="run failed items again even if their inputs did not change",
    )
    survey.set_defaults(func=_survey)

    infer = sub.add_parser(
        "infer",
        parents=[common],
        help="posterior of the synthetic-disk model's parameters given a cube (MAP, NUTS)",
        description="MAP + Laplace (optimistix) and NUTS (blackjax) through the pipeline of "
        "CONFIG, for the synthetic-disk parameters (docs/inference.md); priors from an "
        "optional `inference: {priors: {name: [low, high]}}` section. Writes "
        "DIR/posterior.txt, posterior.json, corner.png and samples.h5.",
    )
    infer.add_argument("config", help="run config YAML that made (or models) the cube")
    infer.add_argument("cube", help="cube file (FITS or HDF5) with a variance")
    infer.add_argument("--out", required=True, metavar="DIR", help="output directory")
    infer.add_argument("--free", metavar="NAMES", help="comma-separated free parameters "
                       "(default: those with priors in the config, else all ten)")  # fmt: skip
    infer.add_argument("--chains", type=int, default=2, help="NUTS chains (default: 2)")
    infer.add_argument("--warmup", type=int, default=200, help="warm-up steps (default: 200)")
    infer.add_argument("--samples", type=int, default=300, help="draws per chain (default: 300)")
    infer.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    infer.add_argument("--screen", type=int, default=63, help="MAP global start: prior draws "
                       "scored, the mass profiled out (0: start at the prior centres) "
                       "(default: 63)")  # fmt: skip
    infer.add_argument("--starts", type=int, default=3, help="MAP global start: LM solves "
                       "from the best screened points, and again per parameter block "
                       "(default: 3)")  # fmt: skip
    infer.set_defaults(func=_infer)

    sub.add_parser(
        "telescopes",
        parents=[common],
        help="list telescope presets",
        description="List the telescope presets: spaxel, field, aperture, wavelength range, "
        "pixels and LSF.",
    ).set_defaults(func=_telescopes)
    sub.add_parser(
        "info",
        parents=[common],
        help="versions, devices, cache and presets",
        description="Print the versions, JAX devices, the SSP cache and the preset folder.",
    ).set_defaults(func=_info)
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
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
        from .config import ConfigError

        lines = str(e).strip().splitlines() or [""]
        prefix = "" if isinstance(e, ConfigError) else f"{type(e).__name__}: "
        print(f"rubix-eqx: error: {prefix}{lines[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
