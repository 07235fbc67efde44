"""The `rubix-eqx` command: `run` with the default config (shrunk with --set, tiny SSP),
errors, `--version`, every option in `--help`, and `fit` on cubes of other pipelines."""

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from .cases import random_galaxy, tiny_ssp


DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_run_default_config_writes_all_outputs(tmp_path, capsys):
    import rubix_eqx as rx
    import rubix_eqx.io  # noqa: F401
    from astropy.io import fits
    from astropy.wcs import WCS
    from rubix_eqx.cli import main

    ssp_path, galaxy_path = tmp_path / "tiny_ssp.h5", tmp_path / "galaxy.h5"
    tiny_ssp().to_hdf5(ssp_path)
    # A galaxy file rather than `galaxy.n_stars=2000`: the synthetic disk's gamma sampler
    # alone takes seconds to compile; this also runs the `source: file` path.
    rx.galaxy.to_hdf5(random_galaxy(0, 2000), galaxy_path)
    out = tmp_path / "out"
    overrides = [
        f"ssp={ssp_path}", f"galaxy={{source: file, path: {galaxy_path}}}", "telescope.n_x=8",
        "telescope.n_y=6", "telescope.wavelength.stop=5600", "pipeline.noise={snr: 30}",
        "observation.ra=201.5",
    ]  # fmt: skip
    argv = ["run", str(DEFAULT), "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "computing cube" in captured.err and "done in" in captured.err  # progress on stderr
    assert "total flux" in captured.out and "wrote" in captured.out  # summary on stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "cube.fits",
        "cube.h5",
        "quicklook.png",
        "summary.json",
    ]

    cube = rx.io.read_cube(out / "cube.h5")
    assert cube.shape == (8, 6, 681) and cube.telescope == "MUSE-WFM" and cube.ra == 201.5
    config = yaml.safe_load(rx.io.read_metadata(out / "cube.h5")["run_config"])
    assert (
        config["galaxy"]["path"] == str(galaxy_path) and config["telescope"]["n_y"] == 6
    )  # overrides recorded
    with fits.open(out / "cube.fits") as hdus:
        header = hdus["DATA"].header
        assert hdus["DATA"].data.shape == (681, 6, 8) and header["CRVAL1"] == 201.5
        got = WCS(header).spectral.pixel_to_world(np.arange(681)).to_value("Angstrom")
        assert np.max(np.abs(got - np.asarray(cube.wavelength, np.float64))) <= 1e-6
        assert hdus[0].header["SSPNAME"] == "custom" and hdus[0].header["INCLIN"] == 60.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shape"] == [8, 6, 681] and summary["galaxy"]["n_particles"] == 2000
    assert summary["diagnostics"]["n_particles"] == 2000 and summary["total_flux"] > 0
    assert png_size(out / "quicklook.png") == (1200, 750)


def test_errors_are_one_line_with_exit_code(tmp_path, capsys):
    from rubix_eqx.cli import main

    assert (
        main(["run", str(DEFAULT), "--out", str(tmp_path), "--set", "telescope.psf.fwhm=-1"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "rubix-eqx: error: telescope.psf.fwhm: must be > 0, got -1."
    assert main(["run", str(tmp_path / "none.yaml")]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("FileNotFoundError: Config file not found: " + str(tmp_path / "none.yaml"))
    )
    from rubix_eqx.config import ConfigError

    with pytest.raises(ConfigError, match="galaxy.n_star: unknown key"):
        main(["run", str(DEFAULT), "--set", "galaxy.n_star=3", "--debug"])
    assert not list(tmp_path.iterdir())  # nothing written on failure


# --------------------------------------------------------------------------------------
# --version, --help


def _help(argv, capsys) -> str:
    from rubix_eqx.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    import rubix_eqx as rx

    assert _help(["--version"], capsys).strip() == f"rubix-eqx {rx.__version__}"


def test_every_option_of_every_command_is_in_its_help(capsys):
    """`rubix-eqx --help` and each sub-command's `--help` run and list every option (with
    a help text), and every sub-command is in the main help."""
    import argparse

    from rubix_eqx.cli import parser

    main_parser = parser()
    (sub,) = [a for a in main_parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = _help(["--help"], capsys)
    for name in sub.choices:
        assert name in text
    for action in main_parser._actions:
        for option in action.option_strings:
            assert option in text
    assert set(sub.choices) == {"run", "convert", "fit", "survey", "infer", "telescopes", "info"}
    for name, command in sub.choices.items():
        text = " ".join(_help([name, "--help"], capsys).split())  # unwrap the lines
        for action in command._actions:
            assert action.help, f"{name}: {action.dest} has no help text"
            for option in action.option_strings:
                assert option in text, f"`rubix-eqx {name} --help` does not list {option}"
            if not action.option_strings and action.dest != "help":
                assert action.metavar or action.dest in text
    fit_help = " ".join(_help(["fit", "--help"], capsys).split())
    for default in ("(default: fit)", "(default: miles)", "(default: 3)", "(default: 64)",
                    "(default: levenberg_marquardt)", "Mpc", "Angstrom"):  # fmt: skip
        assert default in fit_help


def test_fit_solver_choices_are_the_library_solvers():
    from rubix_eqx.cli import FIT_SOLVERS
    from rubix_eqx.fit._spaxels import SOLVERS

    assert sorted(FIT_SOLVERS) == sorted(SOLVERS)


# --------------------------------------------------------------------------------------
# `rubix-eqx fit` on cubes of other pipelines (E-MILES, small cubes)


Z = 0.04
RA, DEC = 150.1, 2.2


@pytest.fixture(scope="module")
def miles():
    pytest.importorskip("ppxf")
    import rubix_eqx as rx

    return rx.SSPGrid.load("miles")


def _spectra(ssp, wave, lsf_fwhm, velocity, medium, seed, snr=40.0):
    """Exact spectra (tests/exact_reference.py) of one E-MILES population (5 Gyr, Z = 0.008)
    with a Gaussian LOSVD of 80 km/s at the given velocities, plus noise at S/N `snr`."""
    from rubix_eqx._pipeline import ssp_in_medium

    from . import exact_reference as ref

    ages, metals = np.asarray(ssp.age), np.asarray(ssp.metallicity)
    i_age = int(np.argmin(np.abs(np.log(ages / 5.0))))
    i_z = int(np.argmin(np.abs(np.log(metals / 0.008))))
    template = np.asarray(ssp.flux[i_age, i_z], np.float64)
    ssp_wave = np.asarray(ssp_in_medium(ssp, medium).wavelength, np.float64)
    rng = np.random.default_rng(seed)
    flux = np.zeros(velocity.shape + (wave.size,))
    variance = np.zeros_like(flux)
    for index in np.ndindex(velocity.shape):
        spectrum, _ = ref.exact_spectra(
            ssp_wave, template[None], np.asarray(ssp.fwhm, np.float64), [1e4],
            [velocity[index]], Z, wave, lsf_fwhm, losvd_sigma=80.0,
        )  # fmt: skip
        sigma = np.median(spectrum) / snr
        flux[index] = spectrum + sigma * rng.normal(size=wave.size)
        variance[index] = sigma**2
    return flux, variance


def _check_fit_outputs(out, velocity, good, capsys):
    """maps.fits (maps, WCS, provenance), maps.png and fit_summary.json of a fit of a
    cube with field centre (RA, DEC); `good`: the spaxels with data."""
    from astropy.io import fits
    from astropy.wcs import WCS

    captured = capsys.readouterr()
    assert "fitting" in captured.err and "spaxel" in captured.err  # the progress bar
    assert "rubix-eqx fit:" in captured.out and "from the options" in captured.out
    n_x, n_y = velocity.shape
    with fits.open(out / "maps.fits") as hdus:
        primary = hdus[0].header
        assert primary["PROGRAM"] == "rubix_eqx" and primary["REDSHIFT"] == Z
        assert primary["ZSOURCE"] == "options" and "--redshift" in primary["COMMAND"]
        status = hdus["STATUS"].data.T
        fitted_v = hdus["VELOCITY"].data.T
        header = hdus["VELOCITY"].header
        assert hdus["VELOCITY"].data.shape == (n_y, n_x)
        assert header["CD1_1"] < 0 and header["CD2_2"] == -header["CD1_1"]
        ra, dec = WCS(header).pixel_to_world_values(n_x / 2 - 0.5, n_y / 2 - 0.5)
        assert (float(ra), float(dec)) == pytest.approx((RA, DEC), abs=1e-9)
    assert np.all(status[~good] == 1) and np.all(status[good] == 0)
    assert np.all(np.abs(fitted_v - velocity)[good] < 15.0)  # km/s, S/N 40
    assert png_size(out / "maps.png")[0] > 0
    summary = json.loads((out / "fit_summary.json").read_text())
    assert summary["options"]["redshift"] == Z and summary["n_spaxels"] == n_x * n_y
    assert summary["status_counts"]["converged"] == int(good.sum())
    return summary


def test_fit_muse_drp_cube(tmp_path, miles, capsys):
    """A MUSE DRP-style cube (astropy alone; no LSF, no redshift in the file) with only
    --redshift and --telescope; one spaxel without data; 3 batches, the last padded."""
    import rubix_eqx as rx
    from rubix_eqx.cli import main

    from .foreign_files import write_muse_drp_cube

    tel = rx.Telescope.preset("MUSE-WFM", wavelength={"stop": 5600.0})
    wave = np.asarray(tel.wavelength, np.float64)
    velocity = np.array([[-120.0, 0.0], [40.0, 90.0], [150.0, -60.0]])
    flux, variance = _spectra(miles, wave, np.asarray(tel.lsf_fwhm, np.float64), velocity,
                              "air", seed=1)  # fmt: skip
    path = write_muse_drp_cube(tmp_path / "DATACUBE_FINAL.fits", flux, variance, wave[0],
                               1.25, 0.2, ra=RA, dec=DEC, nan_spaxels=[(2, 1)])  # fmt: skip
    out = tmp_path / "fit"
    argv = ["fit", str(path), "--out", str(out), "--redshift", str(Z), "--telescope",
            "MUSE-WFM", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    good = np.ones(velocity.shape, bool)
    good[2, 1] = False
    summary = _check_fit_outputs(out, velocity, good, capsys)
    assert summary["options"]["lsf"] == "declared by telescope MUSE-WFM"
    assert summary["medium"] == "air"


def test_fit_manga_logcube(tmp_path, miles, capsys):
    """A MaNGA DRP-style LOGCUBE (vacuum, log sampling, its LSF from SPECRES) with only
    --redshift and --telescope."""
    from rubix_eqx.cli import main

    from .foreign_files import write_manga_logcube

    log10_start, dlog10, n_wave = np.log10(5000.0), 1e-4, 480
    wave = 10.0 ** (log10_start + dlog10 * np.arange(n_wave))
    resolution = np.full(n_wave, 1500.0)
    velocity = np.array([[-80.0, 30.0], [110.0, 0.0]])
    flux, variance = _spectra(miles, wave, wave / resolution, velocity, "vacuum", seed=2)
    path = write_manga_logcube(tmp_path / "manga-LOGCUBE.fits", flux, 1 / variance,
                               log10_start, dlog10, 0.5, specres=resolution, ra=RA,
                               dec=DEC)  # fmt: skip
    out = tmp_path / "fit"
    assert main(["fit", str(path), "--out", str(out), "--redshift", str(Z),
                 "--telescope", "MaNGA"]) == 0  # fmt: skip
    summary = _check_fit_outputs(out, velocity, np.ones(velocity.shape, bool), capsys)
    assert summary["options"]["lsf"] == "recorded in the cube"
    assert summary["medium"] == "vacuum" and summary["options"]["telescope"] == "MaNGA"


def _foreign_cube(tmp_path, n_wave=40):
    from .foreign_files import write_muse_drp_cube

    flux = np.ones((2, 2, n_wave))
    return write_muse_drp_cube(tmp_path / "cube.fits", flux, 0.01 * flux, 5000.0, 1.25, 0.2)


def test_fit_needs_a_redshift_for_a_foreign_cube(tmp_path, capsys):
    from rubix_eqx.cli import main

    path = _foreign_cube(tmp_path)
    assert main(["fit", str(path), "--out", str(tmp_path / "fit")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "records no redshift or distance" in err
    assert "--redshift" in err and "--distance" in err
    assert not (tmp_path / "fit").exists()


def test_fit_observation_options_and_file_keywords(tmp_path):
    """Options decide redshift and distance (a distance alone: z = 0); without them the
    file's REDSHIFT/DISTANCE (FITS keywords or HDF5 attributes) are used."""
    import argparse

    import rubix_eqx as rx
    import rubix_eqx.io  # noqa: F401
    from rubix_eqx.cli import fit_observation
    from rubix_eqx.config import ConfigError

    def args(redshift=None, distance=None):
        return argparse.Namespace(redshift=redshift, distance=distance)

    cube = rx.io.read_cube(_foreign_cube(tmp_path))
    obs, info = fit_observation(args(distance=16.5), cube, {}, Path("c"))
    assert float(obs.redshift) == 0.0 and float(obs.distance) == 16.5
    assert info == {"redshift": 0.0, "distance": 16.5, "source": "options"}
    assert (obs.ra, obs.dec) == (cube.ra, cube.dec)
    obs, info = fit_observation(args(redshift=0.02), cube, {}, Path("c"))
    assert float(obs.redshift) == 0.02 and obs.distance is None
    with pytest.raises(ConfigError, match=r"--redshift 0: .* needs --distance"):
        fit_observation(args(redshift=0.0), cube, {}, Path("c"))

    for kw in ({"redshift": 0.03}, {"redshift": 0.01, "distance": 40.0}, {"distance": 9.0}):
        observation = rx.Observation(**kw)
        ours = dataclasses.replace(cube, redshift=observation.redshift)
        for suffix in (".fits", ".h5"):
            path = tmp_path / f"ours{suffix}"
            (rx.io.write_cube_fits if suffix == ".fits" else rx.io.write_cube_hdf5)(
                ours, path, observation=observation
            )
            obs, info = fit_observation(args(), rx.io.read_cube(path), rx.io.read_metadata(path),
                                        path)  # fmt: skip
            assert info["source"] == "file"
            assert info["redshift"] == pytest.approx(kw.get("redshift", 0.0))
            assert info["distance"] == kw.get("distance")
            assert float(obs.redshift) == pytest.approx(kw.get("redshift", 0.0))


def test_fit_lsf_option(tmp_path):
    import rubix_eqx as rx
    import rubix_eqx.io  # noqa: F401
    from rubix_eqx.cli import fit_lsf, fit_telescope
    from rubix_eqx.config import ConfigError

    cube = rx.io.read_cube(_foreign_cube(tmp_path))  # 5000-5048.75 Å, no LSF
    wave = np.asarray(cube.wavelength)
    same, described = fit_lsf(None, cube)
    assert same is cube and described is None
    same, described = fit_lsf("2.5", cube)
    assert np.all(np.asarray(same.lsf_fwhm) == 2.5) and "--lsf-fwhm" in described
    table = tmp_path / "lsf.txt"
    table.write_text("# wavelength FWHM\n4000 2.0\n6000 4.0\n")
    same, _ = fit_lsf(str(table), cube)
    np.testing.assert_allclose(np.asarray(same.lsf_fwhm), 2.0 + (wave - 4000.0) / 1000.0)
    assert same.lsf_fwhm.dtype == cube.wavelength.dtype and same.flux is cube.flux
    table.write_text("5010 2.0\n6000 4.0\n")
    with pytest.raises(ConfigError, match=r"--lsf-fwhm .*lsf.txt: the table covers 5010-6000"):
        fit_lsf(str(table), cube)
    table.write_text("5010 2.0 1\n6000 4.0 1\n")
    with pytest.raises(ConfigError, match=r"two columns"):
        fit_lsf(str(table), cube)
    with pytest.raises(ConfigError, match=r"--lsf-fwhm: must be > 0 Angstrom"):
        fit_lsf("-1", cube)
    with pytest.raises(ConfigError, match=r"--lsf-fwhm nope: not a number and no such file"):
        fit_lsf("nope", cube)

    # telescopes: the cube's (INSTRUME MUSE, 0.2" -> MUSE-WFM), a YAML file, errors
    assert fit_telescope(None, cube)[0].name == "MUSE-WFM"
    with pytest.raises(ConfigError, match=r"--telescope MaNGAA: unknown preset\. Did you mean"):
        fit_telescope("MaNGAA", cube)
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(
        "name: mine\nspaxel_size: 0.2\nn_x: 2\nn_y: 2\nlsf_fwhm: 2.5\n"
        "wavelength: {start: 4000.0, stop: 6000.0, step: 1.0e+0}\n"
    )
    assert fit_telescope(str(yaml_file), cube)[0].name == "mine"
    unknown = dataclasses.replace(cube, telescope="KMOS")
    with pytest.raises(ConfigError, match=r"'KMOS' is not a preset .* --telescope .* --lsf-fwhm"):
        fit_telescope(None, unknown)
    telescope, source = fit_telescope(None, fit_lsf("2.5", unknown)[0])
    assert telescope.name == "KMOS" and "no preset" in source


def test_fit_in_batches_stitches_and_compiles_once():
    """Batches of 4 spaxels of a 3x3 cube (the last padded with 3 masked spaxels) stitch
    back in the cube's order: each batch equals `fit_spaxels` of that batch as its own
    cube (same shape: no new compilation); and a second run compiles nothing."""
    import jax
    import jax.numpy as jnp
    import rubix_eqx as rx
    from rubix_eqx.cli import fit_in_batches

    from .cases import observation, tiny_ssp, tiny_telescope
    from .test_papercuts import count_compilations

    ssp, tel, obs = tiny_ssp(metal_slope=0.3), tiny_telescope(n=3), observation()
    cube = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=50.0))(
        random_galaxy(1, 300), obs, key=jax.random.key(2)
    )
    batched, _, _ = fit_in_batches(cube, ssp, tel, obs, batch_size=4, progress=False)
    n_wave = cube.shape[2]
    flux, variance = cube.flux.reshape(9, n_wave), cube.variance.reshape(9, n_wave)
    mask = cube.mask.reshape(9)
    for rows in (np.arange(4, 8), np.array([8, 0, 4, 2])):  # any 4 spaxels: one shape
        part = dataclasses.replace(
            cube, flux=flux[rows][:, None], variance=variance[rows][:, None],
            mask=mask[rows][:, None],
        )  # fmt: skip
        with count_compilations() as count:
            alone = rx.fit.fit_spaxels(part, ssp, tel, obs)
        assert count() == 0
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(batched)):
            assert b.shape == (3, 3)
            np.testing.assert_allclose(
                np.asarray(a).reshape(4), np.asarray(b).reshape(9)[rows], rtol=1e-5, atol=1e-8
            )
    assert batched.status.dtype == jnp.int32
    with count_compilations() as count:
        fit_in_batches(cube, ssp, tel, obs, batch_size=4, progress=False)
    assert count() == 0


def test_info(capsys):
    from rubix_eqx.cli import main

    assert main(["info"]) == 0
    assert "rubix_eqx" in capsys.readouterr().out


def test_infer_writes_posterior_of_a_cube_made_by_run(tmp_path, capsys):
    """`rubix-eqx run` makes a small noisy cube; `rubix-eqx infer` on the same config and
    that FITS file writes the table, JSON, corner plot and samples; the priors come from
    the config's `inference:` section and the truth lies within 3σ of the posterior mean."""
    import h5py
    from rubix_eqx.cli import main

    ssp_path = tmp_path / "tiny_ssp.h5"
    tiny_ssp(metal_slope=0.3).to_hdf5(ssp_path)
    config = yaml.safe_load(DEFAULT.read_text())
    config["galaxy"].update(n_stars=1000, total_mass=1.0e10, metallicity_centre=-0.2)
    config["telescope"].update(n_x=4, n_y=4, spaxel_size=1.2,
                               wavelength={"start": 4800.0, "stop": 5400.0})  # fmt: skip
    config["ssp"] = str(ssp_path)
    config["pipeline"].update(psf=False, noise={"snr": 30.0})
    config["output"].update(cube_hdf5=None, quicklook=None)
    config["inference"] = {"priors": {"log_mass": [9.0, 11.0], "metallicity": [-0.6, 0.1]}}
    path = tmp_path / "disk.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "post"
    argv = ["infer", str(path), str(tmp_path / "run" / "cube.fits"), "--out", str(out),
            "--chains", "2", "--warmup", "20", "--samples", "30", "--seed", "3",
            "--starts", "1"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "MAP converged=True" in captured.err and "wrote" in captured.out
    assert "prior bound" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "corner.png", "posterior.json", "posterior.txt", "samples.h5",
    ]  # fmt: skip
    summary = json.loads((out / "posterior.json").read_text())
    assert summary["names"] == ["log_mass", "metallicity"]
    rows = {row["parameter"]: row for row in summary["parameters"]}
    print(rows)
    assert rows["log_mass"]["truth"] == pytest.approx(10.0, abs=1e-9)  # the config's mass
    for row in rows.values():  # two parameters: each within 3σ (fails by chance 0.5 %)
        assert abs(row["mean"] - row["truth"]) < 3 * row["sigma"], row
        assert row["rhat"] < 1.2 and row["sigma"] > 0, row
    assert "log_mass" in (out / "posterior.txt").read_text()
    assert png_size(out / "corner.png")[0] > 0
    with h5py.File(out / "samples.h5") as f:
        assert f["samples/log_mass"].shape == (2, 30) and "laplace" in f


def test_infer_rejects_bad_global_start_options(tmp_path, capsys):
    """--screen < 0 or --starts outside [1, screen + 1] → a named error before any work."""
    from rubix_eqx.cli import main

    base = ["infer", str(tmp_path / "run.yaml"), str(tmp_path / "cube.fits"), "--out",
            str(tmp_path / "post")]  # fmt: skip
    assert main(base + ["--screen", "-1"]) == 1
    assert "--screen: must be >= 0 prior draws, got -1" in capsys.readouterr().err
    assert main(base + ["--screen", "3", "--starts", "5"]) == 1
    assert "--starts: must lie in [1, --screen + 1] = [1, 4], got 5" in capsys.readouterr().err
    assert not (tmp_path / "post").exists()
