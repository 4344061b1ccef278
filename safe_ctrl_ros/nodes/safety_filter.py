"""Safety filter node: certifies every command before it reaches the plant.

Subscribes `state` and `cmd_proposed` (the controller's command; launch files remap the controller's
`cmd` to it) and `adapter/model` (the learned residual, as the controller gets it). For each proposed
command it looks up the state with the same stamp, filters (safe_ctrl_ros.safety.filters: none |
cbf | mpsc) and publishes the certified command on `cmd` with that same stamp, so in lockstep the
filter is one more hop of the loop and runs stay reproducible. A re-sent proposal (the plant re-sent
its state, the controller repeated its answer) gets the same certified command again, without a new
filter step. A command whose state has not arrived yet waits for it. Publishes `~/status`
(SafetyFilterStatus, one per certified command) and `/diagnostics` (OK; WARN while intervening; ERROR
when the last step could not be certified). If this node dies, the plant's command watchdog applies
its safe command.

With `adapter.sync` (the launch files set it where an adapter runs) the filter follows the adapter's
round schedule as the controller does (safe_ctrl_ros.learning.model_schedule): in lockstep a round's
model is swapped in exactly at its due state, and a proposal at or past a due waits for that round's
status and model, so a lockstep run with the adapter and a filter that predicts with the residual is
reproducible; without it (or in realtime) an update applies when it arrives.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node

from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_schedule import Changes, ModelSchedule
from safe_ctrl_ros.learning.rounds import ACCEPTED, ROLLED_BACK
from safe_ctrl_ros.msg import AdapterStatus, Command, ModelUpdate, SafetyFilterStatus, State
from safe_ctrl_ros.parameters.safety_filter import SAFETY_FILTER, build_safety_filter
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.diagnostics import diagnostic_array
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS, STEP_STATUS_QOS, with_depth
from safe_ctrl_ros.safety.filters import FilterReport
from safe_ctrl_ros.safety.monitor import Level

KEEP = 64  # states (and waiting commands) kept by stamp


class SafetyFilterNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("safety_filter", **node_options(node_kwargs))
        values = declare_parameters(self, SAFETY_FILTER)  # parameters/safety_filter.py
        group = MutuallyExclusiveCallbackGroup()  # model swaps never interleave with a filter step
        self.cmd_pub = self.create_publisher(Command, "cmd", COMMAND_QOS)
        self.status_pub = self.create_publisher(SafetyFilterStatus, "~/status", STEP_STATUS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATUS_QOS)
        self.create_subscription(State, "state", self._on_state, STATE_QOS, callback_group=group)
        self.create_subscription(Command, "cmd_proposed", self._on_proposed, COMMAND_QOS, callback_group=group)
        self.create_subscription(ModelUpdate, "adapter/model", self._on_model, LATCHED_QOS, callback_group=group)
        self.schedule: ModelSchedule[ModelUpdate] = ModelSchedule(bool(values["adapter.sync"]))
        self.sync_timeout = float(values["adapter.sync_timeout"])
        if self.schedule.sync:
            self.create_subscription(AdapterStatus, "adapter/status", self._on_adapter_status,
                                     with_depth(LATCHED_QOS, 100), callback_group=group)
        self.filter, self.residual, _ = build_safety_filter(values)
        self.kind = str(values["filter"])
        self.states: OrderedDict[int, np.ndarray] = OrderedDict()
        self.waiting: OrderedDict[int, Command] = OrderedDict()  # proposals whose state has not come
        self.held: OrderedDict[int, tuple[Command, float]] = OrderedDict()  # proposals waiting for the adapter
        self._warned_at = 0.0
        self._last: tuple[int, Command, SafetyFilterStatus] | None = None
        self.model_version = 0
        self.rejected_models = 0
        self.out_of_order = 0
        self.level, self.message = Level.OK, "waiting for the first command"
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(float(values["diagnostics_period"]), self._publish_diagnostics, clock=wall)
        if self.schedule.sync:  # wall clock: the sim clock waits for this very answer
            self.create_timer(0.05, self._check_sync, callback_group=group, clock=wall)
        self.get_logger().info(f"filter '{self.kind}' on '{values['constraints_file'] or '-'}'"
                               f"{', residual from ' + values['model_file'] if values['model_file'] else ''}")

    def _on_model(self, msg: ModelUpdate) -> None:
        self._carry_out(self.schedule.on_update(int(msg.round), msg))

    def _on_adapter_status(self, msg: AdapterStatus) -> None:
        self._carry_out(self.schedule.on_status(int(msg.round), bool(msg.lockstep),
                                                msg.outcome in (ACCEPTED, ROLLED_BACK),
                                                stamp_to_ns(msg.due), stamp_to_ns(msg.next_due)))

    def _carry_out(self, changes: Changes[ModelUpdate]) -> None:
        # Two call sites: rclpy refuses one call site logging at two severities.
        if changes.event and changes.error:
            self.get_logger().error(changes.event)
        elif changes.event:
            self.get_logger().info(changes.event)
        for update in changes.apply:
            self._apply_model(update)
        self._release()

    def _check_sync(self) -> None:
        """A proposal held too long for the adapter: going on without it is an error (the run is no
        longer reproducible), except while no schedule was announced (then only a warning)."""
        if not self.held:
            return
        stamp, (_, since) = next(iter(self.held.items()))
        waiting = self.schedule.waiting_for(stamp)
        now = time.monotonic()
        if waiting == "announcement":
            if now - max(since, self._warned_at) > self.sync_timeout:
                self._warned_at = now
                self.get_logger().warning(f"holding the command for t={stamp * 1e-9:.3f} s: the adapter has not "
                                          "announced its rounds (adapter.sync: is an adapter running?)")
        elif waiting and now - since > self.sync_timeout:
            self._carry_out(self.schedule.give_up(
                f"lockstep: no {waiting} within {self.sync_timeout} s (adapter.sync_timeout) at "
                f"t={stamp * 1e-9:.3f} s: going on without waiting for the adapter; this run is not reproducible"))

    def _apply_model(self, msg: ModelUpdate) -> None:
        if self.residual is None:
            self.rejected_models += 1
            self.get_logger().warning("model update ignored: this filter has no residual (model_file is empty)",
                                      throttle_duration_sec=5.0)
            return
        try:
            theta = dequantize(self.residual, msg.layer_sizes, msg.activation, msg.weights, msg.scales)
            if self.kind != "none":
                self.filter.set_residual_weights(theta)
        except ConfigError as exc:
            self.rejected_models += 1
            self.get_logger().error(f"model update {msg.version} rejected: {exc}")
            return
        self.model_version = int(msg.version)

    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.states[stamp] = vector_of(msg.x)
        while len(self.states) > KEEP:
            self.states.popitem(last=False)
        cmd = self.waiting.pop(stamp, None)
        if cmd is not None:
            self._offer(stamp, cmd)

    def _on_proposed(self, msg: Command) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if self._last is not None and self._last[0] == stamp:
            self.cmd_pub.publish(self._last[1])  # a re-send: the same certified command, no new step
            self.status_pub.publish(self._last[2])
            return
        if self._last is not None and stamp < self._last[0]:
            self.out_of_order += 1
            self.get_logger().warning(f"dropped a command stamped {stamp * 1e-9:.3f} s, older than the last "
                                      f"certified; {self.out_of_order} so far", throttle_duration_sec=1.0)
            return
        if stamp in self.held:
            return  # a re-send of a proposal already held for the adapter
        if stamp not in self.states:
            self.waiting[stamp] = msg  # certified when its state arrives
            while len(self.waiting) > KEEP:
                self.waiting.popitem(last=False)
            return
        self._offer(stamp, msg)

    def _offer(self, stamp: int, msg: Command) -> None:
        """Certify now, or hold the proposal until the adapter's schedule says which model is in force."""
        if self.held or self.schedule.waiting_for(stamp):
            self.held[stamp] = (msg, time.monotonic())
            return
        self._certify(stamp, msg)

    def _release(self) -> None:
        """Certify the held proposals, in stamp order, as far as nothing waits."""
        while self.held:
            stamp = next(iter(self.held))
            if self.schedule.waiting_for(stamp):
                return
            msg, _ = self.held.pop(stamp)
            self._certify(stamp, msg)

    def _certify(self, stamp: int, msg: Command) -> None:
        for update in self.schedule.due(stamp):  # lockstep: the models in force from this state on
            self._apply_model(update)
        x = self.states[stamp]
        u_safe, rep = self.filter.filter(x, vector_of(msg.u), stamp * 1e-9)
        cmd = command_msg(u_safe, stamp, msg.header.frame_id)
        self.cmd_pub.publish(cmd)
        status = self._status(rep)
        status.header = msg.header
        self.status_pub.publish(status)
        self._last = (stamp, cmd, status)
        level = Level.ERROR if rep.infeasible else (Level.WARN if rep.intervened else Level.OK)
        message = rep.fallback if rep.infeasible else ("intervening" if rep.intervened else "commands certified")
        if rep.infeasible:
            self.get_logger().warning(f"t={stamp * 1e-9:.3f} s: not certified: {rep.fallback}",
                                      throttle_duration_sec=1.0)
        changed = level != self.level
        self.level, self.message = level, message
        if changed:
            self._publish_diagnostics()

    def _status(self, rep: FilterReport) -> SafetyFilterStatus:
        return SafetyFilterStatus(
            filter=rep.filter, intervened=rep.intervened, intervention=rep.intervention,
            u_proposed=rep.u_proposed.tolist(), u_safe=rep.u_safe.tolist(), active_constraints=rep.active,
            max_slack=rep.max_slack, infeasible=rep.infeasible, fallback=rep.fallback,
            solve_time_ms=rep.solve_time_s * 1e3, model_version=self.model_version,
            interventions_total=self.filter.interventions, infeasible_total=self.filter.infeasible_steps,
            sync_breaks_total=self.schedule.breaks,
        )

    def _publish_diagnostics(self) -> None:
        f = self.filter
        values = {"filter": self.kind, "steps": str(f.steps), "interventions": str(f.interventions),
                  "infeasible_steps": str(f.infeasible_steps), "model_version": str(self.model_version),
                  "rejected_models": str(self.rejected_models), "out_of_order": str(self.out_of_order)}
        self.diag_pub.publish(diagnostic_array(self, "safety_filter", self.level, self.message, values))


NODE_CLASS = SafetyFilterNode


def main(args: list[str] | None = None) -> int:
    return run_node(SafetyFilterNode, "safety_filter", args)


if __name__ == "__main__":
    raise SystemExit(main())
