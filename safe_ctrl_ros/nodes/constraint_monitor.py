"""Constraint monitor node: evaluates the constraints on every state, reports, and reacts.

Subscribes `state` and `cmd` (launch files remap them to the plant's true `plant/state` and applied
`plant/cmd`, so safety is measured on what really happened). Publishes `~/status`
(ConstraintStatus, one per state), `/diagnostics` (OK / WARN almost active / ERROR violated or
non-finite / STALE) and `safety/request` (latched; fallback + freeze while violated or stale).
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node
from std_srvs.srv import Trigger

from safe_ctrl_ros.msg import Command, ConstraintStatus, SafetyRequest, State
from safe_ctrl_ros.parameters.monitor import CONSTRAINT_MONITOR, build_monitor
from safe_ctrl_ros.ros.convert import ns_to_stamp, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.diagnostics import diagnostic_array
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS, STEP_STATUS_QOS
from safe_ctrl_ros.safety.monitor import Level


class ConstraintMonitorNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("constraint_monitor", **node_options(node_kwargs))
        values = declare_parameters(self, CONSTRAINT_MONITOR)  # parameters/monitor.py
        self.stale_timeout = float(values["stale_timeout"])
        self.react = bool(values["reaction.enabled"])
        self.core = build_monitor(values)
        self.status_pub = self.create_publisher(ConstraintStatus, "~/status", STEP_STATUS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATUS_QOS)
        self.request_pub = self.create_publisher(SafetyRequest, "safety/request", LATCHED_QOS)
        self.create_subscription(State, "state", self._on_state, STATE_QOS)
        self.create_subscription(Command, "cmd", lambda m: self.core.command(vector_of(m.u)), COMMAND_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.last_state_wall = time.monotonic()
        self.stream_started = False
        self.level, self.message = Level.OK, "waiting for the first state"
        self._published_request: tuple[bool, str] | None = None
        self._last_stamp_ns = 0
        self._last_status: ConstraintStatus | None = None
        # Wall-clock timers: a stalled or dead plant also stops the sim clock, and that is exactly
        # when the stale check must fire.
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(values["diagnostics_period"]), self._publish_diagnostics, clock=wall)
        self.create_timer(min(0.1, self.stale_timeout / 2), self._check_stale, clock=wall)
        self._publish_request()
        watch_parameters(self, CONSTRAINT_MONITOR, self._apply_parameters)
        constraints = self.core.constraints
        self.get_logger().info(
            f"{len(constraints.constraints)} constraint(s), {len(constraints.row_names)} row(s) "
            f"from '{values['constraints_file'] or '-'}'"
        )

    def _apply_parameters(self, changed: dict[str, Any]) -> None:
        if "reaction.enabled" in changed:
            self.react = bool(changed["reaction.enabled"])
            self.get_logger().info(f"safety requests {'enabled' if self.react else 'disabled'}")
            self._publish_request()

    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.last_state_wall = time.monotonic()  # a re-sent state too: the stream is alive
        self.stream_started = True
        step = self.core.state(stamp, vector_of(msg.x))
        if step is None:
            if self._last_status is not None and stamp == self._last_stamp_ns:
                self.status_pub.publish(self._last_status)  # a re-sent state: repeat the verdict
            return  # (an out-of-order state is ignored)
        self._last_stamp_ns = stamp
        st = self.core.stats
        status = ConstraintStatus(
            names=self.core.constraints.row_names,
            values=step.evaluation.values.tolist(),
            margins=step.evaluation.margins.tolist(),
            violated=[bool(v) for v in step.evaluation.violated],
            almost_active=[bool(v) for v in step.evaluation.almost_active],
            level=int(step.level),
            message=step.message,
            steps=st.steps,
            violation_steps=st.violation_steps,
            failed=st.failed,
            worst_margin=st.worst_margin if st.worst_margin != float("inf") else 0.0,
            first_violation_time=-1.0 if st.first_violation_time is None else st.first_violation_time,
            safety_request=self.core.request.active and self.react,
            safety_reason=self.core.request.reason if self.react else "",
        )
        status.header = msg.header
        self.status_pub.publish(status)
        self._last_status = status
        changed = step.level != self.level
        self.level, self.message = step.level, step.message
        if changed:
            self._publish_diagnostics()
            if step.level == Level.ERROR:
                self.get_logger().warning(f"t={step.t:.3f} s: {step.message}", throttle_duration_sec=1.0)
        self._publish_request()

    def _check_stale(self) -> None:
        if not self.stream_started:
            return  # the stream has not started (a plant waiting for ~/start): nothing is stale yet
        silent = time.monotonic() - self.last_state_wall
        if silent > self.stale_timeout and self.level != Level.STALE:
            self.core.stale(silent)
            self.level, self.message = Level.STALE, f"no state for {silent:.2f} s"
            self.get_logger().error(f"state stream stale: {self.message}")
            self._publish_diagnostics()
            self._publish_request()

    def _publish_request(self) -> None:
        req = self.core.request
        key = (req.active and self.react, req.reason)
        if key == self._published_request:
            return
        self._published_request = key
        msg = SafetyRequest(fallback=key[0], freeze_adapter=key[0], reason=req.reason if self.react else "")
        msg.header.stamp = ns_to_stamp(self._last_stamp_ns)
        self.request_pub.publish(msg)
        if key[0]:
            self.get_logger().warning(f"safety request: fallback + freeze ({req.reason})")
        elif req.reason:
            self.get_logger().info(f"safety request cleared ({req.reason})")

    def _publish_diagnostics(self) -> None:
        st = self.core.stats
        values = {
            "steps": str(st.steps),
            "violation_steps": str(st.violation_steps),
            "failed": str(st.failed),
            "worst_margin": f"{st.worst_margin:.6g}",
            "first_violation_time": "none" if st.first_violation_time is None else f"{st.first_violation_time:.3f}",
        }
        self.diag_pub.publish(diagnostic_array(self, "constraints", self.level, self.message, values))

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.core.reset()
        self.level, self.message = Level.OK, "episode statistics reset"
        self._publish_request()
        resp.success, resp.message = True, "episode statistics reset"
        return resp


NODE_CLASS = ConstraintMonitorNode


def main(args: list[str] | None = None) -> int:
    return run_node(ConstraintMonitorNode, "constraint_monitor", args)


if __name__ == "__main__":
    raise SystemExit(main())
