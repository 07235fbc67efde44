"""Noise: Gaussian noise with a per-voxel variance — physical (source, sky and detector
counts of an exposure: `ExposureNoise`), or from a target S/N or a given σ (`Noise`)."""

import abc
import dataclasses
import math
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import concrete, wavelength_window
from .._units import H_C_ERG_ANGSTROM
from ..telescope import Detector, Exposure, Telescope
from ._protocol import AbstractCubeStage, CubeState, Scene


class AbstractNoise(AbstractCubeStage):
    """Cube stage (pixels), the noise kind: in a pipeline `noise(cube, scene)` (draws
    with `scene.key`, sets the cube's variance); on arrays
    `noise.apply(flux, wavelength, key) -> (noisy, variance)`. Not part of a fit's
    spectrum model (`for_spectrum()` is `None`): the variance is the likelihood's.

    Subclasses give the per-voxel `variance` of the noiseless `flux` (cube flux unit
    squared); the noise drawn is N(0, variance) with the explicit PRNG `key`, so the
    returned variance is the one used, and the result is differentiable in `flux`.
    """

    @abc.abstractmethod
    def variance(
        self, flux: Float[Array, "n_x n_y n_wave"], wavelength: Float[Array, " n_wave"]
    ) -> Float[Array, "n_x n_y n_wave"]:
        """The per-voxel variance (flux unit squared) for the noiseless `flux`."""

    @abc.abstractmethod
    def check(self, wavelength) -> None:
        """Raise `ValueError` if the stage does not fit this wavelength grid (Å, concrete)."""

    @abc.abstractmethod
    def for_pipeline(self, telescope: Telescope, flux_unit: float) -> "AbstractNoise":
        """This stage, checked (and adapted) for a pipeline with this telescope and cube
        unit (erg s⁻¹ cm⁻² Å⁻¹)."""

    domain: ClassVar[str] = "pixels"

    def check_scene(self, scene: Scene) -> None:
        if scene.key is None:
            raise ValueError("This pipeline has a noise stage: pass `key=jax.random.key(...)`.")

    def for_spectrum(self) -> None:
        return None

    def __call__(self, cube: CubeState, scene: Scene) -> CubeState:
        if scene.key is None:
            raise ValueError("This pipeline has a noise stage: pass `key=jax.random.key(...)`.")
        flux, variance = self.apply(cube.flux, scene.telescope.wavelength, scene.key)
        return dataclasses.replace(cube, flux=flux, variance=cube.variance + variance)

    def apply(
        self,
        flux: Float[Array, "n_x n_y n_wave"],
        wavelength: Float[Array, " n_wave"],
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "n_x n_y n_wave"], Float[Array, "n_x n_y n_wave"]]:
        """`(noisy, variance)`: `flux` plus N(0, variance) noise drawn with `key`."""
        var = self.variance(flux, wavelength)
        noise = jr.normal(key, flux.shape, flux.dtype)
        return flux + jnp.sqrt(var) * noise, var


class Noise(AbstractNoise):
    """Stage: add Gaussian noise to the cube and return its variance.

    Construct as `Noise(snr=50.0, window=(6000.0, 6500.0))` or `Noise(sigma=σ)`.

    The constant-S/N model (every spaxel at the same S/N, whatever its surface
    brightness); for the physical model see [`rubix_eqx.ExposureNoise`][].

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
            window = wavelength_window(window, "`Noise(window=...)`")
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

    def for_pipeline(self, telescope: Telescope, flux_unit: float) -> "Noise":
        """`self`, after `check(telescope.wavelength)` (the S/N model has no unit)."""
        self.check(telescope.wavelength)
        return self

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


def pixel_widths(wavelength: Float[Array, " n_wave"]) -> Float[Array, " n_wave"]:
    """Pixel widths (Å) from centres: edges at midpoints, outer edges half a step out."""
    mid = 0.5 * (wavelength[1:] + wavelength[:-1])
    first = wavelength[:1] - (mid[:1] - wavelength[:1])
    last = wavelength[-1:] + (wavelength[-1:] - mid[-1:])
    return jnp.diff(jnp.concatenate([first, mid, last]))


def _evaluate(table: Array | None, values: Array, wavelength: Array) -> Array:
    """A constant (`table` None) or a linearly interpolated curve at `wavelength`."""
    values = values.astype(wavelength.dtype)
    if table is None:
        return jnp.broadcast_to(values[0], wavelength.shape)
    return jnp.interp(wavelength, table.astype(wavelength.dtype), values)


def _curve_override(value: Any, name: str) -> tuple[Any, Any]:
    """`(table wavelengths or None, values)` from a constant, a `(wavelength, value)` pair
    or a `{"wavelength": ..., "value": ...}` mapping."""
    if isinstance(value, dict):
        if set(value) != {"wavelength", "value"}:
            raise ValueError(
                f"`{name}` as a mapping needs exactly the keys 'wavelength' and 'value'; "
                f"got {sorted(value)}."
            )
        return jnp.asarray(value["wavelength"], float), jnp.asarray(value["value"], float)
    if isinstance(value, tuple | list) and len(value) == 2 and np.ndim(value[0]) == 1:
        return jnp.asarray(value[0], float), jnp.asarray(value[1], float)
    return None, value


class ExposureNoise(AbstractNoise):
    """Stage: the physical noise of an exposure — source photon noise, sky background,
    dark current and read noise, so that S/N falls with surface brightness as in real data.

    Per voxel (spaxel of area Ω = `spaxel_size`², wavelength pixel of width Δλ, centre λ),
    in photo-electrons, with the expected counts of the *noiseless* flux F (cube unit):

        g(λ)     = flux_unit · A · T(λ) · Δλ · λ / (h c) · t          (e⁻ per unit of F)
        source   = g · max(F, 0)
        sky      = g · S_sky(λ) · Ω / flux_unit
        detector = n_pix · (dark · t + read_noise² · n_exposures)
        variance = (source + sky + detector) / g²                       (cube unit²)

    with A the collecting area, T the total throughput, t the total exposure time,
    S_sky the sky surface brightness (erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻²) and n_pix =
    Ω·Δλ / (`pixel_area`·`pixel_dispersion`) detector pixels per voxel (1 if the detector
    gives no pixel footprint). Poisson noise is approximated by a Gaussian of the same
    variance (good above ~10 counts per voxel; the sky keeps every voxel's variance > 0),
    drawn with the explicit `key`; the returned variance is the one used. Spaxels are
    independent (no covariance from cube reconstruction) and sky subtraction is perfect
    (only its shot noise remains).

    The time is the exposure's `time`, or — for an exposure stated as a S/N `snr` per
    spaxel and pixel at surface brightness `reference_sb` and `reference_wavelength` —
    the root of snr² = s²t² / ((s + b + d)·t + r) (s, b, d the source, sky and dark
    rates there, r the read variance), solved in closed form on the grid it is given
    ([`exposure_time_for`][rubix_eqx.ExposureNoise.exposure_time_for]).

    Construct with a [`rubix_eqx.telescope.Detector`][] and
    [`rubix_eqx.telescope.Exposure`][], or from a telescope preset:
    `ExposureNoise.from_telescope(tel, exposure_time=7200.0)`.
    `Pipeline(noise="telescope")` builds it from the preset; a pipeline sets `flux_unit`
    to its own (the noise is physical; only its unit changes).

    **Attributes:**

    - `detector`: collecting area, throughput, read noise, dark current, pixel footprint.
    - `exposure`: time (or reference S/N), number of exposures, sky brightness.
    - `spaxel_size`: arcsec (the telescope's; the counts are per spaxel).
    - `flux_unit`: the cube's unit, erg s⁻¹ cm⁻² Å⁻¹ (default 1e-20).
    """

    detector: Detector
    exposure: Exposure
    spaxel_size: float
    flux_unit: float = 1e-20

    def __check_init__(self):
        if not isinstance(self.detector, Detector):
            raise ValueError(
                f"`ExposureNoise.detector` must be a `rubix_eqx.telescope.Detector`; "
                f"got {type(self.detector).__name__}."
            )
        if not isinstance(self.exposure, Exposure):
            raise ValueError(
                f"`ExposureNoise.exposure` must be a `rubix_eqx.telescope.Exposure`; "
                f"got {type(self.exposure).__name__}."
            )
        for name, unit in (("spaxel_size", " arcsec"), ("flux_unit", " erg/s/cm²/Å")):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"`ExposureNoise({name}=...)` must be > 0{unit}; got {value}.")
        det, exp = self.detector, self.exposure
        sky = concrete(exp.sky)
        if sky is not None and np.any(sky == 0) and det.read_noise == 0 and det.dark_current == 0:
            raise ValueError(
                "`ExposureNoise`: the sky is 0 somewhere and the detector has no read noise or "
                "dark current, so an empty voxel would have zero variance; give "
                "`Exposure.sky` > 0 (or a detector noise)."
            )
        ref = exp.reference_wavelength
        if ref is not None:
            for owner, name, table in (
                ("detector", "throughput", det.throughput_wavelength),
                ("exposure", "sky", exp.sky_wavelength),
            ):
                grid = None if table is None else concrete(table)
                if grid is not None and not grid[0] <= ref <= grid[-1]:
                    raise ValueError(
                        f"`Exposure.reference_wavelength` ({ref:g} Å) lies outside "
                        f"`{owner}.{name}_wavelength` ({grid[0]:g}-{grid[-1]:g} Å)."
                    )

    @classmethod
    def from_telescope(
        cls,
        telescope: Telescope,
        *,
        flux_unit: float = 1e-20,
        exposure_time: float | None = None,
        n_exposures: int | None = None,
        sky: Any = None,
        snr: float | None = None,
        reference_sb: float | None = None,
        reference_wavelength: float | None = None,
    ) -> "ExposureNoise":
        """The physical noise of `telescope`'s `detector` and typical `exposure`, with
        any of the exposure's numbers replaced.

        **Arguments:**

        - `telescope`: a [`rubix_eqx.Telescope`][] with a `detector` (and an `exposure`,
          unless `sky` and the time or reference S/N are given here).
        - `flux_unit`: the cube's unit, erg s⁻¹ cm⁻² Å⁻¹.
        - `exposure_time`: total exposure time, s (replaces a reference S/N).
        - `n_exposures`: number of exposures (reads).
        - `sky`: sky surface brightness, erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻²: a constant, a
          `(wavelength, value)` pair or a `{"wavelength", "value"}` mapping (Å).
        - `snr`, `reference_sb`, `reference_wavelength`: a S/N per spaxel and pixel at a
          surface brightness (erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻²) and wavelength (Å), which fixes
          the exposure time (replaces `time`); missing ones are taken from the preset's
          exposure if it is stated that way.
        """
        if telescope.detector is None:
            raise ValueError(
                f"Telescope {telescope.name!r} has no `detector` (collecting area, throughput, "
                "read noise) for physical noise: add a `detector` block (docs/telescopes.md) or "
                "use `Noise(snr=...)`."
            )
        base = telescope.exposure
        fields: dict[str, Any] = {}
        if base is not None:
            fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        elif sky is None:
            raise ValueError(
                f"Telescope {telescope.name!r} has no `exposure` block: give `sky=` and "
                "`exposure_time=` (or `snr=`, `reference_sb=`, `reference_wavelength=`)."
            )
        if sky is not None:
            fields["sky_wavelength"], fields["sky"] = _curve_override(sky, "sky")
        if n_exposures is not None:
            fields["n_exposures"] = n_exposures
        reference = {"snr": snr, "reference_sb": reference_sb,
                     "reference_wavelength": reference_wavelength}  # fmt: skip
        if exposure_time is not None:
            fields.update(time=exposure_time, snr=None, reference_sb=None)
            fields.update(reference_wavelength=None)
            if any(v is not None for v in reference.values()):
                raise ValueError(
                    "`ExposureNoise.from_telescope`: give `exposure_time` or `snr` (with "
                    f"`reference_sb`, `reference_wavelength`), not both; got exposure_time="
                    f"{exposure_time} and "
                    + ", ".join(f"{k}={v}" for k, v in reference.items() if v is not None)
                    + "."
                )
        elif any(v is not None for v in reference.values()):
            fields["time"] = None
            fields.update({k: v for k, v in reference.items() if v is not None})
        exposure = Exposure(**fields)
        return cls(
            detector=telescope.detector,
            exposure=exposure,
            spaxel_size=float(telescope.spaxel_size),
            flux_unit=float(flux_unit),
        )

    def for_pipeline(self, telescope: Telescope, flux_unit: float) -> "ExposureNoise":
        """`self` checked against `telescope` (grid coverage, same spaxel size), in the
        pipeline's `flux_unit`."""
        self.check(telescope.wavelength)
        if not math.isclose(self.spaxel_size, float(telescope.spaxel_size), rel_tol=1e-6):
            raise ValueError(
                f"`ExposureNoise(spaxel_size={self.spaxel_size})` must equal the spaxel size "
                f"of telescope {telescope.name!r} ({telescope.spaxel_size} arcsec): the sky "
                "and source counts are per spaxel."
            )
        if float(flux_unit) != self.flux_unit:
            return dataclasses.replace(self, flux_unit=float(flux_unit))
        return self

    def check(self, wavelength) -> None:
        """Raise `ValueError` if the throughput or sky tables do not cover `wavelength`
        (Å, concrete), or the reference wavelength lies outside it."""
        wave = np.asarray(wavelength, np.float64)
        for owner, name, table in (
            ("detector", "throughput", self.detector.throughput_wavelength),
            ("exposure", "sky", self.exposure.sky_wavelength),
        ):
            grid = None if table is None else concrete(table)
            if grid is not None and (
                grid[0] > wave[0] * (1 + 1e-4) or grid[-1] < wave[-1] * (1 - 1e-4)
            ):
                raise ValueError(
                    f"`ExposureNoise.{owner}.{name}_wavelength` covers {grid[0]:g}-{grid[-1]:g} Å "
                    f"but the wavelength grid spans {wave[0]:.1f}-{wave[-1]:.1f} Å."
                )
        ref = self.exposure.reference_wavelength
        if ref is not None and not wave[0] <= ref <= wave[-1]:
            raise ValueError(
                f"`Exposure.reference_wavelength` ({ref:g} Å) must lie inside the wavelength "
                f"range {wave[0]:.1f}-{wave[-1]:.1f} Å."
            )

    def rates(
        self, wavelength: Float[Array, " n"], width: Float[Array, " n"]
    ) -> tuple[Array, Array, Array, Array]:
        """Per voxel at pixel centres `wavelength` of widths `width` (Å): `(optics, sky,
        dark, read)` — e⁻ s⁻¹ for a voxel flux of 1 erg s⁻¹ cm⁻² Å⁻¹, sky e⁻ s⁻¹, dark
        e⁻ s⁻¹, and the read-noise variance of all exposures, e⁻²."""
        det, exp = self.detector, self.exposure
        omega = self.spaxel_size**2
        photons = det.collecting_area * 1e4 / H_C_ERG_ANGSTROM  # cm² per erg·Å
        throughput = _evaluate(det.throughput_wavelength, det.throughput, wavelength)
        optics = throughput * width * wavelength * photons
        sky = optics * (omega * _evaluate(exp.sky_wavelength, exp.sky, wavelength))
        if det.pixel_area is None or det.pixel_dispersion is None:
            n_pix = jnp.ones_like(wavelength)
        else:
            n_pix = width * (omega / (det.pixel_area * det.pixel_dispersion))
        dark = det.dark_current * n_pix
        read = (det.read_noise**2 * exp.n_exposures) * n_pix
        return optics, sky, dark, read

    def exposure_time_for(self, wavelength: Float[Array, " n_wave"]) -> Float[Array, ""]:
        """The total exposure time (s): the exposure's `time`, or the time at which a
        spaxel of surface brightness `reference_sb` reaches S/N `snr` in a pixel at
        `reference_wavelength` of this grid (pixel width interpolated there)."""
        wavelength = jnp.asarray(wavelength)
        if not jnp.issubdtype(wavelength.dtype, jnp.floating):
            wavelength = wavelength.astype(float)
        exp = self.exposure
        if exp.time is not None:
            return jnp.asarray(exp.time, wavelength.dtype)
        assert exp.snr is not None and exp.reference_sb is not None
        ref = jnp.full((1,), exp.reference_wavelength, wavelength.dtype)
        width = jnp.interp(ref, wavelength, pixel_widths(wavelength))
        optics, sky, dark, read = self.rates(ref, width)
        source = optics * (exp.reference_sb * self.spaxel_size**2)  # e⁻ s⁻¹
        snr2 = exp.snr**2
        linear = snr2 * (source + sky + dark)
        time = (linear + jnp.sqrt(linear**2 + 4 * source**2 * snr2 * read)) / (2 * source**2)
        return time[0]

    def variance(
        self, flux: Float[Array, "n_x n_y n_wave"], wavelength: Float[Array, " n_wave"]
    ) -> Float[Array, "n_x n_y n_wave"]:
        """The per-voxel variance (flux unit squared) for the noiseless `flux`."""
        if concrete(wavelength) is not None:
            self.check(wavelength)
        wave = jnp.asarray(wavelength).astype(flux.dtype)
        time = self.exposure_time_for(wave)
        optics, sky, dark, read = self.rates(wave, pixel_widths(wave))
        gain = optics * (self.flux_unit * time)  # e⁻ per unit of F
        background = (sky + dark) * time + read  # e⁻²
        counts = gain[None, None, :] * jnp.maximum(flux, 0) + background[None, None, :]
        var = counts / gain[None, None, :] ** 2
        return jnp.maximum(var, jnp.finfo(flux.dtype).tiny)


def telescope_noise(telescope: Telescope, flux_unit: float = 1e-20) -> AbstractNoise:
    """The telescope's default noise: physical ([`ExposureNoise.from_telescope`][
    rubix_eqx.ExposureNoise.from_telescope]) if it has a `detector` and an `exposure`,
    else its constant S/N (`Noise(snr=telescope.snr, window=telescope.snr_window)`)."""
    if telescope.detector is not None and telescope.exposure is not None:
        return ExposureNoise.from_telescope(telescope, flux_unit=flux_unit)
    if telescope.snr is None:
        raise ValueError(
            f"Telescope {telescope.name!r} has no default `snr` and no `detector`/`exposure` "
            "for physical noise; construct `Noise(snr=...)` or `ExposureNoise(...)`."
        )
    return Noise.from_telescope(telescope)
