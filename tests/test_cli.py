"""The `rubix-eqx` command: `run` with the default config (shrunk with --set, tiny SSP),
errors, and the `fit` slot."""

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
    from rubix_eqx._config_checks import ConfigError

    with pytest.raises(ConfigError, match="galaxy.n_star: unknown key"):
        main(["run", str(DEFAULT), "--set", "galaxy.n_star=3", "--debug"])
    assert not list(tmp_path.iterdir())  # nothing written on failure


def test_fit_slot(monkeypatch, capsys):
    import rubix_eqx.fit
    from rubix_eqx.cli import main

    monkeypatch.delattr(rubix_eqx.fit, "cli_fit", raising=False)
    assert main(["fit", "cube.fits", "--out", "fitdir"]) == 1
    assert "`rubix-eqx fit` is not available" in capsys.readouterr().err
    seen = {}

    def cli_fit(args):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(rubix_eqx.fit, "cli_fit", cli_fit, raising=False)
    assert main(["fit", "cube.fits", "--out", "fitdir", "--maps", "age"]) == 0
    assert (
        seen["cube"] == "cube.fits"
        and seen["out"] == "fitdir"
        and seen["fit_args"] == ["--maps", "age"]
    )


def test_info(capsys):
    from rubix_eqx.cli import main

    assert main(["info"]) == 0
    assert "rubix_eqx" in capsys.readouterr().out
