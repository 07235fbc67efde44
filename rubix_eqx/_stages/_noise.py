"""Noise: Gaussian noise with a per-voxel variance, from a target S/N or given σ."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import concrete


class Noise(eqx.Module):
    """Stage: add Gaussian noise to the cube and return its variance.

    Construct as `Noise(snr=50.0, window=(6000.0, 6500.0))` or `Noise(sigma=σ)`.

    **S/N model** (`snr`): per voxel (x, y, λ), in the cube's flux unit squared,

        variance = F_ref(x, y) · max(F(x, y, λ), 0) / snr² + floor²

    where F_ref is the spaxel's mean flux over the pixels whose centres lie in
    `window` (observed Å; the whole range if `None`), so a spaxel with a flat spectrum
    has S/N = `snr` in the window (the photon-noise scaling F/σ ∝ √F is kept along λ),
    and `floor` = `floor_fraction` × F_ref of the brightest spaxel / `snr` is a
    sky-like floor: empty spaxels get finite, positive variance (fits never divide by
    zero); it lowers the S/N of the brightest spaxel by a factor
    √(1 + floor_fraction²) (5·10⁻⁵ for the default 0.01). An all-zero cube gets the
    smallest positive normal float as variance.

    **Given σ** (`sigma`): a float or an array broadcastable to (n_x, n_y, n_wave), in
    the cube's flux unit; variance = σ².

    Call as `noise(flux, wavelength, key) -> (noisy, variance)`; the noiseless `flux`
    is unchanged (the caller keeps it). The same key gives bit-identical noise.
    Differentiable in `flux` (the noise realisation is fixed by the key).

    **Attributes:**

    - `snr`: target continuum S/N per spaxel and pixel in `window`, or `None`.
    - `window`: (start, stop) Å, observed, or `None` (whole range).
    - `sigma`: per-voxel σ, or `None`.
    - `floor_fraction`: see above.
    """

    snr: float | None
    sigma: Float[Array, "..."] | None
    floor_fraction: float
    window: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        snr: float | None = None,
        window: tuple[float, float] | None = None,
        *,
        sigma: float | Float[ArrayLike, "..."] | None = None,
        floor_fraction: float = 0.01,
    ):
        """**Arguments:**

        - `snr`: target S/N (> 0) per spaxel and pixel in `window`.
        - `window`: (start, stop) Å, observed, for `snr`; default the whole range.
        - `sigma`: per-voxel σ (float or array broadcastable to the cube), instead of `snr`.
        - `floor_fraction`: the variance floor, as a fraction of the brightest spaxel's
          window-mean noise σ (default 0.01).
        """
        if (snr is None) == (sigma is None):
            raise ValueError("`Noise(...)`: give exactly one of `snr` and `sigma`.")
        if snr is not None and not snr > 0:
            raise ValueError(f"`Noise(snr=...)` must be > 0; got {snr}.")
        if window is not None:
            if len(window) != 2 or not float(window[0]) < float(window[1]):
                raise ValueError(
                    f"`Noise(window=...)` must be (start, stop) with start < stop; got {window}."
                )
            window = (float(window[0]), float(window[1]))
        if sigma is not None:
            sigma = jnp.asarray(sigma)
            if not jnp.issubdtype(sigma.dtype, jnp.floating):
                sigma = sigma.astype(float)
            values = concrete(sigma)
            if values is not None and not np.all(values >= 0):
                raise ValueError("`Noise(sigma=...)` must be >= 0 everywhere.")
        if not floor_fraction >= 0:
            raise ValueError(f"`Noise(floor_fraction=...)` must be >= 0; got {floor_fraction}.")
        self.snr = None if snr is None else float(snr)
        self.window = window
        self.sigma = sigma
        self.floor_fraction = float(floor_fraction)

    @classmethod
    def from_telescope(cls, telescope) -> "Noise":
        """`Noise(snr=telescope.snr, window=telescope.snr_window)`."""
        if telescope.snr is None:
            raise ValueError(
                f"Telescope {telescope.name!r} has no default `snr`; construct `Noise(snr=...)`."
            )
        return cls(snr=telescope.snr, window=telescope.snr_window)

    def check(self, wavelength) -> None:
        """Raise `ValueError` if `window` is not inside `wavelength` (Å, concrete)."""
        if self.window is None or self.snr is None:
            return
        wave = np.asarray(wavelength, np.float64)
        inside = (wave >= self.window[0]) & (wave <= self.window[1])
        if self.window[0] < wave[0] or self.window[1] > wave[-1] or not inside.any():
            raise ValueError(
                f"`Noise(window={self.window})` must lie inside the wavelength range "
                f"{wave[0]:.1f}-{wave[-1]:.1f} Å and contain at least one pixel."
            )

    def variance(
        self, flux: Float[Array, "n_x n_y n_wave"], wavelength: Float[Array, " n_wave"]
    ) -> Float[Array, "n_x n_y n_wave"]:
        """The per-voxel variance of the noise (flux unit squared)."""
        if self.sigma is not None:
            return jnp.broadcast_to(self.sigma.astype(flux.dtype) ** 2, flux.shape)
        if concrete(wavelength) is not None:
            self.check(wavelength)
        if self.window is None:
            in_window = jnp.ones(wavelength.shape, bool)
        else:
            in_window = (wavelength >= self.window[0]) & (wavelength <= self.window[1])
        count = jnp.sum(in_window)
        mask = in_window.astype(flux.dtype)[None, None, :]
        ref = jnp.maximum(jnp.sum(flux * mask, axis=-1) / count.astype(flux.dtype), 0)  # (n_x, n_y)
        ref = eqx.error_if(ref, count == 0, "`Noise(window=...)` contains no wavelength pixel.")
        snr2 = jnp.asarray(self.snr, flux.dtype) ** 2
        floor2 = (self.floor_fraction * jnp.max(ref)) ** 2 / snr2
        var = ref[:, :, None] * jnp.maximum(flux, 0) / snr2 + floor2
        return jnp.maximum(var, jnp.finfo(flux.dtype).tiny)

    def __call__(
        self,
        flux: Float[Array, "n_x n_y n_wave"],
        wavelength: Float[Array, " n_wave"],
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "n_x n_y n_wave"], Float[Array, "n_x n_y n_wave"]]:
        """`(noisy, variance)`: `flux` plus N(0, variance) noise drawn with `key`."""
        var = self.variance(flux, wavelength)
        noise = jr.normal(key, flux.shape, flux.dtype)
        return flux + jnp.sqrt(var) * noise, var
