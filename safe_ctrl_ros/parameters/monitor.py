"""The constraint monitor node's parameters and the ROS-free builder of its monitor core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safe_ctrl_ros.parameters.common import MODEL, SYSTEM, model_of
from safe_ctrl_ros.parameters.spec import NodeSpec, ParamSpec
from safe_ctrl_ros.parameters.spec import ParamType as T
from safe_ctrl_ros.safety import ConstraintSet, load_constraints
from safe_ctrl_ros.safety.monitor import ConstraintMonitor

CONSTRAINT_MONITOR = NodeSpec("constraint_monitor", (
    SYSTEM,
    ParamSpec("constraints_file", T.STRING, "", "constraints YAML (shared with the controller); empty = none"),
    ParamSpec("stale_timeout", T.DOUBLE, 1.0, "wall s without a state before the stream is STALE",
              low=0.0, low_open=True),
    ParamSpec("reaction.enabled", T.BOOL, True, "publish safety requests (fallback + freeze) while violated or stale",
              read_only=False),
    ParamSpec("reaction.clear_after", T.INT, 10, "steps without a violation before a request clears", low=1),
    ParamSpec("diagnostics_period", T.DOUBLE, 1.0, "wall s between /diagnostics", low=0.0, low_open=True),
), families=(MODEL,))


def build_monitor(v: Mapping[str, Any]) -> ConstraintMonitor:
    """The monitor core from the node's parameter values (CONSTRAINT_MONITOR.resolve)."""
    model = model_of(v)
    path = v["constraints_file"]
    constraints = load_constraints(path, model.nx, model.nu) if path else ConstraintSet([])
    return ConstraintMonitor(constraints, model.nx, model.equilibrium()[1], v["reaction.clear_after"])
