"""Attenuation curves against the dust-extinction package; column → A_V; Charlot & Fall."""

import astropy.units as u
import extinction
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from dust_extinction.parameter_averages import CCM89, F99


# ≥ 10 wavelengths spanning each curve's range, avoiding the exact segment boundaries
WAVE = {
    "ccm89": np.geomspace(1005.0, 33000.0, 41),
    "calzetti00": np.geomspace(1205.0, 21950.0, 31),
    "f99": np.geomspace(1005.0, 33000.0, 41),
}


def _calzetti_extinction_package(r_v):
    # dust-extinction has no Calzetti curve: the `extinction` package (Barbary) does
    return lambda wave: extinction.calzetti00(np.asarray(wave.to_value(u.AA)), 1.0, r_v)


REFERENCE = {"ccm89": CCM89, "calzetti00": lambda Rv: _calzetti_extinction_package(Rv), "f99": F99}


@pytest.mark.parametrize("name", ["ccm89", "calzetti00", "f99"])
def test_curves_match_dust_extinction(name):
    wave = WAVE[name]
    curve = jax.jit(rx.physics.attenuation_curve(name))  # one compilation for all R_V
    for r_v in (2.5, 3.1, 4.05, 5.5):
        ours = np.asarray(curve(jnp.asarray(wave), jnp.asarray(r_v)))
        theirs = REFERENCE[name](Rv=r_v)(wave * u.AA)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=f"R_V = {r_v}")


@pytest.mark.parametrize("name", ["ccm89", "calzetti00", "f99"])
def test_curves_gradients_in_wavelength_and_r_v(name):
    curve = jax.jit(rx.physics.attenuation_curve(name))
    wave = jnp.asarray([1500.0, 4500.0, 6563.0, 15000.0])
    r_v = jnp.asarray(3.3)
    g_rv = jax.jit(jax.jacfwd(curve, argnums=1))(wave, r_v)
    g_wave = jax.jit(jax.vmap(jax.grad(curve), (0, None)))(wave, r_v)
    eps = 1e-6
    fd_rv = (curve(wave, r_v * (1 + eps)) - curve(wave, r_v * (1 - eps))) / (2 * r_v * eps)
    fd_wave = (curve(wave * (1 + eps), r_v) - curve(wave * (1 - eps), r_v)) / (2 * wave * eps)
    np.testing.assert_allclose(g_rv, fd_rv, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(g_wave, fd_wave, rtol=1e-5, atol=1e-12)
    # normalisation: A(λ)/A_V ≈ 1 at 5495 Å for the Milky-Way curves (F99 is normalised to
    # broad-band V: 0.979 there, as in dust-extinction)
    if name != "calzetti00":
        at_v = float(curve(jnp.asarray([5494.5]), jnp.asarray(3.1))[0])
        assert at_v == pytest.approx(1.0, abs=0.025)


def test_out_of_range_and_unknown_curve_errors():
    with pytest.raises(ValueError, match="ccm89.*outside the curve's range"):
        rx.physics.ccm89(jnp.asarray([500.0, 5000.0]))
    with pytest.raises(ValueError, match="calzetti00.*outside"):
        rx.physics.calzetti00(jnp.asarray([30000.0]))
    with pytest.raises(ValueError, match=r"f99\(r_v=...\)"):
        rx.physics.f99(jnp.asarray([5000.0]), 7.0)
    with pytest.raises(ValueError, match="Unknown attenuation curve 'smc'"):
        rx.physics.attenuation_curve("smc")


def test_screen_and_balmer_decrement():
    curve = rx.physics.ccm89(jnp.asarray([4861.33, 6562.80]))
    a_v = jnp.asarray([0.0, 1.0])
    t = rx.physics.transmission(a_v, curve)
    np.testing.assert_allclose(t[1], 10 ** (-0.4 * np.asarray(curve)), rtol=1e-14)
    # the observed Hα/Hβ rises by 10^(0.4 A_V (k_Hβ − k_Hα)/1)
    ratio = 2.86 * t[1, 1] / t[1, 0]
    assert float(ratio) == pytest.approx(2.86 * 10 ** (0.4 * float(curve[0] - curve[1])), rel=1e-12)
    assert float(ratio) > 2.86


def test_metal_column_to_av():
    # solar-metallicity gas with N_H = 2.21e21 cm⁻² (A_V = 1 mag by Güver & Özel 2009)
    m_h, msun, kpc = 1.6735575e-24, 1.98841e33, 3.0856775814913673e21
    sigma_gas = 2.21e21 * m_h / 0.7381 / (msun / kpc**2)  # M☉/kpc² of gas
    av = rx.physics.metal_column_to_av(jnp.asarray(sigma_gas * 0.0134))
    assert float(av) == pytest.approx(1.0, rel=1e-12)
    assert float(
        rx.physics.metal_column_to_av(jnp.asarray(sigma_gas * 0.0134), 0.2)
    ) == pytest.approx(0.5)


def test_charlot_fall():
    wave = jnp.asarray([5500.0, 2750.0])
    tau = rx.physics.charlot_fall_optical_depth(wave, jnp.asarray([0.005, 1.0]))
    np.testing.assert_allclose(tau[:, 0], [1.0, 0.3], rtol=1e-14)
    np.testing.assert_allclose(tau[:, 1] / tau[:, 0], 2.0**0.7, rtol=1e-14)
