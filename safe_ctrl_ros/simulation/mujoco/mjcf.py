"""The shipped MJCF models (models/*.xml), filled in from a symbolic model's parameters and the
effect settings, and the exact map between the symbolic state vector and MuJoCo's qpos/qvel.

State mapping (docs/SYSTEMS.md "MuJoCo plant"):

- cartpole [x, x_dot, theta, theta_dot] = [qpos[slider], qvel[slider], qpos[hinge], qvel[hinge]].
- quadrotor_2d [x, x_dot, z, z_dot, theta, theta_dot] = [qpos[0], qvel[0], qpos[1], qvel[1],
  qpos[2], qvel[2]] (slide x, slide z, hinge y).
- quadrotor_3d [x, x_dot, y, y_dot, z, z_dot, phi, theta, psi, p, q, r]: positions qpos[0:3],
  velocities qvel[0:3] (the free joint's linear velocity, world frame), (phi, theta, psi) the
  Z-Y-X Euler angles of the free joint's quaternion qpos[3:7] (R = Rz(psi) Ry(theta) Rx(phi)),
  (p, q, r) = qvel[3:6] (angular velocity in the body frame, as the symbolic model's omega).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from importlib import resources

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation.mujoco.settings import MujocoSettings
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel

SYSTEMS = ("cartpole", "quadrotor_2d", "quadrotor_3d")
BODY = {"cartpole": "pole", "quadrotor_2d": "quadrotor", "quadrotor_3d": "quadrotor"}  # where wrenches act


def model_path(system: str) -> str:
    """The shipped MJCF file of `system` (package data)."""
    check_system(system)
    return str(resources.files("safe_ctrl_ros.simulation.mujoco").joinpath("models", f"{system}.xml"))


def check_system(system: str) -> None:
    if system not in SYSTEMS:
        raise ConfigError(f"engine 'mujoco' has no model of '{system}'; MuJoCo models: {', '.join(SYSTEMS)} "
                          f"(use engine:=casadi for {system})")


def _fmt(*values: float) -> str:
    return " ".join(repr(float(v)) for v in values)


def _find(root: ET.Element, tag: str, name: str) -> ET.Element:
    el = root.find(f".//{tag}[@name='{name}']")
    if el is None:
        raise ConfigError(f"MJCF: no <{tag} name='{name}'> in the shipped model")
    return el


def _inertial(root: ET.Element, body: str) -> ET.Element:
    el = _find(root, "body", body).find("inertial")
    if el is None:
        raise ConfigError(f"MJCF: body '{body}' has no <inertial>")
    return el


def mjcf_text(model: SymbolicModel, settings: MujocoSettings) -> str:
    """The MJCF of `model.name` with the model's parameters and the effects of `settings` written in."""
    check_system(model.name)
    root = ET.parse(model_path(model.name)).getroot()
    p = model.params
    opt = root.find("option")
    if opt is None:
        raise ConfigError("MJCF: no <option>")
    opt.set("timestep", repr(settings.timestep))
    opt.set("gravity", _fmt(0.0, 0.0, -p["gravity"]))
    opt.set("integrator", {"rk4": "RK4", "euler": "Euler", "implicit": "implicit",
                           "implicitfast": "implicitfast"}[settings.integrator])
    if model.name == "cartpole":
        half, m = p["pole_length"], p["pole_mass"]
        _inertial(root, "cart").set("mass", repr(p["cart_mass"]))
        pole = _inertial(root, "pole")
        pole.set("mass", repr(m))
        pole.set("pos", _fmt(0.0, 0.0, half))
        i_cm = m * half**2 / 3.0  # uniform rod of length 2 l about its centre
        pole.set("diaginertia", _fmt(i_cm, i_cm, 1e-6 * i_cm))
        _find(root, "geom", "pole").set("fromto", _fmt(0, 0, 0, 0, 0, 2.0 * half))
        slider, hinge = _find(root, "joint", "slider"), _find(root, "joint", "hinge")
        slider.set("damping", repr(settings.cart_damping))
        slider.set("frictionloss", repr(settings.cart_friction))
        hinge.set("damping", repr(settings.pole_damping))
        hinge.set("frictionloss", repr(settings.pole_friction))
        return ET.tostring(root, encoding="unicode")
    body = _inertial(root, "quadrotor")
    body.set("mass", repr(p["mass"]))
    body.set("diaginertia", _fmt(p["Ixx"], p["Iyy"], p["Izz"]))
    k = p["arm_length"] / math.sqrt(2.0)
    gamma = p["km"] / p["kf"]
    signs = {"rotor_1": (1, 1), "rotor_2": (-1, 1), "rotor_3": (-1, -1), "rotor_4": (1, -1)}
    for name, (sx, sy) in signs.items():
        for el in (root.find(f".//site[@name='{name}']"), root.find(f".//geom[@name='{name}_disc']")):
            if el is not None:  # the thrust site and its (visual) rotor disc
                el.set("pos", _fmt(sx * k, sy * k if model.name == "quadrotor_3d" else 0.0, 0.0))
    _find(root, "geom", "frame").set("size", _fmt(k, k, 0.006))
    for i, act in enumerate(root.iter("general")):
        if model.name == "quadrotor_3d":
            act.set("gear", _fmt(0, 0, 1, 0, 0, (-1.0 if i % 2 == 0 else 1.0) * gamma))
        if settings.thrust_lag > 0:
            act.set("dyntype", "filterexact")
            act.set("dynprm", repr(settings.thrust_lag))
    contact = "1" if settings.ground_contact else "0"
    for geom in ("floor", "frame"):
        _find(root, "geom", geom).set("contype", contact)
        _find(root, "geom", geom).set("conaffinity", contact)
    return ET.tostring(root, encoding="unicode")


# --- the state mapping ----------------------------------------------------------------------------
def euler_to_quat(phi: float, theta: float, psi: float) -> FloatArray:
    """Quaternion [w, x, y, z] of R = Rz(psi) Ry(theta) Rx(phi)."""
    cr, sr = math.cos(phi / 2), math.sin(phi / 2)
    cp, sp = math.cos(theta / 2), math.sin(theta / 2)
    cy, sy = math.cos(psi / 2), math.sin(psi / 2)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def quat_to_euler(q: FloatArray) -> tuple[float, float, float]:
    """(phi, theta, psi) of the quaternion [w, x, y, z] (normalised first), R = Rz Ry Rx."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / float(np.linalg.norm(q))
    phi = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    theta = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    psi = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return phi, theta, psi


def to_mujoco(system: str, x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(qpos, qvel) of the symbolic state x."""
    if system == "quadrotor_3d":
        qpos = np.concatenate([x[[0, 2, 4]], euler_to_quat(x[6], x[7], x[8])])
        qvel = np.concatenate([x[[1, 3, 5]], x[9:12]])
        return qpos, qvel
    return x[0::2].copy(), x[1::2].copy()  # cartpole, quadrotor_2d: [q0, v0, q1, v1, ...]


def from_mujoco(system: str, qpos: FloatArray, qvel: FloatArray) -> FloatArray:
    """The symbolic state of MuJoCo's (qpos, qvel)."""
    if system == "quadrotor_3d":
        phi, theta, psi = quat_to_euler(qpos[3:7])
        return np.array([qpos[0], qvel[0], qpos[1], qvel[1], qpos[2], qvel[2], phi, theta, psi,
                         qvel[3], qvel[4], qvel[5]])
    x = np.empty(2 * qpos.size)
    x[0::2], x[1::2] = qpos, qvel
    return x
