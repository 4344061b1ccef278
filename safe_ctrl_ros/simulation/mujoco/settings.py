"""The MuJoCo plant's physics step and the effects the symbolic models lack, each with an off-switch.

Every effect is a number whose 0 (or `false`) switches it off; `MujocoSettings.nominal()` is the
plant with every effect off, which matches the symbolic model (test/test_mujoco_parity.py). Which
system an effect acts on:

- `thrust_lag` (s), quadrotors: each thrust actuator is a first-order filter
  (`dyntype="filterexact"`, time constant `thrust_lag`): the commanded thrust reaches the rotor
  with that lag.
- `drag_linear` (N s/m), `drag_quadratic` (N s^2/m^2), quadrotors: a world-frame force at the
  centre of mass, -(c1 + c2 |v|) v, recomputed every physics step from the body's velocity.
- `cart_damping` (N s/m), `cart_friction` (N), cartpole: the slider's viscous damping and Coulomb
  friction (MuJoCo's joint `damping` and `frictionloss`).
- `pole_damping` (N m s/rad), `pole_friction` (N m), cartpole: the same on the hinge.
- `ground_contact` (bool), quadrotors: the floor plane at z = 0 collides with the vehicle's frame
  (a box of half-height 6 mm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from safe_ctrl_ros.errors import ConfigError

INTEGRATORS = ("rk4", "euler", "implicit", "implicitfast")


@dataclass(frozen=True)
class MujocoSettings:
    """The physics step and the extra effects (defaults: the effects on, at the values below)."""

    timestep: float = 0.001  # s of physics per mj_step; the control period must be a whole multiple
    integrator: str = "rk4"
    thrust_lag: float = 0.015  # s, first-order time constant of every rotor's thrust
    drag_linear: float = 0.01  # N s/m
    drag_quadratic: float = 0.005  # N s^2/m^2
    cart_damping: float = 0.1  # N s/m
    cart_friction: float = 0.05  # N
    pole_damping: float = 0.0005  # N m s/rad
    pole_friction: float = 0.0005  # N m
    ground_contact: bool = True

    EFFECTS: ClassVar[tuple[str, ...]] = (
        "thrust_lag", "drag_linear", "drag_quadratic", "cart_damping", "cart_friction",
        "pole_damping", "pole_friction", "ground_contact",
    )
    # The systems each effect acts on (elsewhere it is ignored).
    APPLIES_TO: ClassVar[dict[str, tuple[str, ...]]] = {
        "thrust_lag": ("quadrotor_2d", "quadrotor_3d"),
        "drag_linear": ("quadrotor_2d", "quadrotor_3d"),
        "drag_quadratic": ("quadrotor_2d", "quadrotor_3d"),
        "cart_damping": ("cartpole",),
        "cart_friction": ("cartpole",),
        "pole_damping": ("cartpole",),
        "pole_friction": ("cartpole",),
        "ground_contact": ("quadrotor_2d", "quadrotor_3d"),
    }

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timestep) and self.timestep > 0):
            raise ConfigError(f"parameter 'mujoco.timestep': must be a positive number of seconds, got {self.timestep}")
        if self.integrator not in INTEGRATORS:
            raise ConfigError(f"parameter 'mujoco.integrator': expected one of {INTEGRATORS}, got '{self.integrator}'")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("timestep", "integrator", "ground_contact"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"parameter 'mujoco.{f.name}': must be a finite number >= 0 (0: off), got {value!r}")

    @classmethod
    def nominal(cls, timestep: float = 0.001, integrator: str = "rk4") -> MujocoSettings:
        """Every effect off: the plant the symbolic model describes."""
        return cls(timestep=timestep, integrator=integrator, thrust_lag=0.0, drag_linear=0.0, drag_quadratic=0.0,
                   cart_damping=0.0, cart_friction=0.0, pole_damping=0.0, pole_friction=0.0, ground_contact=False)

    def only(self, *effects: str) -> MujocoSettings:
        """These settings with every effect but `effects` off."""
        unknown = sorted(set(effects) - set(self.EFFECTS))
        if unknown:
            raise ConfigError(f"unknown MuJoCo effect(s) {unknown}; known: {list(self.EFFECTS)}")
        off = self.nominal(self.timestep, self.integrator)
        return replace(off, **{e: getattr(self, e) for e in effects})

    def active(self, system: str) -> dict[str, float | bool]:
        """The effects that are on and act on `system` (the summary's `mujoco_effects`)."""
        return {e: getattr(self, e) for e in self.EFFECTS if getattr(self, e) and system in self.APPLIES_TO[e]}

    def physics_steps(self, dt: float) -> int:
        """mj_steps per control period `dt`; ConfigError unless dt is a whole multiple of the timestep."""
        n = round(dt / self.timestep)
        if n < 1 or abs(n * self.timestep - dt) > 1e-9 * max(dt, 1.0):
            raise ConfigError(f"parameter 'mujoco.timestep': the control period dt = {dt} s must be a whole "
                              f"multiple of the physics step {self.timestep} s")
        return n
