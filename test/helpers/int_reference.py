"""An independent reference of the 16w8a integer forward pass, in plain Python ints and floats.

Written from the rules documented in safe_ctrl_ros/learning/fixed_point.py (module docstring), not
from its code, and calling none of it, so a test can pin `QuantizedMLP.forward_int` bit for bit:

- input: in_gain * [x; u] / a_scale[0], rounded to nearest (ties to even), saturated to [-127, 127];
- per layer, acc_scale = w_scale * a_scale: the bias b * b_scale / acc_scale rounded to nearest
  (ties to even) and saturated to int32; the accumulator sum(w * a) + bias, exact, saturated to int32;
- hidden layers: m = acc_scale / a_scale[next] as m0 / 2^shift (m 2^shift in [2^30, 2^31),
  m0 = round(m 2^shift), ties to even, 2^31 -> 2^30 with shift - 1); y = (acc m0 + 2^(shift-1)) >> shift
  (round half up), saturated to [0, 127] (ReLU);
- the last layer: acc * acc_scale * out_gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _sat(v: int, low: int, high: int) -> int:
    return max(low, min(high, v))


def multiplier(m: float) -> tuple[int, int]:
    """m0, shift with m ~= m0 / 2^shift and m0 in [2^30, 2^31), from m's binary exponent."""
    frac, exp = math.frexp(m)  # m = frac 2^exp, frac in [0.5, 1): m 2^(31 - exp) = frac 2^31
    shift = 31 - exp
    m0 = round(math.ldexp(frac, 31))  # exact scaling by a power of two; Python rounds ties to even
    if m0 == 2**31:
        m0, shift = 2**30, shift - 1
    return m0, shift


def forward(
    weights: Sequence[Sequence[Sequence[int]]],
    biases: Sequence[Sequence[int]],
    w_scale: Sequence[float],
    b_scale: Sequence[float],
    a_scale: Sequence[float],
    in_gain: Sequence[float],
    out_gain: Sequence[float],
    inputs: Sequence[Sequence[float]],
) -> list[list[float]]:
    """Outputs, one row per input row ([x; u]); weights[l][o][i] and biases[l][o] are Python ints."""
    rows = []
    last = len(weights) - 1
    for row in inputs:
        act = [_sat(round(float(v) * float(g) / float(a_scale[0])), -127, 127)
               for v, g in zip(row, in_gain, strict=True)]
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            acc_scale = float(w_scale[layer]) * float(a_scale[layer])
            bias = [_sat(round(int(bi) * float(b_scale[layer]) / acc_scale), INT32_MIN, INT32_MAX) for bi in b]
            acc = [
                _sat(sum(int(wi) * ai for wi, ai in zip(w_row, act, strict=True)) + bias[o], INT32_MIN, INT32_MAX)
                for o, w_row in enumerate(w)
            ]
            if layer == last:
                rows.append([float(a) * acc_scale * float(g) for a, g in zip(acc, out_gain, strict=True)])
                break
            m0, shift = multiplier(acc_scale / float(a_scale[layer + 1]))
            act = [_sat((a * m0 + (1 << (shift - 1))) >> shift, 0, 127) for a in acc]
    return rows


def forward_net(net: object, x: Sequence[Sequence[float]], u: Sequence[Sequence[float]]) -> list[list[float]]:
    """`forward` on a QuantizedMLP's integer tensors and scales (read as plain data only)."""
    weights = [w.tolist() for w in net.w]  # type: ignore[attr-defined]
    biases = [b.tolist() for b in net.b]  # type: ignore[attr-defined]
    spec = net.spec  # type: ignore[attr-defined]
    inputs = [[*map(float, xr), *map(float, ur)] for xr, ur in zip(x, u, strict=True)]
    return forward(weights, biases, list(net.w_scale), list(net.b_scale), list(net.a_scale),  # type: ignore[attr-defined]
                   [float(g) for g in spec.in_gain], [float(g) for g in spec.out_gain], inputs)
