"""Disturbance signals (safe-control-gym's kinds), as functions of time with their own generator.

Every signal is additive and masked per dimension; time t is in seconds since the scenario start.
- impulse:     magnitude * decay_rate^(|t - t_peak| / dt) while |t - t_peak| < duration / 2,
               t_peak = start + duration / 2 (decay_rate 1: a square pulse; < 1: a peak)
- step:        magnitude from start (until start + duration when duration > 0)
- uniform:     U(low, high) per dimension, drawn at each sample
- white_noise: N(0, std) per dimension, drawn at each sample
- periodic:    scale * sin(2 pi frequency t + phase), one seeded phase per dimension drawn once
               (safe-control-gym re-draws it at every call, which makes it noise, not periodic)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.systems.base import FloatArray

KINDS = ("impulse", "step", "uniform", "white_noise", "periodic")

_OPTIONS: dict[str, dict[str, Any]] = {
    "impulse": {"magnitude": 1.0, "decay_rate": 1.0},
    "step": {"magnitude": 1.0},
    "uniform": {"low": 0.0, "high": 1.0},
    "white_noise": {"std": 1.0},
    "periodic": {"scale": 1.0, "frequency": 1.0},
}


def _per_dim(value: Any, dim: int, what: str) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected a number or {dim} numbers, got {value!r}") from exc
    if arr.size == 1:
        arr = np.full(dim, arr[0])
    if arr.size != dim or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}: expected a finite number or {dim} finite numbers, got {value!r}")
    return arr


@dataclass
class Signal:
    """One disturbance signal of dimension `dim` active on [start, start + duration)."""

    kind: str
    dim: int
    start: float
    duration: float  # s; 0 = until the end of the run (impulse: must be > 0)
    mask: FloatArray
    options: dict[str, FloatArray]
    rng: np.random.Generator
    dt: float
    phase: FloatArray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.kind == "periodic":
            self.phase = self.rng.uniform(-math.pi, math.pi, self.dim)

    def active(self, t: float) -> bool:
        end = self.start + self.duration if self.duration > 0 else math.inf
        return self.start - 1e-9 <= t < end - 1e-9

    def value(self, t: float) -> FloatArray:
        """The disturbance at time t (zeros outside its window). Noise kinds draw from the generator
        only while active, so a run's draws depend on nothing but the schedule and the seed."""
        if not self.active(t):
            return np.zeros(self.dim)
        o = self.options
        if self.kind == "impulse":
            peak = self.start + self.duration / 2.0
            steps = abs(t - peak) / self.dt
            out = o["magnitude"] * o["decay_rate"] ** steps
        elif self.kind == "step":
            out = o["magnitude"].copy()
        elif self.kind == "uniform":
            out = self.rng.uniform(o["low"], o["high"])
        elif self.kind == "white_noise":
            out = self.rng.normal(0.0, o["std"])
        else:
            out = o["scale"] * np.sin(2.0 * math.pi * o["frequency"] * t + self.phase)
        result: FloatArray = out * self.mask
        return result


def make_signal(
    name: str, spec: dict[str, Any], dim: int, rng: np.random.Generator, dt: float
) -> Signal:
    spec = dict(spec)
    kind = str(spec.pop("kind", ""))
    where = f"disturbance '{name}'"
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {KINDS}, got '{kind}'")
    start = float(spec.pop("start", 0.0))
    duration = float(spec.pop("duration", 0.0))
    if not (math.isfinite(start) and start >= 0 and math.isfinite(duration) and duration >= 0):
        raise ConfigError(f"{where}: start and duration must be finite and >= 0 s")
    if kind == "impulse" and duration <= 0:
        raise ConfigError(f"{where}: an impulse needs a duration > 0 s")
    mask = _per_dim(spec.pop("mask", 1.0), dim, f"{where}: mask")
    options = {}
    for key, default in _OPTIONS[kind].items():
        options[key] = _per_dim(spec.pop(key, default), dim, f"{where}: {key}")
    if kind == "impulse" and not np.all((options["decay_rate"] > 0) & (options["decay_rate"] <= 1)):
        raise ConfigError(f"{where}: decay_rate must be in (0, 1]")
    if kind == "uniform" and np.any(options["low"] > options["high"]):
        raise ConfigError(f"{where}: low must be <= high")
    if kind == "white_noise" and np.any(options["std"] < 0):
        raise ConfigError(f"{where}: std must be >= 0")
    if spec:
        raise ConfigError(f"{where}: unknown key(s) {sorted(spec)} for kind '{kind}'")
    return Signal(kind, dim, start, duration, mask, options, rng, dt)
