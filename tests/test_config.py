"""Run configs: every class of error names its key path; overrides; the default config."""

import re
from pathlib import Path

import pytest
import rubix_eqx as rx
import yaml
from rubix_eqx.config import apply_override, check_config, ConfigError, load_config


DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
TELESCOPES_MD = Path(__file__).resolve().parents[1] / "docs" / "telescopes.md"


def base() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def check_with(*overrides: str):
    config = base()
    for item in overrides:
        config = apply_override(config, item)
    return check_config(config)


def test_default_config_checks():
    spec = check_config(load_config(DEFAULT))
    assert spec.telescope.name == "MUSE-WFM" and (spec.telescope.n_x, spec.telescope.n_y) == (
        40,
        40,
    )
    assert spec.telescope.spaxel_size == 0.4 and spec.ssp == "miles" and spec.seed == 0
    assert spec.galaxy == {
        "source": "synthetic",
        "n_stars": 100000,
        "total_mass": 1e10,
        "scale_length": 1.5,
        "v_flat": 200.0,
    }
    assert spec.observation == {
        "redshift": 0.05,
        "inclination": 60.0,
        "position_angle": 30.0,
        "ra": 150.0,
        "dec": 2.0,
    }
    assert spec.pipeline["noise"] == "telescope" and spec.pipeline["allow_sharper_lsf"] is True
    assert spec.output == {"directory": "out", "cube_fits": "cube.fits", "cube_hdf5": "cube.h5",
                           "quicklook": "quicklook.png", "summary": "summary.json"}  # fmt: skip


def test_overrides():
    spec = check_config(load_config(DEFAULT, [
        "telescope.psf.fwhm=0.9", "galaxy.n_stars=500", "observation.redshift=0.07",
        "pipeline.noise={snr: 15, window: [6000, 6400]}", "output.quicklook=null", "seed=4",
        "telescope.wavelength.stop=7000",
    ]))  # fmt: skip
    assert spec.telescope.psf.fwhm == 0.9 and spec.telescope.psf.beta == 2.8  # merged, not replaced
    assert spec.galaxy["n_stars"] == 500 and spec.observation["redshift"] == 0.07 and spec.seed == 4
    assert spec.pipeline["noise"] == {"snr": 15.0, "window": (6000.0, 6400.0)}
    assert spec.output["quicklook"] is None
    assert (
        float(spec.telescope.wavelength[-1]) == 7000.0
        and float(spec.telescope.wavelength[0]) == 4750.0
    )
    # a telescope given by name can be overridden field by field
    spec = check_config(apply_override({"telescope": "SAMI"}, "telescope.n_x=12"))
    assert spec.telescope.name == "SAMI" and spec.telescope.n_x == 12 and spec.telescope.n_y == 50
    spec = check_config(apply_override({}, "telescope.n_x=12"))  # no telescope: the default preset
    assert spec.telescope.name == "MUSE-WFM" and spec.telescope.n_x == 12


def test_telescope_forms(tmp_path):
    inline = {
        "name": "mine", "spaxel_size": 0.5, "n_x": 4, "n_y": 6, "lsf_fwhm": 3.0,
        "wavelength": {"start": 5000.0, "stop": 6000.0, "step": 2.0},
    }  # fmt: skip
    tel = check_config({"telescope": inline}).telescope
    assert (tel.name, tel.n_x, tel.n_y, tel.n_wave) == ("mine", 4, 6, 501)
    (tmp_path / "tel.yaml").write_text(yaml.safe_dump(inline))
    tel = check_config({"telescope": {"file": str(tmp_path / "tel.yaml"), "n_x": 9}}).telescope
    assert tel.n_x == 9 and tel.name == "mine"
    tel = check_config(
        {"telescope": {"preset": "MaNGA", "overrides": {"psf": {"fwhm": 2.0}}}}
    ).telescope
    assert tel.psf.fwhm == 2.0


ERRORS = [
    # (overrides, the message or its start)
    (["telescope.psf.fwhm=-1"], "telescope.psf.fwhm: must be > 0, got -1."),
    (["galaxy.n_star=10"], "galaxy.n_star: unknown key. Did you mean `n_stars`?"),
    (["observaton.redshift=0.1"], "observaton: unknown key. Did you mean `observation`?"),
    (["telescope.n_xx=3"], "telescope.n_xx: unknown key. Did you mean `n_x`?"),
    (
        ["telescope.overrides.spaxel=3"],
        "telescope.overrides.spaxel: unknown key. Did you mean `spaxel_size`?",
    ),
    (["pipeline.noise={snrr: 3}"], "pipeline.noise.snrr: unknown key. Did you mean `snr`?"),
    (["galaxy.n_stars=many"], "galaxy.n_stars: must be an integer, got 'many'."),
    (["galaxy.scale_length=-2"], "galaxy.scale_length: must be > 0, got -2."),
    (["galaxy.bulge_fraction=1.5"], "galaxy.bulge_fraction: must be <= 1, got 1.5."),
    (
        ["galaxy.source=simulation"],
        "galaxy.source: must be one of synthetic, file; got 'simulation'.",
    ),
    (["observation.redshift=-0.1"], "observation.redshift: must be >= 0, got -0.1."),
    (
        ["observation.inclination=200"],
        "observation.inclination: must lie in [0, 180] degrees, got 200.",
    ),
    (["observation.dec=95"], "observation.dec: must lie in [-90, 90] degrees, got 95."),
    (["observation.ra=abc"], "observation.ra: must be a number, got 'abc'."),
    (
        ["telescope.preset=MUSE-WMF"],
        "telescope.preset: unknown preset 'MUSE-WMF'. Did you mean `MUSE-WFM`? Available: ",
    ),
    (["telescope.wavelength.step=0"], "telescope.wavelength.step: must be > 0, got 0."),
    (["pipeline.deposit=ngp"], "pipeline.deposit: must be one of cic, nearest, smoothed; got 'ngp'."),
    (["pipeline.lsf=yes please"], "pipeline.lsf: must be true or false, got 'yes please'."),
    (
        ["pipeline.noise={snr: 5, window: [7000, 6000]}"],
        "pipeline.noise.window: start must be < stop, got [7000.0, 6000.0].",
    ),
    (["ssp=bc03"], "ssp: unknown grid 'bc03'; give `miles` or the path of an SSP HDF5 file."),
    (["ssp=missing.h5"], "ssp: file not found: missing.h5"),
    (["output.cube_fits=3"], "output.cube_fits: must be a path (or null to skip), got 3."),
    (["seed=-1"], "seed: must be >= 0, got -1."),
    (["galaxy={source: file, loader: tng}"], "galaxy.path: required key is missing."),
    (["galaxy={source: file, path: nowhere.h5}"], "galaxy.path: file not found: nowhere.h5"),
]


@pytest.mark.parametrize("overrides, message", ERRORS, ids=[e[0][0] for e in ERRORS])
def test_error_names_key_path(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_with(*overrides)
    assert str(info.value) == message or (
        message.endswith(": ") and str(info.value).startswith(message)
    )


def test_file_galaxy_errors(tmp_path):
    snap = tmp_path / "snap.hdf5"
    snap.write_bytes(b"")
    cases = [
        (
            {"loader": "tng", "subhalo_id": 3},
            "galaxy.catalog: required with subhalo_id/group_id for `loader: tng`",
        ),
        (
            {"loader": "hdf5", "subhalo_id": 3},
            "galaxy.subhalo_id: only for `loader: tng` or `loader: eagle`.",
        ),
        ({"loader": "eagle", "catalog": str(snap)}, "galaxy.catalog: only for `loader: tng`"),
        ({"loader": "eagle", "group_id": 0}, "galaxy.group_id: must be >= 1, got 0."),
        ({"loader": "tng", "centre": False, "align": True}, "galaxy.align: needs `centre: true`"),
        ({"loader": "gadget"}, "galaxy.loader: must be one of hdf5, tng, eagle; got 'gadget'."),
        (
            {"loader": "tng", "metallicity": "smoothed"},
            "galaxy.metallicity: only for `loader: eagle`.",
        ),
        ({"loader": "tng", "radius": 0}, "galaxy.radius: must be > 0, got 0."),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError) as info:
            check_config({"galaxy": {"source": "file", "path": str(snap), **extra}})
        assert str(info.value).startswith(message), str(info.value)
    spec = check_config({"galaxy": {"source": "file", "path": str(snap), "loader": "tng"}})
    assert (
        spec.galaxy["centre"] is True and spec.galaxy["align"] is False
    )  # defaults for simulations
    spec = check_config({"galaxy": {"source": "file", "path": str(snap)}})
    assert spec.galaxy["loader"] == "hdf5" and spec.galaxy["centre"] is False


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ngalaxy:\n  source: synthetic\n  n_stars: [1, 2\nobservation: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line 5, column \d+"):
        load_config(path)
    path.write_text("seed: 0\nmystery: 1\n")
    with pytest.raises(ConfigError, match="mystery: unknown key. Allowed: seed, galaxy"):
        load_config(path)


def test_bad_overrides():
    with pytest.raises(ConfigError, match=r"--set 'galaxy.n_stars': expected key.path=value."):
        load_config(DEFAULT, ["galaxy.n_stars"])
    with pytest.raises(ConfigError, match=r"`ssp` is str 'miles', not a mapping."):
        load_config(DEFAULT, ["ssp.name=x"])
    with pytest.raises(ConfigError, match="the value is not valid YAML"):
        load_config(DEFAULT, ["seed=[1, 2"])
    with pytest.raises(ConfigError, match="empty key"):
        load_config(DEFAULT, ["galaxy..n=1"])


# --------------------------------------------------------------------------------------
# One telescope key table: the loader, the run config and the docs agree with it


def _documented_keys() -> list[str]:
    text = TELESCOPES_MD.read_text()
    section = text.split("## YAML schema", 1)[1].split("Number of wavelength pixels", 1)[0]
    return re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE)


def test_every_telescope_key_is_documented_and_every_documented_key_exists():
    from rubix_eqx.config import TELESCOPE_KEYS

    table = [key.name for key in TELESCOPE_KEYS]
    documented = _documented_keys()
    assert len(set(table)) == len(table) and len(set(documented)) == len(documented)
    assert set(table) - set(documented) == set(), "in TELESCOPE_KEYS, not in docs/telescopes.md"
    assert set(documented) - set(table) == set(), "in docs/telescopes.md, not in TELESCOPE_KEYS"
    for key in TELESCOPE_KEYS:  # and each row is the rendered one (`python -m rubix_eqx.config`)
        assert f"| `{key.name}` | {key.type} | {key.unit} |" in TELESCOPES_MD.read_text()


def test_the_key_table_is_the_schema_of_presets_and_run_configs():
    """Every key of every preset is a row of the table; the run config's `telescope`
    section takes exactly the table's top-level keys (plus preset/file/overrides); a key
    the table does not have is refused in both, naming the path."""
    from rubix_eqx.config import read_yaml, TELESCOPE_KEYS

    names = {key.name for key in TELESCOPE_KEYS}
    for preset in rx.telescope.presets():
        data = read_yaml(rx.telescope.preset_dir() / f"{preset}.yaml")
        for key, value in data.items():
            assert key in names, (preset, key)
            if isinstance(value, dict) and key not in ("lsf_fwhm",):
                for sub in value:
                    assert f"{key}.{sub}" in names, (preset, key, sub)
    defaults = {k.name: k.default for k in TELESCOPE_KEYS}
    spec = check_config({"telescope": {"preset": "SAMI", "detector": {"read_noise": None}}})
    assert spec.telescope.detector.read_noise == defaults["detector.read_noise"] == 0.0
    with pytest.raises(ConfigError, match=r"^telescope\.psf\.betta: unknown key\. Did you mean"):
        check_config({"telescope": {"preset": "SAMI", "psf": {"betta": 2.0}}})
    with pytest.raises(ConfigError, match=r"^telescope\[SAMI\]\.psf\.betta: unknown key"):
        rx.Telescope.preset("SAMI", psf={"betta": 2.0})


@pytest.mark.parametrize(
    "window, problem",
    [([6000.0], r"must be \[start, stop\] in Angstrom, got"),
     ([6400.0, 6000.0], r"start must be < stop, got \[6400\.0, 6000\.0\]\."),
     ([-1.0, 6000.0], "must be finite and > 0 Angstrom"),
     (["a", 6000.0], r"must be \[start, stop\] in Angstrom \(numbers\)"),
     ([True, 6000.0], r"must be \[start, stop\] in Angstrom \(numbers\)")],
)  # fmt: skip
def test_one_noise_window_check_for_noise_telescope_and_configs(window, problem):
    """The same check (and message) in `rx.Noise`, `rx.Telescope`, a telescope mapping and
    a run config's `pipeline.noise`; each names its own field. (The containers' type check
    refuses a window that is not two floats before the value check sees it.)"""
    from .cases import tiny_telescope

    with pytest.raises(ConfigError, match=r"^telescope\[SAMI\]\.noise\.window: " + problem):
        rx.Telescope.preset("SAMI", noise={"window": window})
    with pytest.raises(ConfigError, match=r"^pipeline\.noise\.window: " + problem):
        check_config({"pipeline": {"noise": {"snr": 5.0, "window": window}}})
    if len(window) == 2 and all(type(w) is float for w in window):
        with pytest.raises(ValueError, match=r"^`Noise\(window=\.\.\.\)`: " + problem):
            rx.Noise(snr=10.0, window=tuple(window))
        with pytest.raises(ValueError, match=r"^`Telescope\.snr_window`: " + problem):
            tiny_telescope(snr=10.0, snr_window=tuple(window))
    assert rx.Noise(snr=10.0, window=(6000.0, 6400.0)).window == (6000.0, 6400.0)
