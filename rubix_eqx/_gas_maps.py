"""Truth maps of the gas: Hα flux, gas kinematics, line ratios and the dust's A_V, on the
cube's spaxels with the pipeline's own particle stages."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._compile import jit
from ._observation import Observation
from ._stages._dust import AbstractDust
from ._stages._protocol import AbstractParticleStage, Particles, Scene
from ._units import dimming_constant, L_SUN_ERG_S
from .galaxy import Gas
from .physics._emission_lines import line_index, line_luminosities, line_widths, LINES


class GasMaps(eqx.Module):
    """Per-spaxel maps of the gas, each (n_x, n_y), as the emission lines of the cube
    see it (same orientation, deposit and dust stages; no PSF).

    **Attributes:**

    - `halpha`: Hα flux after dust, `flux_unit` erg s⁻¹ cm⁻² (what the cube holds).
    - `halpha_intrinsic`: Hα flux before dust (Σ SFR × 10^41.27 erg/s / 4π d_L²).
    - `velocity`: Hα-weighted mean line-of-sight velocity of the gas, km/s (receding > 0).
    - `dispersion`: Hα-weighted line-of-sight dispersion, km/s: the spread of the elements'
      velocities and their own thermal + turbulent σ, in quadrature (no instrument).
    - `log_nii_halpha`: log10 [N II]6583 / Hα, after dust.
    - `log_oiii_hbeta`: log10 [O III]5007 / Hβ, after dust.
    - `log_sii_halpha`: log10 ([S II]6716 + 6731) / Hα, after dust.
    - `balmer_decrement`: Hα / Hβ after dust (2.86 without).
    - `a_v`: intrinsic-Hα-weighted mean A_V (mag) in front of the star-forming gas,
      summed over the dust stages (0 without dust).
    - `mask`: spaxels with star-forming gas (elsewhere the maps are 0).
    """

    halpha: Float[Array, "n_x n_y"]
    halpha_intrinsic: Float[Array, "n_x n_y"]
    velocity: Float[Array, "n_x n_y"]
    dispersion: Float[Array, "n_x n_y"]
    log_nii_halpha: Float[Array, "n_x n_y"]
    log_oiii_hbeta: Float[Array, "n_x n_y"]
    log_sii_halpha: Float[Array, "n_x n_y"]
    balmer_decrement: Float[Array, "n_x n_y"]
    a_v: Float[Array, "n_x n_y"]
    mask: Bool[Array, "n_x n_y"]


def gas_truth_maps(pipeline, gas, observation: Observation) -> GasMaps:
    """The [`rubix_eqx.GasMaps`][] of `gas` seen as `observation` through `pipeline`
    (a [`rubix_eqx.Pipeline`][] with a line stage, e.g. `emission_lines=True`): its
    orientation, deposit and dust stages, and its line stage's electron density, [O I]
    ratio and turbulent σ. Line ratios are those of all of [`rubix_eqx.physics.LINES`][],
    whether or not the stage draws them; each line is dimmed by the dust curves at its
    rest wavelength."""
    lines = pipeline.line_stage
    if lines is None:
        raise ValueError(
            "`gas_truth_maps(pipeline, ...)`: the pipeline has no line stage; build it with "
            "`emission_lines=True`."
        )
    if not isinstance(gas, Gas):
        raise TypeError(f"`gas` must be a `rubix_eqx.galaxy.Gas`; got {type(gas).__name__}.")
    return _gas_truth_maps(pipeline, gas.checked(), observation.checked())


@jit
def _gas_truth_maps(pipeline, gas: Gas, observation: Observation) -> GasMaps:
    tel, lines = pipeline.telescope, pipeline.line_stage
    whole = Scene(observation, tel, None, pipeline.flux_unit, gas)
    stages = [s.prepare(whole) for s in pipeline.stages if isinstance(s, AbstractParticleStage)]
    particles = Particles(gas)
    for stage in stages:
        particles = stage(particles, whole)
    dtype = gas.mass.dtype
    d_l = observation.luminosity_distance().astype(dtype)
    luminosity = line_luminosities(
        gas.sfr, gas.metallicity, electron_density=lines.electron_density,
        log_oi_halpha=lines.log_oi_halpha, unit=L_SUN_ERG_S,
    )  # fmt: skip
    intrinsic = luminosity * (dimming_constant(pipeline.flux_unit) / d_l**2)  # (n, n_lines)
    rest = jnp.asarray([line.air for line in LINES], dtype)
    dust = [s for s in stages if isinstance(s, AbstractDust)]
    if dust:  # A_line = Σ_c A_V,c · A(λ_line)/A_V of component c
        curves = jnp.stack([s.curve_at(rest).astype(dtype) for s in dust])  # (n_dust, n_lines)
        a_v = particles.attenuation.astype(dtype)  # (n, n_dust)
        observed = intrinsic * 10.0 ** (-0.4 * (a_v @ curves))
        a_v_total = jnp.sum(a_v, axis=1)
    else:
        observed, a_v_total = intrinsic, jnp.zeros_like(gas.mass)
    col = {name: line_index(name) for name in ("Halpha", "Hbeta", "[NII]6583", "[OIII]5007",
                                               "[SII]6716", "[SII]6731")}  # fmt: skip
    sigma = line_widths(gas.temperature, lines.turbulent_sigma)[:, col["Halpha"]]
    n_spaxels = tel.n_x * tel.n_y
    index, spatial = particles.spaxel_index, particles.spaxel_weight
    flat = index.reshape(-1)

    def spaxel_sum(per_element):  # (n,) → (n_spaxels,)
        w = (spatial * per_element[:, None]).reshape(-1)
        return jax.ops.segment_sum(w, flat, num_segments=n_spaxels)

    halpha = spaxel_sum(observed[:, col["Halpha"]])
    halpha0 = spaxel_sum(intrinsic[:, col["Halpha"]])
    has = halpha0 > 0
    safe = jnp.where(has, halpha, 1)
    safe0 = jnp.where(has, halpha0, 1)
    weight = observed[:, col["Halpha"]]
    v_los = particles.v_los
    v_mean = jnp.where(has, spaxel_sum(weight * v_los) / safe, 0)
    centred = v_los[:, None] - v_mean[index]  # (n, k)
    w = (spatial * weight[:, None]).reshape(-1)
    spread = jax.ops.segment_sum(w * (centred**2).reshape(-1), flat, num_segments=n_spaxels)
    own = spaxel_sum(weight * sigma**2)
    dispersion = jnp.where(has, jnp.sqrt(jnp.maximum((spread + own) / safe, 0)), 0)

    def log_ratio(numerator, denominator):
        top, bottom = spaxel_sum(numerator), spaxel_sum(denominator)
        ok = has & (top > 0) & (bottom > 0)
        return jnp.where(ok, jnp.log10(jnp.where(ok, top, 1) / jnp.where(ok, bottom, 1)), 0)

    hbeta = spaxel_sum(observed[:, col["Hbeta"]])
    shape = (tel.n_x, tel.n_y)
    maps = dict(
        halpha=halpha,
        halpha_intrinsic=halpha0,
        velocity=v_mean,
        dispersion=dispersion,
        log_nii_halpha=log_ratio(observed[:, col["[NII]6583"]], observed[:, col["Halpha"]]),
        log_oiii_hbeta=log_ratio(observed[:, col["[OIII]5007"]], observed[:, col["Hbeta"]]),
        log_sii_halpha=log_ratio(
            observed[:, col["[SII]6716"]] + observed[:, col["[SII]6731"]],
            observed[:, col["Halpha"]],
        ),
        balmer_decrement=jnp.where(has, halpha / jnp.where(has, hbeta, 1), 0),
        a_v=jnp.where(has, spaxel_sum(intrinsic[:, col["Halpha"]] * a_v_total) / safe0, 0),
    )
    return GasMaps(**{k: v.reshape(shape) for k, v in maps.items()}, mask=has.reshape(shape))
