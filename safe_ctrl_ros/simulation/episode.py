"""One episode of a simulated plant, free of ROS: the initial-state draw, stepping and termination.

Shared by the plant node (through `simulation.loop`) and the Gymnasium-style environment
(`safe_ctrl_ros.env`), so that both draw initial states and end episodes by the same rules:

- an initial state is the nominal one plus a uniform draw of +-`spread` (safe-control-gym's
  `init_state_randomization`) from the episode's own seeded generator;
- an episode ends early (`terminated`, with the reason) on a non-finite state, or, with
  `stop_on_out_of_bounds`, when the state leaves the model's termination bounds;
- it ends on time (`truncated`) once `duration` sim seconds have run (0: never).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation.plant import PlantSim
from safe_ctrl_ros.systems.base import FloatArray, as_vector

# Steps whose total time is within this of the duration count as reaching it (k * dt rounds).
DURATION_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class StepResult:
    """What one step did to the episode."""

    out_of_bounds: list[str]  # state entries outside the termination bounds (non-finite ones too)
    finite: bool  # False: the state has a non-finite entry (the episode has ended)
    terminated: str  # why the episode ended early; "" when it did not
    truncated: bool  # the episode's duration was reached

    @property
    def ended(self) -> bool:
        return bool(self.terminated) or self.truncated


class Episode:
    """Episodes of `sim`: seeded initial-state draws, steps, and the termination rules."""

    def __init__(
        self,
        sim: PlantSim,
        spread: ArrayLike | None = None,
        *,
        duration: float = 0.0,
        stop_on_out_of_bounds: bool = True,
        seed: int | None = None,
    ) -> None:
        nx = sim.model.nx
        self.sim = sim
        self.spread: FloatArray = np.zeros(nx) if spread is None else as_vector(spread, nx, "init_randomization")
        if np.any(self.spread < 0):
            raise ConfigError(f"init_randomization: half-widths must be >= 0, got {self.spread.tolist()}")
        if not (np.isfinite(duration) and duration >= 0):
            raise ConfigError(f"duration: must be >= 0 sim seconds (0 runs forever), got {duration}")
        self.duration = float(duration)
        self.stop_on_out_of_bounds = stop_on_out_of_bounds
        self.nominal_x0 = sim.x0.copy()
        self.rng = np.random.default_rng(seed)
        self.start_k = sim.k
        self.terminated = ""  # the reason the current episode ended early ("" while it runs or ran to its end)

    def seed(self, seed: int) -> None:
        """Restart the initial-state generator: the next draws repeat those of any episode with this seed."""
        self.rng = np.random.default_rng(seed)

    def draw(self) -> FloatArray:
        """The next initial state: the nominal one plus a uniform draw of +-spread."""
        x0: FloatArray = self.nominal_x0 + self.rng.uniform(-self.spread, self.spread)
        return x0

    def reset(self, keep_time: bool = False) -> FloatArray:
        """Start a new episode at the next drawn initial state (with `keep_time`, sim time runs on)."""
        self.sim.reset(self.draw(), keep_time=keep_time)
        self.start_k = self.sim.k
        self.terminated = ""
        return self.sim.x

    @property
    def steps(self) -> int:
        """Steps run in this episode."""
        return self.sim.k - self.start_k

    def step(self, u: FloatArray | None) -> StepResult:
        """Advance one control period with `u` (None holds the last command) and apply the rules."""
        self.sim.advance(u)
        return self.check()

    def check(self) -> StepResult:
        """The termination rules applied to the current state (`terminated` is set when it ends early)."""
        x = self.sim.x
        out = self.sim.model.out_of_bounds(x)
        finite = self.sim.state_is_finite()
        if not finite:
            self.terminated = f"non-finite state {x.tolist()}"
        elif out and self.stop_on_out_of_bounds:
            self.terminated = f"state out of bounds in {out}: {x.tolist()}"
        truncated = (
            not self.terminated
            and self.duration > 0
            and self.steps * self.sim.dt >= self.duration - DURATION_TOLERANCE_S
        )
        return StepResult(out, finite, self.terminated, truncated)
