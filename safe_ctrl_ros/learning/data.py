"""Learning data: transitions (x_k, u_k, x_k+1) -> targets x_k+1 - F_nominal(x_k, u_k), and the loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel


@dataclass
class Batch:
    x: FloatArray  # (n, nx)
    u: FloatArray  # (n, nu); (n, 2 nu) [u, u_prev] for a residual with previous_input
    target: FloatArray  # (n, nx): x_next - F_nominal(x, u)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: ArrayLike) -> Batch:
        i = np.asarray(idx)
        return Batch(self.x[i], self.u[i], self.target[i])


class Ring:
    """A fixed-size buffer of transitions (x, u, y), the oldest overwritten first. y is the residual
    target x_k+1 - F(x_k, u_k) in the adapter's training and validation buffers, the next state as
    handed in the update checks' window (validation.py); u is the network's control inputs ([u,
    u_prev], 2 nu columns, for a residual with previous_input)."""

    def __init__(self, capacity: int, nx: int, nu: int) -> None:
        self.x = np.zeros((capacity, nx))
        self.u = np.zeros((capacity, nu))
        self.y = np.zeros((capacity, nx))
        self.capacity, self.count, self.head = capacity, 0, 0

    def add(self, x: FloatArray, u: FloatArray, y: FloatArray) -> None:
        self.x[self.head], self.u[self.head], self.y[self.head] = x, u, y
        self.head = (self.head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def batch(self, idx: NDArray[np.int64] | None = None) -> Batch:
        """The stored rows (in storage order, or those of `idx`), y as the target."""
        n = self.count
        sel = np.arange(n) if idx is None else idx
        return Batch(self.x[:n][sel], self.u[:n][sel], self.y[:n][sel])

    def ordered(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x, u, y), oldest first."""
        idx = (self.head - self.count + np.arange(self.count)) % self.capacity
        return self.x[idx], self.u[idx], self.y[idx]


def residual_targets(
    model: SymbolicModel, x: ArrayLike, u: ArrayLike, x_next: ArrayLike, dt: float, substeps: int = 1,
    u_prev: ArrayLike | None = None,
) -> Batch:
    """What the nominal one-step prediction (the NMPC's own RK4) misses, per transition; with
    u_prev (the command before each u, for a residual with previous_input) the batch's inputs are
    [u, u_prev] (the target does not depend on it: F is the nominal model's)."""
    xs, us, xn = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (x, u, x_next))
    step = model.rk4_function(dt, substeps)
    w0 = np.zeros(6)
    pred = np.array([np.asarray(step(xi, ui, w0)).reshape(-1) for xi, ui in zip(xs, us, strict=True)])
    inputs = us if u_prev is None else np.hstack([us, np.atleast_2d(np.asarray(u_prev, dtype=np.float64))])
    return Batch(xs, inputs, xn - pred)


def normalized_mse(pred: FloatArray, target: FloatArray, scale: FloatArray) -> float:
    """Mean over samples and states of ((pred - target) / scale)^2: every state counts alike."""
    return float(np.mean(np.square((pred - target) / scale)))
