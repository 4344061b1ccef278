"""The residual MLP in integer arithmetic, as an inference-only NPU/DSP would run it (16w8a).

- Weights and biases: int16, one symmetric scale per tensor (value = scale * integer); a bias's
  scale is at least its layer's weight scale (`bias_scale`).
- Activations: int8 in [-127, 127] with one symmetric scale per layer input, calibrated on data.
- Each layer: int32 accumulation of int16 x int8 products (|sum| < 2^31 for widths up to 2^16),
  plus the bias converted once into accumulator units, then ReLU and requantization to int8 by a
  fixed-point multiplier: y = (acc * m0 + 2^(shift-1)) >> shift (round half up), saturated to
  [0, 127]. The last layer's int32 accumulator is dequantized on the host.
- `forward_float` is the float reference with the same (dequantized) weights; `error_bound` is the
  documented worst-case gap between the two: each int8 activation is off by at most half a step,
  a bias by half an accumulator step, and these propagate through |W| of the later layers (ReLU is
  1-Lipschitz). Inputs beyond the calibrated range saturate and are outside the bound.
Weights are kept within +-(32767 - GUARD) so that a trainer's perturbation of up to GUARD integer
units never saturates and can be undone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray

W_MAX = 32767
GUARD = 256
W_LIMIT = W_MAX - GUARD
A_MAX = 127
Int16Array = NDArray[np.int16]


def quantize_multiplier(m: float) -> tuple[int, int]:
    """m ~= m0 / 2^shift with m0 in [2^30, 2^31) (the usual NPU requantization multiplier)."""
    if not (np.isfinite(m) and m > 0):
        raise ConfigError(f"requantization multiplier must be positive, got {m}")
    shift = 0
    while m < 2**30 / 2**shift:  # scale m up into [2^30, 2^31)
        shift += 1
    while m * 2**shift >= 2**31:
        shift -= 1
    m0 = round(m * 2**shift)
    if m0 >= 2**31:
        m0, shift = m0 // 2, shift - 1
    return int(m0), int(shift)


def _requantize(acc: NDArray[np.int64], m0: int, shift: int) -> NDArray[np.int64]:
    if shift > 0:
        out: NDArray[np.int64] = (acc * m0 + (1 << (shift - 1))) >> shift
    else:
        out = acc * m0 << (-shift)
    return out


def _scale_for(max_abs: float, qmax: int) -> float:
    return max(float(max_abs), 1e-12) / qmax


def bias_scale(max_abs: float, w_scale: float) -> float:
    """A bias's scale: its range, but at least its layer's weight scale.

    A bias much smaller than the weights would otherwise get a much finer scale, and QZO-FF's
    update (divided by the scale squared, so that it is an unbiased float-space step) multiplies the
    noise of the gradient estimate in that tensor by the ratio: the pretrained 2D quadrotor's output
    bias had a 13x finer scale than its weights and set the largest stable learning rate
    (docs/LEARNING.md). At the weights' scale a bias keeps 16-bit resolution of the weights.
    """
    return max(_scale_for(max_abs, W_LIMIT), float(w_scale))


@dataclass
class QuantizedMLP:
    spec: ResidualSpec
    w: list[Int16Array]
    b: list[Int16Array]
    w_scale: list[float]
    b_scale: list[float]
    a_scale: list[float]  # input scale of each layer (a_scale[0]: the network input)

    def __post_init__(self) -> None:
        if self.spec.activation != "relu":
            raise ConfigError("the integer MLP uses ReLU activations (set residual.activation: relu)")
        if [w.shape for w in self.w] != self.spec.shapes:
            raise ConfigError(f"weight shapes {[w.shape for w in self.w]} do not match {self.spec.shapes}")

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_float(
        cls, spec: ResidualSpec, layers: list[tuple[FloatArray, FloatArray]], inputs: ArrayLike, margin: float = 1.25
    ) -> QuantizedMLP:
        """Quantize float layers; activation scales from `inputs` (rows of [x, u]) with headroom."""
        xu = np.atleast_2d(np.asarray(inputs, dtype=np.float64)) * spec.in_gain
        w_q, b_q, w_s, b_s, a_s = [], [], [], [], []
        h = xu.T
        for idx, (w, b) in enumerate(layers):
            a_s.append(_scale_for(np.max(np.abs(h)) * margin, A_MAX))
            ws = _scale_for(np.max(np.abs(w)) * 1.5, W_LIMIT)  # headroom for training to grow weights
            bs = bias_scale(np.max(np.abs(b)) * 1.5, ws)
            w_q.append(np.clip(np.round(w / ws), -W_LIMIT, W_LIMIT).astype(np.int16))
            b_q.append(np.clip(np.round(b / bs), -W_LIMIT, W_LIMIT).astype(np.int16))
            w_s.append(ws)
            b_s.append(bs)
            h = w @ h + b[:, None]
            if idx < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return cls(spec, w_q, b_q, w_s, b_s, a_s)

    @classmethod
    def from_update(
        cls, spec: ResidualSpec, weights: ArrayLike, scales: ArrayLike, a_scale: ArrayLike
    ) -> QuantizedMLP:
        ints = np.asarray(weights, dtype=np.int16).reshape(-1)
        scl = np.asarray(scales, dtype=np.float64).reshape(-1)
        w_q, b_q, pos = [], [], 0
        for o, i in spec.shapes:
            w_q.append(ints[pos : pos + o * i].reshape(o, i).copy())
            pos += o * i
            b_q.append(ints[pos : pos + o].copy())
            pos += o
        return cls(spec, w_q, b_q, list(scl[0::2]), list(scl[1::2]), [float(v) for v in np.asarray(a_scale)])

    def copy(self) -> QuantizedMLP:
        return QuantizedMLP(self.spec, [w.copy() for w in self.w], [b.copy() for b in self.b],
                            list(self.w_scale), list(self.b_scale), list(self.a_scale))

    # --- views -----------------------------------------------------------------------------------
    def tensors(self) -> list[Int16Array]:
        """The trainable integer tensors in order W_1, b_1, W_2, b_2, ... (views, not copies)."""
        out: list[Int16Array] = []
        for w, b in zip(self.w, self.b, strict=True):
            out += [w, b]
        return out

    def scales(self) -> list[float]:
        out: list[float] = []
        for ws, bs in zip(self.w_scale, self.b_scale, strict=True):
            out += [ws, bs]
        return out

    def int_weights(self) -> Int16Array:
        return np.concatenate([t.reshape(-1) for t in self.tensors()]).astype(np.int16)

    def theta(self) -> FloatArray:
        """The dequantized weights as the flat vector the NMPC's residual takes."""
        parts = [t.reshape(-1).astype(np.float64) * s for t, s in zip(self.tensors(), self.scales(), strict=True)]
        return np.concatenate(parts)

    def float_layers(self) -> list[tuple[FloatArray, FloatArray]]:
        return [(w.astype(np.float64) * ws, b.astype(np.float64) * bs)
                for w, b, ws, bs in zip(self.w, self.b, self.w_scale, self.b_scale, strict=True)]

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    # --- inference -------------------------------------------------------------------------------
    def forward_float(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        return self.spec.evaluate(x, u, self.theta())

    def forward_int(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        """Outputs (batch, nx) computed in integer arithmetic (int8 activations, int32 accumulators)."""
        xu = np.concatenate([np.atleast_2d(x), np.atleast_2d(u)], axis=1) * self.spec.in_gain
        a = np.clip(np.round(xu.T / self.a_scale[0]), -A_MAX, A_MAX).astype(np.int64)
        last = len(self.w) - 1
        out = np.zeros(0)
        for idx, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            acc_scale = self.w_scale[idx] * self.a_scale[idx]
            b_acc = np.round(b.astype(np.float64) * self.b_scale[idx] / acc_scale).astype(np.int64)
            acc = w.astype(np.int64) @ a + b_acc[:, None]
            acc = np.clip(acc, -(2**31), 2**31 - 1)  # an int32 accumulator saturates
            if idx == last:
                out = (acc.astype(np.float64) * acc_scale).T
                break
            m0, shift = quantize_multiplier(acc_scale / self.a_scale[idx + 1])
            a = np.clip(_requantize(acc, m0, shift), 0, A_MAX)  # ReLU, then saturate to int8
        result: FloatArray = out * self.spec.out_gain
        return result

    def error_bound(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        """Worst-case |forward_int - forward_float| per output (inputs within the calibrated range)."""
        n = np.atleast_2d(x).shape[0]
        err = np.full((self.spec.layer_sizes[0], n), self.a_scale[0] / 2)  # input rounding
        for idx, (w, _b) in enumerate(self.float_layers()):
            acc_step = self.w_scale[idx] * self.a_scale[idx]
            err = np.abs(w) @ err + acc_step / 2  # propagated error + bias conversion
            if idx < len(self.w) - 1:
                err = err + self.a_scale[idx + 1] / 2  # this layer's output rounding
        bound: FloatArray = err.T * np.abs(self.spec.out_gain)
        return bound
