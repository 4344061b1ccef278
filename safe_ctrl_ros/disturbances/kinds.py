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

from safe_ctrl_ros.config_check import array, choice, no_unknown_keys, number, shown
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
    """One number for every dimension, or `dim` numbers; finite, real (not text, not bool)."""
    try:
        arr = array(value, what, 1)
    except ConfigError:
        arr = np.zeros(0)
    if arr.size == 1:
        arr = np.full(dim, arr[0])
    if arr.size != dim:
        raise ConfigError(f"{what}: expected a finite number or {dim} finite numbers, got {shown(value)}")
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
    where: str, spec: dict[str, Any], dim: int, rng: np.random.Generator, dt: float
) -> Signal:
    """The signal of one disturbance's mapping; errors name keys under `where` (e.g. disturbances[1])."""
    spec = dict(spec)
    kind = choice(spec.pop("kind", None), KINDS, f"{where}.kind")
    known = {"name", "target", "enabled", "kind", "start", "duration", "mask", *_OPTIONS[kind]}
    no_unknown_keys(spec, known, f"{where} (kind {kind})")
    start = number(spec.pop("start", 0.0), f"{where}.start", 0.0)
    duration = number(spec.pop("duration", 0.0), f"{where}.duration", 0.0)
    if kind == "impulse" and duration <= 0:
        raise ConfigError(f"{where}.duration: an impulse needs a duration > 0 s, got {duration:g}")
    mask = _per_dim(spec.pop("mask", 1.0), dim, f"{where}.mask")
    options = {}
    for key, default in _OPTIONS[kind].items():
        options[key] = _per_dim(spec.pop(key, default), dim, f"{where}.{key}")
    if kind == "impulse" and not np.all((options["decay_rate"] > 0) & (options["decay_rate"] <= 1)):
        raise ConfigError(f"{where}.decay_rate: expected numbers in (0, 1], got {options['decay_rate'].tolist()}")
    if kind == "uniform" and np.any(options["low"] > options["high"]):
        raise ConfigError(f"{where}.low: expected low <= high in every dimension")
    with np.errstate(over="ignore"):
        span = options["high"] - options["low"] if kind == "uniform" else np.zeros(0)
    if not np.all(np.isfinite(span)):
        raise ConfigError(f"{where}.high: high - low must be a finite number (numpy cannot draw from it)")
    if kind == "white_noise" and np.any(options["std"] < 0):
        raise ConfigError(f"{where}.std: expected numbers >= 0, got {options['std'].tolist()}")
    return Signal(kind, dim, start, duration, mask, options, rng, dt)
