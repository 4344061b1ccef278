"""Plant node: simulates a system and is the graph's clock (I/O around `simulation.PlantLoop`).

Publishes `/clock`, `plant/state` (State, stamped with sim time) and `plant/reference`, subscribes
to `plant/cmd` (Command) and `plant/wrench` (an external force/torque, held until the next one), and
serves `~/reset` and `~/start`. In lockstep mode (default) it advances one control period when
the command stamped with the current state's time arrives; in real-time mode it advances on a
wall-clock timer with the latest command, and measures per step the timer's jitter, the command
latency (state published -> command with the same stamp received) and deadline misses (no answer
before the next step), reported in the episode summary and on `/diagnostics` (every
`diagnostics_period` s and when the level changes). The `model.*` parameters (inertial properties)
can be changed while it runs; they are validated before they take effect.

Everything that decides (when to step, with which command, the watchdog, the episode's draw and
end, the summary) is the ROS-free core in safe_ctrl_ros/simulation/loop.py; this node only wires it
to topics, services, parameters and timers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.msg import Command, Reference, State
from safe_ctrl_ros.parameters.plant import PLANT, build_plant, model_with
from safe_ctrl_ros.ros.convert import ns_to_stamp, stamp_to_ns, state_msg, vector_of
from safe_ctrl_ros.ros.diagnostics import diagnostic_array
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters
from safe_ctrl_ros.ros.qos import CLOCK_QOS, COMMAND_QOS, STATE_QOS, STATUS_QOS
from safe_ctrl_ros.safety.monitor import Level
from safe_ctrl_ros.simulation import LogLevel
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel

FINAL_ACK_TIMEOUT_S = 1.0


class PlantNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("plant", **node_options(node_kwargs))  # type: ignore[arg-type]
        self.done: Future = Future()
        self.values = declare_parameters(self, PLANT)  # parameters/plant.py: names, ranges, defaults
        if self.get_parameter("use_sim_time").value:
            raise ConfigError("the plant is the clock source: it must run with use_sim_time:=false")
        self.summary_file = str(self.values["summary_file"])
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.state_pub = self.create_publisher(State, "plant/state", STATE_QOS)
        self.ref_pub = self.create_publisher(Reference, "plant/reference", COMMAND_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATUS_QOS)
        self.core = build_plant(self.values, self)
        self.sim = self.core.sim
        self.cmd_sub = self.create_subscription(Command, "plant/cmd", self._on_command, COMMAND_QOS)
        self.create_subscription(WrenchStamped, "plant/wrench", self._on_wrench, COMMAND_QOS)
        self.create_service(Trigger, "~/reset", lambda _req, resp: self._answer(resp, *self.core.reset()))
        self.create_service(Trigger, "~/start", lambda _req, resp: self._answer(resp, *self.core.start()))
        self._checked: tuple[dict[str, Any], SymbolicModel] | None = None  # the last model validated
        watch_parameters(self, PLANT, self._apply_parameters)
        self.add_on_set_parameters_callback(self._check_parameters)
        period = self.sim.dt if self.core.mode == "realtime" else min(self.core.config.resend_period, 0.01)
        self.timer = self.create_timer(period, lambda: self.core.tick(time.monotonic()))
        diag = float(self.values["diagnostics_period"])
        self.diag_timer = self.create_timer(diag, self.core.periodic_diagnostics) if diag > 0 else None
        self.get_logger().info(
            f"{self.sim.model.name}: dt={self.sim.dt} s, {self.sim.describe()}, mode={self.core.mode}, "
            f"task={self.core.task.kind}, x0={self.sim.x.tolist()}"
        )

    @staticmethod
    def _answer(resp: Trigger.Response, success: bool, message: str) -> Trigger.Response:
        resp.success, resp.message = success, message
        return resp

    def _on_command(self, msg: Command) -> None:
        self.core.command(stamp_to_ns(msg.header.stamp), vector_of(msg.u), time.monotonic())

    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        w = np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64)
        self.core.wrench(stamp_to_ns(msg.header.stamp), w, time.monotonic())

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """On-set: the model with the new `model.*` values must build (rclpy refuses read-only names)."""
        if any(p.name == "use_sim_time" and p.value for p in params):
            return SetParametersResult(successful=False, reason="the plant is the clock source: use_sim_time is false")
        changed = {p.name: p.value for p in params if p.name.startswith("model.")}
        if changed:
            try:
                self._checked = changed, model_with(self.values, changed)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changed: dict[str, Any]) -> None:
        """Post-set: the validated model takes effect from the next step on."""
        checked = self._checked
        model = checked[1] if checked is not None and checked[0] == changed else model_with(self.values, changed)
        self.values.update(changed)
        self.core.set_model(model, changed)

    # --- PlantOutput: where the core's publications and reports go ------------------------------------
    def clock(self, t_ns: int) -> None:
        self.clock_pub.publish(Clock(clock=ns_to_stamp(t_ns)))

    def state(self, t_ns: int, x: FloatArray) -> None:
        self.state_pub.publish(state_msg(x, t_ns))

    def reference(self, t_ns: int, x_ref: FloatArray, u_ref: FloatArray) -> None:
        ref = Reference(x_ref=x_ref.tolist(), u_ref=u_ref.tolist())
        ref.header.stamp = ns_to_stamp(t_ns)
        self.ref_pub.publish(ref)

    def graph(self) -> tuple[int, int]:
        return self.state_pub.get_subscription_count(), self.cmd_sub.get_publisher_count()

    def log(self, level: LogLevel, message: str) -> None:
        logger = self.get_logger()  # (one call per severity: rclpy keys a logger call by its line)
        if level is LogLevel.ERROR:
            logger.error(message)
        elif level is LogLevel.WARNING:
            logger.warning(message)
        else:
            logger.info(message)

    def diagnostics(self, level: Level, message: str, values: dict[str, str]) -> None:
        self.diag_pub.publish(diagnostic_array(self, "loop timing", level, message, values))

    def finished(self, summary: dict[str, object]) -> None:
        if self.summary_file:
            Path(self.summary_file).write_text(dumps(summary))
        self.timer.cancel()
        if self.diag_timer is not None:
            self.diag_timer.cancel()
        # The process exits next and takes its DDS writers with it: first let every reliable
        # subscriber (a recorder, the monitor) acknowledge the final state's /clock, reference and
        # diagnostics, else the last messages can be lost to a slow reader (bounded wait).
        deadline = time.monotonic() + FINAL_ACK_TIMEOUT_S
        for pub in (self.clock_pub, self.ref_pub, self.diag_pub):
            pub.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))
        self.done.set_result(1 if summary["terminated"] else 0)


NODE_CLASS = PlantNode


def main(args: list[str] | None = None) -> int:
    return run_node(PlantNode, "plant", args)


if __name__ == "__main__":
    raise SystemExit(main())
