"""Adapter node: fine-tunes the learned residual on the robot while it runs.

Collects states (`state`), commands (`cmd`), the constraint monitor's verdicts
(`constraint_monitor/status`) and, with `targets.remove_disturbance`, the controller's status
(`controller/status`: the NMPC's disturbance estimate for each state, removed from the training
target of the transition from it) by stamp and runs the adapter's training rounds on the sim-time
schedule of safe_ctrl_ros.learning.rounds (the same loop `safe-ctrl-retrain` replays): a round every
`update_period` of stamps, each on the transitions up to its end, its result (a new version when the
held-out validation loss improved by `margin` and the candidate passed the checks on the newest
transitions, `check.*` (safe_ctrl_ros.learning.validation; failures counted in the status's
`detail`), a rollback to the newest verified version when violations rose after the newest
version, or no change) in force `round_delay` later. Each round publishes `~/status` (AdapterStatus,
with its number, due and the next round's due) and, when it changes the model, `adapter/model`
(ModelUpdate, latched) first; in lockstep when the state stream reaches the round's due.

`mode: lockstep` makes the rounds reproducible (docs/ARCHITECTURE.md, lockstep sequence): a round
starts only when every part of its data is in (the state at its end, the command and the
controller's status before it, the monitor's verdict at its end), the schedule is announced
(status round 0) before the loop starts (once every data stream has a publisher), and the
controller (`adapter.sync`) waits for each round's status before answering the state at its due.
`mode: realtime` starts a round when the state stream reaches its end, with what arrived.

Training runs in its own callback group (a multi-threaded executor keeps the data flowing). A
safety request in the monitor's verdict at a round's end freezes that round; `~/freeze` (SetBool)
freezes by hand; the divergence backoff's floor (`min_lr_scale`) freezes every later round (the
status says why); `~/rollback` (Trigger) has the next round go back to the previous version.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.rounds import FROZEN, ROLLED_BACK, RollbackPolicy, RoundResult, Rounds
from safe_ctrl_ros.learning.settings import ADAPTER, build_adapter
from safe_ctrl_ros.msg import AdapterStatus, Command, ConstraintStatus, ControllerStatus, ModelUpdate, State
from safe_ctrl_ros.ros.convert import ns_to_stamp, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options, watch_parameters
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS, with_depth

# Samples queued per data subscription while a training round runs: about 1.5 s of a 50 Hz stream at
# the 2.5x real time of a lockstep simulation. With the publishers' depth (5) half the transitions
# were lost in the flagship graph.
DATA_DEPTH = 200
POLL_S = 0.005  # wall s between checks for a round whose data are in
SETTLE_S = 0.5  # lockstep: wall s after every data stream matched before the schedule is announced
# ~/status is latched (the last 10): a controller or recorder that joins late still gets the
# schedule's announcement (round 0) and the rounds so far.
STATUS_LATCHED_QOS = with_depth(LATCHED_QOS, 10)


class AdapterNode(Node):
    executor_threads = 2  # training in its own group must not hold up the data callbacks

    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("adapter", **node_options(node_kwargs))
        values = declare_parameters(self, ADAPTER)  # learning/settings.py: names, ranges, defaults
        self.lockstep = values["mode"] == "lockstep"
        if values["nice"]:
            # Training is background work on the cores the control loop runs on: the scheduler
            # should prefer the plant, controller and monitor whenever they are runnable. (In
            # lockstep it changes how long a round takes, never what it computes.)
            os.nice(int(values["nice"]))
        built = build_adapter(values)  # a ConfigError names the bad setting
        self.core, start, nominal, settings = built.core, built.start, built.nominal, built.settings
        # AdapterStatus.training_memory_bytes, measured here, before the executor's threads run:
        # tracemalloc would count what the data callbacks allocate meanwhile.
        self.core.measure_memory()
        cfg, path = settings.config, settings.model_file
        self.rounds = Rounds(self.core, settings.schedule(), settings.steps_per_update, settings.policy,
                             disturbances=settings.remove_disturbance)
        self.lock = threading.Lock()  # the inbox: data callbacks put, the training thread takes
        self.step_time_ms = 0.0
        self.manual_freeze = False
        self.freeze_reported = False  # the divergence backoff's freeze is logged once
        self.rollback_requested = False
        self.announced = False
        self.matched_since: float | None = None
        self.created = time.monotonic()
        self.outbox: deque[tuple[int, ModelUpdate | None, AdapterStatus]] = deque()  # (due, ...) to send

        data = MutuallyExclusiveCallbackGroup()
        training = MutuallyExclusiveCallbackGroup()
        self.model_pub = self.create_publisher(ModelUpdate, "adapter/model", LATCHED_QOS)
        self.status_pub = self.create_publisher(AdapterStatus, "~/status", STATUS_LATCHED_QOS)
        self._subscribe(data, settings.remove_disturbance)
        self.create_service(Trigger, "~/rollback", self._on_rollback, callback_group=training)
        self.create_service(SetBool, "~/freeze", self._on_freeze, callback_group=training)
        # Wall time: in lockstep the sim clock waits for the rounds this timer runs.
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(POLL_S, self._poll, callback_group=training, clock=wall)
        watch_parameters(self, ADAPTER, self._apply_parameters)
        self.get_logger().info(
            f"{cfg.method} on {nominal.name}: {start.net.num_params} weights from '{path}', "
            f"buffer {cfg.buffer_size}, a round of {settings.steps_per_update} steps every "
            f"{settings.update_period} s of sim time, in force {settings.round_delay} s later "
            f"({values['mode']}); targets {'without' if settings.remove_disturbance else 'with'} the "
            "controller's disturbance estimate"
        )

    def _subscribe(self, data: MutuallyExclusiveCallbackGroup, controller_status: bool) -> None:
        """The data streams, each with a queue for the training rounds' bursts (DATA_DEPTH)."""
        self.state_sub = self.create_subscription(
            State, "state", self._on_state, with_depth(STATE_QOS, DATA_DEPTH), callback_group=data)
        self.cmd_sub = self.create_subscription(
            Command, "cmd", self._on_cmd, with_depth(COMMAND_QOS, DATA_DEPTH), callback_group=data)
        self.monitor_sub = self.create_subscription(
            ConstraintStatus, "constraint_monitor/status", self._on_monitor, with_depth(STATUS_QOS, DATA_DEPTH),
            callback_group=data)
        # targets.remove_disturbance: the controller's ~/status (published with STEP_STATUS_QOS,
        # transient local): a reliable, volatile reader with a deeper queue matches it.
        self.ctrl_sub = self.create_subscription(
            ControllerStatus, "controller/status", self._on_controller, with_depth(STATUS_QOS, DATA_DEPTH),
            callback_group=data) if controller_status else None

    def _apply_parameters(self, changed: dict[str, Any]) -> None:
        """rollback.* changes (validated by the spec) apply from the next round on."""
        policy = self.rounds.policy
        self.rounds.policy = RollbackPolicy(bool(changed.get("rollback.on_violations", policy.enabled)),
                                            int(changed.get("rollback.window", policy.window)))
        self.get_logger().info(f"parameters changed: {changed}")

    # --- data (kept by stamp; the rounds take them in stamp order) -------------------------------
    def _on_cmd(self, msg: Command) -> None:
        with self.lock:
            self.rounds.command(stamp_to_ns(msg.header.stamp), vector_of(msg.u))

    def _on_state(self, msg: State) -> None:
        with self.lock:
            self.rounds.state(stamp_to_ns(msg.header.stamp), vector_of(msg.x))

    def _on_controller(self, msg: ControllerStatus) -> None:
        with self.lock:
            self.rounds.disturbance(stamp_to_ns(msg.header.stamp), vector_of(msg.disturbance_estimate))

    def _on_monitor(self, msg: ConstraintStatus) -> None:
        reason = (msg.safety_reason or "active") if msg.safety_request else ""
        with self.lock:
            self.rounds.verdict(stamp_to_ns(msg.header.stamp), any(msg.violated), reason)

    def _on_freeze(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        self.manual_freeze = bool(req.data)
        self.get_logger().info(f"adapter {'frozen by request' if req.data else 'resumed'}: from the next round")
        resp.success, resp.message = True, "frozen" if req.data else "running"
        return resp

    def _on_rollback(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.rollback_requested = True
        with self.lock:
            nxt = self.rounds.next_round()
        when = f" (due t={nxt[1] * 1e-9:.3f} s)" if nxt is not None else ""
        resp.success = True
        resp.message = f"rollback of v{self.rounds.version}: by round {self.rounds.number + 1}{when}"
        return resp

    # --- rounds -----------------------------------------------------------------------------------
    def _poll(self) -> None:
        if not self.announced:
            self._announce()
            return
        while True:
            with self.lock:
                ready = self.rounds.complete(with_verdicts=True) if self.lockstep else self.rounds.started()
                if not ready:
                    break
                taken = self.rounds.take()
            rollback, self.rollback_requested = self.rollback_requested, False
            result = self.rounds.run(taken, "frozen by request" if self.manual_freeze else "", rollback)
            self._report(result)
        self._flush()

    def _flush(self) -> None:
        """Publish the rounds' results: in lockstep each once the state stream has reached its due
        (the controller waits for it there; a round due after the episode's end is never sent, so a
        run's bag does not depend on how the shutdown raced the last rounds), else at once."""
        with self.lock:
            reached = self.rounds.newest_state
        while self.outbox and (not self.lockstep or self.outbox[0][0] <= reached):
            _, model, status = self.outbox.popleft()
            if model is not None:
                self.model_pub.publish(model)
            self.status_pub.publish(status)

    def _announce(self) -> None:
        """Lockstep: once every data stream is in (a state received, the command and monitor streams
        matched, SETTLE_S ago), announce the schedule; the controller answers nothing before it."""
        with self.lock:
            first = self.rounds.next_round()
        if first is None:
            return  # no state yet: the plant re-sends its first state until the controller answers
        if self.lockstep:
            subs = [self.cmd_sub, self.monitor_sub, *([self.ctrl_sub] if self.ctrl_sub is not None else [])]
            matched = all(sub.get_publisher_count() > 0 for sub in subs)
            now = time.monotonic()
            if not matched:
                self.matched_since = None
                if now - self.created > 10.0:
                    self.get_logger().warning(
                        f"lockstep: waiting for publishers of {', '.join(sub.topic_name for sub in subs)} before "
                        "announcing the rounds (the controller answers nothing before)", throttle_duration_sec=10.0)
                return
            if self.matched_since is None:
                self.matched_since = now
            if now - self.matched_since < SETTLE_S:
                return
        with self.lock:
            result = self.rounds.announce()
        self.announced = True
        self.status_pub.publish(self._status(result))
        self.get_logger().info(f"rounds announced: the first is due at t={result.next_due_ns * 1e-9:.3f} s")

    def _report(self, result: RoundResult) -> None:
        if result.restarted:
            self.get_logger().warning(
                f"training diverged (validation loss above {self.core.cfg.diverge_factor:g}x the best "
                f"{self.core.best_val:.4g}): restarted at {self.core.lr_scale:g}x the step size"
            )
        if self.core.frozen and not self.freeze_reported:
            # AdapterStatus.frozen / frozen_reason carry it in this and every later round's status.
            self.freeze_reported = True
            self.get_logger().error(f"round {result.number}: adapter frozen: {self.core.frozen_reason}")
        if result.missing and self.lockstep:
            self.get_logger().error(
                f"round {result.number}: {result.missing} transition(s) up to t={result.data_end_ns * 1e-9:.3f} s "
                "never arrived (a lost state, command or controller status): this lockstep run is not reproducible"
            )
        elif result.missing and self.ctrl_sub is not None and self.ctrl_sub.get_publisher_count() == 0:
            self.get_logger().warning(
                f"round {result.number}: {result.missing} step(s) missing and no publisher of controller/status: "
                "with targets.remove_disturbance every step needs the controller's status (false: train without it)",
                throttle_duration_sec=30.0)
        if result.step_time_ms:
            self.step_time_ms = result.step_time_ms
        if result.outcome == ROLLED_BACK:
            self.get_logger().warning(f"round {result.number}: {result.detail}")
        if result.checks_failed:
            self.get_logger().info(f"round {result.number}: candidate not published: {result.detail}")
        # The messages are made now, from the core as this round left it; sent by _flush.
        model = self._model(result, result.net) if result.net is not None else None
        self.outbox.append((result.due_ns, model, self._status(result)))

    def _model(self, result: RoundResult, net: QuantizedMLP) -> ModelUpdate:
        history = self.core.history
        val_loss = history[-1].val_loss if result.version and history else float("nan")  # nan: the start model
        msg = ModelUpdate(
            version=result.version,
            activation=net.spec.activation,
            layer_sizes=list(net.spec.layer_sizes),
            weights=net.int_weights().tolist(),
            scales=net.scales(),
            validation_loss=val_loss,
            round=result.number,
            due=_time(result.due_ns),
        )
        msg.header.stamp = _time(result.data_end_ns)
        self.get_logger().info(
            f"model v{result.version} from round {result.number} (validation loss {val_loss:.4g}), "
            f"due t={result.due_ns * 1e-9:.3f} s"
        )
        return msg

    def _status(self, result: RoundResult) -> AdapterStatus:
        c, r = self.core, self.rounds
        status = AdapterStatus(
            method=c.cfg.method, version=result.version, train_loss=c.last_train_loss,
            val_loss=c.val_loss() if c.val_buf.count else float("nan"),
            best_val_loss=float(c.best_val), updates_accepted=r.accepted, updates_rejected=r.rejected,
            rollbacks=r.rollbacks, buffer_fill=c.train_buf.count, buffer_capacity=c.train_buf.capacity,
            step_time_ms=self.step_time_ms, training_memory_bytes=c.extra_bytes(),
            forward_passes=c.forward_passes, frozen=result.outcome == FROZEN,
            frozen_reason=result.detail if result.outcome == FROZEN else "",
            restarts=c.restarts, lr_scale=c.lr_scale,
            round=result.number, outcome=result.outcome, detail=result.detail,
            data_end=_time(max(result.data_end_ns, 0)), due=_time(max(result.due_ns, 0)),
            next_due=_time(result.next_due_ns), lockstep=self.lockstep, transitions_missing=r.missing,
        )
        status.header.stamp = _time(max(result.data_end_ns, 0))
        return status


def _time(ns: int) -> Time:
    return ns_to_stamp(ns)


NODE_CLASS = AdapterNode


def main(args: list[str] | None = None) -> int:
    return run_node(AdapterNode, "adapter", args)


if __name__ == "__main__":
    raise SystemExit(main())
