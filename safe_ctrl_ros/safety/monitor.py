"""The constraint monitor's core: per-step evaluation, episode statistics, health level, reaction.

The monitor evaluates the constraints on each new state x_k together with the command that drove
the plant into it (u_{k-1}; the equilibrium input for the first state). A non-finite state is a
violation. Duplicate or out-of-order stamps are ignored. The safety reaction asks the controller to
fall back and the adapter to freeze while constraints are violated or the state stream is stale,
and clears after `clear_after` consecutive steps without violation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.safety.constraints import ConstraintSet, Evaluation
from safe_ctrl_ros.systems.base import FloatArray


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass
class EpisodeStats:
    steps: int = 0
    violation_steps: int = 0
    worst_margin: float = math.inf
    first_violation_time: float | None = None
    row_violations: list[int] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.violation_steps > 0


@dataclass
class MonitorStep:
    t: float
    evaluation: Evaluation
    level: Level
    message: str


@dataclass
class SafetyRequest:
    active: bool
    reason: str


class ConstraintMonitor:
    def __init__(self, constraints: ConstraintSet, nx: int, u_initial: ArrayLike, clear_after: int = 10) -> None:
        self.constraints = constraints
        self.nx = nx
        self.u_initial = np.asarray(u_initial, dtype=np.float64).reshape(-1)
        self.clear_after = max(1, int(clear_after))
        self.reset()

    def reset(self) -> None:
        self.stats = EpisodeStats(row_violations=[0] * len(self.constraints.row_names))
        self.last_stamp: int | None = None
        self.u_last: FloatArray = self.u_initial.copy()
        self.request = SafetyRequest(False, "")
        self._ok_streak = 0
        self._stale = False

    def command(self, u: ArrayLike) -> None:
        """A command was applied (it drives the plant to the next state)."""
        uv = np.asarray(u, dtype=np.float64).reshape(-1)
        if uv.size == self.u_initial.size:
            self.u_last = uv

    def state(self, stamp_ns: int, x: ArrayLike) -> MonitorStep | None:
        """Evaluate a new state; None for a duplicate or out-of-order stamp."""
        if self.last_stamp is not None and stamp_ns <= self.last_stamp:
            return None
        self.last_stamp = stamp_ns
        self._stale = False
        t = stamp_ns * 1e-9
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        bad_state = xv.size != self.nx or not np.all(np.isfinite(xv))
        if xv.size != self.nx:
            xv = np.full(self.nx, np.nan)
        ev = self.constraints.evaluate(xv, self.u_last)
        violated = bad_state or ev.any_violated
        st = self.stats
        st.steps += 1
        if ev.values.size:
            st.worst_margin = min(st.worst_margin, float(np.min(ev.margins)))
            for i in np.flatnonzero(ev.violated):
                st.row_violations[i] += 1
        if violated:
            st.violation_steps += 1
            if st.first_violation_time is None:
                st.first_violation_time = t
        names = self.constraints.row_names
        if bad_state:
            level, message = Level.ERROR, f"non-finite or wrong-size state at t={t:.3f} s"
        elif ev.any_violated:
            rows = [names[i] for i in np.flatnonzero(ev.violated)]
            level, message = Level.ERROR, f"violated: {', '.join(rows)}"
        elif np.any(ev.almost_active):
            rows = [names[i] for i in np.flatnonzero(ev.almost_active)]
            level, message = Level.WARN, f"almost active: {', '.join(rows)}"
        else:
            level, message = Level.OK, "all constraints satisfied"
        self._react(violated, message)
        return MonitorStep(t, ev, level, message)

    def _react(self, violated: bool, message: str) -> None:
        if violated:
            self._ok_streak = 0
            self.request = SafetyRequest(True, message)
            return
        self._ok_streak += 1
        if self.request.active and self._ok_streak >= self.clear_after and not self._stale:
            self.request = SafetyRequest(False, f"cleared after {self._ok_streak} steps without violation")

    def stale(self, seconds: float) -> None:
        """The state stream has been silent for `seconds` past its timeout."""
        self._stale = True
        self._ok_streak = 0
        self.request = SafetyRequest(True, f"state stream stale for {seconds:.2f} s")
