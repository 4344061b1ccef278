"""A scripted controller for plant tests: answers each state with a fixed command (lockstep)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rclpy.node import Node

from safe_ctrl_ros.msg import Command, Reference, State
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns
from safe_ctrl_ros.ros.qos import COMMAND_QOS, STATE_QOS


class AnsweringController(Node):
    def __init__(self, namespace: str, command: Callable[[int, np.ndarray], np.ndarray], **kwargs: object) -> None:
        super().__init__("answering_controller", namespace=namespace, **kwargs)  # type: ignore[arg-type]
        self.command = command
        self.states: list[tuple[int, np.ndarray]] = []
        self.references: list[tuple[int, np.ndarray]] = []
        self.pub = self.create_publisher(Command, "plant/cmd", COMMAND_QOS)
        self.create_subscription(State, "plant/state", self._on_state, STATE_QOS)
        self.create_subscription(Reference, "plant/reference", self._on_reference, COMMAND_QOS)

    def _on_reference(self, msg: Reference) -> None:
        self.references.append((stamp_to_ns(msg.header.stamp), np.array(msg.x_ref)))

    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        x = np.array(msg.x)
        if not self.states or self.states[-1][0] != stamp:
            self.states.append((stamp, x))
        self.pub.publish(command_msg(self.command(len(self.states), x), stamp))
