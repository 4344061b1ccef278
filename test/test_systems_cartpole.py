"""The cart-pole model: fixed point, linearization, integration accuracy, energy, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError, UnknownSystemError


@pytest.fixture
def model() -> systems.SymbolicModel:
    return systems.make("cartpole")


def test_defaults_follow_safe_control_gym(model: systems.SymbolicModel) -> None:
    assert model.state_names == ("x", "x_dot", "theta", "theta_dot")
    assert model.input_names == ("force",)
    assert model.params["cart_mass"] == 1.0
    assert model.params["pole_mass"] == 0.1
    assert model.params["pole_length"] == 0.5
    assert model.params["gravity"] == 9.8


def test_equilibrium_is_a_fixed_point(model: systems.SymbolicModel) -> None:
    x_eq, u_eq = model.equilibrium()
    np.testing.assert_allclose(model.f(x_eq, u_eq), 0.0, atol=1e-12)
    np.testing.assert_allclose(model.step(x_eq, u_eq, 0.02, 10), x_eq, atol=1e-12)


def test_upright_is_unstable_and_force_accelerates_the_cart(model: systems.SymbolicModel) -> None:
    xdot = model.f([0.0, 0.0, 0.05, 0.0], [0.0])
    assert xdot[3] > 0  # a tilted pole falls further
    assert model.f([0.0, 0.0, 0.0, 0.0], [1.0])[1] > 0


@pytest.mark.parametrize("x", [[0.1, -0.2, 0.3, 0.4], [0.0, 1.0, -1.2, 2.0]])
def test_linearization_matches_finite_differences(model: systems.SymbolicModel, x: list[float]) -> None:
    u = np.array([1.5])
    a, b = model.linearize(x, u)
    eps = 1e-6
    xv = np.asarray(x)
    a_fd = np.column_stack(
        [(model.f(xv + eps * e, u) - model.f(xv - eps * e, u)) / (2 * eps) for e in np.eye(4)]
    )
    b_fd = ((model.f(xv, u + eps) - model.f(xv, u - eps)) / (2 * eps)).reshape(4, 1)
    np.testing.assert_allclose(a, a_fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, b_fd, rtol=1e-6, atol=1e-7)


def test_rk4_converges_at_fourth_order(model: systems.SymbolicModel) -> None:
    x0, u = np.array([0.0, 0.0, 0.8, 0.0]), np.array([2.0])
    reference = model.step(x0, u, 0.5, 2000)
    errors = [np.linalg.norm(model.step(x0, u, 0.5, n) - reference) for n in (4, 8, 16)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(12.0 < r < 20.0 for r in ratios), ratios  # 2^4 = 16 for a fourth-order method


def _energy(model: systems.SymbolicModel, x: np.ndarray) -> float:
    """Energy of the frictionless cart-pole (uniform pole of half-length l, inertia m l^2 / 3)."""
    big_m, m, half, g = (model.params[k] for k in ("cart_mass", "pole_mass", "pole_length", "gravity"))
    _, v, th, w = x
    vx_pole = v + half * w * np.cos(th)
    vy_pole = -half * w * np.sin(th)
    kinetic = 0.5 * big_m * v**2 + 0.5 * m * (vx_pole**2 + vy_pole**2) + 0.5 * (m * half**2 / 3) * w**2
    return float(kinetic + m * g * half * np.cos(th))


def test_zero_input_conserves_energy(model: systems.SymbolicModel) -> None:
    x = np.array([0.0, 0.3, 0.5, -1.0])
    e0 = _energy(model, x)
    for _ in range(500):  # 10 s through large swings
        x = model.step(x, [0.0], 0.02, 10)
    assert abs(_energy(model, x) - e0) < 1e-6 * max(1.0, abs(e0))
    assert abs(x[2]) > 0.5  # it really swung away from upright


def test_parameter_overrides_change_the_dynamics() -> None:
    light, heavy = systems.make("cartpole"), systems.make("cartpole", pole_mass=0.5)
    x, u = [0.0, 0.0, 0.2, 0.0], [0.0]
    assert not np.allclose(light.f(x, u), heavy.f(x, u))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cart_mass": -1.0}, "cart_mass"),
        ({"pole_length": 0.0}, "pole_length"),
        ({"pole_mass": float("nan")}, "finite"),
        ({"pole_mas": 0.2}, "unknown parameter"),
        ({"gravity": "9.8"}, "expected a number"),
    ],
)
def test_bad_parameters_are_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        systems.make("cartpole", **overrides)


def test_unknown_system_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSystemError, match=r"unknown system 'cartpol'.*cartpole"):
        systems.make("cartpol")


def test_wrong_vector_sizes_and_nan_are_rejected(model: systems.SymbolicModel) -> None:
    with pytest.raises(ConfigError, match="size 4"):
        model.f([0.0, 0.0, 0.0], [0.0])
    with pytest.raises(ConfigError, match="input"):
        model.step([0.0] * 4, [0.0, 1.0], 0.02)
    with pytest.raises(ConfigError, match="non-finite"):
        model.f([0.0, np.nan, 0.0, 0.0], [0.0])
    with pytest.raises(ConfigError, match="dt"):
        model.step([0.0] * 4, [0.0], -0.1)
