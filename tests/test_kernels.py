"""Smoothing kernels: normalisation, pixel integrals, flux conservation, gradients, k-NN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx.physics._kernels import cubic_spline_3d


def _pixel_integral_reference(x0, y0, h, i, j):
    """∫∫ over pixel [i, i+1) × [j, j+1) of Σ(r/h)/h², by 2-D Gauss–Legendre on a fine split
    (NumPy float64, independent of the tabulated CDF)."""
    g, w = np.polynomial.legendre.leggauss(40)
    x = i + 0.5 * (g + 1)
    y = j + 0.5 * (g + 1)
    r = np.hypot(x[:, None] - x0, y[None, :] - y0) / h
    sigma = rx.physics.projected_cubic_spline(r) / h**2
    return 0.25 * np.sum(w[:, None] * w[None, :] * sigma)


def test_projected_kernel_normalised():
    # 3-D normalisation of the cubic spline, then the 2-D one of its projection
    r = np.linspace(0, 1, 20001)
    assert np.trapezoid(4 * np.pi * r**2 * cubic_spline_3d(r), r) == pytest.approx(1.0, abs=1e-8)
    sigma = rx.physics.projected_cubic_spline(r)
    assert np.trapezoid(2 * np.pi * r * sigma, r) == pytest.approx(1.0, abs=1e-7)


def test_cubic_spline_pixel_integrals_and_flux():
    position = jnp.asarray([[10.3, 7.8], [4.5, 4.5], [20.01, 3.99]])
    size = jnp.asarray([1.7, 0.4, 2.0])  # support radius in pixels, inside a 5×5 stencil
    corner, frac = jax.jit(rx.physics.stencil_fractions, static_argnums=(2, 3))(
        position, size, 5, "cubic_spline"
    )
    np.testing.assert_allclose(frac.sum((1, 2)), 1.0, atol=1e-12)
    for p in range(1):
        x0, y0 = np.asarray(position[p])
        for i in range(5):
            for j in range(5):
                ref = _pixel_integral_reference(
                    x0, y0, float(size[p]), int(corner[p, 0]) + i, int(corner[p, 1]) + j
                )
                assert float(frac[p, i, j]) == pytest.approx(ref, abs=1e-6)


def test_gaussian_pixel_integrals():
    from scipy.special import erf

    position = jnp.asarray([[3.25, 8.6]])
    corner, frac = rx.physics.stencil_fractions(position, jnp.asarray([0.6]), 7, "gaussian")
    edges_x = np.arange(8) + int(corner[0, 0]) - 3.25
    edges_y = np.arange(8) + int(corner[0, 1]) - 8.6
    cx = np.diff(0.5 * erf(edges_x / (0.6 * np.sqrt(2))))
    cy = np.diff(0.5 * erf(edges_y / (0.6 * np.sqrt(2))))
    ref = np.outer(cx, cy)
    np.testing.assert_allclose(frac[0], ref / ref.sum(), atol=1e-12)
    assert ref.sum() == pytest.approx(1.0, abs=1e-6)  # ±3.25σ... inside the 7×7 block


@pytest.mark.parametrize("kernel", ["cubic_spline", "gaussian"])
def test_fraction_gradients_vs_finite_differences(kernel):
    def f(params):
        pos, h = params[:2][None, :], params[2:][:]
        _, frac = rx.physics.stencil_fractions(pos, h, 5, kernel)
        weights = jnp.arange(25.0).reshape(5, 5)
        return jnp.sum(frac[0] * weights)

    params = jnp.asarray([6.37, 2.71, 1.3 if kernel == "cubic_spline" else 0.7])
    grad = jax.jit(jax.grad(f))(params)
    f_jit = jax.jit(f)
    eps = 1e-6
    fd = np.array(
        [
            (f_jit(params.at[k].add(eps)) - f_jit(params.at[k].add(-eps))) / (2 * eps)
            for k in range(3)
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_kernel_bad_input():
    with pytest.raises(ValueError, match="Unknown kernel 'tophat'"):
        rx.physics.stencil_fractions(jnp.zeros((1, 2)), jnp.ones(1), 5, "tophat")
    with pytest.raises(ValueError, match="odd integer"):
        rx.physics.stencil_fractions(jnp.zeros((1, 2)), jnp.ones(1), 4)


def test_kth_neighbour_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    pos = np.concatenate([rng.normal(0, 1, (600, 3)), rng.normal(5, 0.1, (200, 3))])
    got = rx.physics.kth_neighbour_distance(pos, k=8)
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    want = np.sort(d, axis=1)[:, 8]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="k=..."):
        rx.physics.kth_neighbour_distance(pos, k=0)
