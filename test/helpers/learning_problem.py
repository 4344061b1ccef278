"""A small learning problem shared by the trainer tests: a 4-state, 1-input residual MLP and a smooth
target it can learn."""

from __future__ import annotations

import numpy as np

from safe_ctrl_ros.control import ResidualSpec
from safe_ctrl_ros.learning import Batch, QuantizedMLP

SPEC = ResidualSpec(4, 1, hidden=(16, 16), activation="relu")


def problem(seed: int = 0, n: int = 400) -> tuple[Batch, QuantizedMLP, np.ndarray]:
    """A smooth target the MLP can learn: y = A tanh(B [x; u])."""
    rng = np.random.default_rng(seed)
    x, u = rng.normal(size=(n, 4)), rng.normal(size=(n, 1))
    a, b = rng.normal(size=(4, 3)) * 0.5, rng.normal(size=(3, 5))
    target = np.tanh(np.hstack([x, u]) @ b.T) @ a.T
    theta = np.random.default_rng(seed + 1).normal(0, 0.2, SPEC.num_params)
    q = QuantizedMLP.from_float(SPEC, SPEC.unpack(theta), np.hstack([x, u]))
    return Batch(x, u, target), q, target.std(axis=0)
