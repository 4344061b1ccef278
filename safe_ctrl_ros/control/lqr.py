"""Discrete-time LQR from a model's linearization.

`discretization="exact"` uses the zero-order-hold discretization (matrix exponential);
`"euler"` uses A_d = I + A dt, B_d = B dt, which is what safe-control-gym's LQR does, for users who
compare against it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel, as_vector

Discretization = Literal["exact", "euler"]


def _weight_matrix(w: ArrayLike, n: int, what: str) -> FloatArray:
    """A weight given as a scalar, a diagonal (length n) or a full n x n matrix."""
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.ndim == 1:
        arr = np.diag(as_vector(arr, n, f"{what} diagonal"))
    if arr.shape != (n, n):
        raise ConfigError(f"{what}: expected a scalar, {n} diagonal entries or a {n}x{n} matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}: contains non-finite values")
    return 0.5 * (arr + arr.T)


def discretize(a: FloatArray, b: FloatArray, dt: float, method: Discretization) -> tuple[FloatArray, FloatArray]:
    nx, nu = b.shape
    if method == "euler":
        return np.eye(nx) + a * dt, b * dt
    if method == "exact":
        m = np.zeros((nx + nu, nx + nu))
        m[:nx, :nx] = a
        m[:nx, nx:] = b
        e = scipy.linalg.expm(m * dt)
        return e[:nx, :nx], e[:nx, nx:]
    raise ConfigError(f"discretization must be 'exact' or 'euler', got {method!r}")


def lqr_gain(
    model: SymbolicModel,
    Q: ArrayLike,
    R: ArrayLike,
    dt: float,
    discretization: Discretization = "exact",
    x_lin: ArrayLike | None = None,
    u_lin: ArrayLike | None = None,
) -> FloatArray:
    """Discrete LQR gain K (nu x nx) for u = u_eq - K (x - x_goal), linearized at (x_lin, u_lin).

    The linearization point defaults to the model's equilibrium.
    """
    if not (np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be positive, got {dt}")
    x_eq, u_eq = model.equilibrium()
    x0 = x_eq if x_lin is None else as_vector(x_lin, model.nx, "x_lin")
    u0 = u_eq if u_lin is None else as_vector(u_lin, model.nu, "u_lin")
    a, b = model.linearize(x0, u0)
    ad, bd = discretize(a, b, dt, discretization)
    q = _weight_matrix(Q, model.nx, "Q")
    r = _weight_matrix(R, model.nu, "R")
    try:
        p = scipy.linalg.solve_discrete_are(ad, bd, q, r)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ConfigError(f"LQR: the discrete Riccati equation has no stabilizing solution ({exc})") from exc
    k: FloatArray = np.linalg.solve(r + bd.T @ p @ bd, bd.T @ p @ ad)
    return k


class LqrController:
    """u = clip(u_eq - K (x - x_goal)) with the model's input bounds."""

    def __init__(
        self,
        model: SymbolicModel,
        Q: ArrayLike,
        R: ArrayLike,
        dt: float,
        discretization: Discretization = "exact",
        x_goal: ArrayLike | None = None,
    ) -> None:
        self.model = model
        self.x_eq, self.u_eq = model.equilibrium()
        self.x_goal = self.x_eq.copy() if x_goal is None else as_vector(x_goal, model.nx, "x_goal")
        self.K = lqr_gain(model, Q, R, dt, discretization)
        self.u_low, self.u_high = model.input_bounds

    def __call__(self, x: ArrayLike, x_ref: ArrayLike | None = None, u_ref: ArrayLike | None = None) -> FloatArray:
        """The command at state x; with a reference (x_ref, u_ref) it tracks it with the same gain."""
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if xv.size != self.model.nx:
            raise ValueError(f"state has size {xv.size}, {self.model.name} expects {self.model.nx}")
        goal = self.x_goal if x_ref is None else np.asarray(x_ref, dtype=np.float64).reshape(-1)
        feedforward = self.u_eq if u_ref is None else np.asarray(u_ref, dtype=np.float64).reshape(-1)
        u = feedforward - self.K @ (xv - goal)
        out: FloatArray = np.clip(u, self.u_low, self.u_high)
        return out
