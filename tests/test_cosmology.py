import astropy.cosmology as apc
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rubix_eqx import cosmology


needs_x64 = pytest.mark.skipif(
    not jax.config.jax_enable_x64, reason="float64 accuracy needs jax_enable_x64"
)
Z = np.geomspace(1e-3, 3.0, 30)
NO_RADIATION = cosmology.Cosmology(h0=70.0, omega_m=0.3, t_cmb=0.0, n_eff=0.0, m_nu=0.0)
FUNCTIONS = {
    "luminosity_distance": "luminosity_distance",
    "angular_diameter_distance": "angular_diameter_distance",
    "comoving_distance": "comoving_distance",
    "lookback_time": "lookback_time",
    "cosmic_time": "age",
}


def max_rel_err(x, y):
    return float(np.max(np.abs(np.asarray(x) / np.asarray(y) - 1)))


@needs_x64
@pytest.mark.parametrize("name", FUNCTIONS)
def test_planck18_matches_astropy(name):
    # Residual ~1e-5 is the massive-neutrino normalisation (93.14 eV vs astropy's fit).
    ours = getattr(cosmology, name)(Z)
    ref = getattr(apc.Planck18, FUNCTIONS[name])(Z).value
    assert max_rel_err(ours, ref) < 3e-5


@needs_x64
def test_planck18_age_matches_astropy():
    z = np.array([0.0, 1.0, 3.0, 10.0])
    assert max_rel_err(cosmology.cosmic_time(z), apc.Planck18.age(z).value) < 3e-5
    assert max_rel_err(cosmology.PLANCK18.efunc(Z), apc.Planck18.efunc(Z)) < 3e-5


@needs_x64
@pytest.mark.parametrize("name", FUNCTIONS)
def test_no_radiation_matches_astropy(name):
    astropy_cosmo = apc.FlatLambdaCDM(H0=70.0, Om0=0.3, Tcmb0=0.0)
    z = np.geomspace(1e-3, 10.0, 30)
    ours = getattr(cosmology, name)(z, NO_RADIATION)
    ref = getattr(astropy_cosmo, FUNCTIONS[name])(z).value
    assert max_rel_err(ours, ref) < 1e-9


@needs_x64
def test_invariants():
    cosmo = cosmology.PLANCK18
    assert float(cosmo.efunc(0.0)) == pytest.approx(1.0, abs=1e-15)
    d_l = cosmology.luminosity_distance(Z)
    d_a = cosmology.angular_diameter_distance(Z)
    assert max_rel_err(d_a * (1 + Z) ** 2, d_l) < 1e-14
    # Age today = age at z (a-integral) + time since z (z-integral).
    age_z = cosmology.scale_factor_to_cosmic_time(1 / (1 + Z))
    age_now = age_z + cosmology.lookback_time(Z)
    assert max_rel_err(age_now, cosmology.cosmic_time(0.0)) < 1e-9
    # Without radiation every distance is exactly ∝ 1/h0.
    fast = cosmology.Cosmology(h0=140.0, omega_m=0.3, t_cmb=0.0, n_eff=0.0, m_nu=0.0)
    d_fast = cosmology.luminosity_distance(Z, fast)
    assert max_rel_err(2 * d_fast, cosmology.luminosity_distance(Z, NO_RADIATION)) < 1e-14


@needs_x64
def test_grad_matches_finite_differences():
    z = jnp.array([0.05, 0.5, 2.0])
    grad = jax.vmap(jax.grad(cosmology.luminosity_distance))(z)
    h = 1e-5 * z
    fd = (cosmology.luminosity_distance(z + h) - cosmology.luminosity_distance(z - h)) / (2 * h)
    assert max_rel_err(grad, fd) < 1e-6
    # d d_L/dz at z = 0 is the Hubble distance c/H0.
    hubble_distance = 299792.458 / cosmology.PLANCK18.h0
    grad0 = jax.grad(cosmology.luminosity_distance)(0.0)
    assert float(grad0) == pytest.approx(hubble_distance, rel=1e-12)


def test_jit_vmap_shapes():
    z = jnp.linspace(0.01, 2.0, 12).reshape(3, 4)
    eager = cosmology.luminosity_distance(z)
    assert eager.shape == (3, 4)
    jitted = jax.jit(jax.vmap(cosmology.luminosity_distance))(z)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    ages = jax.jit(cosmology.scale_factor_to_cosmic_time)(1 / (1 + z))
    np.testing.assert_allclose(ages, cosmology.cosmic_time(z), rtol=1e-6)

    def d_l(h0):  # vmap over a cosmological parameter (traced construction)
        c = cosmology.Cosmology(h0=h0, omega_m=0.3, t_cmb=0.0, n_eff=0.0, m_nu=0.0)
        return cosmology.luminosity_distance(z[0], c)

    batched = jax.vmap(d_l)(jnp.array([70.0, 140.0], dtype=z.dtype))
    np.testing.assert_allclose(batched[0], 2 * batched[1], rtol=1e-6)


@pytest.mark.parametrize("name", [*FUNCTIONS, "scale_factor_to_cosmic_time"])
def test_float32_in_float32_out(name):
    fn = getattr(cosmology, name)
    x = np.linspace(0.1, 0.9, 5)
    out = fn(jnp.asarray(x, dtype=jnp.float32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, fn(x), rtol=1e-5)


@pytest.mark.parametrize(
    "field, value",
    [("h0", -1.0), ("omega_m", 1.5), ("t_cmb", -1.0), ("n_eff", -1.0), ("m_nu", -0.1)],
)
def test_bad_parameters_raise(field, value):
    kwargs = dict(h0=67.66, omega_m=0.30966, t_cmb=2.7255, n_eff=3.046, m_nu=0.06)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        cosmology.Cosmology(**kwargs)
