import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
import rubix_eqx as rx


def test_defaults():
    obs = rx.Observation()
    assert float(obs.redshift) == 0.05 and obs.distance is None
    assert obs.redshift.dtype == jnp.float64 and obs.redshift.shape == ()
    assert obs.cosmology is rx.cosmology.PLANCK18


@pytest.mark.parametrize("z", [0.01, 0.05, 1.0])
def test_luminosity_distance_from_cosmology(z):
    obs = rx.Observation(redshift=z, inclination=60.0, position_angle=30.0)
    np.testing.assert_allclose(
        obs.luminosity_distance(), rx.cosmology.luminosity_distance(z), rtol=1e-14
    )
    np.testing.assert_allclose(
        obs.angular_diameter_distance(), rx.cosmology.angular_diameter_distance(z), rtol=1e-14
    )


def test_other_cosmology():
    cosmo = rx.cosmology.Cosmology(h0=70.0, omega_m=0.3, t_cmb=0.0, n_eff=0.0, m_nu=0.0)
    obs = rx.Observation(redshift=0.1, cosmology=cosmo)
    np.testing.assert_allclose(
        obs.luminosity_distance(), rx.cosmology.luminosity_distance(0.1, cosmo)
    )
    assert (
        abs(
            float(obs.luminosity_distance())
            / float(rx.Observation(redshift=0.1).luminosity_distance())
            - 1
        )
        > 1e-3
    )


@pytest.mark.parametrize("z", [0.0, 0.01])
def test_given_distance_is_used(z):
    obs = rx.Observation(redshift=z, distance=16.5)
    assert float(obs.luminosity_distance()) == 16.5
    assert float(obs.angular_diameter_distance()) == 16.5


def test_integer_inputs_become_floats():
    obs = rx.Observation(redshift=0, distance=10, inclination=90, position_angle=45)
    assert obs.inclination.dtype == jnp.float64 and obs.distance.dtype == jnp.float64


def test_redshift_zero_needs_distance():
    with pytest.raises(ValueError, match=r"Observation\.redshift` is 0\.0: .*`distance` in Mpc"):
        rx.Observation(redshift=0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(redshift=-0.1), r"Observation\.redshift` must be >= 0"),
        (dict(redshift=jnp.nan), r"Observation\.redshift` must be finite"),
        (dict(redshift=0.0, distance=-5.0), r"Observation\.distance` must be > 0"),
        (dict(redshift=0.0, distance=0.0), r"Observation\.distance` must be > 0"),
        (dict(redshift=0.0, distance=jnp.inf), r"Observation\.distance` must be finite"),
        (dict(inclination=-1.0), r"Observation\.inclination` must lie in \[0, 180\]"),
        (dict(inclination=180.5), r"Observation\.inclination` must lie in \[0, 180\]"),
        (dict(inclination=jnp.nan), r"Observation\.inclination` must be finite"),
        (dict(position_angle=jnp.inf), r"Observation\.position_angle` must be finite"),
        (dict(dec=91.0), r"Observation\.dec` must lie in \[-90, 90\]"),
    ],
)
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rx.Observation(**kwargs)


@pytest.mark.parametrize(
    "field, value",
    [
        ("redshift", jnp.array([0.1, 0.2])),
        ("inclination", [10.0, 20.0]),
        ("position_angle", np.zeros((1,))),
        ("distance", jnp.ones((1, 1))),
    ],
)
def test_non_scalar_names_the_field(field, value):
    # `Observation.__init__` raises "`Observation.<field>` must be a scalar" (ValueError);
    # with the jaxtyping import hook on (as in this test suite) the `Real[ArrayLike, ""]`
    # annotation rejects the value first with a TypeCheckError naming the parameter.
    kwargs = {"redshift": 0.1, field: value}
    with pytest.raises(
        (ValueError, jaxtyping.TypeCheckError),
        match=rf"Observation\.{field}` must be a scalar|parameter '{field}'",
    ):
        rx.Observation(**kwargs)


@pytest.mark.parametrize("inclination", [0.0, 180.0])
def test_inclination_bounds_are_inclusive(inclination):
    assert float(rx.Observation(inclination=inclination).inclination) == inclination
