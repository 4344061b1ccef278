"""Echo every custom message type: `in/<Type>` is republished on `out/<Type>` (test helper process)."""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from safe_ctrl_ros import msg as interfaces

QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def message_types() -> dict[str, type]:
    return {
        name: getattr(interfaces, name)
        for name in dir(interfaces)
        if not name.startswith("_") and hasattr(getattr(interfaces, name), "get_fields_and_field_types")
    }


class Echo(Node):
    def __init__(self) -> None:
        super().__init__("echo")
        self.pubs = {}
        self.subs = []
        for name, cls in message_types().items():
            pub = self.create_publisher(cls, f"out/{name}", QOS)
            self.pubs[name] = pub
            self.subs.append(self.create_subscription(cls, f"in/{name}", pub.publish, QOS))
        print("echo ready:", sorted(self.pubs), flush=True)


def main() -> int:
    rclpy.init(args=sys.argv)
    node = Echo()
    try:
        while rclpy.ok():  # a bounded wait: SIGTERM is noticed even if the executor's wake-up is missed
            rclpy.spin_once(node, timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
