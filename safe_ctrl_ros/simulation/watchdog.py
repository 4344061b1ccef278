"""The plant's command watchdog, free of ROS (docs/HIL.md, "Watchdogs").

No fresh command for `timeout` wall seconds (or, in lockstep, a state left unanswered for that
long): the safe command applies, each step on it is counted, and the watchdog reports when it
engages and when commands return (a `WatchdogEvent`, which the plant logs and publishes on
`/diagnostics`). Times are wall-clock seconds from a monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, as_vector


def safe_command(model: SymbolicModel, given: ArrayLike | None = None) -> FloatArray:
    """The command applied on a timeout: `given`, or the model's equilibrium input (cart-pole: no
    force; quadrotors: hover thrust). It must lie within the input bounds."""
    u = model.equilibrium()[1] if given is None or np.size(given) == 0 else as_vector(given, model.nu, "safe_command")
    low, high = model.input_bounds
    if not (np.all(np.isfinite(u)) and np.all(u >= low) and np.all(u <= high)):
        raise ConfigError(
            f"parameter 'safe_command': {u.tolist()} is outside the input bounds [{low.tolist()}, {high.tolist()}]"
        )
    return u


@dataclass(frozen=True)
class WatchdogEvent:
    """The watchdog engaged (`engaged`, after `silent_s` without a fresh command) or released
    (after `safe_steps` steps on the safe command)."""

    engaged: bool
    silent_s: float
    safe_steps: int


class Watchdog:
    def __init__(self, timeout: float, safe_u: FloatArray) -> None:
        if not (np.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"parameter 'command_timeout': must be > 0 wall seconds, got {timeout}")
        self.timeout = float(timeout)
        self.safe_u = safe_u
        self.fresh_at = 0.0  # when the newest fresh command came (or the loop started)
        self.active = False
        self.safe_steps = 0  # steps run on the safe command, over the plant's life
        self.engagements = 0
        self.releases = 0
        self._safe_from = 0

    def fresh(self, now: float) -> None:
        """A fresh command arrived (or the loop started) at `now`."""
        self.fresh_at = now

    def apply(
        self, now: float, u: FloatArray | None, timed_out: bool | None = None
    ) -> tuple[FloatArray | None, WatchdogEvent | None]:
        """The command to step with: `u` (None holds the last one), or the safe command; and the
        event, if the watchdog engaged or released on this step. `timed_out` says whether the step
        is on a timeout (lockstep: the state went unanswered, or `u` is its fresh answer); None
        decides by the time since the last fresh command (real time)."""
        silent = now - self.fresh_at
        if timed_out if timed_out is not None else silent > self.timeout:
            self.safe_steps += 1
            if self.active:
                return self.safe_u, None
            self.active = True
            self.engagements += 1
            self._safe_from = self.safe_steps - 1
            return self.safe_u, WatchdogEvent(True, silent, 0)
        if not self.active:
            return u, None
        self.active = False
        self.releases += 1
        return u, WatchdogEvent(False, silent, self.safe_steps - self._safe_from)
