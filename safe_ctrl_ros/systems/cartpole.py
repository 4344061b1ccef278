"""Cart-pole as in safe-control-gym's symbolic model.

State [x, x_dot, theta, theta_dot] (theta = 0 upright, positive clockwise as in safe-control-gym),
input [F] (horizontal force on the cart, N). Equations (l = pole half-length, m_t = M + m):
    a      = (F + m l theta_dot^2 sin(theta)) / m_t
    th_dd  = (g sin(theta) - cos(theta) a) / (l (4/3 - m cos^2(theta) / m_t))
    x_dd   = a - m l th_dd cos(theta) / m_t
"""

from __future__ import annotations

from collections.abc import Mapping

import casadi as ca
import numpy as np

from safe_ctrl_ros.systems.base import ParamSpec, SymbolicModel, resolve_params

PARAMS: dict[str, ParamSpec] = {
    "cart_mass": ParamSpec(1.0, "cart mass M in kg"),
    "pole_mass": ParamSpec(0.1, "pole mass m in kg"),
    "pole_length": ParamSpec(0.5, "pole half-length l in m (safe-control-gym's convention)"),
    "gravity": ParamSpec(9.8, "gravitational acceleration in m/s^2"),
    "max_force": ParamSpec(10.0, "input bound |F| in N"),
}


def _dynamics(x: ca.SX, u: ca.SX, p: Mapping[str, float]) -> ca.SX:
    big_m, m, half, g = p["cart_mass"], p["pole_mass"], p["pole_length"], p["gravity"]
    theta, theta_dot = x[2], x[3]
    total = big_m + m
    a = (u[0] + m * half * theta_dot**2 * ca.sin(theta)) / total
    theta_dd = (g * ca.sin(theta) - ca.cos(theta) * a) / (half * (4.0 / 3.0 - m * ca.cos(theta) ** 2 / total))
    x_dd = a - m * half * theta_dd * ca.cos(theta) / total
    return ca.vertcat(x[1], x_dd, theta_dot, theta_dd)


def make(substeps: int = 1, **overrides: object) -> SymbolicModel:
    p = resolve_params("cartpole", PARAMS, overrides)
    return SymbolicModel(
        name="cartpole",
        state_names=("x", "x_dot", "theta", "theta_dot"),
        input_names=("force",),
        params=p,
        input_low=np.array([-p["max_force"]]),
        input_high=np.array([p["max_force"]]),
        u_eq=np.zeros(1),
        x_eq=np.zeros(4),
        builder=_dynamics,
        substeps=substeps,
    )
