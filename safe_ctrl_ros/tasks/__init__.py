"""Tasks: stabilization to a goal and tracking of circle / figure-8 / square references.

`Task.reference(t)` gives the state and input references of a system at times t, so controllers
(over any horizon), the plant (for logging) and analysis sample the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, as_vector
from safe_ctrl_ros.tasks.references import KINDS, Trajectory

# Which state entries hold the position and velocity of each axis [x, y, z] (None: not modelled).
_POSITION_SLOTS: dict[str, tuple[tuple[int, int] | None, ...]] = {
    "cartpole": ((0, 1), None, None),
    "quadrotor_1d": (None, None, (0, 1)),
    "quadrotor_2d": ((0, 1), None, (2, 3)),
    "quadrotor_3d": ((0, 1), (2, 3), (4, 5)),
}


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
            for axis, slots in enumerate(_POSITION_SLOTS[self.model.name]):
                if slots is not None:
                    x_ref[:, slots[0]] = pos[:, axis]
                    x_ref[:, slots[1]] = vel[:, axis]
        return x_ref, u_ref


def make_task(model: SymbolicModel, spec: Mapping[str, object] | None = None) -> Task:
    """Build a task from a config mapping.

    stabilization: {kind: stabilization, goal: [nx numbers]} (goal defaults to the equilibrium);
    tracking: {kind: circle|figure8|square, scale, length, num_cycles, plane, offset}.
    """
    spec = dict(spec or {})
    kind = str(spec.pop("kind", "stabilization"))
    goal_value = spec.pop("goal", None)
    goal = model.equilibrium()[0] if not goal_value else as_vector(goal_value, model.nx, "task goal")  # type: ignore[arg-type]
    if kind == "stabilization":
        if spec:
            raise ConfigError(f"stabilization task: unknown option(s) {sorted(spec)}")
        return Task(model, goal)
    if kind not in KINDS:
        raise ConfigError(f"task kind '{kind}' is not one of {('stabilization', *KINDS)}")
    known = {"scale", "length", "num_cycles", "plane", "offset"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{kind} task: unknown option(s) {unknown}; known: {sorted(known)}")
    plane = str(spec.get("plane", "xz"))
    for axis in plane:
        if _POSITION_SLOTS[model.name][{"x": 0, "y": 1, "z": 2}.get(axis, 0)] is None:
            raise ConfigError(f"{model.name} has no '{axis}' axis for a trajectory in plane '{plane}'")
    offset = spec.get("offset", (0.0, 0.0))
    traj = Trajectory(
        kind=kind,
        scale=float(spec.get("scale", 1.0)),  # type: ignore[arg-type]
        length=float(spec.get("length", 10.0)),  # type: ignore[arg-type]
        num_cycles=int(spec.get("num_cycles", 1)),  # type: ignore[call-overload]
        plane=plane,
        offset=(float(offset[0]), float(offset[1])),  # type: ignore[index]
    )
    return Task(model, goal, traj)


__all__ = ["KINDS", "Task", "Trajectory", "make_task"]
