"""One `/diagnostics` status, assembled the same way by every node that reports its health."""

from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from safe_ctrl_ros.safety.monitor import Level


def diagnostic_array(node: Node, topic: str, level: Level, message: str, values: Mapping[str, str]) -> DiagnosticArray:
    """A DiagnosticArray with one status named "<namespace>/<node>: <topic>", identified by the
    node's fully qualified name, stamped with the node's clock now."""
    status = DiagnosticStatus(
        level=bytes([int(level)]),
        name=f"{node.get_namespace().rstrip('/')}/{node.get_name()}: {topic}",
        message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    return arr
