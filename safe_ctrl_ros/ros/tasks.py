"""Declare a task (`task.*` parameters) on a node and build it with the core's `make_task`."""

from __future__ import annotations

from rclpy.node import Node

from safe_ctrl_ros.ros.params import declare, float_list
from safe_ctrl_ros.systems.base import SymbolicModel
from safe_ctrl_ros.tasks import Task, make_task


def declare_task(node: Node, model: SymbolicModel) -> Task:
    kind = str(declare(node, "task.kind", "stabilization", "stabilization | circle | figure8 | square"))
    goal = float_list(declare(node, "task.goal", [], "stabilization goal; empty = equilibrium"), "task.goal")
    scale = float(declare(node, "task.scale", 1.0, "tracking: trajectory scale in m"))
    length = float(declare(node, "task.length", 10.0, "tracking: time over which num_cycles are flown, s"))
    cycles = int(declare(node, "task.num_cycles", 1, "tracking: cycles within task.length"))
    plane = str(declare(node, "task.plane", "xz", "tracking: the plane, two of x, y, z"))
    offset = float_list(
        declare(node, "task.offset", [0.0, 0.0], "tracking: offset added in the plane, m"), "task.offset"
    )
    spec: dict[str, object] = {"kind": kind, "goal": goal}
    if kind != "stabilization":
        spec.update(scale=scale, length=length, num_cycles=cycles, plane=plane, offset=offset)
    return make_task(model, spec)
