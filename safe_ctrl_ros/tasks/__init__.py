"""Tasks: stabilization to a goal and tracking of circle / figure-8 / square references.

`Task.reference(t)` gives the state and input references of a system at times t, so controllers
(over any horizon), the plant (for logging) and analysis sample the same thing. A trajectory sets
the positions and velocities the model declares (`position_axes`, `position_indices`,
`velocity_indices`); every other entry keeps the goal (the cart-pole's pole stays upright).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros import config_check as check
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel
from safe_ctrl_ros.tasks.references import AXES, KINDS, MIN_PERIOD, Trajectory


@dataclass
class Task:
    """A stabilization goal (`trajectory is None`) or a tracking reference for `model`."""

    model: SymbolicModel
    goal: FloatArray
    trajectory: Trajectory | None = None

    @property
    def kind(self) -> str:
        return "stabilization" if self.trajectory is None else "tracking"

    def reference(self, t: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """State references (len(t), nx) and input references (len(t), nu) at times t."""
        tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x_ref = np.tile(self.goal, (tt.size, 1))
        u_ref = np.tile(self.model.equilibrium()[1], (tt.size, 1))
        if self.trajectory is not None:
            pos, vel = self.trajectory.sample(tt)
            # The model says which state entries hold each axis' position and velocity.
            for axis, ip, iv in zip(self.model.position_axes, self.model.position_indices,
                                    self.model.velocity_indices, strict=True):
                x_ref[:, ip] = pos[:, AXES[axis]]
                x_ref[:, iv] = vel[:, AXES[axis]]
        return x_ref, u_ref


def make_task(model: SymbolicModel, spec: Mapping[str, object] | None = None, where: str = "task") -> Task:
    """Build a task from a config mapping; errors name the key (`task.offset`) and what it expects.

    stabilization: {kind: stabilization, goal: [nx numbers]} (goal defaults to the equilibrium);
    tracking: {kind: circle|figure8|square, scale, length, num_cycles, plane, offset}.
    """
    spec = check.mapping({} if spec is None else spec, where)
    kind = check.choice(spec.pop("kind", "stabilization"), ("stabilization", *KINDS), f"{where}.kind")
    goal_value = spec.pop("goal", None)
    goal = model.equilibrium()[0]
    if goal_value is not None and not (isinstance(goal_value, list | tuple) and len(goal_value) == 0):
        goal = check.array(goal_value, f"{where}.goal", 1)
        if goal.size != model.nx:
            raise ConfigError(f"{where}.goal: expected {model.nx} numbers (or an empty list), got {goal.size}")
    if kind == "stabilization":
        check.no_unknown_keys(spec, (), f"{where} (kind stabilization)")
        return Task(model, goal)
    check.no_unknown_keys(spec, ("scale", "length", "num_cycles", "plane", "offset"), f"{where} (kind {kind})")
    plane = check.text(spec.get("plane", "xz"), f"{where}.plane")
    if len(plane) != 2 or plane[0] == plane[1] or any(c not in AXES for c in plane):
        raise ConfigError(f"{where}.plane: expected two different letters of 'xyz', got {check.shown(plane)}")
    for axis in plane:
        if model.position_slot(axis) is None:
            raise ConfigError(f"{where}.plane: {model.name} has no '{axis}' axis for a trajectory in plane '{plane}'")
    offset = check.array(spec.get("offset", [0.0, 0.0]), f"{where}.offset", 1)
    if offset.size != 2:
        raise ConfigError(f"{where}.offset: expected 2 numbers (in the plane), got {offset.size}")
    length = check.number(spec.get("length", 10.0), f"{where}.length", 0.0, low_open=True)
    cycles = check.integer(spec.get("num_cycles", 1), f"{where}.num_cycles", 1)
    if not length / cycles >= MIN_PERIOD:
        raise ConfigError(f"{where}.length: expected length / num_cycles (one period) >= {MIN_PERIOD} s, "
                          f"got {length:g} / {cycles}")
    traj = Trajectory(
        kind=kind,
        scale=check.number(spec.get("scale", 1.0), f"{where}.scale"),
        length=length,
        num_cycles=cycles,
        plane=plane,
        offset=(float(offset[0]), float(offset[1])),
    )
    return Task(model, goal, traj)


__all__ = ["KINDS", "Task", "Trajectory", "make_task"]
