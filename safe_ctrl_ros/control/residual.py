"""The learned residual g_theta(x, u): a small MLP added to the nominal one-step prediction.

    x_next = F_nominal(x, u) + out_gain * MLP(in_gain * [x; u])

All weights live in one flat vector theta (per layer: W row-major, then b), so the NMPC takes it as
a parameter of its optimization problem: new weights need no rebuild. theta = 0 gives exactly 0.
`in_gain` scales (or, with 0, masks) each input; `out_gain` scales each output (e.g. to m and m/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike

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

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"residual activation must be one of {ACTIVATIONS}, got '{self.activation}'")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"residual hidden sizes must be >= 1, got {self.hidden}")
        n_in = self.nx + self.nu
        object.__setattr__(
            self, "in_gain", np.ones(n_in) if self.in_gain.size == 0 else as_vector(self.in_gain, n_in, "in_gain")
        )
        object.__setattr__(
            self, "out_gain",
            np.ones(self.nx) if self.out_gain.size == 0 else as_vector(self.out_gain, self.nx, "out_gain"),
        )

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.nx + self.nu, *self.hidden, self.nx)

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

    def symbolic(self, x: ca.SX, u: ca.SX, theta: ca.SX) -> ca.SX:
        """g_theta(x, u) as a CasADi expression of the symbols x, u and theta."""
        h = ca.vertcat(x, u) * ca.DM(self.in_gain)
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

    def evaluate(self, x: ArrayLike, u: ArrayLike, theta: ArrayLike) -> FloatArray:
        """g_theta for one (x, u) or a batch (rows), in numpy."""
        xu = np.concatenate([np.atleast_2d(x), np.atleast_2d(u)], axis=1) * self.in_gain
        h = xu.T
        layers = self.unpack(theta)
        for idx, (w, b) in enumerate(layers):
            h = w @ h + b[:, None]
            if idx < len(layers) - 1:
                h = self._act(h)
        out: FloatArray = (h.T * self.out_gain).reshape(np.atleast_2d(x).shape[0], self.nx)
        return out


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
