"""Controller node: answers each state on `state` with a command on `cmd` (same stamp).

While the constraint monitor's `safety/request` (latched) asks for it, every step uses the fallback.

`controller` selects the primary law (lqr | nmpc). The NMPC may carry a learned residual whose
weights arrive on `adapter/model` and are swapped in between two solves; updates whose shapes do not
match are rejected with a logged reason. On an unusable state, a solver failure, a non-finite
result, a missed deadline or a stale state (older than `max_state_age` on the node's clock) the
node falls back (LQR or a safe command) for that step and says so on `~/status`; a state older than
one already answered is dropped (counted, logged). The controller's model (`system`, `model.*`) is
configured independently of the plant's, so a model mismatch is a parameter change.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node

from safe_ctrl_ros.control import LqrController, Nmpc, NmpcConfig, ResidualSpec
from safe_ctrl_ros.control.residual import dequantize
from safe_ctrl_ros.control.supervisor import FallbackMode, StepReport, SupervisedController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.msg import Command, ConstraintStatus, ControllerStatus, ModelUpdate, SafetyRequest, State
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare, float_list, reject_unknown_overrides
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS
from safe_ctrl_ros.ros.system_params import declare_model
from safe_ctrl_ros.ros.tasks import declare_task
from safe_ctrl_ros.safety import ConstraintSet, load_constraints

CONTROLLERS = ("lqr", "nmpc")
DISCRETIZATIONS = ("exact", "euler")


def _weight(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values


class ControllerNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("controller", **node_kwargs)  # type: ignore[arg-type]
        model = declare_model(self)
        self.task = declare_task(self, model)
        kind = str(declare(self, "controller", "lqr", f"primary control law, one of {CONTROLLERS}"))
        dt = float(declare(self, "dt", 0.02, "control period in seconds"))
        q = float_list(declare(self, "lqr.Q", [1.0], "LQR state weight: diagonal (nx) or one value"), "lqr.Q")
        r = float_list(declare(self, "lqr.R", [0.1], "LQR input weight: diagonal (nu) or one value"), "lqr.R")
        disc = str(declare(self, "lqr.discretization", "exact", f"one of {DISCRETIZATIONS}"))
        constraints_file = str(declare(self, "constraints_file", "", "constraints YAML (the monitor's file)"))
        p_list = float_list(declare(self, "nmpc.P", [], "terminal weight; empty = LQR cost-to-go"), "nmpc.P")
        n_cfg = NmpcConfig(
            horizon=int(declare(self, "nmpc.horizon", 20, "prediction horizon (steps)")),
            dt=dt,
            Q=_weight(float_list(declare(self, "nmpc.Q", [1.0], "NMPC state weight (nx or one value)"), "nmpc.Q")),
            R=_weight(float_list(declare(self, "nmpc.R", [0.1], "NMPC input weight (nu or one value)"), "nmpc.R")),
            P=_weight(p_list) if p_list else None,
            solver=str(declare(self, "nmpc.solver", "rti_hpipm", "rti_hpipm | sqp_hpipm | sqp_qrqp | fatrop | ipopt")),
            sqp_iterations=int(declare(self, "nmpc.sqp_iterations", 1, "SQP iterations per solve (1 = RTI)")),
            rk4_substeps=int(declare(self, "nmpc.rk4_substeps", 1, "RK4 steps per interval in the prediction")),
            slack_l1=float(declare(self, "nmpc.slack_l1", 1000.0, "L1 penalty on constraint slack")),
            slack_l2=float(declare(self, "nmpc.slack_l2", 1000.0, "L2 penalty on constraint slack")),
        )
        deadline = float(declare(self, "nmpc.deadline", 0.0, "fall back when a solve takes longer (s); 0 = off"))
        use_residual = bool(declare(self, "residual.enabled", False, "predict with the learned residual"))
        hidden = [int(v) for v in declare(self, "residual.hidden", [16, 16], "hidden layer sizes")]
        activation = str(declare(self, "residual.activation", "relu", "relu | tanh"))
        in_gain = float_list(declare(self, "residual.in_gain", [], "input gains (nx+nu); empty = 1"), "in_gain")
        out_gain = float_list(declare(self, "residual.out_gain", [], "output gains (nx); empty = 1"), "out_gain")
        model_file = str(declare(self, "residual.model_file", "", "start weights (.npz); sets hidden, gains"))
        self.sync = bool(
            declare(self, "safety.sync_with_monitor", False,
                    "lockstep: answer a state only after the monitor's status for it (deterministic reactions)")
        )
        self.sync_timeout = float(declare(self, "safety.sync_timeout", 0.5, "wall s to wait for the monitor"))
        self.max_state_age = float(
            declare(self, "max_state_age", 0.1, "s (node clock): an older state is stale, gets the fallback; 0 = off")
        )
        fallback = str(declare(self, "fallback.mode", "lqr", "lqr | command"))
        safe_cmd = float_list(declare(self, "fallback.command", [], "safe command; empty = equilibrium input"), "cmd")
        reject_unknown_overrides(self)

        if kind not in CONTROLLERS:
            raise ConfigError(f"parameter 'controller': expected one of {CONTROLLERS}, got '{kind}'")
        if disc not in DISCRETIZATIONS:
            raise ConfigError(f"parameter 'lqr.discretization': expected one of {DISCRETIZATIONS}, got '{disc}'")
        if fallback not in ("lqr", "command"):
            raise ConfigError(f"parameter 'fallback.mode': expected lqr or command, got '{fallback}'")
        # Topics first, the (slow) NMPC build after: the graph sees this node's topics at once;
        # callbacks only run once the node spins, after __init__.
        group = MutuallyExclusiveCallbackGroup()  # model swaps never interleave with a solve
        self.cmd_pub = self.create_publisher(Command, "cmd", COMMAND_QOS)
        self.status_pub = self.create_publisher(ControllerStatus, "~/status", STATUS_QOS)
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
        self._monitor_stamp = -1
        self._pending: tuple[State, float] | None = None
        self.sync_timeouts = 0
        if self.sync:
            self.create_subscription(
                ConstraintStatus, "constraint_monitor/status", self._on_monitor, STATUS_QOS, callback_group=group
            )
            # wall clock: the sim clock waits for this very answer
            wall = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(0.02, self._check_sync, callback_group=group, clock=wall)
        self.model = model
        constraints = (
            load_constraints(constraints_file, model.nx, model.nu) if constraints_file else ConstraintSet([])
        )
        start_theta = None
        self.residual: ResidualSpec | None
        if use_residual and model_file:
            start = load_model(model_file, model.nx, model.nu)
            self.residual, start_theta = start.net.spec, start.net.theta()
        elif use_residual:
            self.residual = ResidualSpec(
                model.nx, model.nu, tuple(hidden), activation, np.array(in_gain), np.array(out_gain)
            )
        else:
            self.residual = None
        lqr = LqrController(model, _weight(q), _weight(r), dt, disc, self.task.goal)  # type: ignore[arg-type]
        nmpc = Nmpc(model, self.task, n_cfg, constraints, self.residual) if kind == "nmpc" else None
        if nmpc is not None and start_theta is not None:
            nmpc.set_residual_weights(start_theta)
        self.law = SupervisedController(
            model, self.task, lqr, nmpc, FallbackMode(fallback), safe_cmd or None, deadline
        )
        self.model_version = 0

        detail = f"K={np.array2string(lqr.K, precision=3)}" if nmpc is None else (
            f"N={n_cfg.horizon}, solver={n_cfg.solver}, {len(constraints.constraints)} constraint(s), "
            f"residual={'on' if self.residual else 'off'}"
        )
        self.get_logger().info(f"{kind} on {model.name} ({self.task.kind}): {detail}")

    def _on_safety(self, msg: SafetyRequest) -> None:
        if self.sync:
            return  # the monitor's status stream, in step with the states, decides instead
        self.safety_reason = f"safety request: {msg.reason}" if msg.fallback else ""
        self.get_logger().info(
            f"safety request {'active' if msg.fallback else 'cleared'}: {msg.reason or '-'}"
        )

    def _on_model(self, msg: ModelUpdate) -> None:
        if self.law.nmpc is None or self.residual is None:
            self.get_logger().warning(f"model update v{msg.version} rejected: this controller has no residual model")
            return
        try:
            theta = dequantize(self.residual, msg.layer_sizes, msg.activation, msg.weights, msg.scales)
            self.law.nmpc.set_residual_weights(theta)
        except ConfigError as exc:
            self.get_logger().error(f"model update v{msg.version} rejected: {exc}")
            return
        self.model_version = int(msg.version)
        self.get_logger().info(f"model v{msg.version} in use (validation loss {msg.validation_loss:.4g})")

    def _on_monitor(self, msg: ConstraintStatus) -> None:
        self._monitor_stamp = max(self._monitor_stamp, stamp_to_ns(msg.header.stamp))
        self.safety_reason = f"safety request: {msg.safety_reason}" if msg.safety_request else ""
        if self._pending is not None and stamp_to_ns(self._pending[0].header.stamp) <= self._monitor_stamp:
            state, self._pending = self._pending[0], None
            self._answer(state)

    def _check_sync(self) -> None:
        if self._pending is not None and time.monotonic() - self._pending[1] > self.sync_timeout:
            state, self._pending = self._pending[0], None
            self.sync_timeouts += 1
            self.get_logger().warning(
                f"no monitor status for t={stamp_to_ns(state.header.stamp) * 1e-9:.3f} s within "
                f"{self.sync_timeout} s: answering without it ({self.sync_timeouts} so far)",
                throttle_duration_sec=1.0,
            )
            self._answer(state)

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
        if self.sync and stamp > self._monitor_stamp:
            self._pending = (msg, time.monotonic())  # answered when the monitor has judged it
            return
        self._answer(msg)

    def _answer(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
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
        )
        status.header = state.header
        self.status_pub.publish(status)


NODE_CLASS = ControllerNode


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, "controller", args)


if __name__ == "__main__":
    raise SystemExit(main())
