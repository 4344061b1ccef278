"""The residual MLP in integer arithmetic, as an inference-only NPU/DSP would run it (16w8a).

- Weights and biases: int16, one symmetric scale per tensor (value = scale * integer); a bias's
  scale is at least its layer's weight scale (`bias_scale`).
- Activations: int8 in [-127, 127] with one symmetric scale per layer input, calibrated on data.
  The network input is in_gain * [x; u] / a_scale[0] rounded to the nearest integer (ties to even)
  and saturated to [-127, 127].
- Each layer, with acc_scale = w_scale * a_scale (the accumulator's unit):
  - the bias in accumulator units, b * b_scale / acc_scale rounded to nearest (ties to even) and
    saturated to the int32 range (an NPU holds it as an int32), converted once per bias and scales
    (cached; recomputed only when the int16 bias or a scale has changed, e.g. by a trainer);
  - the accumulator: the int16 x int8 products and the bias summed exactly, the sum saturated to
    [-2^31, 2^31 - 1]. That is a 32-bit MAC's result wherever no partial sum leaves the int32
    range, i.e. whenever |bias| + n * 32768 * 127 < 2^31 for n inputs (n <= 516 with a zero bias;
    the layers here have at most 64); beyond, the model saturates once at the end, it never wraps;
  - hidden layers: ReLU and requantization to int8 by a fixed-point multiplier m0 / 2^shift for
    m = acc_scale / a_scale[next]: shift such that m 2^shift is in [2^30, 2^31), m0 = round(m 2^shift)
    (ties to even; 2^31 becomes 2^30 with shift - 1), computed once per scales; then
    y = (acc * m0 + 2^(shift-1)) >> shift (round half up, exact in 64 bits), saturated to [0, 127];
  - the last layer's int32 accumulator is dequantized on the host: acc * acc_scale * out_gain.
- `forward_float` is the float reference with the same (dequantized) weights; `error_bound` is the
  documented worst-case gap between the two: each int8 activation is off by at most half a step,
  a bias by half an accumulator step, and these propagate through |W| of the later layers (ReLU is
  1-Lipschitz). Inputs beyond the calibrated range saturate and are outside the bound.
Weights are kept within +-(32767 - GUARD) so that a trainer's perturbation of up to GUARD integer
units never saturates and can be undone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray

W_MAX = 32767
GUARD = 256
W_LIMIT = W_MAX - GUARD
A_MAX = 127
ACC_MIN, ACC_MAX = -(2**31), 2**31 - 1  # the int32 accumulator
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
    """ReLU and requantization of int32 accumulators to int8 activations in [0, 127]."""
    if shift > 0:  # |acc| <= 2^31 and m0 < 2^31: the product is exact in int64
        out: NDArray[np.int64] = (acc * m0 + (1 << (shift - 1))) >> shift
    else:  # m >= 2^30: any acc >= 1 saturates (and shifting could overflow int64)
        out = np.where(acc > 0, A_MAX, 0).astype(np.int64)
    return np.clip(out, 0, A_MAX)


@dataclass
class _LayerConstants:
    """What forward_int derives from a layer's scales and bias, and what it was derived from."""

    scales: tuple[float | None, ...]  # w_scale, b_scale, a_scale in, a_scale out (None: the last layer)
    acc_scale: float
    m0: int
    shift: int
    bias: Int16Array | None = None  # the int16 bias the conversion below was made from
    bias_acc: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))  # (out, 1)


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
    # Per layer: the bias in accumulator units and the requantization multiplier (forward_int).
    _constants: list[_LayerConstants | None] = field(init=False, repr=False, compare=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.spec.activation != "relu":
            raise ConfigError("the integer MLP uses ReLU activations (set residual.activation: relu)")
        if [w.shape for w in self.w] != self.spec.shapes:
            raise ConfigError(f"weight shapes {[w.shape for w in self.w]} do not match {self.spec.shapes}")
        self._constants = [None] * len(self.w)
        for idx in range(len(self.w)):
            self._layer_constants(idx)

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

    def _layer_constants(self, idx: int) -> _LayerConstants:
        """Layer idx's bias in accumulator units and requantization multiplier, converted once: kept
        until a scale or the bias changes (trainers change integer tensors in place, the adapter
        scales), which is checked here on every use, so a cached value is never stale."""
        last = idx == len(self.w) - 1
        a_out = None if last else float(self.a_scale[idx + 1])
        scales = (float(self.w_scale[idx]), float(self.b_scale[idx]), float(self.a_scale[idx]), a_out)
        const = self._constants[idx]
        if const is None or const.scales != scales:
            acc_scale = self.w_scale[idx] * self.a_scale[idx]
            m0, shift = (0, 0) if last else quantize_multiplier(acc_scale / self.a_scale[idx + 1])
            const = self._constants[idx] = _LayerConstants(scales, acc_scale, m0, shift)
        b = self.b[idx]
        if const.bias is None or not np.array_equal(const.bias, b):
            with np.errstate(over="ignore", invalid="ignore"):
                exact = np.round(b.astype(np.float64) * self.b_scale[idx] / const.acc_scale)
            exact = np.nan_to_num(exact, nan=0.0)  # 0 / 0 (zero scales): the layer's output is 0 anyway
            const.bias_acc = np.clip(exact, ACC_MIN, ACC_MAX).astype(np.int64)[:, None]
            const.bias = b.copy()
        return const

    def forward_int(self, x: ArrayLike, u: ArrayLike) -> FloatArray:
        """Outputs (batch, nx) computed in integer arithmetic (int8 activations, int32 accumulators)."""
        xu = np.concatenate([np.atleast_2d(x), np.atleast_2d(u)], axis=1) * self.spec.in_gain
        a = np.clip(np.round(xu.T / self.a_scale[0]), -A_MAX, A_MAX).astype(np.int64)
        last = len(self.w) - 1
        out = np.zeros(0)
        for idx, w in enumerate(self.w):
            const = self._layer_constants(idx)
            acc = np.clip(w.astype(np.int64) @ a + const.bias_acc, ACC_MIN, ACC_MAX)  # int32, saturating
            if idx == last:
                out = (acc.astype(np.float64) * const.acc_scale).T
                break
            a = _requantize(acc, const.m0, const.shift)  # ReLU, then saturate to int8
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
