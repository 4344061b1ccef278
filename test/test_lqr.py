"""LQR from the model's linearization: gains, closed-loop stability, options and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController, lqr_gain
from safe_ctrl_ros.control.lqr import discretize
from safe_ctrl_ros.errors import ConfigError


def _simulate(ctrl: LqrController, x0: list[float], steps: int, dt: float = 0.02) -> np.ndarray:
    x = np.asarray(x0, dtype=float)
    for _ in range(steps):
        x = ctrl.model.step(x, ctrl(x), dt, 10)
    return x


@pytest.mark.parametrize("discretization", ["exact", "euler"])
@pytest.mark.parametrize("x0", [[0.0, 0.0, 0.1, 0.0], [0.5, -0.3, -0.2, 0.4], [-1.0, 0.0, 0.25, 0.0]])
def test_lqr_balances_the_cartpole(discretization: str, x0: list[float]) -> None:
    model = systems.make("cartpole")
    ctrl = LqrController(model, [1, 1, 10, 1], 0.1, 0.02, discretization)  # type: ignore[arg-type]
    x = _simulate(ctrl, x0, 500)
    assert np.all(np.abs(x) < 1e-3), x


def test_open_loop_falls_so_the_test_above_means_something() -> None:
    model = systems.make("cartpole")
    x = np.array([0.0, 0.0, 0.1, 0.0])
    for _ in range(100):
        x = model.step(x, [0.0], 0.02, 10)
    assert abs(x[2]) > 1.0


def test_goal_other_than_equilibrium() -> None:
    model = systems.make("cartpole")
    ctrl = LqrController(model, [1, 1, 10, 1], 0.1, 0.02, x_goal=[0.5, 0.0, 0.0, 0.0])
    x = _simulate(ctrl, [0.0, 0.0, 0.0, 0.0], 750)
    np.testing.assert_allclose(x, [0.5, 0, 0, 0], atol=1e-3)


def test_euler_and_exact_discretizations_differ_as_documented() -> None:
    model = systems.make("cartpole")
    a, b = model.linearize(*model.equilibrium())
    ad, bd = discretize(a, b, 0.02, "euler")
    np.testing.assert_allclose(ad, np.eye(4) + 0.02 * a)
    np.testing.assert_allclose(bd, 0.02 * b)
    k_exact = lqr_gain(model, [1, 1, 10, 1], 0.1, 0.02, "exact")
    k_euler = lqr_gain(model, [1, 1, 10, 1], 0.1, 0.02, "euler")
    assert k_exact.shape == (1, 4)
    assert not np.allclose(k_exact, k_euler)


def test_gain_solves_the_riccati_equation() -> None:
    model = systems.make("cartpole")
    a, b = model.linearize(*model.equilibrium())
    ad, bd = discretize(a, b, 0.02, "exact")
    k = lqr_gain(model, 2.0, 0.5, 0.02)
    closed = ad - bd @ k
    assert np.max(np.abs(np.linalg.eigvals(closed))) < 1.0


def test_commands_respect_input_bounds() -> None:
    model = systems.make("cartpole")
    ctrl = LqrController(model, [1, 1, 10, 1], 0.1, 0.02)
    assert ctrl([0.0, 0.0, 1.0, 0.0])[0] == pytest.approx(10.0)
    assert ctrl([0.0, 0.0, -1.0, 0.0])[0] == pytest.approx(-10.0)


def test_bad_weights_and_options_are_named() -> None:
    model = systems.make("cartpole")
    with pytest.raises(ConfigError, match="Q"):
        lqr_gain(model, [1.0, 2.0], 0.1, 0.02)
    with pytest.raises(ConfigError, match="R"):
        lqr_gain(model, 1.0, np.eye(2), 0.02)
    with pytest.raises(ConfigError, match="discretization"):
        lqr_gain(model, 1.0, 0.1, 0.02, "tustin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dt"):
        lqr_gain(model, 1.0, 0.1, 0.0)


@pytest.mark.parametrize("x0", [[0.3, 0.0, 1.2, 0.0, 0.2, 0.0], [-0.5, 0.3, 0.8, -0.2, -0.3, 0.5]])
def test_lqr_stabilizes_the_2d_quadrotor_at_hover(x0: list[float]) -> None:
    model = systems.make("quadrotor_2d")
    goal = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    ctrl = LqrController(model, [5, 0.1, 5, 0.1, 0.1, 0.1], 0.1, 0.02, x_goal=goal)
    x = _simulate(ctrl, x0, 500)
    np.testing.assert_allclose(x, goal, atol=1e-3)
