"""The controller's decision logic, free of ROS: primary law, fallback, and what to report.

The primary law is the NMPC (or LQR). For one step the supervisor falls back to LQR, or to a
configured safe command, when the state is unusable, the solver fails, its result is non-finite,
it misses its deadline, or a safety request asks for it; the next step tries the primary law again,
so it recovers by itself. Every step yields a `StepReport` for the status topic.

`StepReport.disturbance` is the NMPC's offset-free disturbance estimate the step's command was
planned with (`NmpcResult.disturbance`: one entry per model state, zeros off the estimated states),
for the adapter to remove from the transition's target (docs/CONTROLLERS.md, Offset-free
prediction). Empty when no estimate is in use (LQR, or an NMPC with `disturbance_gain` 0); zeros
(nx) on every fallback step: its command is LQR's or the safe command, not planned with d, and no
solve (an unusable state, a forced fallback) or no successful one stands behind it, so nothing is
removed from that transition.

New residual weights (`set_residual_weights`: an adapter's update or rollback) switch bumplessly:
they are a parameter of the NMPC, so the switch needs no rebuild and keeps its warm start (the
shifted plan and multipliers); with `blend_steps` N > 0 the weights move from the ones in force to
the new ones over the next N solves, theta_old + (j / N) (theta_new - theta_old) at the j-th, so
the prediction, and with it the command, changes in N small steps rather than one
(docs/CONTROLLERS.md, measured in test/test_bumpless.py). A new update during a blend starts from
the weights in force at that step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.control.lqr import LqrController
from safe_ctrl_ros.control.nmpc import Nmpc
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, as_vector
from safe_ctrl_ros.tasks import Task


class FallbackMode(Enum):
    LQR = "lqr"
    COMMAND = "command"


@dataclass
class StepReport:
    u: FloatArray
    controller: str
    solver: str = ""
    solve_time_s: float = 0.0
    iterations: int = 0
    status: str = ""
    cost: float = 0.0
    max_slack: float = 0.0
    fallback_active: bool = False
    fallback_reason: str = ""
    # The disturbance estimate the command was planned with (module docstring): empty = no estimate
    # in use, zeros (nx) on a fallback.
    disturbance: FloatArray = field(default_factory=lambda: np.zeros(0))


class SupervisedController:
    def __init__(
        self,
        model: SymbolicModel,
        task: Task,
        lqr: LqrController,
        nmpc: Nmpc | None = None,
        fallback: FallbackMode = FallbackMode.LQR,
        safe_command: ArrayLike | None = None,
        deadline_s: float = 0.0,
        blend_steps: int = 0,
    ) -> None:
        self.model, self.task, self.lqr, self.nmpc = model, task, lqr, nmpc
        self.fallback = fallback
        self.safe_command = (
            model.equilibrium()[1] if safe_command is None else as_vector(safe_command, model.nu, "safe command")
        )
        low, high = model.input_bounds
        if np.any(self.safe_command < low) or np.any(self.safe_command > high):
            raise ConfigError(f"safe command {self.safe_command.tolist()} is outside the input bounds")
        if deadline_s < 0:
            raise ConfigError(f"deadline must be >= 0 s, got {deadline_s}")
        self.deadline_s = deadline_s
        self.fallbacks_total = 0
        if blend_steps < 0:
            raise ConfigError(f"blend_steps must be >= 0, got {blend_steps}")
        self.blend_steps = int(blend_steps)
        self._blend: tuple[FloatArray, FloatArray, int] | None = None  # (from, to, solves done)

    def set_residual_weights(self, theta: ArrayLike) -> None:
        """New residual weights for the NMPC, in force bumplessly (module docstring); ConfigError
        when this controller has no residual or the weights do not fit it."""
        if self.nmpc is None or self.nmpc.residual is None:
            raise ConfigError("this controller has no residual model")
        target = as_vector(theta, self.nmpc.residual.num_params, "residual weights")
        if self.blend_steps == 0:
            self._blend = None
            self.nmpc.set_residual_weights(target)
            return
        self._blend = (self.nmpc.theta.copy(), target, 0)

    @property
    def blending(self) -> bool:
        """Whether a switch of residual weights is under way."""
        return self._blend is not None

    def _advance_blend(self) -> None:
        """The weights of this solve when a blend is under way (each solve attempt is one step)."""
        if self._blend is None or self.nmpc is None:
            return
        old, new, done = self._blend
        done += 1
        if done >= self.blend_steps:
            self.nmpc.set_residual_weights(new)
            self._blend = None
            return
        self.nmpc.set_residual_weights(old + (done / self.blend_steps) * (new - old))
        self._blend = (old, new, done)

    @property
    def kind(self) -> str:
        return "nmpc" if self.nmpc is not None else "lqr"

    @property
    def estimating(self) -> bool:
        """Whether the primary law carries a disturbance estimate (an NMPC with disturbance_gain > 0)."""
        return self.nmpc is not None and bool(self.nmpc.disturbance_states)

    def _fallback(self, x: FloatArray | None, t: float, reason: str, report: StepReport) -> StepReport:
        self.fallbacks_total += 1
        report.fallback_active, report.fallback_reason = True, reason
        if self.fallback is FallbackMode.LQR and x is not None:
            x_ref, u_ref = self.task.reference(t)
            report.u = self.lqr(x, x_ref[0], u_ref[0])
        else:
            report.u = self.safe_command.copy()
        return report

    def compute(self, x: ArrayLike, t: float, force_fallback: str = "") -> StepReport:
        """The command for state x at time t (force_fallback: a reason to skip the primary law).

        Never non-finite: a law whose command is not finite (LQR on a huge but finite state, a NaN
        reference) gives the safe command for that step, as a fallback.
        """
        report = self._compute(x, t, force_fallback)
        if report.u.shape != self.safe_command.shape or not np.all(np.isfinite(report.u)):
            if not report.fallback_active:
                self.fallbacks_total += 1
            law = "fallback LQR" if report.fallback_active else self.kind
            reason = f"non-finite command from {law}: safe command"
            report.fallback_reason = f"{report.fallback_reason}; {reason}" if report.fallback_reason else reason
            report.fallback_active = True
            report.u = self.safe_command.copy()
        if report.fallback_active:
            # not planned with the estimate: nothing to remove (module docstring)
            report.disturbance = np.zeros(self.model.nx) if self.estimating else np.zeros(0)
        if report.fallback_active and self.nmpc is not None:
            # what went out instead of the NMPC's answer: its disturbance estimate and its previous
            # input (residual.previous_input) go on from the command actually applied
            self.nmpc.note_applied(report.u)
        return report

    def _compute(self, x: ArrayLike, t: float, force_fallback: str) -> StepReport:
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        report = StepReport(u=self.safe_command.copy(), controller=self.kind)
        if xv.size != self.model.nx or not np.all(np.isfinite(xv)):
            report.fallback_active, report.fallback_reason = True, "non-finite or wrong-size state"
            self.fallbacks_total += 1
            if self.nmpc is not None:
                self.nmpc.reset()
            return report  # no usable state: the safe command, never LQR on garbage
        if force_fallback:
            return self._fallback(xv, t, force_fallback, report)
        if self.nmpc is None:
            x_ref, u_ref = self.task.reference(t)
            start = time.perf_counter()
            report.u = self.lqr(xv, x_ref[0], u_ref[0])
            report.solve_time_s = time.perf_counter() - start
            return report
        self._advance_blend()
        result = self.nmpc.solve(xv, t)
        report.solver = self.nmpc.cfg.solver
        report.solve_time_s, report.iterations = result.solve_time_s, result.iterations
        report.status, report.cost, report.max_slack = result.status, result.cost, result.max_slack
        if self.estimating:
            report.disturbance = np.asarray(result.disturbance, dtype=np.float64).copy()
        if not result.success:
            return self._fallback(xv, t, f"solver failed: {result.status}", report)
        if self.deadline_s > 0 and result.solve_time_s > self.deadline_s:
            return self._fallback(xv, t, f"deadline missed: {result.solve_time_s * 1e3:.2f} ms", report)
        report.u = result.u
        return report
