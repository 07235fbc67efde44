"""The telescope's default stages, from the switches of `Pipeline(telescope, ssp, ...)`:
the one place where booleans and names become stage objects."""

import dataclasses

import jax.numpy as jnp
import numpy as np

from .._rebin import pixel_edges
from .._units import C_KM_S
from ..ssp import SSPGrid
from ..telescope import Telescope
from ._aperture import Aperture
from ._deposit import AbstractDeposit, DEPOSITS
from ._dust import AbstractDust, BirthCloud, GasScreen
from ._lines import EmissionLines
from ._lsf import lattice_half_width, LSF
from ._noise import AbstractNoise, telescope_noise
from ._orient import Orient
from ._pixels import Rebin
from ._protocol import AbstractStage
from ._psf import PSFConvolution
from ._spectra import Spectra, ssp_in_medium


LATTICE_PIXEL_KM_S = 45.0  # the coarsest default lattice pixel


def default_oversample(wavelength) -> int:
    """The smallest lattice oversampling making the lattice pixel ≤ 45 km/s for a
    telescope grid `wavelength` (Å)."""
    edges = np.log(pixel_edges(np.asarray(wavelength, np.float64)))
    pixel = float(np.min(np.diff(edges))) * C_KM_S
    return max(1, int(np.ceil(pixel / LATTICE_PIXEL_KM_S - 1e-9)))


def telescope_stages(
    telescope: Telescope,
    ssp: SSPGrid,
    *,
    deposit: AbstractDeposit | str = "cic",
    orient: Orient | None = None,
    lsf: LSF | bool = True,
    allow_sharper_lsf: bool = False,
    psf: PSFConvolution | bool = True,
    noise: AbstractNoise | str | None = None,
    aperture: Aperture | bool = True,
    flux_unit: float = 1e-20,
    oversample: int | None = None,
    velocity_margin: float = 1000.0,
    emission_lines: EmissionLines | bool = False,
    dust: AbstractDust | str | None = None,
    birth_clouds: BirthCloud | bool = False,
    dtype=jnp.float32,
) -> tuple[AbstractStage, ...]:
    """The stages of `Pipeline(telescope, ssp, ...)` (see there for the arguments), in
    order: orient, deposit, dust, birth clouds, spectra, emission lines, LSF, rebin, PSF, noise,
    aperture."""
    if oversample is None:
        oversample = default_oversample(telescope.wavelength)
    if not (isinstance(oversample, int) and oversample >= 1):
        raise ValueError(f"`Pipeline(oversample=...)` must be an integer >= 1; got {oversample!r}.")
    if isinstance(deposit, str):
        if deposit not in DEPOSITS:
            raise ValueError(
                "`Pipeline(deposit=...)` must be 'cic', 'nearest', 'smoothed' or a deposit "
                f"stage; got {deposit!r}."
            )
        deposit = DEPOSITS[deposit]()
    medium_ssp = ssp_in_medium(ssp, telescope.medium)
    # The lattice extends by the LSF's half-width, so flux spreads in from outside.
    margin = lattice_half_width(telescope, medium_ssp, oversample) if lsf is True else 0
    spectra = Spectra.build(
        telescope, ssp, oversample=oversample, margin=margin,
        velocity_margin=velocity_margin, dtype=dtype,
    )  # fmt: skip
    if lsf is True:
        lsf = LSF.build(telescope, medium_ssp, spectra.grid, allow_sharper=allow_sharper_lsf)
    if isinstance(lsf, LSF):
        spectra = dataclasses.replace(spectra, edge_bins=lsf.half_width)
    if isinstance(dust, str):
        if dust != "gas":
            raise ValueError(
                f"`Pipeline(dust=...)` must be 'gas', a dust stage or None; got {dust!r}."
            )
        dust = GasScreen.build(spectra.grid)
    if birth_clouds is True:
        birth_clouds = BirthCloud.build(spectra.grid)
    if emission_lines is True:
        emission_lines = EmissionLines.build(spectra.grid, ssp, telescope.medium)
    if psf is True:
        psf = PSFConvolution.build(telescope) if telescope.psf is not None else None
    if isinstance(noise, str):
        if noise != "telescope":
            raise ValueError(
                f"`Pipeline(noise=...)` must be a Noise, 'telescope' or None; got {noise!r}."
            )
        noise = telescope_noise(telescope, flux_unit)
    if noise is not None:
        noise = noise.for_pipeline(telescope, flux_unit)
    if aperture is True:
        aperture = Aperture.build(telescope) if telescope.aperture != "square" else None
    stages = (
        Orient() if orient is None else orient,
        deposit,
        dust,
        birth_clouds if isinstance(birth_clouds, BirthCloud) else None,
        spectra,
        emission_lines if isinstance(emission_lines, EmissionLines) else None,
        lsf if isinstance(lsf, LSF) else None,
        Rebin.build(spectra.grid, telescope),
        psf if isinstance(psf, PSFConvolution) else None,
        noise,
        aperture if isinstance(aperture, Aperture) else None,
    )
    return tuple(s for s in stages if s is not None)
