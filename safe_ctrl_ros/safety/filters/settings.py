"""One builder for every user of the filters (the node, the benchmark): flat settings -> a filter.

The settings are the safety_filter node's parameters (docs/SAFETY.md): `filter` (none | cbf | mpsc),
`dt`, `substeps`, `disturbance_bound` (6 values, N and N m per wrench component), `model_error`
(nx values, or empty for 0), `cbf.*` and `mpsc.*` (the fields of CbfConfig and MpscConfig).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.safety.constraints import ConstraintSet
from safe_ctrl_ros.safety.filters import (
    FILTERS,
    CbfConfig,
    CbfFilter,
    Margins,
    MpscConfig,
    MpscFilter,
    PassThrough,
    SafetyFilter,
)
from safe_ctrl_ros.systems.base import WRENCH_SIZE, SymbolicModel
from safe_ctrl_ros.tasks import Task

DEFAULTS: dict[str, Any] = {
    "filter": "none",
    "dt": 0.02,
    "substeps": 1,
    "disturbance_bound": [0.0] * WRENCH_SIZE,
    "model_error": [],
    **{f"cbf.{f.name}": getattr(CbfConfig(), f.name) for f in fields(CbfConfig)},
    **{f"mpsc.{f.name}": getattr(MpscConfig(), f.name) for f in fields(MpscConfig)},
}


def _config(cls: Any, prefix: str, values: Mapping[str, Any]) -> Any:
    kw = {f.name: values.get(f"{prefix}.{f.name}", DEFAULTS[f"{prefix}.{f.name}"]) for f in fields(cls)}
    return cls(**kw)


def build_filter(values: Mapping[str, Any], model: SymbolicModel, constraints: ConstraintSet,
                 residual: ResidualSpec | None = None, task: Task | None = None) -> SafetyFilter:
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"safety filter settings: unknown name(s) {unknown}; known: {sorted(DEFAULTS)}")
    v = {**DEFAULTS, **values}
    kind = v["filter"]
    if kind not in FILTERS:
        raise ConfigError(f"safety filter 'filter' must be one of {FILTERS}, got '{kind}'")
    if kind == "none":
        return PassThrough()
    margins = Margins(np.asarray(v["model_error"], dtype=np.float64).reshape(-1),
                      np.asarray(v["disturbance_bound"], dtype=np.float64).reshape(-1))
    dt, substeps = float(v["dt"]), int(v["substeps"])
    if kind == "cbf":
        return CbfFilter(model, dt, constraints, _config(CbfConfig, "cbf", v), margins, residual, substeps)
    return MpscFilter(model, dt, constraints, _config(MpscConfig, "mpsc", v), margins, residual, substeps, task)
