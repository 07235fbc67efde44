"""`jit`: `eqx.filter_jit` with the XLA options the package's compiled entry points need.

XLA's CPU backend (jaxlib 0.10) hands small fused reductions and elementwise chains to
YNNPACK ("ynn fusions"). The reverse pass of the histogram deposit is made of exactly
such reductions, the transposes of each chunk's (particle, spaxel, template, shift)
outer products (4096 × 4 × 4 × 2 values), and YNNPACK ran them at ~50 ns per value:
the gradient of the log posterior cost 5.7× its forward (CPU time, 10⁵ particles,
benchmarks/posterior.py's case), against 1.7× with the fusions off, where XLA emits its
own loops; the forward is no slower without them (40 × 40 MUSE spaxels: 1.4 s against
1.8 s). So every entry point compiles with `xla_cpu_experimental_ynn_fusion_type` empty.

The option is experimental: `compiler_options()` probes it once, at the first compile
(not at import, so that `jax.distributed.initialize` can still run first), and returns
`{}` if this jaxlib does not know it. It is a CPU option, ignored by other backends.
Functions you jit yourself around a pipeline (e.g. `jax.jit(jax.grad(loss))`) get the
same speed with `jax.jit(..., compiler_options=rx.compiler_options())`.
"""

import functools as ft
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax


_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@ft.cache
def compiler_options() -> dict[str, Any]:
    """The XLA compile options of rubix_eqx's jitted functions (a dict for
    `jax.jit(..., compiler_options=...)`): YNNPACK fusions off on CPU, or `{}` where
    this jaxlib does not have the option."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_OPTIONS).lower(1.0).compile()
    except Exception:  # an unknown option in this jaxlib: compile with XLA's defaults
        return {}
    return dict(_OPTIONS)


_NESTED = "can only be passed to top-level"


def jit(fun: Callable) -> Callable:
    """`eqx.filter_jit(fun)`, compiled with [`rubix_eqx.compiler_options`][] when called
    outside any jit (JAX accepts compile options only there; inside another jit the
    outer one compiles, with its own options)."""
    nested = eqx.filter_jit(fun)
    top = None

    @ft.wraps(fun)
    def call(*args, **kwargs):
        nonlocal top
        if top is None:
            options = compiler_options()
            top = eqx.filter_jit(fun, compiler_options=options) if options else nested
        if top is not nested:
            try:
                return top(*args, **kwargs)
            except ValueError as error:  # staged into an outer jit
                if _NESTED not in str(error):
                    raise
        return nested(*args, **kwargs)

    return call
