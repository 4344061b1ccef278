"""Controller node: answers each state on `state` with a command on `cmd` (same stamp).

The controller's model is configured independently of the plant's (`system`, `model.*`), so a
model mismatch is a parameter change. `controller` selects the law (LQR for now).
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node

from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.msg import Command, State
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare, float_list, reject_unknown_overrides
from safe_ctrl_ros.ros.qos import COMMAND_QOS, STATE_QOS
from safe_ctrl_ros.ros.system_params import declare_model

CONTROLLERS = ("lqr",)
DISCRETIZATIONS = ("exact", "euler")


class ControllerNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("controller", **node_kwargs)  # type: ignore[arg-type]
        model = declare_model(self)
        kind = str(declare(self, "controller", "lqr", f"control law, one of {CONTROLLERS}"))
        dt = float(declare(self, "dt", 0.02, "control period in seconds"))
        goal = float_list(declare(self, "goal", [], "goal state; empty = the model's equilibrium"), "goal")
        q = float_list(declare(self, "lqr.Q", [1.0], "LQR state weight: diagonal (nx) or one value"), "lqr.Q")
        r = float_list(declare(self, "lqr.R", [0.1], "LQR input weight: diagonal (nu) or one value"), "lqr.R")
        disc = str(declare(self, "lqr.discretization", "exact", f"one of {DISCRETIZATIONS}"))
        reject_unknown_overrides(self)
        if kind not in CONTROLLERS:
            raise ConfigError(f"parameter 'controller': expected one of {CONTROLLERS}, got '{kind}'")
        if disc not in DISCRETIZATIONS:
            raise ConfigError(f"parameter 'lqr.discretization': expected one of {DISCRETIZATIONS}, got '{disc}'")
        self.model = model
        self.law = LqrController(
            model,
            Q=q[0] if len(q) == 1 else q,
            R=r[0] if len(r) == 1 else r,
            dt=dt,
            discretization=disc,  # type: ignore[arg-type]
            x_goal=goal or None,
        )
        self.cmd_pub = self.create_publisher(Command, "cmd", COMMAND_QOS)
        self.state_sub = self.create_subscription(State, "state", self._on_state, STATE_QOS)
        self._last: tuple[int, Command] | None = None
        self.get_logger().info(f"{kind} on {model.name}: K={np.array2string(self.law.K, precision=3)}")

    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if self._last is not None and self._last[0] == stamp:
            # The plant re-sent a state we already answered: answer with the same command.
            self.cmd_pub.publish(self._last[1])
            return
        x = vector_of(msg.x)
        if x.size != self.model.nx or not np.all(np.isfinite(x)):
            self.get_logger().error(
                f"ignoring state {list(msg.x)}: expected {self.model.nx} finite values", throttle_duration_sec=1.0
            )
            return
        cmd = command_msg(self.law(x), stamp)
        cmd.header.frame_id = msg.header.frame_id
        self.cmd_pub.publish(cmd)
        self._last = (stamp, cmd)


NODE_CLASS = ControllerNode


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, "controller", args)


if __name__ == "__main__":
    raise SystemExit(main())
