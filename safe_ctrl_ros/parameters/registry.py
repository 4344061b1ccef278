"""The node specs whose parameter tables docs/ARCHITECTURE.md shows (tools/param_docs.py)."""

from __future__ import annotations

from safe_ctrl_ros.learning.settings import ADAPTER
from safe_ctrl_ros.parameters.controller import CONTROLLER
from safe_ctrl_ros.parameters.injector import DISTURBANCE_INJECTOR
from safe_ctrl_ros.parameters.monitor import CONSTRAINT_MONITOR
from safe_ctrl_ros.parameters.plant import PLANT
from safe_ctrl_ros.parameters.recorder import RECORDER
from safe_ctrl_ros.parameters.safety_filter import SAFETY_FILTER
from safe_ctrl_ros.parameters.spec import NodeSpec

NODE_SPECS: dict[str, NodeSpec] = {
    spec.node: spec for spec in (PLANT, CONTROLLER, SAFETY_FILTER, DISTURBANCE_INJECTOR, CONSTRAINT_MONITOR, ADAPTER,
                                RECORDER)
}
