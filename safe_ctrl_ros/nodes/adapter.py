"""Adapter node: fine-tunes the learned residual on the robot while it runs.

Builds transitions (x_k, u_k, x_k+1) from `state` and `cmd` matched by stamp, trains in its own
callback group (a multi-threaded executor keeps the data flowing meanwhile) every `update_period`
seconds of (sim) time, and publishes `adapter/model` (ModelUpdate, latched) only when the
held-out validation loss improves by `margin`. Freezes while the constraint monitor's
`safety/request` asks; `~/freeze` (SetBool) does the same by hand; `~/rollback` (Trigger) goes back
to the previous version, as does a rise in constraint violations after an update. `~/status`
(AdapterStatus) after every round.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from safe_ctrl_ros.learning.adapter import Version
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.matching import TransitionMatcher
from safe_ctrl_ros.learning.settings import ADAPTER, build_adapter
from safe_ctrl_ros.msg import AdapterStatus, Command, ConstraintStatus, ModelUpdate, SafetyRequest, State
from safe_ctrl_ros.ros.convert import stamp_to_ns, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS, with_depth

KEEP = 64  # recent stamps kept for matching states and commands
# Samples queued per data subscription while a training round runs: about 1.5 s of a 50 Hz stream at
# the 2.5x real time of a lockstep simulation. With the publishers' depth (5) half the transitions
# were lost in the flagship graph.
DATA_DEPTH = 200


class AdapterNode(Node):
    executor_threads = 2  # training in its own group must not hold up the data callbacks

    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("adapter", **node_options(node_kwargs))
        values = declare_parameters(self, ADAPTER)  # learning/settings.py: names, ranges, defaults
        self.rollback_on_violations = bool(values["rollback.on_violations"])
        self.window = int(values["rollback.window"])
        if values["nice"]:
            # Training is background work on the cores the control loop runs on: the scheduler
            # should prefer the plant, controller and monitor whenever they are runnable.
            os.nice(int(values["nice"]))
        built = build_adapter(values)  # a ConfigError names the bad setting
        self.core, start, nominal, settings = built.core, built.start, built.nominal, built.settings
        cfg, path, self.dt = settings.config, settings.model_file, settings.dt
        period, self.steps_per_round = settings.update_period, settings.steps_per_update
        self.start_net = start.net.copy()
        self.version = 0
        self.accepted = self.rejected = self.rollbacks = 0
        self.step_time_ms = 0.0
        self.frozen_reason = ""
        self.manual_freeze = False
        self.matcher = TransitionMatcher(round(self.dt * 1e9), KEEP)
        self.violations: list[bool] = []  # per monitored state, newest last
        self.update_at: int | None = None  # index into violations when the newest version went out

        data = MutuallyExclusiveCallbackGroup()
        training = MutuallyExclusiveCallbackGroup()
        self.model_pub = self.create_publisher(ModelUpdate, "adapter/model", LATCHED_QOS)
        self.status_pub = self.create_publisher(AdapterStatus, "~/status", STATUS_QOS)
        self.create_subscription(State, "state", self._on_state, with_depth(STATE_QOS, DATA_DEPTH), callback_group=data)
        self.create_subscription(Command, "cmd", self._on_cmd, with_depth(COMMAND_QOS, DATA_DEPTH), callback_group=data)
        self.create_subscription(SafetyRequest, "safety/request", self._on_safety, LATCHED_QOS, callback_group=data)
        self.create_subscription(
            ConstraintStatus, "constraint_monitor/status", self._on_monitor, STATUS_QOS, callback_group=data
        )
        self.create_service(Trigger, "~/rollback", self._on_rollback, callback_group=training)
        self.create_service(SetBool, "~/freeze", self._on_freeze, callback_group=training)
        self.create_timer(period, self._round, callback_group=training)
        watch_parameters(self, ADAPTER, self._apply_parameters)
        self.get_logger().info(
            f"{cfg.method} on {nominal.name}: {start.net.num_params} weights from '{path}', "
            f"buffer {cfg.buffer_size}, round every {period} s of {self.steps_per_round} steps"
        )

    def _apply_parameters(self, changed: dict[str, Any]) -> None:
        """rollback.* changes (validated by the spec) apply to the next monitored state."""
        self.rollback_on_violations = bool(changed.get("rollback.on_violations", self.rollback_on_violations))
        self.window = int(changed.get("rollback.window", self.window))
        self.get_logger().info(f"parameters changed: {changed}")

    # --- data -------------------------------------------------------------------------------------
    def _on_cmd(self, msg: Command) -> None:
        for transition in self.matcher.command(stamp_to_ns(msg.header.stamp), vector_of(msg.u)):
            self.core.add(*transition)

    def _on_state(self, msg: State) -> None:
        for transition in self.matcher.state(stamp_to_ns(msg.header.stamp), vector_of(msg.x)):
            self.core.add(*transition)

    def _on_safety(self, msg: SafetyRequest) -> None:
        self._set_frozen("safety request: " + msg.reason if msg.freeze_adapter else "")

    def _on_freeze(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        self.manual_freeze = bool(req.data)
        self._set_frozen("frozen by request" if req.data else "")
        resp.success, resp.message = True, "frozen" if req.data else "running"
        return resp

    def _set_frozen(self, reason: str) -> None:
        frozen = bool(reason) or self.manual_freeze
        if frozen != self.core.frozen:
            self.get_logger().info(f"adapter {'frozen: ' + reason if frozen else 'resumed'}")
        self.core.frozen = frozen
        self.frozen_reason = reason or ("frozen by request" if self.manual_freeze else "")

    def _on_monitor(self, msg: ConstraintStatus) -> None:
        self.violations.append(any(msg.violated))
        if len(self.violations) > 10 * self.window:
            drop = len(self.violations) - 10 * self.window
            self.violations = self.violations[drop:]
            if self.update_at is not None:
                self.update_at = max(0, self.update_at - drop)
        if self.rollback_on_violations and self.update_at is not None:
            after = self.violations[self.update_at :]
            if len(after) >= self.window:
                before = self.violations[max(0, self.update_at - self.window) : self.update_at]
                if sum(after[: self.window]) > sum(before):
                    self.get_logger().warning(
                        f"violations rose after v{self.version} ({sum(after[: self.window])} vs {sum(before)}): "
                        "rolling back"
                    )
                    self._rollback()
                self.update_at = None

    # --- training rounds --------------------------------------------------------------------------
    def _round(self) -> None:
        if not self.core.ready:
            self._publish_status()
            return
        if not self.core.frozen:
            start = time.perf_counter()
            self.core.train(self.steps_per_round)
            self.step_time_ms = (time.perf_counter() - start) * 1e3 / max(1, self.steps_per_round)
            restarts = self.core.restarts
            version = self.core.propose()
            if self.core.restarts > restarts:
                self.get_logger().warning(
                    f"training diverged (validation loss above {self.core.cfg.diverge_factor:g}x the best "
                    f"{self.core.best_val:.4g}): restarted from v{self.version} at {self.core.lr_scale:g}x "
                    "the step size"
                )
            if version is None:
                self.rejected += 1
            else:
                self.accepted += 1
                self._publish(version.number, version.net, version.val_loss)
                self.update_at = len(self.violations)
        self._publish_status()

    def _publish(self, number: int, net: QuantizedMLP, val_loss: float) -> None:
        self.version = number
        msg = ModelUpdate(
            version=number,
            activation=net.spec.activation,
            layer_sizes=list(net.spec.layer_sizes),
            weights=net.int_weights().tolist(),
            scales=net.scales(),
            validation_loss=val_loss,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self.model_pub.publish(msg)
        self.get_logger().info(f"published model v{number} (validation loss {val_loss:.4g})")

    def _rollback(self) -> None:
        previous: Version | None = self.core.rollback()
        self.rollbacks += 1
        if previous is None:
            self._publish(0, self.start_net, float("nan"))
        else:
            self._publish(previous.number, previous.net, previous.val_loss)
        self._publish_status()

    def _on_rollback(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        before = self.version
        self._rollback()
        resp.success, resp.message = True, f"rolled back from v{before} to v{self.version}"
        return resp

    def _publish_status(self) -> None:
        c = self.core
        status = AdapterStatus(
            method=c.cfg.method, version=self.version, train_loss=c.last_train_loss,
            val_loss=c.val_loss() if c.val_buf.count else float("nan"),
            best_val_loss=float(c.best_val), updates_accepted=self.accepted, updates_rejected=self.rejected,
            rollbacks=self.rollbacks, buffer_fill=c.train_buf.count, buffer_capacity=c.train_buf.capacity,
            step_time_ms=self.step_time_ms, training_memory_bytes=c.extra_bytes(),
            forward_passes=c.forward_passes, frozen=c.frozen, frozen_reason=self.frozen_reason,
            restarts=c.restarts, lr_scale=c.lr_scale,
        )
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)


NODE_CLASS = AdapterNode


def main(args: list[str] | None = None) -> int:
    return run_node(AdapterNode, "adapter", args)


if __name__ == "__main__":
    raise SystemExit(main())
