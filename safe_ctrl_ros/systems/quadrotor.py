"""Quadrotors (1D, 2D, 3D) as in safe-control-gym's symbolic models, with Crazyflie 2 parameters.

Positions (m) are the entries named after their world axis (x, y, z), angles (rad) phi, theta, psi:
quadrotor_1d z and none; quadrotor_2d x, z and theta; quadrotor_3d x, y, z and phi, theta, psi.

- quadrotor_1d: x = [z, z_dot], u = [T] (collective thrust, N):  z_dd = T/m - g.
- quadrotor_2d: x = [x, x_dot, z, z_dot, theta, theta_dot] (theta = pitch), u = [T1, T2]
  (T1 = motors 1+4, T2 = motors 2+3, N):
      x_dd = sin(theta) (T1 + T2) / m,   z_dd = cos(theta) (T1 + T2) / m - g,
      theta_dd = L (T2 - T1) / (sqrt(2) Iyy).
- quadrotor_3d: x = [x, x_dot, y, y_dot, z, z_dot, phi, theta, psi, p, q, r], u = [f1, f2, f3, f4]
  (per-motor thrust, N), R = Rz(psi) Ry(theta) Rx(phi) body->world:
      [x_dd, y_dd, z_dd] = R [0, 0, sum f] / m - [0, 0, g]
      M = [L/sqrt(2) (f1 + f2 - f3 - f4), L/sqrt(2) (-f1 + f2 + f3 - f4), gamma (-f1 + f2 - f3 + f4)],
      gamma = km / kf;  omega_dot = J^-1 (M - omega x J omega);  euler_dot = W(phi, theta) omega.

Input bounds follow safe-control-gym's PWM limits: per motor kf * rpm^2 with
rpm = 0.2685 pwm + 4070.3 and pwm in [20000, 65535], times the motors each input drives.
An external world-frame wrench acts at the centre of mass: its force on the translational
accelerations (in the modelled axes), its torque on the rotation (2D: ty; 3D: R^T tau).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import casadi as ca
import numpy as np

from safe_ctrl_ros.systems.base import FloatArray, ParamSpec, SymbolicModel, resolve_params

PWM2RPM_SCALE = 0.2685
PWM2RPM_CONST = 4070.3
PWM_MIN, PWM_MAX = 20000.0, 65535.0

PARAMS: dict[str, ParamSpec] = {
    "mass": ParamSpec(0.027, "vehicle mass m in kg (Crazyflie 2)"),
    "Ixx": ParamSpec(1.4e-5, "inertia about body x in kg m^2"),
    "Iyy": ParamSpec(1.4e-5, "inertia about body y in kg m^2"),
    "Izz": ParamSpec(2.17e-5, "inertia about body z in kg m^2"),
    "arm_length": ParamSpec(0.0397, "arm length L in m"),
    "kf": ParamSpec(3.16e-10, "thrust coefficient in N/rpm^2"),
    "km": ParamSpec(7.94e-12, "drag-torque coefficient in N m/rpm^2"),
    "gravity": ParamSpec(9.8, "gravitational acceleration in m/s^2"),
}


def motor_thrust_bounds(kf: float) -> tuple[float, float]:
    """Per-motor thrust range (N) from the PWM limits, as safe-control-gym computes it."""
    rpm_min = PWM2RPM_SCALE * PWM_MIN + PWM2RPM_CONST
    rpm_max = PWM2RPM_SCALE * PWM_MAX + PWM2RPM_CONST
    return kf * rpm_min**2, kf * rpm_max**2


def _dyn_1d(x: ca.SX, u: ca.SX, w: ca.SX, p: Mapping[str, float]) -> ca.SX:
    m, g = p["mass"], p["gravity"]
    return ca.vertcat(x[1], (u[0] + w[2]) / m - g)


def _dyn_2d(x: ca.SX, u: ca.SX, w: ca.SX, p: Mapping[str, float]) -> ca.SX:
    m, g, iyy, arm = p["mass"], p["gravity"], p["Iyy"], p["arm_length"]
    theta = x[4]
    thrust = u[0] + u[1]
    x_dd = (ca.sin(theta) * thrust + w[0]) / m
    z_dd = (ca.cos(theta) * thrust + w[2]) / m - g
    theta_dd = (arm * (u[1] - u[0]) / math.sqrt(2.0) + w[4]) / iyy
    return ca.vertcat(x[1], x_dd, x[3], z_dd, x[5], theta_dd)


def _rotation(phi: ca.SX, theta: ca.SX, psi: ca.SX) -> ca.SX:
    """Body-to-world rotation R = Rz(psi) Ry(theta) Rx(phi)."""
    cx, sx = ca.cos(phi), ca.sin(phi)
    cy, sy = ca.cos(theta), ca.sin(theta)
    cz, sz = ca.cos(psi), ca.sin(psi)
    rx = ca.vertcat(ca.horzcat(1, 0, 0), ca.horzcat(0, cx, -sx), ca.horzcat(0, sx, cx))
    ry = ca.vertcat(ca.horzcat(cy, 0, sy), ca.horzcat(0, 1, 0), ca.horzcat(-sy, 0, cy))
    rz = ca.vertcat(ca.horzcat(cz, -sz, 0), ca.horzcat(sz, cz, 0), ca.horzcat(0, 0, 1))
    return rz @ ry @ rx


def _dyn_3d(x: ca.SX, u: ca.SX, w: ca.SX, p: Mapping[str, float]) -> ca.SX:
    m, g, arm = p["mass"], p["gravity"], p["arm_length"]
    gamma = p["km"] / p["kf"]
    inertia = ca.diag(ca.vertcat(p["Ixx"], p["Iyy"], p["Izz"]))
    phi, theta, psi = x[6], x[7], x[8]
    omega = x[9:12]
    rot = _rotation(phi, theta, psi)
    thrust = ca.vertcat(0, 0, u[0] + u[1] + u[2] + u[3])
    acc = (rot @ thrust + w[0:3]) / m - ca.vertcat(0, 0, g)
    k = arm / math.sqrt(2.0)
    moments = ca.vertcat(
        k * (u[0] + u[1] - u[2] - u[3]),
        k * (-u[0] + u[1] + u[2] - u[3]),
        gamma * (-u[0] + u[1] - u[2] + u[3]),
    ) + rot.T @ w[3:6]
    omega_dot = ca.solve(inertia, moments - ca.cross(omega, inertia @ omega))
    sph, cph, tth, cth = ca.sin(phi), ca.cos(phi), ca.tan(theta), ca.cos(theta)
    euler_rates = ca.vertcat(
        ca.horzcat(1, sph * tth, cph * tth),
        ca.horzcat(0, cph, -sph),
        ca.horzcat(0, sph / cth, cph / cth),
    ) @ omega
    return ca.vertcat(x[1], acc[0], x[3], acc[1], x[5], acc[2], euler_rates, omega_dot)


_DEG85 = math.radians(85.0)
# safe-control-gym's quadrotor bounds: |x|, |y| <= 2 m, -0.05 <= z <= 2 m, |phi|, |theta| <= 85 deg,
# |psi| <= 180 deg; velocities and rates unbounded.
_BOUNDS: dict[str, tuple[float, float]] = {
    "x": (-2.0, 2.0), "y": (-2.0, 2.0), "z": (-0.05, 2.0),
    "phi": (-_DEG85, _DEG85), "theta": (-_DEG85, _DEG85), "psi": (-math.pi, math.pi),
}


def _hover(p: Mapping[str, float], nu: int) -> FloatArray:
    return np.full(nu, p["mass"] * p["gravity"] / nu)


# Which entries are positions (named after their world axis, with velocity `<axis>_dot`) and angles.
_POSITIONS = ("x", "y", "z")
_ANGLES = ("phi", "theta", "psi")


def _make(
    name: str, dyn: object, states: tuple[str, ...], inputs: tuple[str, ...], motors_per_input: int,
    wrench_axes: tuple[str, ...], substeps: int, overrides: Mapping[str, object],
) -> SymbolicModel:
    p = resolve_params(name, PARAMS, overrides)
    axes = tuple(a for a in _POSITIONS if a in states)
    lo, hi = motor_thrust_bounds(p["kf"])
    nu = len(inputs)
    return SymbolicModel(
        name=name,
        state_names=states,
        input_names=inputs,
        params=p,
        input_low=np.full(nu, motors_per_input * lo),
        input_high=np.full(nu, motors_per_input * hi),
        u_eq=_hover(p, nu),
        x_eq=np.zeros(len(states)),
        builder=dyn,  # type: ignore[arg-type]
        substeps=substeps,
        wrench_axes=wrench_axes,
        state_low=np.array([_BOUNDS.get(s, (-np.inf, np.inf))[0] for s in states]),
        state_high=np.array([_BOUNDS.get(s, (-np.inf, np.inf))[1] for s in states]),
        position_axes=axes,
        position_indices=tuple(states.index(a) for a in axes),
        velocity_indices=tuple(states.index(f"{a}_dot") for a in axes),
        angle_indices=tuple(states.index(a) for a in _ANGLES if a in states),
    )


def make_1d(substeps: int = 1, **overrides: object) -> SymbolicModel:
    return _make("quadrotor_1d", _dyn_1d, ("z", "z_dot"), ("thrust",), 4, ("fz",), substeps, overrides)


def make_2d(substeps: int = 1, **overrides: object) -> SymbolicModel:
    states = ("x", "x_dot", "z", "z_dot", "theta", "theta_dot")
    return _make("quadrotor_2d", _dyn_2d, states, ("thrust_1", "thrust_2"), 2, ("fx", "fz", "ty"), substeps, overrides)


def make_3d(substeps: int = 1, **overrides: object) -> SymbolicModel:
    states = ("x", "x_dot", "y", "y_dot", "z", "z_dot", "phi", "theta", "psi", "p", "q", "r")
    inputs = ("thrust_1", "thrust_2", "thrust_3", "thrust_4")
    axes = ("fx", "fy", "fz", "tx", "ty", "tz")
    return _make("quadrotor_3d", _dyn_3d, states, inputs, 1, axes, substeps, overrides)
