"""The sky frame is right-handed as seen by the observer: images are not mirrored.

Sky coordinates are x = West, y = North (the cube's axes 0 and 1, displayed with North up
and East left, i.e. West to the right) and z away from the observer. (West, North, away)
is left-handed, so physics (cross products) is done here in the right-handed basis
(East, North, away), obtained by flipping x.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import rubix_eqx as rx
from rubix_eqx._stages._deposit import sky_pixels

from .cases import observation, tiny_ssp, tiny_telescope


def to_east_north_away(sky):
    """(West, North, away) components → the right-handed (East, North, away) basis."""
    return np.asarray(sky, np.float64) * np.array([-1.0, 1.0, 1.0])


def ring(spin, n=64, radius=2.0, v_c=200.0, radii=None):
    """Particles on circles about the origin in the plane normal to `spin`, rotating so
    that Σ r × v points along `spin` (galaxy frame, kpc and km/s)."""
    spin = np.asarray(spin, np.float64) / np.linalg.norm(spin)
    trial = np.eye(3)[np.argmin(np.abs(spin))]
    e1 = trial - (trial @ spin) * spin
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(spin, e1)
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.full(n, radius) if radii is None else np.asarray(radii)
    position = r[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    velocity = v_c * (-np.sin(phi)[:, None] * e1 + np.cos(phi)[:, None] * e2)
    return rx.Galaxy.from_arrays(
        position=position,
        velocity=velocity,
        mass=np.full(n, 1e6),
        age=np.full(n, 3.0),
        metallicity=np.full(n, 0.019),
        dtype=jnp.float64,
    )


def on_sky(galaxy, obs):
    """Sky positions (kpc), sky velocities (km/s), both (West, North, away), and the
    matrix, through the library's public orientation stage."""
    orient = rx.Orient()
    tel = rx.Telescope.preset("MUSE-WFM", n_x=4, n_y=4)
    oriented = orient(rx.Particles(galaxy), rx.Scene(obs, tel, None, 1e-20))
    position, v_los = oriented.position, oriented.v_los
    matrix = np.asarray(orient.matrix(obs), np.float64)
    velocity = np.asarray(galaxy.velocity, np.float64) @ matrix.T
    np.testing.assert_allclose(velocity[:, 2], v_los, rtol=1e-12, atol=1e-9)
    return np.asarray(position, np.float64), velocity, matrix


def display_coordinates(position, obs, tel):
    """Pixel coordinates as the deposit computes them; shown with x to the right (West,
    so East is left) and y up (North), relative to the field centre."""
    d_a = obs.angular_diameter_distance()
    px, py = sky_pixels(jnp.asarray(position), d_a, tel.spaxel_size, tel.n_x, tel.n_y)
    return np.asarray(px) - tel.n_x / 2, np.asarray(py) - tel.n_y / 2


def rotation_sense_on_display(galaxy, obs, tel, dt=1e-4):
    """Σ (X dY − Y dX) of the particles between two instants, on the display: > 0 is
    counter-clockwise."""
    later = rx.Galaxy(
        position=galaxy.position + dt * galaxy.velocity,
        velocity=galaxy.velocity,
        mass=galaxy.mass,
        age=galaxy.age,
        metallicity=galaxy.metallicity,
    )
    x0, y0 = display_coordinates(on_sky(galaxy, obs)[0], obs, tel)
    x1, y1 = display_coordinates(on_sky(later, obs)[0], obs, tel)
    return float(np.sum(x0 * (y1 - y0) - y0 * (x1 - x0)))


# ---------------------------------------------- (a) sense of rotation, handedness


@pytest.mark.parametrize("position_angle", [0.0, 37.0, 200.0])
@pytest.mark.parametrize("inclination, toward", [(0.0, True), (180.0, False)])
def test_face_on_disk_spinning_toward_the_observer_turns_counter_clockwise(
    inclination, toward, position_angle
):
    """A face-on disk whose angular momentum points at the observer rotates
    counter-clockwise on an image shown North up, East left (right-hand rule). With the
    documented convention, i = 0 views the galaxy from +z (its spin toward us) and
    i = 180 from −z."""
    tel = tiny_telescope()
    obs = observation(inclination=inclination, position_angle=position_angle)
    galaxy = ring(spin=[0.0, 0.0, 1.0])
    _, _, matrix = on_sky(galaxy, obs)
    spin_sky = matrix @ np.array([0.0, 0.0, 1.0])  # (West, North, away)
    assert (spin_sky[2] < 0) == toward  # z is away: negative = toward the observer
    assert abs(spin_sky[2]) == pytest.approx(1.0)  # face-on
    sense = rotation_sense_on_display(galaxy, obs, tel)
    assert (sense > 0) == toward, sense


@pytest.mark.parametrize("seed", range(6))
def test_any_disk_turns_counter_clockwise_iff_its_spin_points_at_the_observer(seed):
    rng = np.random.default_rng(seed)
    spin = rng.normal(size=3)
    obs = observation(
        inclination=float(rng.uniform(0, 180)), position_angle=float(rng.uniform(-180, 360))
    )
    galaxy = ring(spin=spin)
    _, _, matrix = on_sky(galaxy, obs)
    spin_sky = matrix @ (spin / np.linalg.norm(spin))
    if abs(spin_sky[2]) < 0.2:  # nearly edge-on: no clear sense on the sky
        pytest.skip("edge-on draw")
    sense = rotation_sense_on_display(galaxy, obs, tiny_telescope())
    assert (sense > 0) == (spin_sky[2] < 0)


@pytest.mark.parametrize(
    "inclination, position_angle", [(0.0, 0.0), (30.0, 20.0), (60.0, 200.0), (135.0, -70.0)]
)
def test_placing_on_the_sky_is_a_rotation_not_a_mirror(inclination, position_angle):
    """Σ m r × v of the sky-frame particles, in the right-handed (East, North, away)
    basis, is the galaxy's angular momentum carried onto the sky by the same map: true
    only if the map is a physical rotation (det = −1 in the left-handed sky axes)."""
    spin = np.array([0.3, -0.5, 0.8])
    galaxy = ring(spin=spin)
    position, velocity, matrix = on_sky(
        galaxy, observation(inclination=inclination, position_angle=position_angle)
    )
    assert np.linalg.det(matrix) == pytest.approx(-1.0, abs=1e-12)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    mass = np.asarray(galaxy.mass)[:, None]
    spin_from_particles = np.sum(
        mass * np.cross(to_east_north_away(position), to_east_north_away(velocity)), 0
    )
    spin_carried = to_east_north_away(matrix @ (spin / np.linalg.norm(spin)))
    np.testing.assert_allclose(
        spin_from_particles / np.linalg.norm(spin_from_particles), spin_carried, atol=1e-12
    )


# ---------------------------------------------- (b) position angle: North through East


@pytest.mark.parametrize("inclination", [0.0, 60.0])
@pytest.mark.parametrize(
    "position_angle, side",
    [(90.0, "East"), (0.0, "North"), (-90.0, "West"), (180.0, "South"), (450.0, "East")],
)
def test_position_angle_turns_the_galaxy_x_axis_from_north_through_east(
    inclination, position_angle, side
):
    """A particle on the galaxy's +x axis (the line of nodes, so the inclination does not
    move it) lands at the position angle: PA = 90 is East, i.e. a lower x pixel index
    (axis 0 runs West). Checked in a truth map and in a cube."""
    ssp, tel = tiny_ssp(), tiny_telescope()
    obs = observation(inclination=inclination, position_angle=position_angle)
    galaxy = rx.galaxy.single_population(
        1, age=3.0, metallicity=0.019, position=(1.5, 0.0, 0.0), dtype=jnp.float64
    )
    maps = rx.truth_maps(galaxy, obs, tel, ssp, weighting="mass")
    cube = rx.Pipeline(tel, ssp, lsf=False, dtype=jnp.float64)(galaxy, obs)
    image = np.asarray(cube.flux).sum(-1)
    ix, iy = np.indices(image.shape) + 0.5
    for weights in (np.asarray(maps.flux), image):
        x = np.sum(weights * ix) / weights.sum() - tel.n_x / 2  # spaxels West of centre
        y = np.sum(weights * iy) / weights.sum() - tel.n_y / 2  # spaxels North of centre
        expected = {"East": (-1, 0), "West": (1, 0), "North": (0, 1), "South": (0, -1)}[side]
        offset = np.hypot(x, y)
        assert offset > 2.0  # 1.5 kpc is ~3 spaxels at z = 0.05
        np.testing.assert_allclose([x / offset, y / offset], expected, atol=1e-9)


# ---------------------------------------------- (c) the receding side


@pytest.mark.parametrize(
    "inclination, position_angle", [(60.0, 30.0), (45.0, 200.0), (120.0, 30.0), (70.0, -100.0)]
)
def test_receding_side_of_an_inclined_disk(inclination, position_angle):
    """For circular rotation v = Ω L̂ × r, the line-of-sight velocity away from the
    observer is v·(−n̂) with n̂ the direction to the observer, so it is positive where
    r·(L̂ × n̂) > 0: the receding side is along L̂ × n̂ (physics in the right-handed
    (East, North, away) basis, L̂ the galaxy's +z carried onto the sky). With the
    documented convention this is the galaxy's +x end, at the position angle (the
    kinematic PA), and L̂ tips from the line of sight towards PA + 90°."""
    tel = tiny_telescope(n=20)
    obs = observation(inclination=inclination, position_angle=position_angle)
    rng = np.random.default_rng(0)
    galaxy = ring(spin=[0, 0, 1], n=4000, radii=rng.uniform(0.6, 4.0, 4000))
    _, _, matrix = on_sky(galaxy, obs)
    spin = to_east_north_away(matrix @ np.array([0.0, 0.0, 1.0]))
    toward = np.array([0.0, 0.0, -1.0])
    receding = np.cross(spin, toward)  # (East, North, 0)
    receding_display = np.array([-receding[0], receding[1]]) / np.linalg.norm(receding[:2])

    maps = rx.truth_maps(galaxy, obs, tel, tiny_ssp(), weighting="mass")
    velocity, mask = np.asarray(maps.velocity), np.asarray(maps.mask)
    ix, iy = np.indices(velocity.shape) + 0.5
    x, y = ix - tel.n_x / 2, iy - tel.n_y / 2
    along = x * receding_display[0] + y * receding_display[1]
    clear = mask & (np.abs(along) > 1.5)
    assert clear.sum() > 20
    assert np.all(np.sign(velocity[clear]) == np.sign(along[clear]))
    dipole = np.array([np.sum(velocity * x * mask), np.sum(velocity * y * mask)])
    assert np.degrees(np.arccos(dipole @ receding_display / np.linalg.norm(dipole))) < 3.0

    # The documented convention: the receding side lies at PA, North through East ...
    east, north = -receding_display[0], receding_display[1]
    kinematic_pa = np.degrees(np.arctan2(east, north))
    assert (kinematic_pa - position_angle + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-9)
    # ... and the spin tips from the line of sight towards PA + 90° (for i < 90; beyond
    # 90 the spin points away from the observer, still towards PA + 90° on the sky).
    spin_pa = np.degrees(np.arctan2(spin[0], spin[1]))
    assert (spin_pa - position_angle - 90 + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-9)
    assert spin[2] == pytest.approx(-np.cos(np.deg2rad(inclination)), abs=1e-12)
