"""Controller node: answers each state on `state` with a command on `cmd` (same stamp).

While the constraint monitor's `safety/request` (latched) asks for it, every step uses the fallback.

`controller` selects the primary law (lqr | nmpc). The NMPC may carry a learned residual whose
weights arrive on `adapter/model` and are swapped in between two solves, bumplessly (warm start kept,
blended over `adapter.blend_steps` solves: control/supervisor.py); updates whose shapes do not
match are rejected with a logged reason. With `adapter.sync` the controller answers nothing before
the adapter has announced its rounds (`adapter/status`, round 0); with a lockstep adapter it then
swaps each round's model in exactly at the round's due state, and holds a state at or after the due
of a round whose status (accepted or not) has not come yet (docs/ARCHITECTURE.md, lockstep
sequence); after `adapter.sync_timeout` wall s without it, an error, and updates apply on arrival.
On an unusable state, a solver failure, a non-finite result, a missed deadline or a stale state
(older than `max_state_age` on the node's clock) the node falls back (LQR or a safe command) for
that step and says so on `~/status`, which also carries the NMPC's offset-free disturbance
estimate the command was planned with (`disturbance_estimate`: empty without one, zeros on a
fallback; the adapter removes it from its training targets); a state older than one already
answered is dropped (counted, logged). The controller's model (`system`, `model.*`) is configured
independently of the plant's, so a model mismatch is a parameter change.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node

from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.control.supervisor import StepReport
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_schedule import Changes, ModelSchedule
from safe_ctrl_ros.learning.rounds import ACCEPTED, ROLLED_BACK
from safe_ctrl_ros.msg import (
    AdapterStatus,
    Command,
    ConstraintStatus,
    ControllerStatus,
    ModelUpdate,
    SafetyRequest,
    State,
)
from safe_ctrl_ros.parameters.controller import CONTROLLER, build_controller
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS, STEP_STATUS_QOS, with_depth


class ControllerNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("controller", **node_options(node_kwargs))
        values = declare_parameters(self, CONTROLLER)  # parameters/controller.py: names, ranges, defaults
        self.sync = bool(values["safety.sync_with_monitor"])
        self.sync_timeout = float(values["safety.sync_timeout"])
        self.max_state_age = float(values["max_state_age"])
        # Topics first, the (slow) NMPC build after: the graph sees this node's topics at once;
        # callbacks only run once the node spins, after __init__.
        group = MutuallyExclusiveCallbackGroup()  # model swaps never interleave with a solve
        self.cmd_pub = self.create_publisher(Command, "cmd", COMMAND_QOS)
        self.status_pub = self.create_publisher(ControllerStatus, "~/status", STEP_STATUS_QOS)
        self.state_sub = self.create_subscription(State, "state", self._on_state, STATE_QOS, callback_group=group)
        self.model_sub = self.create_subscription(
            ModelUpdate, "adapter/model", self._on_model, LATCHED_QOS, callback_group=group
        )
        self.safety_reason = ""
        self.safety_sub = self.create_subscription(
            SafetyRequest, "safety/request", self._on_safety, LATCHED_QOS, callback_group=group
        )
        self._last: tuple[int, Command] | None = None
        self.out_of_order = 0
        self._init_sync(values, group)
        built = build_controller(values)
        self.model, self.task, self.law, self.residual = built.model, built.task, built.law, built.residual
        self.model_version = 0
        watch_parameters(self, CONTROLLER, self._apply_parameters)
        detail = f"K={np.array2string(self.law.lqr.K, precision=3)}" if self.law.nmpc is None else (
            f"N={built.horizon}, solver={built.solver}, {len(built.constraints.constraints)} constraint(s), "
            f"residual={'on' if self.residual else 'off'}"
        )
        self.get_logger().info(f"{self.law.kind} on {self.model.name} ({self.task.kind}): {detail}")

    def _init_sync(self, values: dict[str, Any], group: MutuallyExclusiveCallbackGroup) -> None:
        """What a state may wait for before it is answered: the monitor's status of it
        (`safety.sync_with_monitor`) and, in lockstep with the adapter (`adapter.sync`), the result of
        the training round due at it (docs/ARCHITECTURE.md, lockstep sequence)."""
        self._monitor_stamp = -1
        self._pending: tuple[State, float] | None = None  # a state held (monitor, adapter), since (wall s)
        self._unsynced = -1  # a state stamp answered without the monitor's status (sync timeout)
        self.sync_timeouts = 0
        self.adapter_sync = bool(values["adapter.sync"])
        self.adapter_timeout = float(values["adapter.sync_timeout"])
        # the adapter's rounds: where each model update takes effect (learning/model_schedule.py,
        # shared with the safety filter)
        self.schedule: ModelSchedule[ModelUpdate] = ModelSchedule(self.adapter_sync)
        self._warned_at = 0.0
        if self.sync:
            self.create_subscription(
                ConstraintStatus, "constraint_monitor/status", self._on_monitor, STATUS_QOS, callback_group=group
            )
        if self.adapter_sync:
            self.create_subscription(AdapterStatus, "adapter/status", self._on_adapter_status,
                                     with_depth(LATCHED_QOS, 100), callback_group=group)
        if self.sync or self.adapter_sync:
            # wall clock: the sim clock waits for this very answer
            wall = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(0.02, self._check_sync, callback_group=group, clock=wall)

    def _apply_parameters(self, changed: dict[str, Any]) -> None:
        """Run-time changes (validated by the spec and the descriptors) take effect from the next state."""
        self.law.deadline_s = float(changed.get("nmpc.deadline", self.law.deadline_s))
        self.sync_timeout = float(changed.get("safety.sync_timeout", self.sync_timeout))
        self.adapter_timeout = float(changed.get("adapter.sync_timeout", self.adapter_timeout))
        self.max_state_age = float(changed.get("max_state_age", self.max_state_age))
        self.get_logger().info(f"parameters changed: {changed}")

    def _on_safety(self, msg: SafetyRequest) -> None:
        if self.sync:
            return  # the monitor's status stream, in step with the states, decides instead
        self.safety_reason = f"safety request: {msg.reason}" if msg.fallback else ""
        self.get_logger().info(
            f"safety request {'active' if msg.fallback else 'cleared'}: {msg.reason or '-'}"
        )

    def _on_model(self, msg: ModelUpdate) -> None:
        self._carry_out(self.schedule.on_update(int(msg.round), msg))

    def _carry_out(self, changes: Changes[ModelUpdate]) -> None:
        # Two call sites: rclpy refuses one call site logging at two severities.
        if changes.event and changes.error:
            self.get_logger().error(changes.event)
        elif changes.event:
            self.get_logger().info(changes.event)
        for update in changes.apply:
            self._swap_in(update)
        self._try_pending()

    def _swap_in(self, msg: ModelUpdate) -> None:
        if self.law.nmpc is None or self.residual is None:
            self.get_logger().warning(f"model update v{msg.version} rejected: this controller has no residual model")
            return
        try:
            theta = dequantize(self.residual, msg.layer_sizes, msg.activation, msg.weights, msg.scales)
            self.law.set_residual_weights(theta)  # blended over adapter.blend_steps solves, warm start kept
        except ConfigError as exc:
            self.get_logger().error(f"model update v{msg.version} rejected: {exc}")
            return
        self.model_version = int(msg.version)
        self.get_logger().info(f"model v{msg.version} in use (validation loss {msg.validation_loss:.4g})")

    def _on_adapter_status(self, msg: AdapterStatus) -> None:
        self._carry_out(self.schedule.on_status(int(msg.round), bool(msg.lockstep),
                                                msg.outcome in (ACCEPTED, ROLLED_BACK),
                                                stamp_to_ns(msg.due), stamp_to_ns(msg.next_due)))

    def _waiting_for(self, stamp: int) -> str:
        """What the answer to the state at `stamp` waits for ("" = nothing)."""
        if self.sync and stamp > self._monitor_stamp and stamp != self._unsynced:
            return "monitor"
        return self.schedule.waiting_for(stamp)

    def _try_pending(self) -> None:
        if self._pending is not None and not self._waiting_for(stamp_to_ns(self._pending[0].header.stamp)):
            state, self._pending = self._pending[0], None
            self._answer(state)

    def _on_monitor(self, msg: ConstraintStatus) -> None:
        self._monitor_stamp = max(self._monitor_stamp, stamp_to_ns(msg.header.stamp))
        self.safety_reason = f"safety request: {msg.safety_reason}" if msg.safety_request else ""
        self._try_pending()

    def _check_sync(self) -> None:
        if self._pending is None:
            return
        state, since = self._pending
        stamp = stamp_to_ns(state.header.stamp)
        waiting = self._waiting_for(stamp)
        now = time.monotonic()
        if waiting == "monitor" and now - since > self.sync_timeout:
            self.sync_timeouts += 1
            self.get_logger().warning(
                f"no monitor status for t={stamp * 1e-9:.3f} s within "
                f"{self.sync_timeout} s: answering without it ({self.sync_timeouts} so far)",
                throttle_duration_sec=1.0,
            )
            self._unsynced = stamp
        elif waiting == "announcement":
            if now - max(since, self._warned_at) > self.adapter_timeout:
                self._warned_at = now
                self.get_logger().warning(
                    f"holding t={stamp * 1e-9:.3f} s for {now - since:.0f} s: the adapter has not announced its "
                    "rounds (adapter.sync: is an adapter running?)")
            return
        elif waiting and waiting != "monitor" and now - since > self.adapter_timeout:
            self._carry_out(self.schedule.give_up(  # from now on updates apply when they arrive
                f"lockstep: no {waiting} within {self.adapter_timeout} s (adapter.sync_timeout) at "
                f"t={stamp * 1e-9:.3f} s: going on without waiting for the adapter; this run is not reproducible"))
        self._try_pending()

    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if self._last is not None and self._last[0] == stamp:
            # The plant re-sent a state we already answered: answer with the same command.
            self.cmd_pub.publish(self._last[1])
            return
        if self._last is not None and stamp < self._last[0]:
            self.out_of_order += 1  # a state older than one already answered: its command would be late
            self.get_logger().warning(
                f"dropped a state stamped {stamp * 1e-9:.3f} s, older than the last answered "
                f"({self._last[0] * 1e-9:.3f} s); {self.out_of_order} so far",
                throttle_duration_sec=1.0,
            )
            return
        if self._pending is not None and stamp_to_ns(self._pending[0].header.stamp) == stamp:
            return  # a re-send of the state held: it keeps waiting since it first came
        if self._waiting_for(stamp):
            # answered when what it waits for is in; a newer state (the plant stepped on its safe
            # command meanwhile) takes the place of the held one but not its start of waiting, so
            # the timeout still ends the wait
            self._pending = (msg, self._pending[1] if self._pending is not None else time.monotonic())
            return
        self._answer(msg)

    def _answer(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        for update in self.schedule.due(stamp):  # lockstep: the models in force from this state on
            self._swap_in(update)
        reason = self.safety_reason
        age = (self.get_clock().now().nanoseconds - stamp) * 1e-9
        if self.max_state_age > 0 and age > self.max_state_age and not reason:
            reason = f"stale state: {age:.3f} s old (max_state_age {self.max_state_age} s)"
        report = self.law.compute(vector_of(msg.x), stamp * 1e-9, force_fallback=reason)
        cmd = command_msg(report.u, stamp, msg.header.frame_id)
        self.cmd_pub.publish(cmd)
        self._last = (stamp, cmd)
        self._publish_status(msg, report)
        if report.fallback_active:
            self.get_logger().warning(
                f"t={stamp * 1e-9:.3f} s: fallback ({self.law.fallback.value}): {report.fallback_reason}",
                throttle_duration_sec=1.0,
            )

    def _publish_status(self, state: State, report: StepReport) -> None:
        status = ControllerStatus(
            controller=report.controller,
            solver=report.solver,
            solve_time_ms=report.solve_time_s * 1e3,
            iterations=report.iterations,
            solver_status=report.status,
            cost=report.cost,
            max_slack=report.max_slack,
            model_version=self.model_version,
            fallback_active=report.fallback_active,
            fallback_reason=report.fallback_reason,
            fallbacks_total=self.law.fallbacks_total,
            # the estimate the command was planned with: empty = none in use, zeros on a fallback
            # (control/supervisor.py); the adapter removes it from the transition's target
            disturbance_estimate=report.disturbance.tolist(),
            sync_breaks_total=self.sync_timeouts + self.schedule.breaks,
        )
        status.header = state.header
        self.status_pub.publish(status)


NODE_CLASS = ControllerNode


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, "controller", args)


if __name__ == "__main__":
    raise SystemExit(main())
