"""A Gymnasium-style environment over the same core as the plant node (no ROS, no gymnasium needed).

    env = SafeControlEnv("quadrotor_2d", task={"kind": "figure8", "scale": 0.75, "length": 6.0,
                                                "plane": "xz", "offset": [0.0, 1.0]})
    obs, info = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step(u)

The reward is minus the quadratic tracking cost (safe-control-gym's quadratic cost);
`terminated` means out of the termination bounds, a non-finite state or (with
`done_on_violation`) a constraint violation; `truncated` means the episode length was reached
(whole control periods, rounded up). Initial-state draws and these termination rules are the
plant node's own (`simulation.Episode`). `info` holds the constraint values and violation, the
tracking error and the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.simulation import Episode, PlantSim
from safe_ctrl_ros.systems.base import FloatArray, as_vector
from safe_ctrl_ros.tasks import make_task


class SafeControlEnv:
    def __init__(
        self,
        system: str,
        *,
        task: Mapping[str, Any] | None = None,
        dt: float = 0.02,
        substeps: int = 10,
        episode_length: float = 10.0,
        initial_state: ArrayLike | None = None,
        init_randomization: ArrayLike | None = None,
        constraints: Sequence[Mapping[str, Any]] | None = None,
        done_on_violation: bool = False,
        reward_Q: ArrayLike | None = None,
        reward_R: ArrayLike | None = None,
        model_params: Mapping[str, object] | None = None,
    ) -> None:
        self.model = systems.make(system, **dict(model_params or {}))
        nx, nu = self.model.nx, self.model.nu
        self.sim = PlantSim(self.model, dt, substeps, initial_state)
        self.task = make_task(self.model, task)
        self.constraints = make_constraints(constraints, nx, nu)
        if not (np.isfinite(episode_length) and episode_length > 0):
            raise ConfigError(f"episode_length must be positive, got {episode_length}")
        self.episode = Episode(self.sim, init_randomization, duration=episode_length)
        self.done_on_violation = done_on_violation
        self.Q = np.diag(np.ones(nx) if reward_Q is None else as_vector(reward_Q, nx, "reward_Q"))
        self.R = np.diag(np.full(nu, 0.1) if reward_R is None else as_vector(reward_R, nu, "reward_R"))

    @property
    def observation_size(self) -> int:
        return self.model.nx

    @property
    def action_bounds(self) -> tuple[FloatArray, FloatArray]:
        return self.model.input_bounds

    def reset(self, seed: int | None = None) -> tuple[FloatArray, dict[str, Any]]:
        """Start an episode at the nominal initial state plus a uniform draw of +-init_randomization."""
        if seed is not None:
            self.episode.seed(seed)
        x0 = self.episode.reset()
        x_ref, _ = self.task.reference(0.0)
        evaluation = self.constraints.state_only().evaluate(x0, self.model.equilibrium()[1])
        info = {"t": 0.0, "x_ref": x_ref[0], "constraint_values": evaluation.values}
        return self.sim.x.copy(), info

    def step(self, u: ArrayLike) -> tuple[FloatArray, float, bool, bool, dict[str, Any]]:
        uv = self.sim.check_command(u)
        if uv is None:
            raise ConfigError(f"action must be {self.model.nu} finite numbers, got {np.asarray(u).tolist()}")
        x_ref, u_ref = self.task.reference(self.sim.t)
        evaluation = self.constraints.evaluate(self.sim.x, uv)
        x_before = self.sim.x.copy()
        error = x_before - x_ref[0]
        du = uv - u_ref[0]
        cost = float(error @ self.Q @ error + du @ self.R @ du)
        result = self.episode.step(uv)
        terminated = bool(result.terminated) or (self.done_on_violation and evaluation.any_violated)
        truncated = not terminated and result.truncated
        info = {
            "t": self.sim.t,
            "x_ref": x_ref[0],
            # metres: the distance of the position entries from the reference's (angles apart, radians)
            "tracking_error": float(systems.position_error(self.model, x_before, x_ref[0])),
            "angle_error": float(systems.angle_error(self.model, x_before, x_ref[0])),
            "constraint_values": evaluation.values,
            "constraint_violation": evaluation.any_violated,
            "out_of_bounds": result.out_of_bounds,
            "applied_action": uv,
        }
        return self.sim.x.copy(), -cost, terminated, truncated, info
