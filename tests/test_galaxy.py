import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest
import rubix_eqx as rx


N = 3
GOOD = dict(
    position=[[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [-1.0, 2.0, 0.0]],
    velocity=[[10.0, 0.0, 0.0], [0.0, -5.0, 1.0], [3.0, 2.0, 1.0]],
    mass=[1e5, 2e5, 3e5],
    age=[1.0, 5.0, 12.0],
    metallicity=[0.004, 0.019, 0.03],
)


def arrays(**changes):
    out = {k: jnp.asarray(v, jnp.float64) for k, v in GOOD.items()}
    out.update({k: jnp.asarray(v) for k, v in changes.items()})
    return out


def test_construct_and_properties():
    gal = rx.Galaxy(**arrays())
    assert gal.n_particles == N
    assert gal.position.shape == (N, 3)
    np.testing.assert_array_equal(gal.mass, GOOD["mass"])


def test_from_arrays_lists_numpy_and_ints():
    from_lists = rx.Galaxy.from_arrays(**GOOD)
    from_numpy = rx.Galaxy.from_arrays(**{k: np.asarray(v) for k, v in GOOD.items()})
    assert eqx.tree_equal(from_lists, from_numpy, typematch=True)
    assert from_lists.mass.dtype == jnp.float64
    with_ints = rx.Galaxy.from_arrays(**{**GOOD, "mass": [1, 2, 3]})
    assert with_ints.mass.dtype == jnp.float64
    f32 = rx.Galaxy.from_arrays(**GOOD, dtype=jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(f32))


@pytest.mark.parametrize("field", list(GOOD))
def test_from_arrays_non_numeric_raises_type_error(field):
    bad = np.asarray(GOOD[field]).astype(str)
    with pytest.raises(TypeError, match=rf"Galaxy\.{field}.*numeric"):
        rx.Galaxy.from_arrays(**{**GOOD, field: bad})


@pytest.mark.parametrize(
    "field, value",
    [
        ("position", jnp.zeros((N, 2))),  # wrong trailing dimension
        ("position", jnp.zeros((N,))),  # wrong rank
        ("velocity", jnp.zeros((N, 3, 1))),
        ("mass", jnp.ones((N, 1))),
        ("age", jnp.ones(())),
    ],
)
def test_wrong_shape_raises_type_check_error(field, value):
    with pytest.raises(jaxtyping.TypeCheckError):
        rx.Galaxy(**arrays(**{field: value}))


def test_integer_and_boolean_dtypes():
    """Integers are converted to the default float (issue #13: the fields have
    converters; this used to be a TypeCheckError); booleans are a named TypeError."""
    gal = rx.Galaxy(**arrays(metallicity=jnp.full((N,), 1, jnp.int32)))
    assert gal.metallicity.dtype == jnp.float64
    with pytest.raises(TypeError, match=r"`Galaxy\.metallicity` must be numeric"):
        rx.Galaxy(**arrays(metallicity=jnp.ones((N,), bool)))


def _with(field, index, value):
    a = np.array(GOOD[field], np.float64)
    a[index] = value
    return a


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "position",
            _with("position", (1, 2), np.nan),
            r"Galaxy\.position` is NaN or infinite for 1 of 9",
        ),
        (
            "velocity",
            _with("velocity", (0, 0), np.inf),
            r"Galaxy\.velocity` is NaN or infinite for 1 of 9",
        ),
        ("mass", _with("mass", 2, np.nan), r"Galaxy\.mass` is NaN or infinite for 1 of 3"),
        ("age", _with("age", 0, -np.inf), r"Galaxy\.age` is NaN or infinite for 1 of 3"),
        (
            "metallicity",
            _with("metallicity", 1, np.nan),
            r"Galaxy\.metallicity` is NaN or infinite for 1 of 3",
        ),
        ("mass", [-1.0, 2.0, -3.0], r"Galaxy\.mass` is negative for 2 of 3"),
        ("age", [1.0, -0.1, 2.0], r"Galaxy\.age` is negative for 1 of 3"),
        ("metallicity", [0.0, 0.01, 0.02], r"Galaxy\.metallicity` is not positive .* for 1 of 3"),
        (
            "metallicity",
            [0.01, -0.01, -0.02],
            r"Galaxy\.metallicity` is not positive .* for 2 of 3",
        ),
    ],
)
def test_invalid_values_raise_value_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        rx.Galaxy(**arrays(**{field: np.asarray(value, np.float64)}))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("age", [1.0, 2.0], r"Galaxy\.age` has 2 particles but `Galaxy\.mass` has 3"),
        (
            "position",
            np.zeros((4, 3)),
            r"Galaxy\.position` has 4 particles but `Galaxy\.mass` has 3",
        ),
        ("mass", [1.0, 2.0], r"Galaxy\.position` has 3 particles but `Galaxy\.mass` has 2"),
    ],
)
def test_mismatched_lengths_raise_value_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        rx.Galaxy.from_arrays(**arrays(**{field: np.asarray(value, np.float64)}))


@pytest.mark.parametrize(
    "field, value, named",
    [("age", [1.0, 2.0], "age"), ("position", np.zeros((4, 3)), "velocity")],
)
def test_mismatched_lengths_in_direct_construction_name_the_field(field, value, named):
    """The shared jaxtyping axis `n` catches this first: a TypeCheckError naming the
    first field whose length disagrees with those before it."""
    with pytest.raises(jaxtyping.TypeCheckError, match=f"parameter '{named}'"):
        rx.Galaxy(**arrays(**{field: jnp.asarray(value, jnp.float64)}))


def test_zero_mass_and_age_are_allowed():
    gal = rx.Galaxy(**arrays(mass=jnp.zeros(N), age=jnp.zeros(N)))
    assert gal.n_particles == N


def test_empty_galaxy():
    gal = rx.Galaxy.from_arrays(np.zeros((0, 3)), np.zeros((0, 3)), [], [], [])
    assert gal.n_particles == 0


@pytest.mark.parametrize(
    "index",
    [slice(1, 3), np.array([True, False, True]), jnp.array([2, 0])],
    ids=["slice", "mask", "array"],
)
def test_select(index):
    gal = rx.Galaxy(**arrays())
    sub = gal.select(index)
    expect = np.arange(N)[np.asarray(index) if not isinstance(index, slice) else index]
    assert sub.n_particles == len(expect)
    for name in GOOD:
        np.testing.assert_array_equal(getattr(sub, name), np.asarray(GOOD[name])[expect])


@eqx.filter_jit
def _checked(gal_arrays):
    # Under jit no eager value checks run; the returned leaves carry the runtime checks
    # (an `error_if` whose output is unused is dead code, so return the whole galaxy).
    return rx.Galaxy(**gal_arrays).checked()


def test_checked_under_jit():
    good = _checked(arrays())
    assert eqx.tree_equal(good, rx.Galaxy(**arrays()))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"Galaxy\.mass"):
        jax.block_until_ready(_checked(arrays(mass=jnp.array([1.0, jnp.nan, 3.0]))))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"Galaxy\.metallicity"):
        jax.block_until_ready(_checked(arrays(metallicity=jnp.array([0.01, 0.0, 0.02]))))


# ---------------------------------------------------------------------------- synthetic disk


DISK_PARAMS = dict(
    bulge_fraction=0.0, scale_length=3.0, v_flat=220.0, r_turn=1.5,
    log_age_gradient=-0.04, metallicity_gradient=-0.05, total_mass=2e10,
)  # fmt: skip
N_DISK = 20_000  # one size for every call: eager ops are compiled once per shape


@pytest.fixture(scope="module")
def disk():
    return rx.galaxy.synthetic_disk(jr.key(42), N_DISK, **DISK_PARAMS)


def test_synthetic_disk_deterministic(disk):
    a, truth_a = disk
    b, truth_b = rx.galaxy.synthetic_disk(jr.key(42), N_DISK, **DISK_PARAMS)
    c, _ = rx.galaxy.synthetic_disk(jr.key(1), N_DISK, **DISK_PARAMS)
    for name in GOOD:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # bit-identical
        if name != "mass":
            assert not np.any(np.asarray(getattr(a, name)) == np.asarray(getattr(c, name)))
    assert eqx.tree_equal(truth_a, truth_b)
    assert a.n_particles == N_DISK


def _cylindrical(gal):
    pos, vel = np.asarray(gal.position), np.asarray(gal.velocity)
    radius = np.hypot(pos[:, 0], pos[:, 1])
    v_phi = (pos[:, 0] * vel[:, 1] - pos[:, 1] * vel[:, 0]) / radius
    return radius, v_phi


def test_synthetic_disk_radial_profile(disk):
    gal, truth = disk
    radius, _ = _cylindrical(gal)
    # Surface density ∝ exp(-R/h) ⇒ R/h ~ Gamma(2), whose median is 1.67835.
    assert np.median(radius) / (1.67835 * float(truth.scale_length)) == pytest.approx(1, abs=0.03)
    assert float(np.sum(gal.mass)) == pytest.approx(float(truth.total_mass), rel=1e-12)


def test_synthetic_disk_population_gradients(disk):
    gal, truth = disk
    radius, _ = _cylindrical(gal)
    age_slope, age_0 = np.polyfit(radius, np.log10(np.asarray(gal.age)), 1)
    mh_slope, mh_0 = np.polyfit(radius, np.log10(np.asarray(gal.metallicity) / 0.019), 1)
    assert age_slope == pytest.approx(float(truth.log_age_gradient), rel=0.1)
    assert mh_slope == pytest.approx(float(truth.metallicity_gradient), rel=0.1)
    assert age_0 == pytest.approx(float(truth.log_age_centre), abs=0.01)
    assert mh_0 == pytest.approx(float(truth.metallicity_centre), abs=0.01)


def test_synthetic_disk_rotation(disk):
    gal, truth = disk
    radius, v_phi = _cylindrical(gal)
    outer = radius > 5 * float(truth.r_turn)  # tanh(5) = 0.9999
    assert outer.sum() > 1000
    assert np.mean(v_phi[outer]) == pytest.approx(float(truth.v_flat), rel=0.05)
    # Vertical motion is pure dispersion.
    assert np.std(np.asarray(gal.velocity[:, 2])) == pytest.approx(
        float(truth.dispersion), rel=0.05
    )


@pytest.mark.parametrize(
    "param, value",
    [
        ("total_mass", 0.0),
        ("scale_length", -1.0),
        ("scale_height", 0.0),
        ("bulge_radius", -0.5),
        ("r_turn", 0.0),
        ("bulge_fraction", 1.5),
        ("bulge_fraction", -0.1),
        ("n_stars", 0),
    ],
)
def test_synthetic_disk_invalid_params(key, param, value):
    kwargs = {"n_stars": 10, param: value}
    with pytest.raises(ValueError, match=rf"synthetic_disk\({param}="):
        rx.galaxy.synthetic_disk(key, **kwargs)


# ------------------------------------------------------------------------ single population


def test_single_population():
    gal = rx.galaxy.single_population(
        4,
        age=3.0,
        metallicity=0.01,
        total_mass=2e6,
        position=(1.0, 2.0, 3.0),
        velocity=(0.0, 0.0, 50.0),
    )
    assert gal.n_particles == 4
    np.testing.assert_array_equal(gal.age, 3.0)
    np.testing.assert_array_equal(gal.metallicity, 0.01)
    np.testing.assert_allclose(gal.mass, 5e5)
    np.testing.assert_array_equal(gal.position, np.broadcast_to([1.0, 2.0, 3.0], (4, 3)))
    np.testing.assert_array_equal(gal.velocity, np.broadcast_to([0.0, 0.0, 50.0], (4, 3)))


def test_single_population_dispersion(key):
    gal = rx.galaxy.single_population(5000, velocity=(0.0, 0.0, 100.0), dispersion=40.0, key=key)
    vel = np.asarray(gal.velocity)
    np.testing.assert_allclose(vel.std(0), 40.0, rtol=0.05)
    np.testing.assert_allclose(vel.mean(0), [0.0, 0.0, 100.0], atol=3.0)
    with pytest.raises(ValueError, match=r"single_population\(dispersion="):
        rx.galaxy.single_population(5, dispersion=10.0)


def test_single_population_invalid_values_are_rejected():
    with pytest.raises(ValueError, match=r"Galaxy\.metallicity"):
        rx.galaxy.single_population(2, metallicity=0.0)
    with pytest.raises(ValueError, match=r"Galaxy\.age"):
        rx.galaxy.single_population(2, age=-1.0)
