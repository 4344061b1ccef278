"""Declare `system` and its physical parameters (`model.<name>`) on a node and build the model."""

from __future__ import annotations

from rclpy.node import Node

from safe_ctrl_ros import systems
from safe_ctrl_ros.ros.params import declare
from safe_ctrl_ros.systems.base import SymbolicModel


def declare_model(node: Node, default_system: str = "cartpole") -> SymbolicModel:
    """The model named by the `system` parameter, with `model.*` overrides (validated by the core)."""
    name = str(declare(node, "system", default_system, f"one of {', '.join(systems.SYSTEM_NAMES)}"))
    specs = systems.param_specs(name)  # raises UnknownSystemError naming the known systems
    overrides = {
        key: declare(node, f"model.{key}", spec.default, spec.doc) for key, spec in specs.items()
    }
    return systems.make(name, **overrides)
