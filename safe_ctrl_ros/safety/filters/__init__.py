"""Safety filters: certify every command before it reaches the plant (docs/SAFETY.md).

`filter(x, u_proposed, t) -> (u_safe, report)` for each of
- `PassThrough` ("none"): the command as proposed, reported;
- `CbfFilter` ("cbf"): a CBF-QP with high-order barriers for relative-degree-two constraints;
- `MpscFilter` ("mpsc"): model predictive safety certification with a backup plan and fallback.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.safety.filters.base import FILTERS, FilterReport, Margins, make_report
from safe_ctrl_ros.safety.filters.cbf import CbfConfig, CbfFilter
from safe_ctrl_ros.safety.filters.mpsc import MpscConfig, MpscFilter
from safe_ctrl_ros.systems.base import FloatArray


class SafetyFilter(Protocol):
    name: str
    steps: int
    interventions: int
    infeasible_steps: int

    def filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]: ...

    def reset(self) -> None: ...

    def set_residual_weights(self, theta: ArrayLike) -> None: ...


class PassThrough:
    """No filter: u_safe = u_proposed, with the same report (never intervenes)."""

    name = "none"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = self.interventions = self.infeasible_steps = 0

    def set_residual_weights(self, theta: ArrayLike) -> None:
        del theta

    def filter(self, x: ArrayLike, u_proposed: ArrayLike, t: float) -> tuple[FloatArray, FilterReport]:
        start = time.perf_counter()
        self.steps += 1
        u = np.asarray(u_proposed, dtype=np.float64).reshape(-1).copy()
        return u, make_report(self.name, u, u, [], 0.0, False, "", time.perf_counter() - start)


__all__ = ["FILTERS", "CbfConfig", "CbfFilter", "FilterReport", "Margins", "MpscConfig", "MpscFilter",
           "PassThrough", "SafetyFilter"]
