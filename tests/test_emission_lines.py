"""Emission-line recipes: calibrations, case-B and doublet ratios, line table, widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx._medium import vacuum_to_air
from rubix_eqx.physics import line_index as idx


def _lines(n=50, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    sfr = rng.uniform(0.0, 0.05, n)
    z = 0.0134 * 10 ** rng.uniform(-1.0, 0.2, n)  # 12 + log O/H from 7.69 to 8.89
    lum = jax.jit(lambda s, zz: rx.physics.line_luminosities(s, zz, **kwargs))
    return sfr, z, lum(jnp.asarray(sfr), jnp.asarray(z))


def test_halpha_is_sfr_times_kennicutt_evans():
    sfr, _, lum = _lines()
    total = float(lum[:, idx("Halpha")].sum())
    assert total == pytest.approx(sfr.sum() * 10**41.27, rel=1e-12)


def test_balmer_and_fixed_ratios():
    _, _, lum = _lines()
    ha, hb = lum[:, idx("Halpha")], lum[:, idx("Hbeta")]
    np.testing.assert_allclose(ha / hb, 2.86, rtol=1e-12)
    np.testing.assert_allclose(lum[:, idx("Hgamma")] / hb, 0.468, rtol=1e-12)
    np.testing.assert_allclose(lum[:, idx("Hdelta")] / hb, 0.259, rtol=1e-12)
    np.testing.assert_allclose(lum[:, idx("[OIII]5007")] / lum[:, idx("[OIII]4959")], 2.98)
    np.testing.assert_allclose(lum[:, idx("[NII]6583")] / lum[:, idx("[NII]6548")], 2.94)


@pytest.mark.parametrize("n_e", [0.0, 100.0, 1e4])
def test_doublet_ratios_sanders(n_e):
    _, _, lum = _lines(electron_density=n_e)
    r_sii = lum[:, idx("[SII]6716")] / lum[:, idx("[SII]6731")]
    r_oii = lum[:, idx("[OII]3729")] / lum[:, idx("[OII]3726")]
    # Sanders et al. 2016 fits, evaluated by hand
    np.testing.assert_allclose(r_sii, 0.4315 * (2107 + n_e) / (627.1 + n_e), rtol=1e-12)
    np.testing.assert_allclose(r_oii, 0.3771 * (2468 + n_e) / (638.4 + n_e), rtol=1e-12)
    if n_e == 0:  # the low-density limits, ≈ 1.45 for both (Osterbrock & Ferland 2006, Fig. 5.8)
        assert 1.44 < float(r_sii[0]) < 1.46 and 1.44 < float(r_oii[0]) < 1.47


def test_strong_line_ratios_follow_curti2020_and_clip():
    sfr, z, lum = _lines()
    x = np.clip(8.69 + np.log10(z / 0.0134), 7.6, 8.9) - 8.69
    n2 = -0.489 + 1.513 * x - 2.554 * x**2 - 5.293 * x**3 - 2.867 * x**4
    r3 = -0.277 - 3.549 * x - 3.593 * x**2 - 0.981 * x**3
    np.testing.assert_allclose(
        np.log10(lum[:, idx("[NII]6583")] / lum[:, idx("Halpha")]), n2, atol=1e-12
    )
    np.testing.assert_allclose(
        np.log10(lum[:, idx("[OIII]5007")] / lum[:, idx("Hbeta")]), r3, atol=1e-12
    )
    # [NII]/Hα rises with O/H over the calibrated range (the N2 index's known behaviour)
    lum = jax.jit(rx.physics.line_luminosities)
    grid = 0.0134 * 10 ** np.linspace(-1.0, 0.0, 20)
    one = lum(jnp.ones(20), jnp.asarray(grid))
    assert np.all(np.diff(np.asarray(one[:, idx("[NII]6583")])) > 0)
    # clipped outside 7.6–8.9: identical ratios, zero derivative
    low = lum(jnp.ones(20), jnp.asarray(np.geomspace(1e-6, 1e-4, 20)))
    np.testing.assert_allclose(low[0], low[-1], rtol=1e-14)
    grad = jax.jit(jax.grad(lambda zz: lum(jnp.ones(2), zz)[:, idx("[NII]6583")].sum()))
    g = grad(jnp.asarray([1e-5, 0.01]))
    assert float(g[0]) == 0.0 and float(g[1]) > 0.0


def test_line_table_air_matches_vacuum_conversion():
    vac = np.asarray(rx.physics.line_wavelengths("vacuum"))
    air = np.asarray(rx.physics.line_wavelengths("air"))
    np.testing.assert_allclose(vacuum_to_air(vac), air, atol=0.02)
    assert air[idx("Halpha")] == 6562.80
    with pytest.raises(ValueError, match="medium"):
        rx.physics.line_wavelengths("water")
    with pytest.raises(ValueError, match="Unknown emission line 'Hepsilon'"):
        idx("Hepsilon")


def test_line_widths_thermal_plus_turbulent():
    sigma = rx.physics.line_widths(jnp.asarray([1e4]), 20.0)
    k_b, amu = 1.380649e-16, 1.66053906660e-24
    expected_h = np.sqrt(k_b * 1e4 / (1.008 * amu) / 1e10 + 400.0)
    assert float(sigma[0, idx("Halpha")]) == pytest.approx(expected_h, rel=1e-12)
    thermal_o = rx.physics.line_widths(jnp.asarray([1e4]))[0, idx("[OIII]5007")]
    assert float(thermal_o) == pytest.approx(np.sqrt(k_b * 1e4 / (15.999 * amu)) / 1e5, rel=1e-12)


def test_line_luminosities_differentiable():
    sfr = jnp.asarray([0.1, 0.2])
    z = jnp.asarray([0.008, 0.015])
    f = jax.jit(lambda s, zz: jnp.sum(rx.physics.line_luminosities(s, zz) / 1e40))
    gs, gz = jax.jit(jax.grad(f, argnums=(0, 1)))(sfr, z)
    eps = 1e-6
    for i in range(2):
        dz = jnp.zeros(2).at[i].set(eps * z[i])
        fd = (f(sfr, z + dz) - f(sfr, z - dz)) / (2 * eps * z[i])
        assert float(gz[i]) == pytest.approx(float(fd), rel=1e-6)
    # linear in SFR: ∂/∂sfr_i = (luminosity per unit SFR of element i)
    per_unit = rx.physics.line_luminosities(jnp.ones(2), z).sum(1) / 1e40
    np.testing.assert_allclose(gs, per_unit, rtol=1e-12)
