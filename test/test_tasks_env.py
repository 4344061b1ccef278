"""Tasks (references) and the Gymnasium-style environment."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.env import SafeControlEnv
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.tasks import Trajectory, make_task


@pytest.mark.parametrize("kind", ["circle", "figure8", "square"])
def test_velocities_are_the_derivatives_of_positions(kind: str) -> None:
    traj = Trajectory(kind, scale=0.75, length=6.0, num_cycles=2, plane="xz", offset=(0.2, 1.0))
    t = np.linspace(0.01, 5.9, 200)
    h = 1e-6
    p_plus, _ = traj.sample(t + h)
    p_minus, _ = traj.sample(t - h)
    _, v = traj.sample(t)
    fd = (p_plus - p_minus) / (2 * h)
    if kind == "square":  # piecewise linear: skip the corners
        corner = np.isclose(np.mod(t, traj.period / 4), 0, atol=1e-5)
        fd, v = fd[~corner], v[~corner]
    np.testing.assert_allclose(v, fd, atol=1e-5)


def test_shapes_periodicity_and_offsets() -> None:
    fig8 = Trajectory("figure8", scale=0.75, length=6.0, plane="xz", offset=(0.0, 1.0))
    pos, _ = fig8.sample([0.0, 1.5, 3.0, 6.0])
    np.testing.assert_allclose(pos[:, 0], [0.0, 0.75, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(pos[:, 2], [1.0, 1.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(pos[:, 1], 0.0)
    circle = Trajectory("circle", scale=0.5, length=4.0, plane="xy")
    pos, _ = circle.sample(np.linspace(0, 4, 50))
    np.testing.assert_allclose(np.hypot(pos[:, 0], pos[:, 1]), 0.5)
    square = Trajectory("square", scale=1.0, length=4.0, plane="xz")
    pos, _ = square.sample([0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(pos[:, [0, 2]], [[0, 0.5], [-0.5, 1.0], [-1.0, 0.5], [-0.5, 0.0]])


def test_task_maps_the_plane_onto_the_state() -> None:
    model = systems.make("quadrotor_2d")
    task = make_task(model, {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]})
    x_ref, u_ref = task.reference([1.5])
    assert x_ref[0, 0] == pytest.approx(0.75)
    assert x_ref[0, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(u_ref[0], model.equilibrium()[1])
    with pytest.raises(ConfigError, match="no 'y' axis"):
        make_task(model, {"kind": "circle", "plane": "xy"})
    with pytest.raises(ConfigError, match=r"task \(kind circle\): unknown key\(s\) \['radius'\]"):
        make_task(model, {"kind": "circle", "radius": 1.0})
    with pytest.raises(ConfigError, match=r"task\.kind: expected one of"):
        make_task(model, {"kind": "spiral"})


@pytest.mark.parametrize(
    ("name", "positions", "angles"),
    [("cartpole", ["x"], ["theta"]), ("quadrotor_1d", ["z"], []), ("quadrotor_2d", ["x", "z"], ["theta"]),
     ("quadrotor_3d", ["x", "y", "z"], ["phi", "theta", "psi"])],
)
def test_each_system_declares_its_positions_and_angles(name: str, positions: list[str], angles: list[str]) -> None:
    model = systems.make(name)
    assert list(model.position_names) == positions
    assert list(model.position_axes) == positions  # each position is named after its world axis
    assert [model.state_names[i] for i in model.velocity_indices] == [f"{p}_dot" for p in positions]
    assert list(model.angle_names) == angles
    assert systems.with_state_size(model.nx) == [name]  # a state size names one system (old bags)


def test_position_and_angle_errors_are_apart_and_in_their_units() -> None:
    cart = systems.make("cartpole")
    x, ref = np.array([0.3, 9.0, 0.1, 9.0]), np.zeros(4)
    assert systems.position_error(cart, x, ref) == pytest.approx(0.3)  # the cart alone (m)
    assert systems.angle_error(cart, x, ref) == pytest.approx(0.1)  # the pole alone (rad)
    quad = systems.make("quadrotor_3d")
    x = np.zeros(12)
    x[[0, 2, 4]] = [3.0, 4.0, 12.0]
    x[[6, 7, 8]] = [0.0, 0.0, 3.0]
    ref = np.zeros(12)
    ref[8] = -3.0  # psi: 6 rad apart, i.e. 2 pi - 6 the short way round
    assert systems.position_error(quad, x, ref) == pytest.approx(13.0)
    assert systems.angle_error(quad, x, ref) == pytest.approx(2 * np.pi - 6.0)
    rows = np.stack([x, ref])
    np.testing.assert_allclose(systems.position_error(quad, rows, ref), [13.0, 0.0])  # one per row
    assert systems.angle_error(systems.make("quadrotor_1d"), [1.0, 0.0], [0.0, 0.0]) == 0.0  # no angles
    with pytest.raises(ConfigError, match="12 entries"):
        systems.position_error(quad, np.zeros(6), np.zeros(6))


def test_tasks_put_the_trajectory_where_the_model_declares_its_positions() -> None:
    import dataclasses

    spec = {"kind": "circle", "scale": 0.5, "length": 4.0, "plane": "xy", "offset": [0.2, -0.1]}
    quad = systems.make("quadrotor_3d")
    x_ref, _ = make_task(quad, spec).reference([0.0, 1.0])
    pos, vel = Trajectory("circle", 0.5, 4.0, plane="xy", offset=(0.2, -0.1)).sample([0.0, 1.0])
    np.testing.assert_array_equal(x_ref[:, [0, 2]], pos[:, :2])
    np.testing.assert_array_equal(x_ref[:, [1, 3]], vel[:, :2])
    np.testing.assert_array_equal(x_ref[:, 4:], 0.0)
    # The same model declaring its axes in another order: the reference follows the declaration.
    shuffled = dataclasses.replace(quad, position_axes=("z", "y", "x"), position_indices=(4, 2, 0),
                                   velocity_indices=(5, 3, 1))
    np.testing.assert_array_equal(make_task(shuffled, spec).reference([0.0, 1.0])[0], x_ref)
    with pytest.raises(ConfigError, match="one entry per axis"):
        dataclasses.replace(quad, position_indices=(0, 2))
    with pytest.raises(ConfigError, match="different state entries"):
        dataclasses.replace(quad, angle_indices=(6, 7, 4))
    cart = systems.make("cartpole")
    with pytest.raises(ConfigError, match="cartpole has no 'z' axis"):
        make_task(cart, {"kind": "circle", "plane": "xz"})


def test_env_episode_with_lqr() -> None:
    env = SafeControlEnv(
        "cartpole",
        episode_length=4.0,
        init_randomization=[0.05, 0.05, 0.05, 0.05],
        constraints=[{"kind": "bounded", "name": "theta", "active_dims": [2], "lower": -0.2, "upper": 0.2}],
    )
    ctrl = LqrController(env.model, [1, 1, 10, 1], 0.1, 0.02)
    obs, info = env.reset(seed=7)
    assert info["constraint_values"].shape == (2,)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(ctrl(obs))
        total += reward
        steps += 1
        if terminated or truncated:
            break
    assert truncated
    assert not terminated
    assert steps == 200
    assert not info["constraint_violation"]
    assert info["tracking_error"] < 1e-2
    assert total < 0


def test_env_errors_are_the_cart_position_in_metres_and_the_pole_angle_in_radians() -> None:
    env = SafeControlEnv("cartpole", episode_length=1.0)
    env.reset(seed=0)
    env.sim.x = np.array([0.3, 1.0, -0.2, 2.0])  # the state the step's info describes (before stepping)
    _, _, _, _, info = env.step(np.zeros(1))
    assert info["tracking_error"] == pytest.approx(0.3)  # x only: not theta, not the rates
    assert info["angle_error"] == pytest.approx(0.2)


def test_env_is_seeded_and_terminates_out_of_bounds() -> None:
    env = SafeControlEnv("cartpole", init_randomization=[0.05] * 4)
    a, _ = env.reset(seed=1)
    b, _ = env.reset(seed=1)
    c, _ = env.reset(seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    env.reset(seed=1)
    for _ in range(200):
        _, _, terminated, _, info = env.step([0.0])  # no control: the pole falls
        if terminated:
            break
    assert terminated
    assert info["out_of_bounds"] == ["theta"]
    with pytest.raises(ConfigError, match="action"):
        env.step([np.nan])
