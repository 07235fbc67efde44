"""Issue #13's papercuts, one test (or a few) each: NumPy/list fields of `Galaxy`,
wavelength arrays for telescopes, YAML numbers such as `1e5`, `--set key=null`, an
unreachable wavelength `stop`, and `fit_spaxels` compiling once per shape."""

import contextlib
import time

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
import rubix_eqx as rx
from jax import monitoring

from .cases import observation, random_galaxy, tiny_ssp, tiny_telescope


# --------------------------------------------------------------------------------------
# Compilation counter: XLA backend compilations, from JAX's monitoring events.

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
    """`with count_compilations() as count: ...; count()` = backend compilations inside."""
    seen = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            seen.append(duration)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield lambda: len(seen)
    finally:
        monitoring.unregister_event_duration_listener(listener)


def test_compile_counter_counts():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0)
    x, y = jnp.ones(7), jnp.zeros(7)
    with count_compilations() as count:
        f(x).block_until_ready()
        f(y).block_until_ready()
    assert count() == 1


def test_fit_spaxels_compiles_once_per_shape():
    """A second `fit_spaxels` call on a same-shaped cube (other data) compiles nothing:
    the jitted search and solve are module-level functions taking the model as an
    argument, and the model's static fields compare equal across calls."""
    ssp, tel, obs = tiny_ssp(metal_slope=0.3), tiny_telescope(n=2), observation()
    pipe = rx.Pipeline(tel, ssp, noise=rx.Noise(snr=50.0), dtype=jnp.float64)
    cubes = [pipe(random_galaxy(seed, 200), obs, key=jax.random.key(seed + 10)) for seed in (0, 1)]
    assert not np.array_equal(np.asarray(cubes[0].flux), np.asarray(cubes[1].flux))
    counts, seconds = [], []
    for cube in cubes:
        with count_compilations() as count:
            t0 = time.perf_counter()
            fit = jax.block_until_ready(rx.fit.fit_spaxels(cube, ssp, tel, obs))
            seconds.append(time.perf_counter() - t0)
        counts.append(count())
        assert np.all(np.abs(np.asarray(fit.chi2) - 1) < 0.3)
    print(f"fit_spaxels: first call {seconds[0]:.2f} s ({counts[0]} compilations), "
          f"second {seconds[1]:.2f} s ({counts[1]})")  # fmt: skip
    assert counts[0] > 0 and counts[1] == 0


# --------------------------------------------------------------------------------------
# Galaxy from NumPy arrays and lists


N = 4
FIELDS = dict(
    position=np.arange(12.0).reshape(N, 3) / 10,
    velocity=np.linspace(-100.0, 100.0, 12).reshape(N, 3),
    mass=np.array([1e5, 2e5, 3e5, 4e5]),
    age=np.array([1.0, 2.0, 5.0, 10.0]),
    metallicity=np.array([0.004, 0.008, 0.019, 0.03]),
)


@pytest.mark.parametrize("kind", ["numpy", "list", "jax", "mixed"])
def test_galaxy_takes_numpy_arrays_and_lists(kind):
    convert = {
        "numpy": lambda name, a: a,
        "list": lambda name, a: a.tolist(),
        "jax": lambda name, a: jnp.asarray(a),
        "mixed": lambda name, a: a.tolist() if name in ("mass", "position") else a,
    }[kind]
    gal = rx.Galaxy(**{name: convert(name, a) for name, a in FIELDS.items()})
    ref = rx.Galaxy.from_arrays(**FIELDS)
    for name, a in FIELDS.items():
        value = getattr(gal, name)
        assert isinstance(value, jax.Array) and value.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(value), a)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(getattr(ref, name)))


def test_galaxy_keeps_float_dtypes_and_converts_integers():
    gal = rx.Galaxy(**{**FIELDS, "mass": FIELDS["mass"].astype(np.float32),
                       "age": [1, 2, 5, 10]})  # fmt: skip
    assert gal.mass.dtype == jnp.float32 and gal.age.dtype == jnp.float64
    assert gal.position.dtype == jnp.float64


@pytest.mark.parametrize(
    "field, value",
    [
        ("position", np.zeros((N, 2))),  # trailing dimension
        ("velocity", np.zeros(N).tolist()),  # rank
        ("mass", np.ones((N, 1))),
        ("age", [1.0, 2.0, 3.0]),  # length
        ("metallicity", np.full(N + 1, 0.02)),
    ],
)
def test_galaxy_from_numpy_keeps_the_shape_checks(field, value):
    with pytest.raises(jaxtyping.TypeCheckError, match=rf"parameter '{field}'"):
        rx.Galaxy(**{**FIELDS, field: value})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("age", np.array([1.0, -2.0, 3.0, 4.0]), r"`Galaxy\.age` is negative for 1 of 4"),
        ("mass", [1e5, np.nan, 1.0, 1.0], r"`Galaxy\.mass` is NaN or infinite"),
        ("metallicity", np.array([True, False, True, True]), r"`Galaxy\.metallicity` must be "
         r"numeric \(real numbers\); got dtype bool"),
        ("age", ["1", "2", "3", "4"], r"`Galaxy\.age` must be numeric .*got dtype <U1"),
        ("mass", [[1.0], [2.0, 3.0], [4.0], [5.0]], r"`Galaxy\.mass` must be an array of numbers"),
    ],
)  # fmt: skip
def test_galaxy_from_numpy_keeps_the_named_errors(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rx.Galaxy(**{**FIELDS, field: value})


def test_galaxy_under_jit_and_vmap_still_builds():
    def total(position, mass):
        gal = rx.Galaxy(position, position, mass, mass, mass + 1.0)
        return gal.mass.sum()

    assert float(jax.jit(total)(jnp.ones((N, 3)), jnp.ones(N))) == N
    assert jax.vmap(total)(jnp.ones((2, N, 3)), jnp.ones((2, N))).shape == (2,)


# --------------------------------------------------------------------------------------
# Telescopes on a given wavelength array


def test_preset_with_a_wavelength_array_resamples_its_lsf():
    from rubix_eqx.config import read_yaml

    wave = np.arange(5000.0, 6000.0, 1.25)
    tel = rx.Telescope.preset("MUSE-WFM", n_x=4, wavelength=wave)
    table = read_yaml(rx.telescope.preset_dir() / "MUSE-WFM.yaml")["lsf_fwhm"]
    expect = np.interp(wave, table["wavelength"], table["fwhm"])
    assert tel.n_wave == wave.size and tel.n_x == 4 and tel.sampling == "linear"
    np.testing.assert_array_equal(np.asarray(tel.wavelength), wave)
    np.testing.assert_allclose(np.asarray(tel.lsf_fwhm), expect, rtol=1e-12)
    # the same grid from a mapping gives the same telescope
    same = rx.Telescope.preset("MUSE-WFM", n_x=4, wavelength={"start": 5000.0, "stop": 5998.75})
    np.testing.assert_allclose(np.asarray(same.lsf_fwhm), np.asarray(tel.lsf_fwhm), rtol=1e-6)
    # a log-spaced array is log sampling; a list works as well
    log_wave = 10 ** (3.6 + 1e-4 * np.arange(50))
    manga = rx.Telescope.preset("MaNGA", wavelength=log_wave.tolist())
    assert manga.sampling == "log" and manga.n_wave == 50
    # a constant LSF holds anywhere
    kcwi = rx.Telescope.preset("KCWI", wavelength=np.arange(4000.0, 4100.0))
    assert np.all(np.asarray(kcwi.lsf_fwhm) == 2.5)


def test_replace_with_a_wavelength_array_resamples_the_lsf():
    tel = rx.Telescope.preset("MUSE-WFM")
    wave = np.linspace(6000.0, 6500.0, 201)
    new = tel.replace(wavelength=wave)
    expect = np.interp(wave, np.asarray(tel.wavelength, np.float64),
                       np.asarray(tel.lsf_fwhm, np.float64))  # fmt: skip
    assert isinstance(new.wavelength, jax.Array) and new.n_wave == 201
    np.testing.assert_allclose(np.asarray(new.lsf_fwhm), expect, rtol=1e-12)
    both = tel.replace(wavelength=jnp.asarray(wave), lsf_fwhm=jnp.full(201, 3.0))
    assert np.all(np.asarray(both.lsf_fwhm) == 3.0)
    log = tel.replace(wavelength=10 ** np.linspace(3.7, 3.8, 100))
    assert log.sampling == "log" and new.sampling == "linear"


def test_wavelengths_outside_the_lsf_table_are_refused():
    from rubix_eqx.config import ConfigError

    outside = np.arange(4000.0, 5000.0, 1.25)
    with pytest.raises(
        ConfigError,
        match=r"telescope\[MUSE-WFM\]\.lsf_fwhm: table covers 4750-9350 Angstrom but the grid "
        r"spans 4000-4998\.75 Angstrom",
    ):
        rx.Telescope.preset("MUSE-WFM", wavelength=outside)
    with pytest.raises(
        ValueError,
        match=r"`Telescope\.replace\(wavelength=\.\.\.\)`: the new wavelengths span "
        r"4000-4998\.75 Angstrom but the LSF of telescope 'MUSE-WFM' is known over "
        r"4750-9350 Angstrom only",
    ):
        rx.Telescope.preset("MUSE-WFM").replace(wavelength=outside)
    with pytest.raises(ConfigError, match=r"wavelength: pixel centres must be strictly increasing"):
        rx.Telescope.preset("MUSE-WFM", wavelength=[6000.0, 5999.0, 6001.0])
    with pytest.raises(ConfigError, match=r"wavelength: an array of pixel centres must be 1-D"):
        rx.Telescope.preset("MUSE-WFM", wavelength=np.ones((2, 3)) * 6000)


# --------------------------------------------------------------------------------------
# Wavelength stop that the step does not reach


def test_unreachable_stop_names_the_nearest_reachable_values():
    from rubix_eqx.config import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"telescope\[MUSE-WFM\]\.wavelength\.stop: 7000\.6 is not reached from start "
        r"4750 in steps of 1\.25 Angstrom \(1800\.48 steps\); the nearest reachable values "
        r"are 7000 and 7001\.25\.",
    ):
        rx.Telescope.preset("MUSE-WFM", wavelength={"stop": 7000.6})
    # reached to rounding: fine (1.05 Å steps)
    assert rx.Telescope.preset("SAMI").wavelength[-1] == pytest.approx(5750.25)
    # log sampling: the pixel nearest to stop (documented)
    assert rx.Telescope.preset("MaNGA", wavelength={"stop": 3700.0}).n_wave == 94


# --------------------------------------------------------------------------------------
# YAML numbers such as 1e5, integral values as integers


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    from rubix_eqx.config import check_config, load_config, read_yaml
    from rubix_eqx.config._yaml import load_yaml_text

    assert load_yaml_text("a: 1e5\nb: 1.0e10\nc: -2E-3\nd: 10\ne: '1e5'\nf: e5\n") == {
        "a": 1e5, "b": 1e10, "c": -2e-3, "d": 10, "e": "1e5", "f": "e5",
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(
        "seed: 1e0\ngalaxy: {n_stars: 1e5, total_mass: 1e10}\n"
        "telescope: {preset: MUSE-WFM, n_x: 2e1, n_y: 10.0}\n"
        "pipeline: {flux_unit: 1e-20, chunk_size: 4096.0}\n"
    )
    assert read_yaml(path)["galaxy"] == {"n_stars": 100000.0, "total_mass": 1e10}
    spec = check_config(load_config(path, ["galaxy.scale_length=2e0"]))
    assert spec.seed == 1 and type(spec.seed) is int
    assert spec.galaxy["n_stars"] == 100000 and type(spec.galaxy["n_stars"]) is int
    assert spec.galaxy["total_mass"] == 1e10 and spec.galaxy["scale_length"] == 2.0
    assert (spec.telescope.n_x, spec.telescope.n_y) == (20, 10)
    assert spec.pipeline["chunk_size"] == 4096 and spec.pipeline["flux_unit"] == 1e-20


def test_integers_from_yaml_1_1_strings_and_non_integers():
    import yaml
    from rubix_eqx.config import ConfigError
    from rubix_eqx.config._checks import integer

    # a mapping read by PyYAML itself holds '1e5' as a string: still an integer
    assert yaml.safe_load("n: 1e5") == {"n": "1e5"}
    assert integer("1e5", "galaxy.n_stars") == 100000
    assert integer(2000.0, "galaxy.n_stars") == 2000
    for bad in (10.5, "10.5e0", "40", True, float("inf")):
        with pytest.raises(ConfigError, match=r"galaxy\.n_stars: must be an integer, got"):
            integer(bad, "galaxy.n_stars")


# --------------------------------------------------------------------------------------
# --set key=null


def test_set_null_removes_a_key():
    from rubix_eqx.config import apply_override, check_config

    config = {"galaxy": {"n_stars": 500, "scale_length": 4.0}, "pipeline": {"noise": "telescope"},
              "seed": 3}  # fmt: skip
    out = apply_override(config, "galaxy.scale_length=null")
    assert out["galaxy"] == {"n_stars": 500} and config["galaxy"]["scale_length"] == 4.0
    assert "noise" not in apply_override(config, "pipeline.noise=null")["pipeline"]
    assert "seed" not in apply_override(config, "seed=null")
    assert "galaxy" not in apply_override(config, "galaxy=null")
    assert apply_override(config, "observation.ra=null") == config  # absent: nothing to do
    assert apply_override(config, "galaxy.nothing.deeper=null") == config
    # the default then applies (not an error "must be a number, got None")
    spec = check_config(apply_override(config, "galaxy.scale_length=null"))
    assert "scale_length" not in spec.galaxy
    # output: null skips the file; telescope: null drops the preset's value
    assert apply_override(config, "output.quicklook=null")["output"] == {"quicklook": None}
    spec = check_config(apply_override(config, "telescope.psf=null"))
    assert spec.telescope.psf is None and spec.output["quicklook"] == "quicklook.png"


def test_set_null_from_the_command_line(tmp_path):
    from rubix_eqx.config import check_config, load_config

    path = tmp_path / "run.yaml"
    path.write_text("galaxy: {n_stars: 100, scale_length: 2.0}\nobservation: {redshift: 0.03}\n")
    config = load_config(path, ["galaxy.scale_length=null", "observation.redshift=null"])
    assert config["galaxy"] == {"n_stars": 100} and config["observation"] == {}
    assert check_config(config).observation == {}
