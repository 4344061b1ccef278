"""A simulated plant: integrates a model one control period at a time and keeps episode stats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel, as_vector

NS_PER_S = 1_000_000_000


@dataclass
class EpisodeStats:
    steps: int = 0
    missed_deadlines: int = 0
    clipped_commands: int = 0
    rejected_commands: int = 0
    resends: int = 0


class PlantSim:
    """Zero-order-hold simulation of `model` at control period `dt` with RK4 substeps.

    Time is kept in integer nanoseconds (k * dt_ns) so that stamps compare exactly.
    """

    engine = "casadi"  # the plant node's `engine` (simulation/mujoco/plant.py: "mujoco")

    def __init__(self, model: SymbolicModel, dt: float, substeps: int, x0: ArrayLike | None = None) -> None:
        if not (np.isfinite(dt) and dt > 0):
            raise ConfigError(f"dt must be a positive number of seconds, got {dt}")
        self.model = model
        self.dt = float(dt)
        self.dt_ns = round(dt * NS_PER_S)
        self.substeps = substeps
        self.set_model(model)
        x_eq = model.equilibrium()[0]
        self.x0 = x_eq if x0 is None else as_vector(x0, model.nx, f"{model.name} initial_state")
        self.wrench: FloatArray = np.zeros(WRENCH_SIZE)
        self.k: int = 0
        self.reset()

    def set_model(self, model: SymbolicModel) -> None:
        """Swap the dynamics (e.g. changed inertial parameters); the state carries over."""
        if (model.nx, model.nu) != (self.model.nx, self.model.nu):
            raise ConfigError("a replacement model must have the same state and input sizes")
        self.model = model
        self._step = model.rk4_function(self.dt, self.substeps)
        self.u_low, self.u_high = model.input_bounds

    def reset(self, x0: ArrayLike | None = None, keep_time: bool = False) -> None:
        """Start a new episode at x0 (default: the initial state). With `keep_time` the clock runs
        on by one period (a plant node's /clock never jumps back, and the reset state gets a stamp
        of its own that no command for the old episode can answer); otherwise time restarts at 0."""
        if x0 is not None:
            self.x0 = as_vector(x0, self.model.nx, f"{self.model.name} initial_state")
        self.x: FloatArray = self.x0.copy()
        self.k = self.k + 1 if keep_time else 0
        self.u_last: FloatArray = self.model.equilibrium()[1]
        self.stats = EpisodeStats()

    @property
    def t_ns(self) -> int:
        return self.k * self.dt_ns

    @property
    def t(self) -> float:
        return self.k * self.dt

    def check_command(self, u: ArrayLike) -> FloatArray | None:
        """The command clipped to the input bounds, or None (counted) if it is unusable."""
        uv = np.asarray(u, dtype=np.float64).reshape(-1)
        if uv.size != self.model.nu or not np.all(np.isfinite(uv)):
            self.stats.rejected_commands += 1
            return None
        clipped = np.clip(uv, self.u_low, self.u_high)
        if not np.array_equal(clipped, uv):
            self.stats.clipped_commands += 1
        return clipped

    def advance(self, u: FloatArray | None) -> FloatArray:
        """Integrate one control period with `u` (None holds the last command)."""
        if u is not None:
            self.u_last = u
        self.x = np.asarray(self._step(self.x, self.u_last, self.wrench), dtype=np.float64).reshape(-1)
        self.k += 1
        self.stats.steps += 1
        return self.x

    def describe(self) -> dict[str, object]:
        """The engine and how it integrates (the episode summary's `engine` and `physics`)."""
        return {"engine": self.engine, "physics": {"integrator": "rk4", "substeps": self.substeps,
                                                   "step_s": self.dt / self.substeps}}

    def model_state_items(self, x: FloatArray) -> list[tuple[str, float]]:
        return list(zip(self.model.state_names, (float(v) for v in x), strict=True))

    def state_is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.x)))
