"""Dust stages: attenuation of each particle's light by a screen in front of it."""

import abc
import dataclasses
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._spectral_grid import SpectralGrid
from .._units import ARCSEC_PER_RADIAN
from ..galaxy import Gas
from ..physics._dust_curves import (
    attenuation_curve,
    CURVES,
    DUST_TO_METAL_MW,
    metal_column_to_av,
    R_V_RANGE,
)
from ._deposit import CICDeposit, deposit_weights, sky_pixels
from ._orient import rotation_matrix
from ._protocol import AbstractParticleStage, Particles, Scene


DEFAULT_R_V = {"ccm89": 3.1, "calzetti00": 4.05, "f99": 3.1}
# Charlot & Fall (2000) §4: τ̂_V = 1.0, μ = 0.3 → τ_V^BC = 0.7; birth clouds last 10 Myr;
# τ_λ ∝ λ^−0.7.
CF00_A_V_BIRTH_CLOUD = 2.5 * float(np.log10(np.e)) * 0.7  # 0.760 mag
CF00_AGE_BIRTH_CLOUD = 0.01  # Gyr
CF00_SLOPE = -0.7


def _check_curve(curve: str, r_v: float) -> None:
    if curve not in CURVES:
        raise ValueError(f"Unknown attenuation curve {curve!r}; known: {', '.join(CURVES)}.")
    lo, hi = R_V_RANGE[curve]
    if not (np.isfinite(r_v) and lo <= r_v <= hi):
        raise ValueError(f"`r_v` of the {curve} curve must lie in [{lo:g}, {hi:g}]; got {r_v}.")


class AbstractDust(AbstractParticleStage):
    """Particle stage: each particle's A_V (mag) behind a dust screen, and the attenuation
    curve A(λ)/A_V on the observed lattice, so that its light is multiplied by
    10^(−0.4 A_V · A(λ)/A_V) (the direct engine applies it per particle and bin; the
    histogram engine carries one dust component through a low-rank expansion, error
    ≤ 1e-5 of the unattenuated cube, see `rubix_eqx._engine`).

    The curve is evaluated at λ_obs/(1+z): the dust's rest frame is taken as the
    galaxy's systemic one (a dust grain's own velocity, |v|/c ≲ 10⁻³, shifts the curve
    by that fraction of λ). Put it after the deposit stage (it reads sky positions).

    **Attributes:** `curve` (`"ccm89"`, `"calzetti00"` or `"f99"`, of
    [`rubix_eqx.physics`][]), `r_v`, `lattice_wavelength` (Å, the observed lattice's bin
    centres).
    """

    curve: eqx.AbstractVar[str]
    r_v: eqx.AbstractVar[Float[Array, ""]]
    lattice_wavelength: eqx.AbstractVar[Float[Array, " n_work"]]

    @abc.abstractmethod
    def a_v(self, particles: Particles, scene: Scene) -> Float[Array, " n"]:
        """A_V (mag) in front of each particle."""

    def check_scene(self, scene: Scene) -> None:
        pass

    def curve_at(self, rest_wavelength) -> Float[Array, "*n"]:
        """A(λ)/A_V at rest-frame wavelengths (Å)."""
        return attenuation_curve(self.curve)(rest_wavelength, self.r_v)

    def curve_on_lattice(self, redshift) -> Float[Array, " n_work"]:
        """A(λ)/A_V at the observed lattice's bin centres, in the dust's frame."""
        return self.curve_at(self.lattice_wavelength / (1 + redshift))

    def __call__(self, particles: Particles, scene: Scene) -> Particles:
        if particles.position is None:
            raise ValueError("A dust stage needs oriented particles: put `Orient()` before it.")
        a_v = self.a_v(particles, scene)[:, None]
        z = scene.observation.redshift.astype(self.lattice_wavelength.dtype)
        curve = self.curve_on_lattice(z)[None, :]
        if particles.attenuation is not None:  # another dust stage ran: one more component
            a_v = jnp.concatenate(
                [particles.attenuation, a_v.astype(particles.attenuation.dtype)], 1
            )
            curve = jnp.concatenate([particles.attenuation_curve, curve], 0)
        return dataclasses.replace(particles, attenuation=a_v, attenuation_curve=curve)


def _lattice_centres(grid: SpectralGrid):
    edges = grid.obs_log_edges
    return jnp.asarray(np.exp(0.5 * (edges[1:] + edges[:-1])))


class UniformScreen(AbstractDust):
    """A foreground screen of the same A_V in front of every particle (a uniform
    foreground, or a test of the attenuation itself): light × 10^(−0.4 A_V A(λ)/A_V).
    Build with `UniformScreen.build(grid, a_v, curve="ccm89", r_v=None)` (R_V default:
    3.1 for the Milky-Way curves, 4.05 for Calzetti)."""

    a_v_screen: Float[Array, ""]
    r_v: Float[Array, ""]
    lattice_wavelength: Float[Array, " n_work"]
    curve: str = eqx.field(static=True)

    @classmethod
    def build(cls, grid: SpectralGrid, a_v: float, curve: str = "ccm89", r_v: float | None = None):
        r_v = DEFAULT_R_V.get(curve, 3.1) if r_v is None else r_v
        _check_curve(curve, r_v)
        if not (np.isfinite(a_v) and a_v >= 0):
            raise ValueError(f"`UniformScreen(a_v=...)` must be finite and >= 0 mag; got {a_v}.")
        dtype = jnp.result_type(float)
        return cls(jnp.asarray(a_v, dtype), jnp.asarray(r_v, dtype), _lattice_centres(grid), curve)

    def a_v(self, particles, scene):
        return jnp.broadcast_to(self.a_v_screen, particles.galaxy.mass.shape)


class GasScreen(AbstractDust):
    """Dust in the gas in front of each particle: the gas metal column Σ_Z (M☉/kpc²)
    between the observer and the particle, times a dust-to-metal ratio, as A_V by
    [`rubix_eqx.physics.metal_column_to_av`][] (Milky-Way scaling: Güver & Özel 2009,
    Dwek 1998).

    **Column map.** Once per call (`prepare`, from the scene's gas), the gas metal mass
    is deposited on a grid of the telescope's spaxels × `n_depth` slices along the line
    of sight spanning ±`depth` kpc (bilinear over spaxels, linear between slices; gas
    beyond ±`depth` goes into the end slices, which is exact for particles within the
    range), and summed along the line of sight. Each particle reads the column in front
    of it by the same bilinear weights and linear interpolation in depth. Cost O(N_gas +
    N + n_x n_y n_depth), memory flat in N; differentiable in gas and particle positions
    (piecewise linear), gas metallicity and mass, and `dust_to_metal`. The screen is
    resolved at the spaxel scale: structure below a spaxel is averaged over it.

    **Attributes:** `dust_to_metal` (0.4, Dwek 1998), `n_depth`, `depth` (kpc), `column`
    (the prepared map, (n_x, n_y, n_depth + 1) M☉ of metals in front of each slice edge,
    or `None` before `prepare`), and those of [`rubix_eqx.AbstractDust`][].
    """

    reads_gas: ClassVar[bool] = True
    dust_to_metal: Float[Array, ""]
    r_v: Float[Array, ""]
    lattice_wavelength: Float[Array, " n_work"]
    column: Float[Array, "n_x n_y n_edge"] | None
    curve: str = eqx.field(static=True)
    n_depth: int = eqx.field(static=True)
    depth: float = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        grid: SpectralGrid,
        curve: str = "ccm89",
        r_v: float | None = None,
        dust_to_metal: float = DUST_TO_METAL_MW,
        n_depth: int = 128,
        depth: float = 25.0,
    ) -> "GasScreen":
        r_v = DEFAULT_R_V.get(curve, 3.1) if r_v is None else r_v
        _check_curve(curve, r_v)
        if not (np.isfinite(dust_to_metal) and 0 <= dust_to_metal <= 1):
            raise ValueError(
                f"`GasScreen(dust_to_metal=...)` must lie in [0, 1]; got {dust_to_metal}."
            )
        if not (isinstance(n_depth, int) and n_depth >= 2):
            raise ValueError(f"`GasScreen(n_depth=...)` must be an integer >= 2; got {n_depth!r}.")
        if not (np.isfinite(depth) and depth > 0):
            raise ValueError(f"`GasScreen(depth=...)` must be > 0 kpc; got {depth}.")
        dtype = jnp.result_type(float)
        return cls(
            jnp.asarray(dust_to_metal, dtype), jnp.asarray(r_v, dtype), _lattice_centres(grid),
            None, curve, n_depth, float(depth),
        )  # fmt: skip

    def _coordinates(self, position, scene: Scene):
        """Continuous (px, py, pz) of sky positions: spaxel pixels and depth slices."""
        tel = scene.telescope
        d_a = scene.observation.angular_diameter_distance().astype(position.dtype)
        px, py = sky_pixels(position, d_a, tel.spaxel_size, tel.n_x, tel.n_y)
        pz = (position[:, 2] + self.depth) / (2 * self.depth) * self.n_depth
        return px, py, jnp.clip(pz, 0.0, float(self.n_depth))

    def _bilinear(self, px, py, scene: Scene):
        """Flat spaxel indices (n, 4) and weights (n, 4) of the bilinear (CIC) deposit,
        weight 0 off the field."""
        tel = scene.telescope
        index, weight, _ = deposit_weights(CICDeposit(), px, py, tel.n_x, tel.n_y)
        return index, weight

    def prepare(self, scene: Scene) -> "GasScreen":
        gas = scene.gas
        if gas is None:
            raise ValueError(
                "`GasScreen` needs the gas in front of the stars: call the pipeline with "
                "`gas=...` (or use `UniformScreen`)."
            )
        tel = scene.telescope
        rot = rotation_matrix(scene.observation.inclination, scene.observation.position_angle)
        position = gas.position @ rot.astype(gas.position.dtype).T
        px, py, pz = self._coordinates(position, scene)
        index, weight = self._bilinear(px, py, scene)
        # linear between slices: a slab at slice coordinate pz puts (1 − f) of its mass
        # into slice ⌊pz⌋ and f into the next; the column in front of edge e is the sum
        # over slices below e
        k = jnp.clip(jnp.floor(pz), 0, self.n_depth - 1)
        f = pz - k
        k = k.astype(jnp.int32)
        metals = gas.mass * gas.metallicity
        n_edge = self.n_depth + 1
        flat = jnp.zeros(tel.n_x * tel.n_y * n_edge, metals.dtype)
        for dk, wz in ((0, 1 - f), (1, f)):
            slice_index = jnp.minimum(k + dk, self.n_depth)
            flat = flat.at[(index * n_edge + slice_index[:, None]).reshape(-1)].add(
                (weight * (metals * wz)[:, None]).reshape(-1)
            )
        slabs = flat.reshape(tel.n_x, tel.n_y, n_edge)
        column = jnp.cumsum(slabs, axis=2) - slabs  # metals strictly in front of each node
        return dataclasses.replace(self, column=column)

    def a_v(self, particles, scene):
        if self.column is None:
            raise ValueError("`GasScreen.a_v` before `prepare`: the pipeline prepares it.")
        tel = scene.telescope
        px, py, pz = self._coordinates(particles.position, scene)
        index, weight = self._bilinear(px, py, scene)
        n_edge = self.n_depth + 1
        columns = self.column.reshape(tel.n_x * tel.n_y, n_edge)[index]  # (n, 4, n_edge)
        k = jnp.clip(jnp.floor(pz), 0, self.n_depth - 1)
        f = (pz - k)[:, None]
        k = k.astype(jnp.int32)[:, None, None]
        below = jnp.take_along_axis(columns, k, axis=2)[:, :, 0]
        above = jnp.take_along_axis(columns, k + 1, axis=2)[:, :, 0]
        in_front = jnp.sum(weight * ((1 - f) * below + f * above), axis=1)  # M☉ of metals
        d_a = scene.observation.angular_diameter_distance().astype(in_front.dtype)
        spaxel_kpc = tel.spaxel_size / ARCSEC_PER_RADIAN * d_a * 1e3
        return metal_column_to_av(in_front / spaxel_kpc**2, self.dust_to_metal)


class BirthCloud(AbstractDust):
    """The extra attenuation of stars still inside their birth clouds (Charlot & Fall
    2000, ApJ 539, 718): stars younger than `age_limit` (10 Myr, the clouds' lifetime)
    and the star-forming gas (whose lines come from the H II regions in those clouds)
    get A_V = `a_v_cloud` more, with the curve τ_λ ∝ (λ / 5500 Å)^`slope` (slope −0.7;
    `curve="cf00"`) or one of the named curves. Their defaults: τ_V^BC = 0.7 of a total
    τ̂_V = 1.0 (μ = 0.3), so A_V = 2.5 log10(e) × 0.7 = 0.760 mag. It adds a dust
    component to any screen before it (e.g. [`rubix_eqx.GasScreen`][] for the diffuse
    ISM, CF00's τ_V^ISM), so young stars see both.

    Differentiable in `a_v_cloud` (and `slope`); the switch is a step in age (zero
    derivative in age), applied to the ages as given (Gyr, as in the galaxy).

    **Attributes:** `a_v_cloud` (mag), `age_limit` (Gyr), `slope`, `curve` (`"cf00"`, or
    a named curve with `r_v`), `r_v` (unused by `"cf00"`), `lattice_wavelength`.
    """

    a_v_cloud: Float[Array, ""]
    slope: Float[Array, ""]
    r_v: Float[Array, ""]
    lattice_wavelength: Float[Array, " n_work"]
    age_limit: float = eqx.field(static=True)
    curve: str = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        grid: SpectralGrid,
        a_v: float = CF00_A_V_BIRTH_CLOUD,
        age_limit: float = CF00_AGE_BIRTH_CLOUD,
        curve: str = "cf00",
        slope: float = CF00_SLOPE,
        r_v: float | None = None,
    ) -> "BirthCloud":
        if curve != "cf00":
            r_v = DEFAULT_R_V.get(curve, 3.1) if r_v is None else r_v
            _check_curve(curve, r_v)
        elif r_v is not None:
            raise ValueError("`BirthCloud(curve='cf00')` is a power law: it takes no `r_v`.")
        for name, value, ok in (
            ("a_v", a_v, np.isfinite(a_v) and a_v >= 0),
            ("age_limit", age_limit, np.isfinite(age_limit) and age_limit > 0),
            ("slope", slope, np.isfinite(slope) and slope < 0),
        ):
            if not ok:
                need = {"a_v": ">= 0 mag", "age_limit": "> 0 Gyr", "slope": "< 0"}[name]
                raise ValueError(
                    f"`BirthCloud({name}=...)` must be finite and {need}; got {value}."
                )
        dtype = jnp.result_type(float)
        return cls(
            jnp.asarray(a_v, dtype), jnp.asarray(slope, dtype),
            jnp.asarray(3.1 if r_v is None else r_v, dtype), _lattice_centres(grid),
            float(age_limit), curve,
        )  # fmt: skip

    def curve_at(self, rest_wavelength) -> Float[Array, "*n"]:
        if self.curve != "cf00":
            return super().curve_at(rest_wavelength)
        return (rest_wavelength / 5500.0) ** self.slope

    def a_v(self, particles, scene):
        source = particles.galaxy
        if isinstance(source, Gas):
            inside = source.sfr > 0
        else:
            inside = source.age < self.age_limit
        return jnp.where(inside, self.a_v_cloud, 0.0).astype(source.mass.dtype)
