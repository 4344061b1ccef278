"""Disturbance injector node: a proxy between the plant and the rest of the graph.

plant/state -> (observation disturbances) -> state;  cmd -> (action disturbances) -> plant/cmd;
force disturbances -> plant/wrench (one wrench stamped t_k per step, sent just before the command
for t_k, so a plant with `wrench_lockstep` applies it deterministically); parameter changes ->
the plant's `model.*` parameters through its parameter service (the command for t_k is held until
the plant has accepted the change, so the change takes effect exactly at t_k; its event follows the
other events of t_k, also when it was accepted before the first state).
Every disturbance draws from its own seeded generator; a re-sent state or command gets the same
disturbed copy. Link faults (`state_link`, `command_link`: delay with jitter, drops) act on each
transmission of `state` and `plant/cmd`; a delayed message is published by a timer thread when due
(the wrench is not delayed: it is physics, not communication). `disturbance/events` reports each
start, change and end; `~/<name>/set_enabled` (std_srvs/SetBool) switches one on or off at run time.
With nothing active, messages pass through bit-identical.
"""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node
from rclpy.task import Future
from std_srvs.srv import SetBool

from safe_ctrl_ros.disturbances import Disturbance
from safe_ctrl_ros.msg import Command, DisturbanceEvent, State
from safe_ctrl_ros.parameters.injector import DISTURBANCE_INJECTOR, build_scenario
from safe_ctrl_ros.ros.convert import ns_to_stamp, stamp_to_ns, vector_of
from safe_ctrl_ros.ros.delayed import DelayedPublisher
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options
from safe_ctrl_ros.ros.qos import COMMAND_QOS, STATE_QOS, STATUS_QOS

CACHE = 8  # recent stamps whose disturbed copies are kept for re-sends
SERVICE_RETRY_S = 1.0  # wall s before an unanswered parameter request is sent again


class DisturbanceInjectorNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("disturbance_injector", **node_options(node_kwargs))  # type: ignore[arg-type]
        values = declare_parameters(self, DISTURBANCE_INJECTOR)  # parameters/injector.py
        self.send_wrench = bool(values["publish_wrench"])
        self.scenario = build_scenario(values)
        self.state_pub = self.create_publisher(State, "state", STATE_QOS)
        self.cmd_pub = self.create_publisher(Command, "plant/cmd", COMMAND_QOS)
        self.wrench_pub = self.create_publisher(WrenchStamped, "plant/wrench", COMMAND_QOS)
        self.event_pub = self.create_publisher(DisturbanceEvent, "disturbance/events", STATUS_QOS)
        self.create_subscription(State, "plant/state", self._on_state, STATE_QOS)
        self.create_subscription(Command, "cmd", self._on_command, COMMAND_QOS)
        for d in self.scenario.disturbances:
            self.create_service(SetBool, f"~/{d.name}/set_enabled", self._enabler(d))
        self.param_client: Any = self.create_client(SetParameters, "plant/set_parameters")
        self.get_client: Any = self.create_client(GetParameters, "plant/get_parameters")
        self.needs_params = bool(self.scenario.by_target("parameter"))
        self.nominal: dict[str, float] | None = None if self.needs_params else {}
        self.applied: dict[str, float] = {}
        self.pending: Future | None = None
        self.held: list[Command] = []
        self.obs_cache: dict[int, State] = {}
        self.cmd_cache: dict[int, Command] = {}
        self.active: dict[str, bool] = {d.name: False for d in self.scenario.disturbances}
        self.t_now = 0.0
        self.seen_state = False
        # Parameter changes accepted before the first state (a change due at t = 0): their events go
        # out with that state, after its other events, so every run reports the same events in the
        # same order (and after the plant has started: a recorder hears them).
        self.early_events: list[tuple[str, float]] = []
        self.delayed = DelayedPublisher()
        self.link_counts = {"state_dropped": 0, "state_delayed": 0, "command_dropped": 0, "command_delayed": 0}
        self.pending_since = 0.0
        if self.needs_params:
            # Wall time: with use_sim_time the sim clock stands still until the plant steps, and the
            # plant's first step waits for the command this fetch releases.
            self.create_timer(0.05, self._fetch_nominal, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"{len(self.scenario.disturbances)} disturbance(s) from '{values['scenario_file'] or '-'}', "
            f"seed {self.scenario.seed}: "
            + ", ".join(f"{d.name} ({d.target}/{d.kind})" for d in self.scenario.disturbances)
        )

    # --- plant parameters ------------------------------------------------------------------------
    def _fetch_nominal(self) -> None:
        if self.pending is not None and time.monotonic() - self.pending_since > SERVICE_RETRY_S:
            # Fast DDS can lose a reply sent before the client's reply reader matched: ask again
            # (both requests are idempotent: read the nominal values / set the same values).
            self.get_logger().warning("no reply from the plant's parameter service: asking again")
            self.pending = None
            if self.nominal is not None:
                self._update_parameters(self.t_now)
                return
        if self.nominal is not None or self.pending is not None or not self.get_client.service_is_ready():
            return
        names = sorted({f"model.{d.change.parameter}" for d in self.scenario.by_target("parameter") if d.change})
        future = self.get_client.call_async(GetParameters.Request(names=names))
        self.pending, self.pending_since = future, time.monotonic()

        def done(f: Future) -> None:
            if f is not self.pending:
                return  # a request given up on (asked again)
            result = f.result()
            if result is None:
                self.get_logger().error("could not read the plant's parameters")
                self.pending = None
                return
            values = result.values
            self.nominal = {n.removeprefix("model."): v.double_value for n, v in zip(names, values, strict=True)}
            self.applied = dict(self.nominal)
            self.pending = None
            self.get_logger().info(f"plant parameters: {self.nominal}")
            # A change due at the newest state seen (e.g. t = 0) goes out before its command is
            # released, however the fetch and the first state raced: it takes effect at its step.
            self._update_parameters(self.t_now)
            self._release()

        future.add_done_callback(done)

    def _update_parameters(self, t: float) -> None:
        if not self.needs_params or self.nominal is None:
            return
        wanted = self.scenario.parameters(t, self.nominal)
        changes = {k: v for k, v in wanted.items() if self.applied.get(k) != v}
        if not changes:
            return
        req = SetParameters.Request(parameters=[
            ParameterMsg(name=f"model.{k}", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v))
            for k, v in sorted(changes.items())
        ])
        if not self.param_client.service_is_ready():
            self.get_logger().error("the plant's parameter service is not available: parameter change delayed")
            return
        future = self.param_client.call_async(req)
        self.pending, self.pending_since = future, time.monotonic()

        def done(f: Future) -> None:
            if f is not self.pending:
                return
            response = f.result()
            results = response.results if response is not None else []
            for (name, value), res in zip(sorted(changes.items()), results, strict=False):
                if res.successful:
                    self.applied[name] = value
                    self._event_for_parameter(name, value)
                else:
                    self.get_logger().error(f"the plant refused {name}={value}: {res.reason}")
                    self.applied[name] = value  # do not retry every step
            self.pending = None
            self._release()

        future.add_done_callback(done)

    def _event_for_parameter(self, name: str, value: float) -> None:
        if not self.seen_state:
            self.early_events.append((name, value))
            return
        for d in self.scenario.by_target("parameter"):
            if d.change is not None and d.change.parameter == name:
                phase = "start" if d.active(self.t_now) else "end"
                self._event(d, phase, [value], f"model.{name} = {value}")

    def _release(self) -> None:
        """Forward commands held while a parameter change was under way."""
        if self.pending is not None or (self.needs_params and self.nominal is None):
            return
        held, self.held = self.held, []
        for cmd in held:
            self._forward(cmd)

    # --- streams ---------------------------------------------------------------------------------
    def _on_state(self, msg: State) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        out = self.obs_cache.get(stamp)
        if out is None:
            t = stamp * 1e-9
            self.t_now = t
            self._report_transitions(t)
            if not self.seen_state:
                self.seen_state = True
                for name, value in self.early_events:
                    self._event_for_parameter(name, value)
                self.early_events.clear()
            self._update_parameters(t)
            x = vector_of(msg.x)
            disturbed = self.scenario.observation(t, x)
            # nothing acting: the very message, bit for bit
            out = msg if disturbed is x else State(header=msg.header, x=disturbed.tolist())
            self._remember(self.obs_cache, stamp, out)
        self._send("state", self.state_pub, out, stamp)

    def _on_command(self, msg: Command) -> None:
        if self.pending is not None or (self.needs_params and self.nominal is None):
            self.held.append(msg)
            return
        self._forward(msg)

    def _forward(self, msg: Command) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        out = self.cmd_cache.get(stamp)
        if out is None:
            t = stamp * 1e-9
            u = vector_of(msg.u)
            disturbed = self.scenario.action(t, u) if u.size else u
            out = msg if disturbed is u else Command(header=msg.header, u=disturbed.tolist())
            self._remember(self.cmd_cache, stamp, out)
        if self.send_wrench:
            w = self.scenario.force(stamp * 1e-9)
            wrench = WrenchStamped()
            wrench.header.stamp = msg.header.stamp
            f, tq = wrench.wrench.force, wrench.wrench.torque
            f.x, f.y, f.z, tq.x, tq.y, tq.z = (float(v) for v in w)
            self.wrench_pub.publish(wrench)
        self._send("command", self.cmd_pub, out, stamp)

    def _send(self, link: str, publisher: Any, msg: Any, stamp: int) -> None:
        """Publish through the link's faults: dropped, delayed (wall time), or at once."""
        dropped, delay = self.scenario.link(f"{link}_link", stamp * 1e-9)
        if dropped:
            self.link_counts[f"{link}_dropped"] += 1
        elif delay > 0:
            self.link_counts[f"{link}_delayed"] += 1
            self.delayed.publish(publisher, msg, delay)
        else:
            publisher.publish(msg)

    def destroy_node(self) -> None:
        self.delayed.stop()
        if any(self.link_counts.values()):
            self.get_logger().info(
                "link faults: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.link_counts.items())
            )
        super().destroy_node()

    @staticmethod
    def _remember(cache: dict, stamp: int, msg: object) -> None:
        cache[stamp] = msg
        while len(cache) > CACHE:
            cache.pop(min(cache))

    # --- events and switches ---------------------------------------------------------------------
    def _report_transitions(self, t: float) -> None:
        for d in self.scenario.disturbances:
            if d.target == "parameter":
                continue
            now = d.active(t)
            if now != self.active[d.name]:
                self.active[d.name] = now
                self._event(d, "start" if now else "end", [], f"t={t:.3f} s")

    def _event(self, d: Disturbance, phase: str, value: list[float], detail: str) -> None:
        ev = DisturbanceEvent(name=d.name, target=d.target, kind=d.kind, phase=phase, value=value, detail=detail)
        ev.header.stamp = ns_to_stamp(round(self.t_now * 1e9))
        self.event_pub.publish(ev)
        self.get_logger().info(f"disturbance '{d.name}' {phase} ({detail})")

    def _enabler(self, d: Disturbance):  # type: ignore[no-untyped-def]
        def handle(req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
            d.enabled = bool(req.data)
            resp.success = True
            resp.message = f"{d.name} {'enabled' if d.enabled else 'disabled'}"
            self._event(d, "enabled" if d.enabled else "disabled", [], resp.message)
            return resp

        return handle


NODE_CLASS = DisturbanceInjectorNode


def main(args: list[str] | None = None) -> int:
    return run_node(DisturbanceInjectorNode, "disturbance_injector", args)


if __name__ == "__main__":
    raise SystemExit(main())
