"""Cart-pole as in safe-control-gym's symbolic model.

State [x, x_dot, theta, theta_dot] (theta = 0 upright), input [F] (horizontal force on the cart, N).
Positions: x (m, the cart along world x); angles: theta (rad).
With l the pole's half-length and m_t = M + m, safe-control-gym's equations are
    a      = (F + m l theta_dot^2 sin(theta)) / m_t
    th_dd  = (g sin(theta) - cos(theta) a) / (l (4/3 - m cos^2(theta) / m_t))
    x_dd   = a - m l th_dd cos(theta) / m_t
An external world-frame force (fx, fz) at the pole's centre of mass (safe-control-gym's dynamics
disturbance) enters as generalized forces: fx on the cart coordinate, l (fx cos(theta) - fz sin(theta))
on theta. With it
    a      = (F + fx + m l theta_dot^2 sin(theta)) / m_t
    th_dd  = (g sin(theta) - cos(theta) a + (fx cos(theta) - fz sin(theta)) / m) / (l (4/3 - m cos^2 / m_t))
Torques of the wrench are not modelled for the cart-pole (the plant reports them as ignored).
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


def _dynamics(x: ca.SX, u: ca.SX, w: ca.SX, p: Mapping[str, float]) -> ca.SX:
    big_m, m, half, g = p["cart_mass"], p["pole_mass"], p["pole_length"], p["gravity"]
    theta, theta_dot = x[2], x[3]
    fx, fz = w[0], w[2]
    total = big_m + m
    s, c = ca.sin(theta), ca.cos(theta)
    a = (u[0] + fx + m * half * theta_dot**2 * s) / total
    theta_dd = (g * s - c * a + (fx * c - fz * s) / m) / (half * (4.0 / 3.0 - m * c**2 / total))
    x_dd = a - m * half * theta_dd * c / total
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
        wrench_axes=("fx", "fz"),
        # safe-control-gym's cart-pole terminates at |x| > 2.4 m and |theta| > 90 degrees.
        state_low=np.array([-2.4, -np.inf, -np.pi / 2, -np.inf]),
        state_high=np.array([2.4, np.inf, np.pi / 2, np.inf]),
        # The cart moves along world x; the pole's angle is an angle, not a position: a tracking task
        # moves the cart (theta's reference stays upright), and its error is reported apart, in rad.
        position_axes=("x",),
        position_indices=(0,),
        velocity_indices=(1,),
        angle_indices=(2,),
    )
