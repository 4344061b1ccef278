"""The checks a candidate model passes before it goes out, on the most recent data, as the NMPC uses it.

The one-step held-out loss (OnlineAdapter.propose's guard) does not say how a residual controls: the
NMPC chains the model over its horizon, and every real-time iteration linearizes it. So a candidate
is also compared with the model in force on the newest transitions, in the controller's own form
(nominal RK4 + g_theta in float, theta the dequantized weights, as `Nmpc.set_residual_weights` gets
them):

- the multi-step prediction error: open-loop rollouts of `horizon` steps through the recorded
  inputs, each started at a recorded state, with the offset outside the model (the disturbance
  estimate the transition was handed with, x_{k+1} - x_next_k: zero without one) held at its value
  at the rollout's start over the horizon, as the NMPC holds its estimate; the error per state
  normalized by the loss scale (as `normalized_mse`), averaged over every predicted step. The
  candidate fails when its error exceeds `rollout_factor` times the model in force's.
- the size of the residual's Jacobians [dg/dx, dg/du] at the recent states and inputs: the
  largest Frobenius norm over them. The candidate fails when it exceeds `jacobian_factor` times the
  model in force's, or `jacobian_limit`.

Rollouts start every `stride` steps among the `window` transitions before the newest `horizon` (whose
next states end the newest rollouts), the Jacobians are taken at the newest `window`; rollouts do not cross a break
in the record (a missing step: the next transition does not start where this one's next state, up
to the offset, ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.data import Ring
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray

ROLLOUT, JACOBIAN = "rollout", "jacobian"  # the checks' names (counted per name)


@dataclass
class CheckConfig:
    horizon: int = 20  # rollout steps (the NMPC's horizon); 0 = no rollout check
    window: int = 100  # the newest transitions the rollouts start in and the Jacobians are taken at
    stride: int = 5  # steps between rollout starts
    rollout_factor: float = 1.0  # candidate's multi-step error at most this x the model in force's; 0 = off
    jacobian_factor: float = 0.0  # candidate's largest Jacobian norm at most this x the model in force's; 0 = off
    jacobian_limit: float = 0.0  # ... and at most this (absolute); 0 = off
    break_scales: float = 50.0  # an offset beyond this many loss scales is a break in the record

    @property
    def enabled(self) -> bool:
        return (self.horizon > 0 and self.rollout_factor > 0) or self.jacobian_factor > 0 or self.jacobian_limit > 0

    def validate(self) -> None:
        if self.horizon < 0 or self.window < 1 or self.stride < 1:
            raise ConfigError("adapter checks: horizon >= 0, window >= 1 and stride >= 1 are required")
        for name in ("rollout_factor", "jacobian_factor", "jacobian_limit"):
            value = getattr(self, name)
            if not (value == 0 or (np.isfinite(value) and value > 0)):
                raise ConfigError(f"adapter check {name} must be 0 (off) or a finite number > 0, got {value}")
        if not self.break_scales > 0:
            raise ConfigError(f"adapter check break_scales must be > 0, got {self.break_scales}")


@dataclass(frozen=True)
class CheckResult:
    """A candidate's figures next to the model in force's, on the same recent data."""

    rollout: float  # the candidate's multi-step error (nan: not enough contiguous data)
    rollout_ref: float
    jacobian: float  # the candidate's largest Jacobian norm (nan: no data)
    jacobian_ref: float
    rollouts: int  # rollouts taken
    failed: tuple[str, ...]  # ROLLOUT and/or JACOBIAN; () = passed

    @property
    def passed(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        return (f"{self.rollouts} rollouts: multi-step error {self.rollout:.4g} (in force {self.rollout_ref:.4g}), "
                f"largest Jacobian norm {self.jacobian:.4g} (in force {self.jacobian_ref:.4g})")


def jacobian_norms(spec: ResidualSpec, theta: FloatArray, x: FloatArray, u: FloatArray) -> FloatArray:
    """The Frobenius norm of [dg/dx, dg/du] of g_theta (the controller's float residual) at each row."""
    xu = np.concatenate([x, u], axis=1)
    h = xu * spec.in_gain
    layers = spec.unpack(theta)
    jac = np.broadcast_to(np.diag(spec.in_gain), (xu.shape[0], xu.shape[1], xu.shape[1])).copy()
    for idx, (w, b) in enumerate(layers):
        z = h @ w.T + b
        jac = np.einsum("oi,nij->noj", w, jac)
        if idx < len(layers) - 1:
            slope = 1.0 - np.tanh(z) ** 2 if spec.activation == "tanh" else (z > 0).astype(np.float64)
            jac = jac * slope[:, :, None]
            h = np.tanh(z) if spec.activation == "tanh" else np.maximum(z, 0.0)
        else:
            h = z
    jac = jac * spec.out_gain[None, :, None]
    out: FloatArray = np.sqrt(np.sum(jac**2, axis=(1, 2)))
    return out


class Checker:
    """The checks of a candidate against the model in force on the same recent transitions."""

    def __init__(self, cfg: CheckConfig, spec: ResidualSpec, step_fn: ca.Function, scale: FloatArray) -> None:
        cfg.validate()
        self.cfg, self.spec, self.scale = cfg, spec, np.asarray(scale, dtype=np.float64)
        self.step_fn = step_fn
        self._mapped: dict[int, ca.Function] = {}

    def _step(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """F_RK4 at each row."""
        n = x.shape[0]
        if n not in self._mapped:
            self._mapped[n] = self.step_fn.map(n)
        out = self._mapped[n](x.T, u.T, np.zeros((WRENCH_SIZE, n)))
        return np.asarray(out, dtype=np.float64).T.reshape(n, -1)

    def starts(self, x: FloatArray, xn: FloatArray) -> tuple[FloatArray, list[int]]:
        """The offsets x_{k+1} - x_next_k (the last one unknown: zero) and the rollout starts: every
        `stride` steps among the `window` transitions before the newest `horizon` (so that the
        `horizon` next states are recorded), with no break among them."""
        n, horizon = x.shape[0], self.cfg.horizon
        offsets = np.zeros_like(x)
        offsets[:-1] = x[1:] - xn[:-1]
        broken = ~np.all(np.abs(offsets) <= self.cfg.break_scales * self.scale, axis=1)
        first = max(0, n - horizon - self.cfg.window)
        starts = [s for s in range(first, n - horizon, self.cfg.stride) if not np.any(broken[s : s + horizon])]
        return offsets, starts

    def rollout_error(self, theta: FloatArray, x: FloatArray, u: FloatArray, offsets: FloatArray,
                      starts: list[int]) -> float:
        """Mean normalized squared error of the rollouts from `starts` against the recorded states
        (module docstring)."""
        if not starts:
            return float("nan")
        s = np.asarray(starts)
        # The offset held over the rollout: the one the start's transition was handed with (the
        # estimate of that solve), as the NMPC holds its estimate over the horizon.
        held = offsets[s]
        xh = x[s].copy()
        total = 0.0
        for j in range(self.cfg.horizon):
            uj = u[s + j]
            xh = self._step(xh, uj) + self.spec.evaluate(xh, uj, theta) + held
            total += float(np.sum(np.square((xh - x[s + j + 1]) / self.scale)))
        return float(total / (len(starts) * self.cfg.horizon * x.shape[1]))

    def check(self, candidate: FloatArray, reference: FloatArray, recent: Ring) -> CheckResult:
        cfg = self.cfg
        x, u, xn = recent.ordered()
        nan = float("nan")
        if x.shape[0] == 0:
            return CheckResult(nan, nan, nan, nan, 0, ())
        roll = roll_ref = nan
        starts: list[int] = []
        if cfg.horizon > 0 and cfg.rollout_factor > 0:
            offsets, starts = self.starts(x, xn)
            roll = self.rollout_error(candidate, x, u, offsets, starts)
            roll_ref = self.rollout_error(reference, x, u, offsets, starts)
        jac = jac_ref = nan
        if cfg.jacobian_factor > 0 or cfg.jacobian_limit > 0:
            xs, us = x[-cfg.window :], u[-cfg.window :]
            jac = float(np.max(jacobian_norms(self.spec, candidate, xs, us)))
            jac_ref = float(np.max(jacobian_norms(self.spec, reference, xs, us)))
        failed: list[str] = []
        if starts and not roll <= cfg.rollout_factor * roll_ref:
            failed.append(ROLLOUT)
        if np.isfinite(jac_ref) and ((cfg.jacobian_factor > 0 and not jac <= cfg.jacobian_factor * jac_ref)
                                     or (cfg.jacobian_limit > 0 and not jac <= cfg.jacobian_limit)):
            failed.append(JACOBIAN)
        return CheckResult(roll, roll_ref, jac, jac_ref, len(starts), tuple(failed))
