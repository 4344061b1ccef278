"""Per-run metrics in safe-control-gym's MetricExtractor sense, from a run's trajectory (ROS-free).

From the states x_k (with their references), the applied commands u_k and the constraint monitor's
smallest margin per state:

- `episode_length`: sim seconds run; `failed_early`: the episode ended before its duration (out of
  bounds, a non-finite state);
- `return`: minus the sum over steps of the quadratic cost e'Qe + du'Rdu, e = x_k - x_ref,k, du = u_k
  minus the equilibrium input (safe-control-gym's quadratic cost, the environment's reward,
  safe_ctrl_ros/env.py); `rl_reward`: the sum of exp(-cost_k) (safe-control-gym's exponential RL
  reward); Q, R: the spec's `metrics`, else ones and 0.1 (the environment's defaults);
- `tracking_rmse`, `tracking_rmse_last_10s`: the position error in m, `angle_rmse`, `angle_rmse_last_10s`
  the angle error in rad (safe_ctrl_ros.bag.report's definitions);
- `violation_steps` (count), `violation_magnitude_sum` and `violation_magnitude_max`: how far past
  its bound the worst constraint row is at each violating state (max(0, -smallest margin)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, angle_error, position_error

LAST_S = 10.0


@dataclass
class Trajectory:
    """A run's recorded loop: every state with its time and reference, the command applied from it
    (NaN rows for a state no command answered, the last one), the smallest constraint margin at it."""

    t: FloatArray  # (n,)
    x: FloatArray  # (n, nx)
    x_ref: FloatArray  # (n, nx); NaN rows where there is no reference
    u: FloatArray  # (n, nu)
    margin: FloatArray  # (n,); NaN where there is no verdict (no monitor, no constraints)
    violated: NDArray[np.bool_]  # (n,); the monitor's verdict (a strict row is violated at margin 0 too)


def _weights(values: list[float] | None, n: int, default: float) -> FloatArray:
    if values is None:
        return np.full(n, default)
    arr = np.asarray(values, dtype=float)
    return np.full(n, arr[0]) if arr.size == 1 else arr


def trajectory_metrics(traj: Trajectory, model: SymbolicModel, duration: float, dt: float,
                       Q: list[float] | None = None, R: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = traj.t.size
    length = float(traj.t[-1] - traj.t[0]) if n else 0.0
    out["episode_length"] = length
    out["failed_early"] = bool(duration > 0 and length < duration - 0.5 * dt)
    q = _weights(Q, model.nx, 1.0)
    r = _weights(R, model.nu, 0.1)
    if q.size != model.nx or r.size != model.nu:
        raise ValueError(f"metrics: Q needs {model.nx} values and R {model.nu}, got {q.size} and {r.size}")
    u_eq = model.equilibrium()[1]
    has_ref = np.all(np.isfinite(traj.x_ref), axis=1) if n else np.zeros(0, bool)
    has_u = np.all(np.isfinite(traj.u), axis=1) if n else np.zeros(0, bool)
    both = has_ref & has_u
    e = traj.x[both] - traj.x_ref[both]
    du = traj.u[both] - u_eq
    cost = np.sum(q * e**2, axis=1) + np.sum(r * du**2, axis=1)
    out["return"] = float(-np.sum(cost))
    out["rl_reward"] = float(np.sum(np.exp(-cost)))
    if np.any(has_ref):
        err = np.asarray(position_error(model, traj.x[has_ref], traj.x_ref[has_ref]), dtype=float).reshape(-1)
        t = traj.t[has_ref]
        out["tracking_rmse"] = float(np.sqrt(np.mean(err**2)))
        out["tracking_rmse_last_10s"] = float(np.sqrt(np.mean(err[t >= traj.t[-1] - LAST_S] ** 2)))
        if model.angle_indices:
            ang = np.asarray(angle_error(model, traj.x[has_ref], traj.x_ref[has_ref]), dtype=float).reshape(-1)
            out["angle_rmse"] = float(np.sqrt(np.mean(ang**2)))
            out["angle_rmse_last_10s"] = float(np.sqrt(np.mean(ang[t >= traj.t[-1] - LAST_S] ** 2)))
    judged = np.isfinite(traj.margin)
    if np.any(judged):
        excess = np.maximum(0.0, -traj.margin[judged])
        violated = traj.violated[judged]
        out["violation_steps"] = int(np.count_nonzero(violated))
        out["violation_magnitude_sum"] = float(np.sum(excess))
        out["violation_magnitude_max"] = float(np.max(excess))
    return out


def error_series(traj: Trajectory, model: SymbolicModel) -> tuple[FloatArray, FloatArray]:
    """Times and position errors (m) of the states with a reference (for the metric-vs-time plots)."""
    has_ref = np.all(np.isfinite(traj.x_ref), axis=1)
    if not np.any(has_ref):
        return np.zeros(0), np.zeros(0)
    err = np.asarray(position_error(model, traj.x[has_ref], traj.x_ref[has_ref]), dtype=float).reshape(-1)
    return traj.t[has_ref], err
