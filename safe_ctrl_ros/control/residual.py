"""The learned residual g_theta(x, u): a small MLP added to the nominal one-step prediction.

    x_next = F_nominal(x, u) + out_gain * MLP(in_gain * [x; u])

All weights live in one flat vector theta (per layer: W row-major, then b), so the NMPC takes it as
a parameter of its optimization problem: new weights need no rebuild. theta = 0 gives exactly 0.
`in_gain` scales (or, with 0, masks) each input; `out_gain` scales each output (e.g. to m and m/s).

With `previous_input` (off by default) the network also sees the command applied one step before,
u_{k-1}: input layout [x; u; u_prev], so nx + 2 nu inputs and

    x_next = F_nominal(x, u) + out_gain * MLP(in_gain * [x; u; u_prev]).

A plant whose actuators lag (the MuJoCo quadrotor's first-order rotor lag: over a step the thrust
is roughly u_k + 0.55 (u_{k-1} - u_k) at tau = 15 ms, dt = 20 ms) has a one-step error that depends
on the previous command, which g(x, u) cannot represent (docs/HIL.md). The network's "control"
inputs are then the 2 nu entries [u, u_prev]: `evaluate(x, u, theta, u_prev)` and
`symbolic(x, u, theta, u_prev)` concatenate them; without u_prev, `u` must already hold both
(`n_u_in` columns: what a training batch stores). The model file records the option
(safe_ctrl_ros.learning.model_file); `with_previous_input` and `zero_previous_columns` extend a
residual without it by zero weight columns, so the extended network computes exactly the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray, as_vector

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class ResidualSpec:
    nx: int
    nu: int
    hidden: tuple[int, ...] = (16, 16)
    activation: str = "relu"
    in_gain: FloatArray = field(default_factory=lambda: np.zeros(0))
    out_gain: FloatArray = field(default_factory=lambda: np.zeros(0))
    previous_input: bool = False  # inputs [x; u; u_prev] (module docstring)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"residual activation must be one of {ACTIVATIONS}, got '{self.activation}'")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"residual hidden sizes must be >= 1, got {self.hidden}")
        n_in = self.nx + self.n_u_in
        object.__setattr__(
            self, "in_gain", np.ones(n_in) if self.in_gain.size == 0 else as_vector(self.in_gain, n_in, "in_gain")
        )
        object.__setattr__(
            self, "out_gain",
            np.ones(self.nx) if self.out_gain.size == 0 else as_vector(self.out_gain, self.nx, "out_gain"),
        )

    @property
    def n_u_in(self) -> int:
        """The network's control inputs: nu, or 2 nu ([u, u_prev]) with previous_input."""
        return 2 * self.nu if self.previous_input else self.nu

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.nx + self.n_u_in, *self.hidden, self.nx)

    def control_inputs(self, u: ArrayLike, u_prev: ArrayLike | None = None) -> FloatArray:
        """The network's control columns for one command or a batch (rows): u, or [u, u_prev] with
        previous_input (then, without u_prev, `u` must already have both: n_u_in columns)."""
        uu = np.atleast_2d(np.asarray(u, dtype=np.float64))
        if self.previous_input and u_prev is not None:
            uu = np.concatenate([uu, np.atleast_2d(np.asarray(u_prev, dtype=np.float64))], axis=1)
        elif u_prev is not None:
            raise ConfigError("this residual has no previous_input: u_prev given")
        if uu.shape[1] != self.n_u_in:
            raise ConfigError(f"residual control inputs: expected {self.n_u_in} columns, got {uu.shape[1]}"
                              + (" (previous_input: give u_prev)" if self.previous_input else ""))
        return uu

    def with_previous_input(self) -> ResidualSpec:
        """The same residual with u_prev inputs (their in_gain = u's; see `extend_previous_input`)."""
        if self.previous_input:
            return self
        gain = np.concatenate([self.in_gain, self.in_gain[self.nx :]])
        return ResidualSpec(self.nx, self.nu, self.hidden, self.activation, gain, self.out_gain.copy(), True)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each layer's weight matrix."""
        sizes = self.layer_sizes
        return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]

    @property
    def num_params(self) -> int:
        return sum(o * i + o for o, i in self.shapes)

    def unpack(self, theta: ArrayLike) -> list[tuple[FloatArray, FloatArray]]:
        flat = as_vector(theta, self.num_params, "residual weights")
        layers, pos = [], 0
        for o, i in self.shapes:
            w = flat[pos : pos + o * i].reshape(o, i)
            pos += o * i
            b = flat[pos : pos + o]
            pos += o
            layers.append((w, b))
        return layers

    @staticmethod
    def pack(layers: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
        return np.concatenate([np.concatenate([w.reshape(-1), b.reshape(-1)]) for w, b in layers])

    def _act(self, z: FloatArray) -> FloatArray:
        out: FloatArray = np.tanh(z) if self.activation == "tanh" else np.maximum(z, 0.0)
        return out

    def symbolic(self, x: ca.SX, u: ca.SX, theta: ca.SX, u_prev: ca.SX | None = None) -> ca.SX:
        """g_theta(x, u[, u_prev]) as a CasADi expression of the symbols x, u (, u_prev) and theta."""
        if self.previous_input and u_prev is None:
            raise ConfigError("this residual takes the previous command: give u_prev")
        if not self.previous_input and u_prev is not None:
            raise ConfigError("this residual has no previous_input: u_prev given")
        h = (ca.vertcat(x, u, u_prev) if u_prev is not None else ca.vertcat(x, u)) * ca.DM(self.in_gain)
        pos = 0
        for layer, (o, i) in enumerate(self.shapes):
            w = ca.reshape(theta[pos : pos + o * i], i, o).T  # row-major W
            pos += o * i
            b = theta[pos : pos + o]
            pos += o
            h = w @ h + b
            if layer < len(self.shapes) - 1:
                h = ca.tanh(h) if self.activation == "tanh" else ca.fmax(h, 0)
        return h * ca.DM(self.out_gain)

    def evaluate(self, x: ArrayLike, u: ArrayLike, theta: ArrayLike, u_prev: ArrayLike | None = None) -> FloatArray:
        """g_theta for one (x, u[, u_prev]) or a batch (rows), in numpy (`control_inputs` for u, u_prev)."""
        xu = np.concatenate([np.atleast_2d(x), self.control_inputs(u, u_prev)], axis=1) * self.in_gain
        h = xu.T
        layers = self.unpack(theta)
        for idx, (w, b) in enumerate(layers):
            h = w @ h + b[:, None]
            if idx < len(layers) - 1:
                h = self._act(h)
        out: FloatArray = (h.T * self.out_gain).reshape(np.atleast_2d(x).shape[0], self.nx)
        return out


def zero_previous_columns(spec: ResidualSpec, w1: NDArray[Any]) -> NDArray[Any]:
    """The first layer's weights (out, nx + nu) of a residual without previous_input, extended by nu
    zero columns for u_prev: with them the network's output is exactly the one without (any weight
    type: integer weights stay integers)."""
    if spec.previous_input:
        raise ConfigError("the residual already takes the previous command")
    if w1.shape != spec.shapes[0]:
        raise ConfigError(f"first-layer weights {w1.shape} do not match {spec.shapes[0]}")
    return np.concatenate([w1, np.zeros((w1.shape[0], spec.nu), dtype=w1.dtype)], axis=1)


def dequantize(
    spec: ResidualSpec, layer_sizes: ArrayLike, activation: str, weights: ArrayLike, scales: ArrayLike
) -> FloatArray:
    """theta from integer weights with one scale per tensor (W_1, b_1, W_2, ...), checked against spec.

    Raises ConfigError with the reason when the update does not fit this residual.
    """
    sizes = tuple(int(v) for v in np.asarray(layer_sizes).reshape(-1))
    if sizes != spec.layer_sizes:
        raise ConfigError(f"layer sizes {list(sizes)} do not match the controller's {list(spec.layer_sizes)}")
    if activation != spec.activation:
        raise ConfigError(f"activation '{activation}' does not match the controller's '{spec.activation}'")
    ints = np.asarray(weights).reshape(-1)
    if ints.size != spec.num_params:
        raise ConfigError(f"{ints.size} weights given, the residual has {spec.num_params}")
    scl = np.asarray(scales, dtype=np.float64).reshape(-1)
    if scl.size != 2 * len(spec.shapes):
        raise ConfigError(f"{scl.size} scales given, expected {2 * len(spec.shapes)} (one per tensor)")
    if not np.all(np.isfinite(scl)) or np.any(scl < 0):
        raise ConfigError("scales must be finite and >= 0")
    theta = np.empty(spec.num_params)
    pos, tensor = 0, 0
    for o, i in spec.shapes:
        for size in (o * i, o):
            theta[pos : pos + size] = ints[pos : pos + size].astype(np.float64) * scl[tensor]
            pos += size
            tensor += 1
    if not np.all(np.isfinite(theta)):
        raise ConfigError("weights times scales overflow: the dequantized weights are not finite")
    return theta
