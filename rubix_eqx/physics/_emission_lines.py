"""Nebular emission-line recipes for star-forming gas: a line table, luminosities from the
star-formation rate and the gas O/H, and line widths.

All functions are pure JAX and differentiable in their array arguments.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class EmissionLine(NamedTuple):
    """One line: `name`, rest `vacuum` and `air` wavelengths (Å), emitting `ion` and its
    atomic mass `mass_amu` (for thermal broadening)."""

    name: str
    vacuum: float
    air: float
    ion: str
    mass_amu: float


# Vacuum wavelengths: the SDSS emission-line list (SDSS DR7 `linelist`, vacuum, from NIST);
# air wavelengths: NIST Atomic Spectra Database (Kramida et al.) as used in the literature.
# The pairs agree with rubix_eqx's Ciddor/Morton air-vacuum conversion to ≤ 0.02 Å
# (tests/test_emission_lines.py).
_H, _N, _O, _S = 1.008, 14.007, 15.999, 32.06  # standard atomic weights (IUPAC)
LINES: tuple[EmissionLine, ...] = (
    EmissionLine("[OII]3726", 3727.09, 3726.03, "O+", _O),
    EmissionLine("[OII]3729", 3729.88, 3728.82, "O+", _O),
    EmissionLine("Hdelta", 4102.89, 4101.74, "H", _H),
    EmissionLine("Hgamma", 4341.68, 4340.47, "H", _H),
    EmissionLine("Hbeta", 4862.68, 4861.33, "H", _H),
    EmissionLine("[OIII]4959", 4960.295, 4958.91, "O++", _O),
    EmissionLine("[OIII]5007", 5008.240, 5006.84, "O++", _O),
    EmissionLine("[OI]6300", 6302.046, 6300.30, "O0", _O),
    EmissionLine("[NII]6548", 6549.86, 6548.05, "N+", _N),
    EmissionLine("Halpha", 6564.61, 6562.80, "H", _H),
    EmissionLine("[NII]6583", 6585.27, 6583.45, "N+", _N),
    EmissionLine("[SII]6716", 6718.29, 6716.44, "S+", _S),
    EmissionLine("[SII]6731", 6732.67, 6730.82, "S+", _S),
)
"""The emission lines of [`rubix_eqx.physics.line_luminosities`][], in its column order."""
LINE_NAMES: tuple[str, ...] = tuple(line.name for line in LINES)
_INDEX = {name: i for i, name in enumerate(LINE_NAMES)}

# Kennicutt & Evans (2012, ARA&A 50, 531), Table 1: log SFR [M☉/yr] = log L(Hα) [erg/s] − 41.27,
# for a Kroupa (2001) IMF over 0.1–100 M☉ (from Murphy et al. 2011; Hao et al. 2011).
LOG_HALPHA_PER_SFR = 41.27
# Case B, T = 10⁴ K, n_e = 100 cm⁻³ (Osterbrock & Ferland 2006, Table 4.4).
HALPHA_HBETA = 2.86
HGAMMA_HBETA = 0.468
HDELTA_HBETA = 0.259
# Intensity ratios fixed by the transition probabilities (Storey & Zeippen 2000, MNRAS 312, 813).
OIII_5007_4959 = 2.98
NII_6583_6548 = 2.94
# Doublet ratios vs electron density at T = 10⁴ K: R = a (b + n_e) / (c + n_e)
# (Sanders et al. 2016, ApJ 816, 23, eq. 7 and Table 2); n_e → 0 gives the low-density limit.
OII_3729_3726 = (0.3771, 2468.0, 638.4)
SII_6716_6731 = (0.4315, 2107.0, 627.1)
# Curti et al. (2020, MNRAS 491, 944), Table 2: log R = Σ c_n x^n, x = 12 + log(O/H) − 8.69,
# calibrated on SDSS stacks with direct-method abundances over 7.6 ≤ 12 + log(O/H) ≤ 8.9.
CURTI2020 = {
    "R2": (0.435, -1.362, -5.655, -4.851, -0.478, 0.736),  # [OII]3726+3729 / Hβ
    "R3": (-0.277, -3.549, -3.593, -0.981),  # [OIII]5007 / Hβ
    "N2": (-0.489, 1.513, -2.554, -5.293, -2.867),  # [NII]6583 / Hα
    "S2": (-0.442, -0.360, -6.271, -8.339, -3.559),  # [SII]6716+6731 / Hα
}
CURTI2020_RANGE = (7.6, 8.9)
# [OI]6300 has no calibration in Curti et al. (2020): a fixed log([OI]6300/Hα) = −1.6, the
# middle of the star-forming sequence in the [OI] BPT diagram of SDSS galaxies (Kewley et al.
# 2006, MNRAS 372, 961, Fig. 1). A placeholder, overridable (`log_oi_halpha`).
LOG_OI_HALPHA = -1.6
# Solar oxygen abundance and metal mass fraction of Asplund et al. (2009, ARA&A 47, 481).
SOLAR_OH = 8.69
SOLAR_Z_ASPLUND = 0.0134

_K_B = 1.380649e-16  # erg/K (exact)
_AMU_G = 1.66053906660e-24  # g (CODATA 2018)


def line_index(name: str) -> int:
    """The column of line `name` (e.g. `"Halpha"`) in [`rubix_eqx.physics.line_luminosities`][]."""
    try:
        return _INDEX[name]
    except KeyError:
        raise ValueError(
            f"Unknown emission line {name!r}; known: {', '.join(LINE_NAMES)}."
        ) from None


def line_wavelengths(medium: str = "air") -> Float[Array, " n_lines"]:
    """Rest wavelengths (Å) of [`rubix_eqx.physics.LINES`][] in `medium` (`"air"` or `"vacuum"`)."""
    if medium not in ("air", "vacuum"):
        raise ValueError(
            f"`line_wavelengths(medium=...)` must be 'air' or 'vacuum'; got {medium!r}."
        )
    return jnp.asarray([getattr(line, medium) for line in LINES], jnp.result_type(float))


def oxygen_abundance(
    metallicity: Float[ArrayLike, "*n"],
    solar_metallicity: float = SOLAR_Z_ASPLUND,
    solar_oh: float = SOLAR_OH,
) -> Float[Array, "*n"]:
    """12 + log10(O/H) of gas with metal mass fraction Z, assuming solar abundance ratios:
    `solar_oh` + log10(Z / `solar_metallicity`) (Asplund et al. 2009: 8.69 at Z = 0.0134)."""
    return solar_oh + jnp.log10(jnp.asarray(metallicity) / solar_metallicity)


def _polynomial(coefficients, x):
    return sum(c * x**n for n, c in enumerate(coefficients))


def doublet_ratio(ion: str, electron_density: Float[ArrayLike, "*n"] = 0.0) -> Float[Array, "*n"]:
    """Intensity ratio [OII] 3729/3726 (`ion="OII"`) or [SII] 6716/6731 (`"SII"`) at
    T = 10⁴ K and `electron_density` (cm⁻³): a (b + n_e)/(c + n_e) (Sanders et al. 2016).
    n_e = 0, the default, is the low-density limit (1.458 for [OII], 1.450 for [SII])."""
    table = {"OII": OII_3729_3726, "SII": SII_6716_6731}
    if ion not in table:
        raise ValueError(f"`doublet_ratio(ion=...)` must be 'OII' or 'SII'; got {ion!r}.")
    a, b, c = table[ion]
    n_e = jnp.asarray(electron_density)
    return a * (b + n_e) / (c + n_e)


def line_luminosities(
    sfr: Float[ArrayLike, " n"],
    metallicity: Float[ArrayLike, " n"],
    *,
    electron_density: float | Float[ArrayLike, ""] = 0.0,
    log_oi_halpha: float | Float[ArrayLike, ""] = LOG_OI_HALPHA,
    solar_metallicity: float = SOLAR_Z_ASPLUND,
    unit: float = 1.0,
) -> Float[Array, "n n_lines"]:
    """Intrinsic (dust-free) luminosities, in `unit` erg/s (default erg/s; e.g. L☉ =
    3.828e33 erg/s keeps them within float32), of [`rubix_eqx.physics.LINES`][] for gas
    elements with star-formation rate `sfr` (M☉/yr) and metal mass fraction `metallicity`.

    - Hα: log L = log SFR + 41.27 (Kennicutt & Evans 2012, Kroupa IMF).
    - Hβ, Hγ, Hδ: case B at 10⁴ K, 100 cm⁻³: Hα/Hβ = 2.86, Hγ/Hβ = 0.468, Hδ/Hβ = 0.259
      (Osterbrock & Ferland 2006).
    - [NII] 6583/Hα, [OIII] 5007/Hβ, [SII] (6716+6731)/Hα, [OII] (3726+3729)/Hβ: the
      Curti et al. (2020) calibrations at 12 + log(O/H) from
      [`rubix_eqx.physics.oxygen_abundance`][], **clipped** to their range 7.6–8.9 (outside
      it the ratios are those at the edge, and their derivative in Z is zero).
    - [NII] 6548 = 6583/2.94, [OIII] 4959 = 5007/2.98 (Storey & Zeippen 2000); the [SII] and
      [OII] doublets split by [`rubix_eqx.physics.doublet_ratio`][] at `electron_density`
      (cm⁻³; 0 = the low-density limit).
    - [OI] 6300/Hα = 10^`log_oi_halpha` (a fixed placeholder, see docs/physics.md).

    **Returns:** `(n, n_lines)`, columns in the order of `LINES` (see
    [`rubix_eqx.physics.line_index`][]).
    """
    sfr = jnp.asarray(sfr)
    oh = oxygen_abundance(metallicity, solar_metallicity)
    x = jnp.clip(oh, *CURTI2020_RANGE) - SOLAR_OH
    halpha = sfr * 10.0 ** (LOG_HALPHA_PER_SFR - math.log10(unit))
    hbeta = halpha / HALPHA_HBETA
    nii_6583 = halpha * 10.0 ** _polynomial(CURTI2020["N2"], x)
    oiii_5007 = hbeta * 10.0 ** _polynomial(CURTI2020["R3"], x)
    sii = halpha * 10.0 ** _polynomial(CURTI2020["S2"], x)
    oii = hbeta * 10.0 ** _polynomial(CURTI2020["R2"], x)
    r_sii = doublet_ratio("SII", electron_density)
    r_oii = doublet_ratio("OII", electron_density)
    columns = {
        "[OII]3726": oii / (1 + r_oii),
        "[OII]3729": oii * r_oii / (1 + r_oii),
        "Hdelta": HDELTA_HBETA * hbeta,
        "Hgamma": HGAMMA_HBETA * hbeta,
        "Hbeta": hbeta,
        "[OIII]4959": oiii_5007 / OIII_5007_4959,
        "[OIII]5007": oiii_5007,
        "[OI]6300": halpha * 10.0 ** jnp.asarray(log_oi_halpha),
        "[NII]6548": nii_6583 / NII_6583_6548,
        "Halpha": halpha,
        "[NII]6583": nii_6583,
        "[SII]6716": sii * r_sii / (1 + r_sii),
        "[SII]6731": sii / (1 + r_sii),
    }
    return jnp.stack([columns[name] for name in LINE_NAMES], axis=-1)


def line_widths(
    temperature: Float[ArrayLike, " n"], turbulent_sigma: float | Float[ArrayLike, ""] = 0.0
) -> Float[Array, "n n_lines"]:
    """Line-of-sight velocity dispersion (km/s) of each line of each gas element:
    σ² = k T / m_ion + σ_turb², with the emitting ion's mass (H 1.008, N 14.007, O 15.999,
    S 32.06 u) and `turbulent_sigma` σ_turb (km/s). At 10⁴ K, σ_th = 9.08 km/s for H and
    2.27 km/s for O."""
    t = jnp.asarray(temperature)[..., None]
    mass_g = jnp.asarray([line.mass_amu for line in LINES], t.dtype) * _AMU_G
    thermal = _K_B * t / mass_g[None, :] / 1e10  # (km/s)²
    return jnp.sqrt(thermal + jnp.asarray(turbulent_sigma) ** 2)
