"""Birth clouds (`rx.BirthCloud`, Charlot & Fall 2000) on top of a diffuse screen, against
the paper's definition τ_λ = τ_V (λ / 5500 Å)^−0.7 written out in NumPy, CCM89 from the
`dust_extinction` package for the diffuse part, and central finite differences."""

import dust_extinction.parameter_averages as dep
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from astropy import units as u
from rubix_eqx.galaxy import synthetic_gas_disk

from .cases import random_galaxy, tiny_ssp
from .test_dust import observation, telescope, Z


A_V_ISM = 0.3


def aged(galaxy, age):
    return eqx.tree_at(lambda g: g.age, galaxy, jnp.full_like(galaxy.age, age))


@pytest.fixture(scope="module")
def clouds():
    """Stars behind a CCM89 screen (A_V = 0.3) and CF00 birth clouds, no LSF."""
    base = rx.Pipeline(telescope(4800.0, 6000.0, step=2.0), tiny_ssp(), lsf=False, psf=False,
                       aperture=False, dtype=jnp.float64, birth_clouds=True)  # fmt: skip
    return base.with_stage(rx.UniformScreen.build(base.grid, a_v=A_V_ISM), before=rx.BirthCloud)


def transmission(pipe, galaxy):
    clear = pipe.without(rx.AbstractDust)(galaxy, observation()).flux
    dusty = pipe(galaxy, observation()).flux
    clear, dusty = np.asarray(clear), np.asarray(dusty)
    bright = clear > 1e-3 * clear.max()
    return np.where(bright, dusty / np.where(bright, clear, 1), np.nan), bright


def test_young_stars_see_the_cloud_and_the_screen_old_stars_the_screen(clouds):
    """Young (5 Myr): exp(−0.7 (λ/5500)^−0.7) · 10^(−0.4 · 0.3 · CCM89); old (3 Gyr):
    the screen only; each per pixel to 2e-5 (the curve is applied per lattice bin, so a
    pixel sees the flux-weighted mean of its bins' transmissions)."""
    galaxy = random_galaxy(1, 100, size_kpc=1.0)
    wave = np.asarray(clouds.telescope.wavelength) / (1 + Z)
    screen = 10 ** (-0.4 * A_V_ISM * dep.CCM89(Rv=3.1)(wave * u.AA))
    cloud = np.exp(-0.7 * (wave / 5500.0) ** -0.7)  # CF00 eq. 4, τ_V^BC = 0.7
    for age, want in ((0.005, screen * cloud), (3.0, screen)):
        ratio, bright = transmission(clouds, aged(galaxy, age))
        err = np.max(np.abs(ratio / want - 1)[bright])
        print(f"\nage {age} Gyr: max relative error of the transmission {err:.2e}")
        assert bright.sum() > 100 and err < 2e-5


def test_star_forming_gas_lines_see_the_cloud(clouds):
    """Hα/Hβ of star-forming gas behind the clouds alone: 2.86 · exp(0.7 ((4861/5500)^−0.7
    − (6563/5500)^−0.7))."""
    tel = telescope(4900.0, 6750.0, n=8, spaxel=3.0)
    base = rx.Pipeline(tel, tiny_ssp(), psf=False, aperture=False, dtype=jnp.float64,
                       birth_clouds=True)  # fmt: skip
    lines = rx.EmissionLines.build(base.grid, base.ssp, tel.medium, lines=("Hbeta", "Halpha"))
    pipe = base.with_stage(lines)
    gas = synthetic_gas_disk(jax.random.key(4), 40, sf_radius=4.0, dtype=jnp.float64)
    wave = np.asarray(tel.wavelength)

    def decrement(p):
        flux = np.asarray(p(None, observation(), gas=gas).flux).sum((0, 1))
        window = lambda rest: np.abs(wave - rest * (1 + Z)) < 15.0
        return flux[window(6562.80)].sum() / flux[window(4861.33)].sum()

    clear, dusty = decrement(pipe.without(rx.BirthCloud)), decrement(pipe)
    want = np.exp(0.7 * ((4861.33 / 5500) ** -0.7 - (6562.80 / 5500) ** -0.7))
    print(f"\nHα/Hβ {clear:.4f} → {dusty:.4f} in birth clouds (want × {want:.4f})")
    assert abs(dusty / clear / want - 1) < 1e-3


def test_gradient_in_the_cloud_depth_matches_finite_differences(clouds):
    galaxy = aged(random_galaxy(2, 30, size_kpc=1.0), 0.005)
    stage = clouds.stage(rx.BirthCloud)

    def total(a_v):
        new = eqx.tree_at(lambda s: s.a_v_cloud, stage, a_v)
        pipe = eqx.tree_at(
            lambda p: p.stages, clouds, tuple(new if s is stage else s for s in clouds.stages)
        )
        return jnp.sum(pipe(galaxy, observation()).flux)

    a_v = jnp.asarray(0.76, jnp.float64)
    grad = jax.grad(total)(a_v)
    h = 1e-4
    fd = (total(a_v + h) - total(a_v - h)) / (2 * h)
    print(f"\nd flux / d A_V^BC: {float(grad):.6e} vs central difference {float(fd):.6e}")
    assert grad < 0 and abs(grad / fd - 1) < 1e-4


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"a_v": -0.1}, r"BirthCloud\(a_v=...\)` must be finite and >= 0 mag; got -0.1"),
        ({"age_limit": 0.0}, r"BirthCloud\(age_limit=...\)` must be finite and > 0 Gyr"),
        ({"slope": 0.7}, r"BirthCloud\(slope=...\)` must be finite and < 0; got 0.7"),
        ({"r_v": 3.1}, r"curve='cf00'\)` is a power law: it takes no `r_v`"),
        ({"curve": "smc"}, "Unknown attenuation curve 'smc'"),
    ],
)
def test_bad_birth_cloud_arguments_are_named(clouds, kw, message):
    with pytest.raises(ValueError, match=message):
        rx.BirthCloud.build(clouds.grid, **kw)


def test_named_curve_for_the_clouds(clouds):
    """With `curve="calzetti00"` the clouds' curve is Calzetti's (as the screens')."""
    stage = rx.BirthCloud.build(clouds.grid, curve="calzetti00")
    want = rx.UniformScreen.build(clouds.grid, a_v=1.0, curve="calzetti00").curve_on_lattice(Z)
    assert np.allclose(stage.curve_on_lattice(Z), want, rtol=1e-12, atol=0)


def test_config_key_builds_the_clouds_after_the_screen():
    """`pipeline.birth_clouds` reaches `BirthCloud.build`, after the gas screen; the
    star-forming example config turns them on."""
    from rubix_eqx.config import build_pipeline_from, check_config, load_config

    from .test_gas_lines import DEFAULT

    config = load_config(DEFAULT, [
        "gas={n_gas: 20}", "telescope.wavelength.start=6400", "telescope.wavelength.stop=6900",
        "telescope.n_x=4", "telescope.n_y=4", "pipeline.dust=gas",
        "pipeline.birth_clouds={a_v: 1.2, age_limit: 0.02}",
    ])  # fmt: skip
    pipe = build_pipeline_from(check_config(config), tiny_ssp())
    kinds = [type(s) for s in pipe.stages]
    clouds = pipe.stage(rx.BirthCloud)
    assert kinds.index(rx.GasScreen) < kinds.index(rx.BirthCloud)
    assert float(clouds.a_v_cloud) == 1.2 and clouds.age_limit == 0.02
    example = check_config(load_config(DEFAULT.parent / "star_forming.yaml", []))
    assert example.pipeline["birth_clouds"] == {}


@pytest.mark.parametrize("value, message", [
    ("{colour: red}", r"pipeline\.birth_clouds\.colour: unknown key"),
    ("{slope: 0.7}", r"pipeline\.birth_clouds\.slope: must be < 0"),
    ("{a_v: -1}", r"pipeline\.birth_clouds\.a_v: must be >= 0"),
    ("{curve: smc}", r"pipeline\.birth_clouds\.curve: "),
    ("yes please", r"pipeline\.birth_clouds: must be true, false or a mapping"),
])  # fmt: skip
def test_config_errors_name_the_key(value, message):
    from rubix_eqx.config import check_config, ConfigError, load_config

    from .test_gas_lines import DEFAULT

    with pytest.raises(ConfigError, match=message):
        check_config(load_config(DEFAULT, [f"pipeline.birth_clouds={value}"]))
