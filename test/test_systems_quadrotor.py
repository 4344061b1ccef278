"""Quadrotor models: hover, linearization, integration, consistency between 1D/2D/3D, bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.quadrotor import motor_thrust_bounds

NAMES = ["quadrotor_1d", "quadrotor_2d", "quadrotor_3d"]


@pytest.mark.parametrize("name", NAMES)
def test_hover_is_a_fixed_point(name: str) -> None:
    model = systems.make(name)
    x_eq, u_eq = model.equilibrium()
    assert u_eq.sum() == pytest.approx(0.027 * 9.8)
    np.testing.assert_allclose(model.f(x_eq, u_eq), 0.0, atol=1e-12)
    np.testing.assert_allclose(model.step(x_eq, u_eq, 0.02, 5), x_eq, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_linearization_matches_finite_differences(name: str) -> None:
    model = systems.make(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.3, 0.3, model.nx)
    u = model.equilibrium()[1] * rng.uniform(0.8, 1.2, model.nu)
    a, b = model.linearize(x, u)
    eps = 1e-6
    a_fd = np.column_stack([(model.f(x + eps * e, u) - model.f(x - eps * e, u)) / (2 * eps) for e in np.eye(model.nx)])
    b_fd = np.column_stack([(model.f(x, u + eps * e) - model.f(x, u - eps * e)) / (2 * eps) for e in np.eye(model.nu)])
    np.testing.assert_allclose(a, a_fd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, b_fd, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["quadrotor_2d", "quadrotor_3d"])
def test_rk4_converges_at_fourth_order(name: str) -> None:
    model = systems.make(name)
    x0 = np.zeros(model.nx)
    x0[-1] = 0.5  # spinning / moving
    u = model.equilibrium()[1] * np.linspace(0.9, 1.1, model.nu)
    ref = model.step(x0, u, 0.2, 1000)
    errs = [np.linalg.norm(model.step(x0, u, 0.2, n) - ref) for n in (2, 4, 8)]
    assert errs[0] > 1e-9, errs  # nonlinear: the coarse step really errs
    assert 10.0 < errs[0] / errs[1] < 22.0, errs


def test_rk4_is_exact_for_the_1d_quadrotor() -> None:
    """z_dd = T/m - g is constant under a held input, so z(t) is a quadratic, which RK4 integrates
    exactly: every number of substeps gives the closed form (to rounding)."""
    model = systems.make("quadrotor_1d")
    thrust = 0.9 * model.equilibrium()[1][0]
    acc = thrust / 0.027 - 9.8
    z0, v0, dt = 0.3, 0.5, 0.2
    exact = [z0 + v0 * dt + 0.5 * acc * dt**2, v0 + acc * dt]
    assert acc < -0.5  # really accelerating (not hover): the quadratic term counts
    for n in (1, 2, 4, 8, 1000):
        np.testing.assert_allclose(model.step([z0, v0], [thrust], dt, n), exact, rtol=0, atol=1e-12)


def test_3d_reduces_to_2d_in_the_xz_plane() -> None:
    """With roll = yaw = 0, f1 = f4 = T1/2 and f2 = f3 = T2/2 the 3D model moves like the 2D one."""
    m2, m3 = systems.make("quadrotor_2d"), systems.make("quadrotor_3d")
    t1, t2, theta, theta_dot = 0.12, 0.15, 0.2, -0.4
    x2 = np.array([0.1, 0.2, 1.0, -0.1, theta, theta_dot])
    x3 = np.zeros(12)
    x3[[0, 1, 4, 5, 7, 10]] = [0.1, 0.2, 1.0, -0.1, theta, theta_dot]  # x, x_dot, z, z_dot, theta, q
    d2 = m2.f(x2, [t1, t2])
    d3 = m3.f(x3, [t1 / 2, t2 / 2, t2 / 2, t1 / 2])
    np.testing.assert_allclose(d3[[1, 5, 10]], d2[[1, 3, 5]], rtol=1e-12)  # x_dd, z_dd, theta_dd
    np.testing.assert_allclose(d3[[2, 3, 6, 8, 9, 11]], 0.0, atol=1e-12)  # nothing leaves the plane


def test_2d_pitch_direction_and_yaw_torque_sign() -> None:
    m2 = systems.make("quadrotor_2d")
    assert m2.f(np.zeros(6), [0.1, 0.2])[5] > 0  # more thrust on motors 2+3 pitches up positively
    m3 = systems.make("quadrotor_3d")
    hover = m3.equilibrium()[1]
    assert m3.f(np.zeros(12), hover + np.array([0, 0.01, 0, 0.01]))[11] > 0  # yaw from motors 2 and 4


def test_input_bounds_follow_the_pwm_limits() -> None:
    lo, hi = motor_thrust_bounds(3.16e-10)
    assert lo == pytest.approx(0.028162, rel=1e-4)
    assert hi == pytest.approx(0.148341, rel=1e-4)
    low, high = systems.make("quadrotor_2d").input_bounds
    np.testing.assert_allclose(low, 2 * lo)
    np.testing.assert_allclose(high, 2 * hi)
    low, high = systems.make("quadrotor_1d").input_bounds
    np.testing.assert_allclose(high, 4 * hi)


def test_free_fall_and_mass_override() -> None:
    model = systems.make("quadrotor_1d", mass=0.027 * 1.3)
    assert model.equilibrium()[1][0] == pytest.approx(0.027 * 1.3 * 9.8)
    x = model.step([1.0, 0.0], [0.0], 0.5, 10)
    np.testing.assert_allclose(x, [1.0 - 0.5 * 9.8 * 0.25, -9.8 * 0.5], rtol=1e-12)


def test_wrench_acts_on_the_modelled_axes() -> None:
    m2 = systems.make("quadrotor_2d")
    x, u = m2.equilibrium()
    d = m2.f(x, u, [0.027, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert d[1] == pytest.approx(1.0)  # fx / m
    d = m2.f(x, u, [0.0, 5.0, 0.0, 0.0, 0.0, 0.0])  # fy: not in the 2D model
    np.testing.assert_allclose(d, 0.0, atol=1e-12)
    cart = systems.make("cartpole")
    push = cart.f(np.zeros(4), [0.0], [1.0, 0, 0, 0, 0, 0])
    assert push[1] > 0
    assert push[3] != 0  # a push at the pole's centre of mass also turns the pole


def test_termination_bounds() -> None:
    m3 = systems.make("quadrotor_3d")
    x = np.zeros(12)
    assert m3.out_of_bounds(x) == []
    x[4] = 2.5
    x[6] = math.radians(90)
    assert m3.out_of_bounds(x) == ["z", "phi"]
    assert systems.make("cartpole").out_of_bounds([0, 0, np.nan, 0]) == ["theta"]


def test_bad_quadrotor_parameters() -> None:
    with pytest.raises(ConfigError, match="mass"):
        systems.make("quadrotor_2d", mass=0.0)
    with pytest.raises(ConfigError, match="unknown parameter"):
        systems.make("quadrotor_3d", inertia=1.0)
