import copy

import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
import yaml
from rubix_eqx.config import ConfigError


PRESETS = ["CALIFA-V500", "Hector", "KCWI", "MUSE-NFM", "MUSE-WFM", "MaNGA", "SAMI"]

CONFIG = {
    "name": "toy",
    "description": "a small test IFU",
    "references": ["nobody 2024"],
    "spaxel_size": 0.5,
    "n_x": 8,
    "n_y": 6,
    "aperture": "square",
    "wavelength": {"start": 5000.0, "stop": 5010.0, "step": 1.0, "sampling": "linear"},
    "lsf_fwhm": 2.0,
    "psf": {"kind": "moffat", "fwhm": 1.0, "beta": 2.5},
    "noise": {"snr": 20.0, "window": [5002.0, 5008.0]},
}


def config(**changes):
    """`CONFIG` with top-level keys changed; a value of `None` removes the key."""
    out = copy.deepcopy(CONFIG)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_presets_list():
    assert rx.telescope.presets() == sorted(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_loads(name):
    tel = rx.Telescope.preset(name)
    assert tel.name == name
    assert tel.n_wave == tel.lsf_fwhm.shape[0] > 100
    assert np.all(np.diff(np.asarray(tel.wavelength, np.float64)) > 0)
    assert np.all(np.asarray(tel.lsf_fwhm) > 0)
    assert tel.psf is not None and tel.psf.fwhm > 0
    assert len(tel.references) >= 1


def test_muse_wfm():
    tel = rx.Telescope.preset("MUSE-WFM")
    assert tel.n_wave == 3681
    assert float(tel.wavelength[0]) == 4750.0 and float(tel.wavelength[-1]) == 9350.0
    np.testing.assert_allclose(np.diff(np.asarray(tel.wavelength, np.float64)), 1.25, atol=1e-3)
    assert tel.spaxel_size == 0.2
    assert (tel.n_x, tel.n_y) == (300, 300)
    assert tel.field_of_view == pytest.approx((60.0, 60.0))
    assert tel.aperture == "square" and tel.sampling == "linear"
    # LSF: Bacon et al. (2017) eq. 8 polynomial, tabulated to 3 decimals.
    lam = np.asarray(tel.wavelength, np.float64)
    poly = 5.866e-8 * lam**2 - 9.187e-4 * lam + 6.040
    np.testing.assert_allclose(tel.lsf_fwhm, poly, atol=3e-3)


def test_manga_is_log_sampled_hexagon():
    tel = rx.Telescope.preset("MaNGA")
    assert tel.sampling == "log"
    assert tel.n_wave == 4563
    dlog = np.diff(np.log10(np.asarray(tel.wavelength, np.float64)))
    np.testing.assert_allclose(dlog, 1e-4, rtol=1e-3)  # float32 pixel centres
    assert tel.aperture == "hexagon" and tel.aperture_diameter == 32.0


def test_preset_name_is_case_insensitive():
    assert rx.Telescope.preset("muse-wfm").name == "MUSE-WFM"


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"Unknown telescope preset 'MUSE'; available: .*MUSE-WFM"):
        rx.Telescope.preset("MUSE")


def test_preset_overrides():
    tel = rx.Telescope.preset("MUSE-WFM", n_x=40, wavelength={"stop": 7000.0}, psf=None)
    assert (tel.n_x, tel.n_y) == (40, 300)
    assert float(tel.wavelength[0]) == 4750.0 and float(tel.wavelength[-1]) == 7000.0
    assert tel.n_wave == 1801
    assert tel.psf is None


def test_preset_override_errors_name_the_preset_and_key():
    with pytest.raises(ConfigError, match=r"telescope\[MUSE-WFM\]\.psf\.fwhm: must be > 0"):
        rx.Telescope.preset("MUSE-WFM", psf={"fwhm": 0.0})
    with pytest.raises(
        ConfigError, match=r"telescope\[MUSE-WFM\]\.n_xx: unknown key\. Did you mean `n_x`\?"
    ):
        rx.Telescope.preset("MUSE-WFM", n_xx=40)


def test_from_dict():
    tel = rx.Telescope.from_dict(CONFIG)
    assert tel.n_wave == 11
    np.testing.assert_array_equal(tel.wavelength, np.arange(5000.0, 5011.0))
    np.testing.assert_array_equal(tel.lsf_fwhm, 2.0)
    assert tel.psf == rx.PSF(kind="moffat", fwhm=1.0, beta=2.5)
    assert tel.snr == 20.0 and tel.snr_window == (5002.0, 5008.0)
    assert tel.references == ("nobody 2024",)


def test_lsf_table_is_interpolated():
    lsf = {"wavelength": [4990.0, 5020.0], "fwhm": [1.0, 4.0]}
    tel = rx.Telescope.from_dict(config(lsf_fwhm=lsf))
    np.testing.assert_allclose(
        tel.lsf_fwhm, 1.0 + 0.1 * (np.arange(5000.0, 5011.0) - 4990.0), rtol=1e-6
    )


def test_from_yaml_matches_from_dict(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    tel = rx.Telescope.from_yaml(path)
    ref = rx.Telescope.from_dict(CONFIG)
    assert tel.name == ref.name and tel.psf == ref.psf
    np.testing.assert_array_equal(tel.wavelength, ref.wavelength)


def _nested(key, **changes):
    out = copy.deepcopy(CONFIG[key])
    out.update(changes)
    return out


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"spaxel_sise": 0.2},
            r"telescope\.spaxel_sise: unknown key\. Did you mean `spaxel_size`\?",
        ),
        (
            {"psf": _nested("psf", fwmh=1.0)},
            r"telescope\.psf\.fwmh: unknown key\. Did you mean `fwhm`\?",
        ),
        (
            {"wavelength": _nested("wavelength", stepp=1.0)},
            r"telescope\.wavelength\.stepp: unknown key\. Did you mean `step`\?",
        ),
        ({"zzz": 1}, r"telescope\.zzz: unknown key\. Allowed: name, "),
        ({"n_y": None}, r"telescope\.n_y: required key is missing"),
        (
            {"wavelength": {"start": 5000.0, "stop": 5010.0}},
            r"telescope\.wavelength\.step: required key is missing",
        ),
        ({"psf": _nested("psf", fwhm=0.0)}, r"telescope\.psf\.fwhm: must be > 0"),
        ({"psf": _nested("psf", fwhm=-1.0)}, r"telescope\.psf\.fwhm: must be > 0"),
        (
            {"psf": _nested("psf", kind="airy")},
            r"telescope\.psf\.kind: must be one of gaussian, moffat",
        ),
        ({"psf": _nested("psf", beta=1.0)}, r"telescope\.psf\.beta: must be >= 1"),
        ({"psf": "gaussian"}, r"telescope\.psf: must be a mapping"),
        ({"n_x": "40"}, r"telescope\.n_x: must be an integer, got '40'"),
        ({"n_x": 2.5}, r"telescope\.n_x: must be an integer"),
        ({"n_y": True}, r"telescope\.n_y: must be an integer"),
        ({"n_x": 0}, r"telescope\.n_x: must be >= 1"),
        ({"spaxel_size": "0.2 arcsec"}, r"telescope\.spaxel_size: must be a number"),
        ({"spaxel_size": [0.2]}, r"telescope\.spaxel_size: must be a number"),
        ({"spaxel_size": 0.0}, r"telescope\.spaxel_size: must be > 0"),
        ({"spaxel_size": float("nan")}, r"telescope\.spaxel_size: must be finite"),
        (
            {"wavelength": _nested("wavelength", sampling="logarithmic")},
            r"telescope\.wavelength\.sampling: must be one of linear, log",
        ),
        (
            {"wavelength": _nested("wavelength", step=-1.0)},
            r"telescope\.wavelength\.step: must be > 0",
        ),
        (
            {"wavelength": _nested("wavelength", stop=4000.0)},
            r"telescope\.wavelength\.stop: must be > start",
        ),
        # An array of pixel centres is allowed since issue #13 (this asserted "must be a
        # mapping"); a bad array names the key.
        (
            {"wavelength": [5010.0, 5000.0]},
            r"telescope\.wavelength: pixel centres must be strictly increasing",
        ),
        ({"wavelength": "wide"}, r"telescope\.wavelength: must be \{start, stop, step\} or an"),
        ({"lsf_fwhm": 0.0}, r"telescope\.lsf_fwhm: must be > 0"),
        (
            {"lsf_fwhm": {"wavelength": [5020.0, 4990.0], "fwhm": [1.0, 2.0]}},
            r"telescope\.lsf_fwhm\.wavelength: must be strictly increasing",
        ),
        (
            {"lsf_fwhm": {"wavelength": [5003.0, 5020.0], "fwhm": [1.0, 2.0]}},
            r"telescope\.lsf_fwhm: table covers",
        ),
        (
            {"lsf_fwhm": {"wavelength": [4990.0, 5020.0], "fwhm": [1.0]}},
            r"telescope\.lsf_fwhm: `wavelength` and `fwhm` need the same length",
        ),
        (
            {"lsf_fwhm": {"wavelength": [4990.0, 5020.0], "fwhm": [1.0, -2.0]}},
            r"telescope\.lsf_fwhm\.fwhm: must be > 0",
        ),
        ({"aperture": "octagon"}, r"telescope\.aperture: must be one of square, hexagon, circle"),
        ({"aperture": "hexagon"}, r"telescope\.aperture_diameter: must be a number, got None"),
        (
            {"aperture": "circle", "aperture_diameter": -3.0},
            r"telescope\.aperture_diameter: must be > 0",
        ),
        ({"noise": {"snr": 0.0}}, r"telescope\.noise\.snr: must be > 0"),
        ({"noise": {"window": [5008.0]}}, r"telescope\.noise\.window: must be \[start, stop\]"),
        (
            {"noise": {"window": [5008.0, 5002.0]}},
            r"telescope\.noise\.window: start must be < stop",
        ),
        ({"noise": {"sn": 10.0}}, r"telescope\.noise\.sn: unknown key\. Did you mean `snr`\?"),
    ],
)
def test_config_errors_name_the_key_path(changes, message):
    with pytest.raises(ConfigError, match=message):
        rx.Telescope.from_dict(config(**changes))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config(n_x=-2)))
    with pytest.raises(ConfigError, match=r"bad\.yaml\.n_x: must be >= 1"):
        rx.Telescope.from_yaml(path)


def test_yaml_exponent_without_sign_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `2.0e1` as a string; it is accepted as the number 20.
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config(noise=None)) + "noise:\n  snr: 2.0e1\n")
    assert yaml.safe_load(path.read_text())["noise"]["snr"] == "2.0e1"
    assert rx.Telescope.from_yaml(path).snr == 20.0


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: toy\nspaxel_size: 0.5\nwavelength: {start: 5000.0, stop: 5010.0\nn_x: 8\n"
    )
    with pytest.raises(ConfigError, match=r"broken\.yaml: malformed YAML at line 4, column \d+"):
        rx.Telescope.from_yaml(path)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        rx.Telescope.from_yaml(tmp_path / "nothing.yaml")


# ----------------------------------------------------------------------- direct construction


def telescope_kwargs(**changes):
    kwargs = dict(
        name="toy",
        spaxel_size=0.5,
        n_x=8,
        n_y=6,
        wavelength=jnp.linspace(5000.0, 5010.0, 11),
        lsf_fwhm=jnp.full((11,), 2.0),
    )
    kwargs.update(changes)
    return kwargs


def test_direct_construction_and_replace():
    tel = rx.Telescope(**telescope_kwargs())
    assert tel.n_wave == 11 and tel.field_of_view == (4.0, 3.0)
    assert tel.replace(n_x=4).field_of_view == (2.0, 3.0)
    with pytest.raises(ValueError, match=r"Telescope\.spaxel_size"):
        tel.replace(spaxel_size=-0.1)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"spaxel_size": 0.0}, r"Telescope\.spaxel_size` must be > 0"),
        ({"spaxel_size": -0.2}, r"Telescope\.spaxel_size` must be > 0"),
        ({"n_x": 0}, r"Telescope\.n_x` must be >= 1"),
        ({"n_y": -1}, r"Telescope\.n_y` must be >= 1"),
        ({"aperture": "octagon"}, r"Telescope\.aperture` must be one of"),
        ({"aperture": "hexagon"}, r"Telescope\.aperture_diameter` must be > 0"),
        (
            {"aperture": "circle", "aperture_diameter": 0.0},
            r"Telescope\.aperture_diameter` must be > 0",
        ),
        ({"sampling": "cubic"}, r"Telescope\.sampling` must be one of"),
        (
            {"wavelength": jnp.linspace(5010.0, 5000.0, 11)},
            r"Telescope\.wavelength` must be strictly increasing",
        ),
        (
            {"wavelength": jnp.full((11,), 5000.0)},
            r"Telescope\.wavelength` must be strictly increasing",
        ),
        ({"wavelength": jnp.linspace(-5.0, 5.0, 11)}, r"Telescope\.wavelength` must be positive"),
        (
            {"wavelength": jnp.array([5000.0]), "lsf_fwhm": jnp.array([2.0])},
            r"Telescope\.wavelength` must be strictly increasing with >= 2",
        ),
        ({"lsf_fwhm": jnp.zeros(11)}, r"Telescope\.lsf_fwhm` must be finite and > 0"),
        ({"snr": 0.0}, r"Telescope\.snr` must be > 0"),
    ],
)
def test_direct_construction_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        rx.Telescope(**telescope_kwargs(**changes))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="airy", fwhm=1.0), r"PSF\.kind` must be one of"),
        (dict(kind="gaussian", fwhm=0.0), r"PSF\.fwhm` must be > 0"),
        (dict(kind="moffat", fwhm=1.0), r"PSF\.beta` must be > 1"),
        (dict(kind="moffat", fwhm=1.0, beta=0.5), r"PSF\.beta` must be > 1"),
    ],
)
def test_psf_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rx.PSF(**kwargs)
