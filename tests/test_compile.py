"""The package's jit (rubix_eqx._compile): compile options at the top level only, the
same results nested in jit, vmap and grad, and no YNNPACK fusions in what it compiles."""

import jax
import jax.numpy as jnp
import numpy as np

import rubix_eqx as rx
from rubix_eqx._compile import jit


def _outer_products(w, t, s):  # the deposit's shape: its transposes are small reductions
    return jnp.sum((w[:, :, None, None] * t[:, None, :, None] * s[:, None, None, :]) ** 2)


def _args():
    key = jax.random.split(jax.random.key(0), 3)
    return tuple(jax.random.uniform(k, (256, n)) for k, n in zip(key, (4, 4, 2)))


def test_options_turn_off_ynn_fusions_where_this_jaxlib_has_them():
    options = rx.compiler_options()
    assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}  # jaxlib >= 0.10.2 has it
    grad = jax.grad(_outer_products, argnums=(0, 1, 2))
    ours = jax.jit(grad, compiler_options=options).lower(*_args()).compile().as_text()
    kind = '"__ynn_fusion"'  # a fusion's backend config
    assert kind not in ours
    assert kind in jax.jit(grad).lower(*_args()).compile().as_text()  # what it avoids


def test_jit_top_level_and_nested_agree():
    f = jit(_outer_products)
    args = _args()
    want = float(_outer_products(*args))
    np.testing.assert_allclose(float(f(*args)), want, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(f)(*args)), want, rtol=1e-6)  # nested: no options
    batched = jax.vmap(f)(*(jnp.stack([a, 2 * a]) for a in args))
    np.testing.assert_allclose(np.asarray(batched), [want, want * 2**6], rtol=1e-6)
    grads = jax.grad(f, argnums=(0, 1, 2))(*args)
    plain = jax.grad(_outer_products, argnums=(0, 1, 2))(*args)
    for a, b in zip(grads, plain):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_errors_of_the_function_itself_pass_through():
    def bad(x):
        raise ValueError("`x` is wrong")

    f = jit(bad)
    for call in (lambda: f(jnp.ones(2)), lambda: jax.jit(f)(jnp.ones(2))):
        try:
            call()
        except ValueError as error:
            assert "`x` is wrong" in str(error)
        else:
            raise AssertionError("no error raised")
