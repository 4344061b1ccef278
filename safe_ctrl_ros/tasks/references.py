"""Reference trajectories as in safe-control-gym: circle, figure-8 and square in a plane.

A trajectory of period T = length / num_cycles (omega = 2 pi / T) and scale s is defined in the
plane's coordinates (a, b), e.g. plane "xz": a = x, b = z:
- circle:   a = s cos(wt),  b = s sin(wt)
- figure8:  a = s sin(wt),  b = s sin(wt) cos(wt)
- square:   four straight edges of length s at constant speed, starting at (0, 0) going +b.
The offset (two numbers) is added to (a, b); velocities are the exact time derivatives.
Positions and velocities are 3-vectors [x, y, z] (the axis outside the plane is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems import base
from safe_ctrl_ros.systems.base import FloatArray

KINDS = ("circle", "figure8", "square")
AXES = {a: i for i, a in enumerate(base.AXES)}  # "x": 0, "y": 1, "z": 2
MIN_PERIOD = 1e-3  # s: one trajectory cycle; shorter is no reference a controller could follow


@dataclass(frozen=True)
class Trajectory:
    kind: str
    scale: float = 1.0
    length: float = 10.0  # s: the episode length the trajectory is laid over
    num_cycles: int = 1
    plane: str = "xz"
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"trajectory kind '{self.kind}' is not one of {KINDS}")
        if len(self.plane) != 2 or self.plane[0] == self.plane[1] or any(c not in AXES for c in self.plane):
            raise ConfigError(f"trajectory plane must be two different letters of 'xyz', got '{self.plane}'")
        if not (math.isfinite(self.length) and self.length > 0):
            raise ConfigError(f"trajectory length must be positive, got {self.length}")
        if self.num_cycles < 1:
            raise ConfigError(f"trajectory num_cycles must be >= 1, got {self.num_cycles}")
        if not self.length / self.num_cycles >= MIN_PERIOD:  # else 2 pi / period overflows or divides by 0
            raise ConfigError(f"trajectory period length / num_cycles must be >= {MIN_PERIOD} s, "
                              f"got {self.length:g} / {self.num_cycles}")
        if not math.isfinite(self.scale):
            raise ConfigError(f"trajectory scale must be finite, got {self.scale}")
        if len(self.offset) != 2 or not all(math.isfinite(v) for v in self.offset):
            raise ConfigError(f"trajectory offset must be two finite numbers, got {self.offset}")

    @property
    def period(self) -> float:
        return self.length / self.num_cycles

    def planar(self, t: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """(a, b, a_dot, b_dot) at times t (any shape), without the offset."""
        tt = np.asarray(t, dtype=np.float64)
        s, w = self.scale, 2.0 * math.pi / self.period
        if self.kind == "circle":
            return s * np.cos(w * tt), s * np.sin(w * tt), -s * w * np.sin(w * tt), s * w * np.cos(w * tt)
        if self.kind == "figure8":
            sin, cos = np.sin(w * tt), np.cos(w * tt)
            return s * sin, s * sin * cos, s * w * cos, s * w * (cos**2 - sin**2)
        edge_t = self.period / 4.0
        v = s / edge_t
        tau = np.mod(tt, self.period)
        edge = np.minimum(np.floor(tau / edge_t), 3).astype(int)
        prog = v * (tau - edge * edge_t)
        a = np.select([edge == 0, edge == 1, edge == 2], [0.0 * prog, -prog, -s + 0.0 * prog], -s + prog)
        b = np.select([edge == 0, edge == 1, edge == 2], [prog, s + 0.0 * prog, s - prog], 0.0 * prog)
        a_dot = np.select([edge == 0, edge == 1, edge == 2], [0.0, -v, 0.0], v) * np.ones_like(tt)
        b_dot = np.select([edge == 0, edge == 1, edge == 2], [v, 0.0, -v], 0.0) * np.ones_like(tt)
        return a, b, a_dot, b_dot

    def sample(self, t: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Positions and velocities, arrays of shape (len(t), 3) in [x, y, z]."""
        tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
        a, b, a_dot, b_dot = self.planar(tt)
        pos = np.zeros((tt.size, 3))
        vel = np.zeros((tt.size, 3))
        ia, ib = AXES[self.plane[0]], AXES[self.plane[1]]
        pos[:, ia], pos[:, ib] = a + self.offset[0], b + self.offset[1]
        vel[:, ia], vel[:, ib] = a_dot, b_dot
        return pos, vel
