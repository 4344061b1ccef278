"""Plant node: simulates a system and is the graph's clock.

Publishes `/clock`, `plant/state` (State, stamped with sim time) and `plant/reference`, subscribes
to `plant/cmd` (Command) and `plant/wrench` (an external force/torque, held until the next one), and
serves `~/reset` and `~/start`. In lockstep mode (default) it advances one control period when
the command stamped with the current state's time arrives; in real-time mode it advances on a
wall-clock timer with the latest command, and measures per step the timer's jitter, the command
latency (state published -> command with the same stamp received) and deadline misses (no answer
before the next step), reported in the episode summary and on `/diagnostics` (every
`diagnostics_period` s and when the level changes). The `model.*` parameters (inertial properties)
can be changed while it runs; they are validated before they take effect.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from safe_ctrl_ros import systems
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.msg import Command, Reference, State
from safe_ctrl_ros.ros.convert import ns_to_stamp, stamp_to_ns, state_msg, vector_of
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare, float_list, reject_unknown_overrides
from safe_ctrl_ros.ros.qos import CLOCK_QOS, COMMAND_QOS, STATE_QOS, STATUS_QOS
from safe_ctrl_ros.ros.system_params import declare_model
from safe_ctrl_ros.ros.tasks import declare_task
from safe_ctrl_ros.safety.monitor import Level
from safe_ctrl_ros.simulation import LockstepGate, PlantSim, RealtimeTiming, TickAction
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, as_vector

MODES = ("lockstep", "realtime")
FINAL_ACK_TIMEOUT_S = 1.0
WRENCH_AXES = ("fx", "fy", "fz", "tx", "ty", "tz")


class PlantNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("plant", **node_kwargs)  # type: ignore[arg-type]
        self.done: Future = Future()
        model = declare_model(self)
        self.task = declare_task(self, model)
        dt = float(declare(self, "dt", 0.02, "control period in seconds (one lockstep step)"))
        substeps = int(declare(self, "substeps", 10, "RK4 substeps per control period"))
        initial = float_list(declare(self, "initial_state", [], "initial state; empty = equilibrium"), "initial_state")
        spread = float_list(
            declare(self, "init_randomization", [], "half-widths of a uniform draw added to initial_state"),
            "init_randomization",
        )
        self.seed = int(declare(self, "seed", 0, "seed of the plant's own generator (initial-state draws)"))
        self.mode = str(declare(self, "mode", "lockstep", f"one of {MODES}"))
        timeout = float(
            declare(self, "command_timeout", 1.0, "wall s without a fresh command before the safe command applies")
        )
        safe = float_list(
            declare(self, "safe_command", [], "the command applied on a command timeout; empty = equilibrium input"),
            "safe_command",
        )
        resend = float(declare(self, "resend_period", 0.1, "lockstep: wall seconds before re-sending the state"))
        self.duration = float(declare(self, "duration", 0.0, "episode length in sim seconds; 0 runs forever"))
        self.stop_out_of_bounds = bool(
            declare(self, "stop_on_out_of_bounds", True, "end the episode when the state leaves its bounds")
        )
        self.wait_for = int(declare(self, "wait_for_subscribers", 1, "state subscribers to wait for before starting"))
        self.autostart = bool(
            declare(self, "autostart", True, "start when the graph is ready; false: wait for a call of ~/start")
        )
        self.startup_timeout = float(
            declare(self, "startup_timeout", 30.0, "wall s to wait for the graph before giving up; 0 waits forever")
        )
        self.summary_file = str(declare(self, "summary_file", "", "write the episode summary as JSON here"))
        self.wrench_lockstep = bool(
            declare(self, "wrench_lockstep", False, "lockstep: also wait for a wrench stamped t_k (from an injector)")
        )
        diag_period = float(declare(self, "diagnostics_period", 1.0, "wall s between /diagnostics; 0 = off"))
        reject_unknown_overrides(self)
        if self.mode not in MODES:
            raise ConfigError(f"parameter 'mode': expected one of {MODES}, got '{self.mode}'")
        if self.get_parameter("use_sim_time").value:
            raise ConfigError("the plant is the clock source: it must run with use_sim_time:=false")
        if substeps < 1:
            raise ConfigError(f"parameter 'substeps': must be >= 1, got {substeps}")
        self.sim = PlantSim(model, dt, substeps, initial or None)
        self.safe_u = model.equilibrium()[1] if not safe else as_vector(safe, model.nu, "safe_command")
        low, high = self.sim.u_low, self.sim.u_high
        if not (np.all(np.isfinite(self.safe_u)) and np.all(self.safe_u >= low) and np.all(self.safe_u <= high)):
            raise ConfigError(
                f"parameter 'safe_command': {self.safe_u.tolist()} is outside the input bounds "
                f"[{low.tolist()}, {high.tolist()}]"
            )
        self.command_timeout = timeout
        self.safe_steps = 0  # steps run on the safe command (watchdog)
        self.watchdog_active = False
        self._safe_from = 0
        self.spread = np.zeros(model.nx) if not spread else as_vector(spread, model.nx, "init_randomization")
        if np.any(self.spread < 0):
            raise ConfigError("parameter 'init_randomization': half-widths must be >= 0")
        self.nominal_x0 = self.sim.x0.copy()
        self.rng = np.random.default_rng(self.seed)
        self.sim.reset(self._draw_initial_state())
        self.start_k = 0
        self.gate = LockstepGate(timeout, resend)
        self.timing: RealtimeTiming | None = RealtimeTiming(dt) if self.mode == "realtime" else None
        self.ignored_wrench_axes: set[str] = set()

        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.state_pub = self.create_publisher(State, "plant/state", STATE_QOS)
        self.ref_pub = self.create_publisher(Reference, "plant/reference", COMMAND_QOS)
        self.wrench_sub = self.create_subscription(WrenchStamped, "plant/wrench", self._on_wrench, COMMAND_QOS)
        self.cmd_sub = self.create_subscription(Command, "plant/cmd", self._on_command, COMMAND_QOS)
        self._pending_u: FloatArray | None = None
        self._wrench_stamp: int | None = None
        self.reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self.start_srv = self.create_service(Trigger, "~/start", self._on_start)
        self.start_requested = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.started = False
        self.created_at = time.monotonic()
        self.wall_start = 0.0
        self.terminated_reason = ""
        self._latest_cmd: FloatArray | None = None
        self._latest_stamp: int | None = None
        self._fresh_at = 0.0  # monotonic time of the newest accepted command
        self.loop_closed = False  # the stack has answered once (real time: the clock starts then)
        period = dt if self.mode == "realtime" else min(resend, 0.01)
        self.timer = self.create_timer(period, self._on_timer)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATUS_QOS)
        self._diag_level = Level.OK
        self._diag_misses = 0  # missed deadlines at the last periodic report
        self.diag_timer = self.create_timer(diag_period, self._periodic_diagnostics) if diag_period > 0 else None
        self.get_logger().info(
            f"{model.name}: dt={dt} s, {substeps} substeps, mode={self.mode}, task={self.task.kind}, "
            f"x0={self.sim.x.tolist()}"
        )

    def _draw_initial_state(self) -> FloatArray:
        draw: FloatArray = self.nominal_x0 + self.rng.uniform(-self.spread, self.spread)
        return draw

    # --- lockstep ---------------------------------------------------------------------------
    def _on_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.start_requested = True
        resp.success = not self.started
        resp.message = "already running" if self.started else "starting when the graph is ready"
        return resp

    def _ready(self) -> bool:
        if not (self.autostart or self.start_requested):
            return False
        if self.state_pub.get_subscription_count() < self.wait_for:
            return False
        # In real time too: a loop that starts before its commands can arrive loses its first steps.
        return self.cmd_sub.get_publisher_count() >= 1

    def _on_timer(self) -> None:
        if self.done.done():
            return
        now = time.monotonic()
        if not self.started:
            if self._ready():
                self.started = True
                self.wall_start = now
                self._fresh_at = now
                if self.timing is not None:
                    self.timing.step(now)
                self._publish(first=True)
            elif (self.autostart or self.start_requested) and self.startup_timeout > 0 and (
                now - self.created_at > self.startup_timeout
            ):
                self._finish(
                    f"no controller after {self.startup_timeout} s: plant/state has "
                    f"{self.state_pub.get_subscription_count()} of {self.wait_for} subscriber(s), plant/cmd "
                    f"{self.cmd_sub.get_publisher_count()} publisher(s)"
                )
            return
        if self.timing is not None:
            if not self.loop_closed:
                # Warm-up: hold the initial state (re-sent every period) until the stack has answered
                # it once, so a controller still building its solver costs no steps; then start the clock.
                if self._latest_cmd is None:
                    self._await_first_answer(now)
                    return
                self.loop_closed = True
                self.wall_start = now
                self.timing = RealtimeTiming(self.sim.dt)
                self.timing.step(now)
                self._publish(first=True)
                return
            if not self.timing.step(now):
                self._missed_deadline(f"no command for t={self.sim.t:.3f} s within one period: applying an older one")
            self._advance(self._watchdog(now, self._latest_cmd))
            return
        action = self.gate.tick(now)
        if action is TickAction.RESEND:
            self.sim.stats.resends += 1
            self._publish(first=False)
        elif action is TickAction.TIMEOUT and not self.loop_closed:
            # Not stepped on the safe command: the stack has not answered once yet.
            if self._await_first_answer(now):
                self.gate.sent(self.sim.t_ns, now)  # wait another command_timeout for the same stamp
        elif action is TickAction.TIMEOUT:
            self._pending_u = None
            self._missed_deadline(
                f"no command for t={self.sim.t:.3f} s within {self.gate.command_timeout} s: applying the safe command"
            )
            self._advance(self._watchdog(now, None, timed_out=True))

    def _await_first_answer(self, now: float) -> bool:
        """Before the stack's first answer (a controller may still be building its solver): re-send
        the initial state, up to startup_timeout; False when that ran out and the episode ended."""
        if self.startup_timeout > 0 and now - self.wall_start > self.startup_timeout:
            self._finish(f"no command for the initial state within {self.startup_timeout} s")
            return False
        self.get_logger().info("waiting for the first command (the controller is starting)", once=True)
        self.sim.stats.resends += 1
        self._publish(first=False)
        return True

    def _watchdog(self, now: float, u: FloatArray | None, timed_out: bool = False) -> FloatArray | None:
        """The command to apply: `u`, or the safe command once no fresh command came for
        `command_timeout` s (reported when it starts and when commands return)."""
        stale = timed_out or (self.command_timeout > 0 and now - self._fresh_at > self.command_timeout)
        if stale:
            self.safe_steps += 1
            if not self.watchdog_active:
                self.watchdog_active = True
                self._safe_from = self.safe_steps - 1
                reason = f"no fresh command for {now - self._fresh_at:.3f} s: safe command {self.safe_u.tolist()}"
                self.get_logger().error(f"t={self.sim.t:.3f} s: {reason}")
                self._publish_diagnostics(Level.ERROR, reason)
            return self.safe_u
        if self.watchdog_active:
            self.watchdog_active = False
            self.get_logger().warning(
                f"t={self.sim.t:.3f} s: commands are back after {self.safe_steps - self._safe_from} step(s) on the "
                "safe command"
            )
            self._publish_diagnostics(Level.WARN, "commands are back (watchdog released)")
        return u

    def _missed_deadline(self, message: str) -> None:
        self.sim.stats.missed_deadlines += 1
        if self.mode == "realtime":
            self.get_logger().warning(message, throttle_duration_sec=1.0)  # every step when overloaded
        else:
            self.get_logger().warning(message)
        if self._diag_level == Level.OK:
            self._publish_diagnostics(Level.WARN, "missing deadlines")

    def _on_command(self, msg: Command) -> None:
        raw = vector_of(msg.u)
        clipped_before = self.sim.stats.clipped_commands
        u = self.sim.check_command(raw)
        if u is None:
            self.get_logger().error(
                f"rejected command {list(msg.u)}: expected {self.sim.model.nu} finite values "
                f"({self.sim.stats.rejected_commands} rejected so far)",
                throttle_duration_sec=1.0,
            )
            return
        if self.sim.stats.clipped_commands > clipped_before:
            self.get_logger().warning(
                f"clipped command {raw.tolist()} to the input bounds: {u.tolist()} "
                f"({self.sim.stats.clipped_commands} clipped so far)",
                throttle_duration_sec=1.0,
            )
        if self.timing is not None:
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp > self.sim.t_ns or (self._latest_stamp is not None and stamp < self._latest_stamp):
                self.sim.stats.rejected_commands += 1  # from the future, or older than the one in force
                self.get_logger().warning(
                    f"ignored a command stamped {stamp * 1e-9:.3f} s (now t={self.sim.t:.3f} s)",
                    throttle_duration_sec=1.0,
                )
                return
            self.timing.command(stamp, time.monotonic())
            self._latest_cmd, self._latest_stamp = u, stamp
            self._fresh_at = time.monotonic()
            return
        if self.started and not self.done.done() and self.gate.accepts(stamp_to_ns(msg.header.stamp)):
            self._pending_u = u
            self._fresh_at = time.monotonic()
            self.loop_closed = True
            self._try_advance()

    def _try_advance(self) -> None:
        """Lockstep: advance once the command (and, with wrench_lockstep, the wrench) for t_k are in."""
        if self._pending_u is None:
            return
        if self.wrench_lockstep and self._wrench_stamp != self.sim.t_ns:
            return
        u, self._pending_u = self._pending_u, None
        self.gate.answered()
        self._advance(u)

    # --- disturbances and episode control ----------------------------------------------------------
    def _on_wrench(self, msg: WrenchStamped) -> None:
        f, t = msg.wrench.force, msg.wrench.torque
        w = np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64)
        if w.size != WRENCH_SIZE or not np.all(np.isfinite(w)):
            self.get_logger().error(f"rejected non-finite wrench {w.tolist()}")
            return
        supported = self.sim.model.wrench_axes
        ignored = {a for a, v in zip(WRENCH_AXES, w, strict=True) if v != 0.0 and a not in supported}
        if ignored - self.ignored_wrench_axes:
            self.get_logger().warning(
                f"{self.sim.model.name} models only wrench axes {supported}; ignoring {sorted(ignored)}"
            )
            self.ignored_wrench_axes |= ignored
        self.sim.wrench = np.where([a in supported for a in WRENCH_AXES], w, 0.0)
        self._wrench_stamp = stamp_to_ns(msg.header.stamp)
        if self.mode == "lockstep":
            self._try_advance()

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        overrides = dict(self.sim.model.params)
        for p in params:
            if not p.name.startswith("model."):
                if p.name == "use_sim_time" and not p.value:
                    continue
                return SetParametersResult(successful=False, reason=f"'{p.name}' cannot change while running")
            overrides[p.name.removeprefix("model.")] = p.value
        try:
            model = systems.make(self.sim.model.name, **overrides)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.sim.set_model(model)
        changed = {p.name: p.value for p in params}
        self.get_logger().info(f"t={self.sim.t:.3f} s: model parameters changed: {changed}")
        return SetParametersResult(successful=True)

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        if self.done.done():
            resp.success, resp.message = False, "the episode has finished and the plant is shutting down"
            return resp
        self.sim.reset(self._draw_initial_state(), keep_time=True)
        self.start_k = self.sim.k
        if self.timing is not None:
            self.timing = RealtimeTiming(self.sim.dt)  # per episode, like the stats
        self.terminated_reason = ""
        resp.success, resp.message = True, f"reset to {self.sim.x.tolist()}"
        self.get_logger().info(resp.message)
        if self.started:
            self._publish(first=True)
        return resp

    # --- stepping and publishing -------------------------------------------------------------
    def _advance(self, u: FloatArray | None) -> None:
        self.sim.advance(u)
        if not self.sim.state_is_finite():
            self._finish(f"non-finite state {self.sim.x.tolist()}")
            return
        out = self.sim.model.out_of_bounds(self.sim.x)
        if out and self.stop_out_of_bounds:
            self._publish(first=False, final=True)
            self._finish(f"state out of bounds in {out}: {self.sim.x.tolist()}")
            return
        if self.duration > 0 and (self.sim.k - self.start_k) * self.sim.dt >= self.duration - 1e-9:
            self._publish(first=False, final=True)
            self._finish("")
            return
        self._publish(first=True)

    def _publish(self, first: bool, final: bool = False) -> None:
        stamp = ns_to_stamp(self.sim.t_ns)
        self.clock_pub.publish(Clock(clock=stamp))
        if first and not final and self.timing is not None:
            self.timing.sent(self.sim.t_ns, time.monotonic())
        self.state_pub.publish(state_msg(self.sim.x, self.sim.t_ns))
        if first or final:
            x_ref, u_ref = self.task.reference(self.sim.t)
            ref = Reference(x_ref=x_ref[0].tolist(), u_ref=u_ref[0].tolist())
            ref.header.stamp = stamp
            self.ref_pub.publish(ref)
        if first and self.mode == "lockstep" and not final:
            self.gate.sent(self.sim.t_ns, time.monotonic())

    # --- diagnostics --------------------------------------------------------------------------
    def _periodic_diagnostics(self) -> None:
        if self.done.done():
            return
        misses = self.sim.stats.missed_deadlines
        new = misses - self._diag_misses if misses >= self._diag_misses else misses  # (reset: counts restart)
        self._diag_misses = misses
        if not self.started:
            self._publish_diagnostics(Level.OK, "waiting for the graph" if self.autostart or self.start_requested
                                      else "waiting for ~/start")
        elif new:
            self._publish_diagnostics(Level.WARN, f"{new} missed deadline(s) in the last report period")
        else:
            self._publish_diagnostics(Level.OK, f"running, t={self.sim.t:.2f} s")

    def _publish_diagnostics(self, level: Level, message: str) -> None:
        stats = self.sim.stats
        values = {
            "mode": self.mode,
            "steps": str(stats.steps),
            "sim_time_s": f"{self.sim.t:.3f}",
            "missed_deadlines": str(stats.missed_deadlines),
            "resends": str(stats.resends),
            "clipped_commands": str(stats.clipped_commands),
            "rejected_commands": str(stats.rejected_commands),
            "safe_command_steps": str(self.safe_steps),
        }
        if self.timing is not None:
            lat, jit = self.timing.latency, self.timing.jitter
            values |= {
                "checked_steps": str(self.timing.checked_steps),
                "miss_rate": f"{self.timing.miss_rate:.6f}",
                "latency_p50_ms": f"{lat.percentile(50) * 1e3:.3f}",
                "latency_p99_ms": f"{lat.percentile(99) * 1e3:.3f}",
                "latency_max_ms": f"{lat.max * 1e3:.3f}" if lat.count else "nan",
                "jitter_p99_ms": f"{jit.percentile(99) * 1e3:.3f}",
                "jitter_max_ms": f"{jit.max * 1e3:.3f}" if jit.count else "nan",
            }
        status = DiagnosticStatus(
            level=bytes([int(level)]),
            name=f"{self.get_namespace().rstrip('/')}/{self.get_name()}: loop timing",
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)
        self._diag_level = level

    def summary(self) -> dict[str, object]:
        wall = max(time.monotonic() - self.wall_start, 1e-9) if self.started else 0.0
        stats = self.sim.stats
        timing = {} if self.timing is None else {"timing": self.timing.summary()}
        return {
            "system": self.sim.model.name,
            "mode": self.mode,
            "steps": stats.steps,
            "sim_time_s": round(self.sim.t, 9),
            "wall_time_s": wall,
            "realtime_factor": self.sim.t / wall if wall > 0 else 0.0,
            "final_state": dict(zip(self.sim.model.state_names, self.sim.x.tolist(), strict=True)),
            "missed_deadlines": stats.missed_deadlines,
            "resends": stats.resends,
            "clipped_commands": stats.clipped_commands,
            "rejected_commands": stats.rejected_commands,
            "safe_command_steps": self.safe_steps,
            "terminated": self.terminated_reason,
            **timing,
        }

    def _finish(self, reason: str) -> None:
        self.terminated_reason = reason
        s = self.summary()
        if reason:
            self.get_logger().error(f"episode terminated at t={self.sim.t:.3f} s: {reason}")
        final = ", ".join(f"{k}={v:+.5f}" for k, v in self.sim.model_state_items(self.sim.x))
        self.get_logger().info(
            f"episode finished: {s['steps']} steps, {s['sim_time_s']:.2f} s sim in {s['wall_time_s']:.2f} s wall "
            f"({s['realtime_factor']:.1f}x real time); final state {final}; "
            f"missed deadlines {s['missed_deadlines']}, resends {s['resends']}"
        )
        if self.timing is not None:
            lat, jit = self.timing.latency, self.timing.jitter
            self.get_logger().info(
                f"real-time loop: command latency p50 {lat.percentile(50) * 1e3:.2f} ms, p99 "
                f"{lat.percentile(99) * 1e3:.2f} ms, max {lat.max * 1e3:.2f} ms; period jitter p99 "
                f"{jit.percentile(99) * 1e3:.2f} ms; deadline misses {self.timing.deadline_misses} of "
                f"{self.timing.checked_steps} steps ({self.timing.miss_rate:.2%})"
            )
        self._publish_diagnostics(Level.ERROR if reason else Level.OK, reason or "episode finished")
        if self.summary_file:
            Path(self.summary_file).write_text(dumps(s))
        self.timer.cancel()
        if self.diag_timer is not None:
            self.diag_timer.cancel()
        # The process exits next and takes its DDS writers with it: first let every reliable
        # subscriber (a recorder, the monitor) acknowledge the final state's /clock, reference and
        # diagnostics, else the last messages can be lost to a slow reader (bounded wait).
        deadline = time.monotonic() + FINAL_ACK_TIMEOUT_S
        for pub in (self.clock_pub, self.ref_pub, self.diag_pub):
            pub.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))
        self.done.set_result(1 if reason else 0)


NODE_CLASS = PlantNode


def main(args: list[str] | None = None) -> int:
    return run_node(PlantNode, "plant", args)


if __name__ == "__main__":
    raise SystemExit(main())
