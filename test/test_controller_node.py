"""The controller node over DDS: NMPC under constraints, fallback on failure, model updates."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.ros import REPO, executable, spin_until, start_bringup, start_when_matched, wait_for_exit

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from safe_ctrl_ros.control import ResidualSpec  # noqa: E402
from safe_ctrl_ros.msg import ControllerStatus, ModelUpdate, State  # noqa: E402
from safe_ctrl_ros.ros.convert import state_msg  # noqa: E402
from safe_ctrl_ros.ros.qos import LATCHED_QOS, STATE_QOS, STATUS_QOS, with_depth  # noqa: E402

LAUNCH = REPO / "launch" / "cartpole_nmpc.launch.xml"


def run_nmpc_loop(
    ros_context: object, ns: str, tmp_path: Path, *args: str
) -> tuple[int, str, list[list[float]], list[object]]:
    """The cart-pole NMPC scenario without its impulse (an empty disturbance scenario)."""
    quiet = tmp_path / "no_disturbances.yaml"
    quiet.write_text("seed: 0\ndisturbances: []\n")
    node = Node(f"probe_{ns}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    states: list[list[float]] = []
    statuses: list[object] = []
    subs = [
        node.create_subscription(
            State, f"/{ns}/plant/state", lambda m: states.append(list(m.x)), with_depth(STATE_QOS, 1000)
        ),
        node.create_subscription(ControllerStatus, f"/{ns}/controller/status", statuses.append, STATUS_QOS),
    ]
    proc = start_bringup(str(LAUNCH), f"namespace:={ns}", f"disturbances:={quiet}", "autostart:=false", *args)
    try:
        start_when_matched(node, executor, ns, subs)
        output = wait_for_exit(executor, proc, timeout=180.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
    return proc.returncode, output, states, statuses


def test_nmpc_keeps_the_pole_constraints_over_dds(ros_context: object, tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    code, output, states, statuses = run_nmpc_loop(
        ros_context, "nmpc_ok", tmp_path, "duration:=5.0", f"summary_file:={summary}"
    )
    assert code == 0, output
    assert len(states) > 100
    assert max(abs(x[3]) for x in states) <= 0.2 + 1e-3  # theta_dot kept (LQR reaches 0.53 from 0.15 rad)
    assert abs(json.loads(summary.read_text())["final_state"]["theta"]) < 0.01
    # Nearly every step's status: the episode starts once this probe has matched the publisher, but
    # the controller's writer may match this reader a little later (discovery is not symmetric), and
    # the last few may still be in flight when bringup stops the graph.
    assert len(statuses) >= 200, output
    assert all(s.controller == "nmpc" and s.solver == "rti_hpipm" for s in statuses)
    assert not any(s.fallback_active for s in statuses)
    assert all(s.solve_time_ms > 0 for s in statuses)


def test_solver_failure_falls_back_and_the_loop_keeps_running(ros_context: object, tmp_path: Path) -> None:
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(
        "constraints:\n  - {name: impossible, kind: bounded, variable: input, lower: 20.0, upper: 30.0}\n"
    )
    summary = tmp_path / "s.json"
    code, output, _states, statuses = run_nmpc_loop(
        ros_context, "nmpc_fail", tmp_path, "duration:=4.0", f"controller_constraints:={impossible}",
        f"summary_file:={summary}",
    )
    assert code == 0, output
    result = json.loads(summary.read_text())
    assert result["steps"] == 200
    assert abs(result["final_state"]["theta"]) < 0.02  # the LQR fallback balanced it
    assert statuses
    assert all(s.fallback_active for s in statuses)
    reasons = {s.fallback_reason.split(":")[0] for s in statuses}
    # The QP is infeasible at every step; while the LQR fallback swings theta_dot past the pole
    # constraints, the monitor's safety request is the (equally fallback) reason.
    assert "solver failed" in reasons
    assert reasons <= {"solver failed", "safety request"}, reasons
    assert statuses[-1].fallbacks_total >= 150
    assert "fallback (lqr)" in output


def test_model_updates_are_checked_and_swapped_in(ros_context: object) -> None:
    spec = ResidualSpec(4, 1, hidden=(8,), activation="tanh")
    ctrl = subprocess.Popen(
        [*executable("controller"), "--ros-args", "-r", "__ns:=/upd", "-p", "controller:=nmpc",
         "-p", "residual.enabled:=true", "-p", "residual.hidden:=[8]", "-p", "residual.activation:=tanh",
         "-p", "nmpc.horizon:=10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    node = Node("updater", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    statuses: list[ControllerStatus] = []
    node.create_subscription(ControllerStatus, "/upd/controller/status", statuses.append, STATUS_QOS)
    state_pub = node.create_publisher(State, "/upd/state", STATE_QOS)
    model_pub = node.create_publisher(ModelUpdate, "/upd/adapter/model", LATCHED_QOS)
    def send_state() -> None:  # stamped now: the controller runs on wall time here
        state_pub.publish(state_msg(np.array([0.0, 0.0, 0.05, 0.0]), node.get_clock().now().nanoseconds))

    try:
        assert spin_until(executor, lambda: state_pub.get_subscription_count() > 0, 30.0)
        timer = node.create_timer(0.02, send_state)
        assert spin_until(executor, lambda: len(statuses) > 3, 30.0)
        assert statuses[-1].model_version == 0
        bad = ModelUpdate(version=3, activation="tanh", layer_sizes=[5, 9, 4],
                          weights=[0] * spec.num_params, scales=[1.0] * 4)
        model_pub.publish(bad)
        spin_until(executor, lambda: False, 1.0)
        assert statuses[-1].model_version == 0
        weights = np.zeros(spec.num_params, dtype=np.int16)
        weights[-3] = 100  # bias of z_dot... any small change
        good = ModelUpdate(version=7, activation="tanh", layer_sizes=[5, 8, 4], weights=weights.tolist(),
                           scales=[1e-4] * 4, validation_loss=0.5)
        model_pub.publish(good)
        assert spin_until(executor, lambda: statuses[-1].model_version == 7, 20.0)
        assert not statuses[-1].fallback_active
        # A stale state (stamped 0.5 s ago, max_state_age 0.1 s) gets the fallback, with the reason.
        timer.cancel()
        spin_until(executor, lambda: False, 0.8)  # the last answered state is now 0.8 s old
        old = node.get_clock().now().nanoseconds - 500_000_000
        count = len(statuses)
        state_pub.publish(state_msg(np.array([0.0, 0.0, 0.05, 0.0]), old + 1))
        assert spin_until(executor, lambda: len(statuses) > count, 10.0)
        assert statuses[-1].fallback_active
        assert statuses[-1].fallback_reason.startswith("stale state: 0.5")
        # A state older than one already answered is dropped: no status, no command for it.
        count = len(statuses)
        state_pub.publish(state_msg(np.array([0.0, 0.0, 0.05, 0.0]), old))
        spin_until(executor, lambda: False, 1.0)
        assert len(statuses) == count
    finally:
        node.destroy_node()
        ctrl.terminate()
        try:
            output = ctrl.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            ctrl.kill()
            output = ctrl.communicate()[0]
            raise AssertionError(f"the controller did not stop on SIGTERM:\n{output}") from None
    assert "model update v3 rejected: layer sizes [5, 9, 4] do not match the controller's [5, 8, 4]" in output
    assert "model v7 in use" in output
    assert "older than the last answered" in output


DT_NS = 20_000_000
SYNC_SPEC = ResidualSpec(4, 1, hidden=(8,), activation="tanh")


class SyncedController:
    """A controller with adapter.sync in its own process, and this test's stand-in for the plant
    (states, as a lockstep plant sends them) and for the adapter (statuses and models)."""

    def __init__(self, ros_context: object, ns: str) -> None:
        from safe_ctrl_ros.msg import AdapterStatus, Command
        from safe_ctrl_ros.ros.qos import COMMAND_QOS

        self.proc = subprocess.Popen(
            [*executable("controller"), "--ros-args", "-r", f"__ns:=/{ns}", "-p", "controller:=nmpc",
             "-p", "residual.enabled:=true", "-p", "residual.hidden:=[8]", "-p", "residual.activation:=tanh",
             "-p", "nmpc.horizon:=10", "-p", "max_state_age:=0.0", "-p", "adapter.sync:=true",
             "-p", "adapter.sync_timeout:=3.0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.node = Node(f"adapter_double_{ns}", context=ros_context)
        self.executor = SingleThreadedExecutor(context=ros_context)
        self.executor.add_node(self.node)
        self.cmds: dict[int, float] = {}  # stamp -> wall time answered
        self.versions: dict[int, int] = {}
        self.breaks: dict[int, int] = {}  # stamp -> the status's sync_breaks_total
        self.node.create_subscription(Command, f"/{ns}/cmd", lambda m: self.cmds.setdefault(
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.monotonic()), COMMAND_QOS)
        self.node.create_subscription(ControllerStatus, f"/{ns}/controller/status", self._on_status, STATUS_QOS)
        self.state_pub = self.node.create_publisher(State, f"/{ns}/state", STATE_QOS)
        self.status_pub = self.node.create_publisher(AdapterStatus, f"/{ns}/adapter/status",
                                                     with_depth(LATCHED_QOS, 10))
        self.model_pub = self.node.create_publisher(ModelUpdate, f"/{ns}/adapter/model", LATCHED_QOS)
        assert spin_until(self.executor, lambda: self.state_pub.get_subscription_count() > 0, 30.0)

    def _on_status(self, m: ControllerStatus) -> None:
        stamp = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        self.versions.setdefault(stamp, m.model_version)
        self.breaks.setdefault(stamp, m.sync_breaks_total)

    @staticmethod
    def t(k: int) -> object:
        from builtin_interfaces.msg import Time

        ns = k * DT_NS
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)

    def answered(self, k: int, within: float) -> float | None:
        """Send state k as a lockstep plant does (again every 0.1 s) until it is answered: the wall s it took."""
        begin = time.monotonic()
        while time.monotonic() - begin < within:
            self.state_pub.publish(state_msg(np.array([0.0, 0.0, 0.05, 0.0]), k * DT_NS))
            if spin_until(self.executor, lambda: k * DT_NS in self.cmds, 0.1):
                return self.cmds[k * DT_NS] - begin
        return None

    def announce(self, next_due: int) -> None:
        from safe_ctrl_ros.msg import AdapterStatus

        self.status_pub.publish(AdapterStatus(round=0, outcome="announced", lockstep=True, next_due=self.t(next_due)))

    def report(self, number: int, version: int, due: int, next_due: int) -> None:
        from safe_ctrl_ros.msg import AdapterStatus

        self.status_pub.publish(AdapterStatus(round=number, outcome="accepted", version=version, lockstep=True,
                                              due=self.t(due), next_due=self.t(next_due)))

    def model(self, version: int, number: int, due: int) -> None:
        weights = np.zeros(SYNC_SPEC.num_params, dtype=np.int16)
        weights[-3] = 100 + version
        self.model_pub.publish(ModelUpdate(version=version, activation="tanh", layer_sizes=[5, 8, 4],
                                           weights=weights.tolist(), scales=[1e-4] * 4, validation_loss=0.5,
                                           round=number, due=self.t(due)))

    def versions_of(self, steps: range) -> list[int]:
        assert spin_until(self.executor, lambda: all(k * DT_NS in self.versions for k in steps), 10.0)
        return [self.versions[k * DT_NS] for k in steps]

    def breaks_of(self, steps: range) -> list[int]:
        assert spin_until(self.executor, lambda: all(k * DT_NS in self.breaks for k in steps), 10.0)
        return [self.breaks[k * DT_NS] for k in steps]

    def close(self) -> str:
        self.node.destroy_node()
        self.proc.terminate()
        try:
            return self.proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0]


def test_a_lockstep_adapters_rounds_are_waited_for_and_swapped_in_at_their_due(ros_context: object) -> None:
    """adapter.sync: nothing is answered before the adapter's announcement; a state at a round's due
    waits for that round's status (and model), whose model is in use from exactly that state; a round
    that never reports holds the loop for adapter.sync_timeout, then the controller goes on."""
    c = SyncedController(ros_context, "sync")
    try:
        assert c.answered(0, 2.0) is None  # no announcement yet: held
        c.announce(next_due=3)
        # Round 1's model comes early (training finished fast): it must still go in at its due, state 3.
        c.model(version=4, number=1, due=3)
        assert c.answered(0, 20.0) is not None
        assert c.answered(1, 5.0) is not None
        assert c.answered(2, 5.0) is not None
        assert c.answered(3, 1.5) is None  # due: round 1 has not reported
        c.report(1, version=4, due=3, next_due=6)
        assert c.answered(3, 5.0) is not None
        assert c.answered(4, 5.0) is not None
        assert c.answered(5, 5.0) is not None
        waited = c.answered(6, 10.0)  # round 2 never reports: after adapter.sync_timeout the loop goes on
        assert waited is not None
        assert 2.5 < waited < 6.0
        assert c.versions_of(range(7)) == [0, 0, 0, 4, 4, 4, 4]
        assert c.breaks_of(range(7)) == [0, 0, 0, 0, 0, 0, 1]  # state 6 was answered after the timeout
    finally:
        c.close()


def test_an_adapter_restart_ends_lockstep_and_later_updates_apply_on_arrival(ros_context: object) -> None:
    """A second announcement after rounds ran (the adapter restarted): the controller logs an error,
    stops waiting at dues, and applies the new adapter's updates as they arrive."""
    c = SyncedController(ros_context, "restart")
    try:
        c.announce(next_due=2)
        assert c.answered(0, 20.0) is not None
        assert c.answered(1, 5.0) is not None
        c.report(1, version=4, due=2, next_due=4)
        c.model(version=4, number=1, due=2)
        assert c.answered(2, 5.0) is not None
        assert c.answered(3, 5.0) is not None
        c.announce(next_due=100)  # the restarted adapter's schedule
        # The next due (state 4) is not waited for: the schedule was given up on.
        took = c.answered(4, 5.0)
        assert took is not None
        assert took < 2.0  # well under adapter.sync_timeout (3 s)
        c.model(version=9, number=1, due=100)  # applies on arrival, not at state 100
        spin_until(c.executor, lambda: False, 1.0)  # let it arrive
        assert c.answered(5, 5.0) is not None
        assert c.versions_of(range(6)) == [0, 0, 4, 4, 4, 9]
        assert c.breaks_of(range(6)) == [0, 0, 0, 0, 1, 1]  # the restart ended lockstep before state 4
    finally:
        out = c.close()
    assert "the adapter restarted" in out
    assert "Logger severity cannot be changed" not in out


def test_the_status_carries_the_disturbance_estimate_the_command_was_planned_with(ros_context: object) -> None:
    """ControllerStatus.disturbance_estimate is the supervisor's StepReport.disturbance (the NMPC's
    NmpcResult.disturbance, full nx), zeros on a fallback; the controller in this process, its states
    handed to it directly, its statuses over DDS."""
    from rclpy.parameter import Parameter

    from safe_ctrl_ros.control.supervisor import StepReport
    from safe_ctrl_ros.nodes.controller import ControllerNode

    ctrl = ControllerNode(context=ros_context, namespace="/dist", parameter_overrides=[
        Parameter("controller", value="nmpc"), Parameter("nmpc.horizon", value=10),
        Parameter("disturbance_estimate.gain", value=0.5), Parameter("max_state_age", value=0.0)])
    reports: list[StepReport] = []
    compute = ctrl.law.compute

    def recorded(*args: object, **kwargs: object) -> StepReport:
        reports.append(compute(*args, **kwargs))  # type: ignore[arg-type]
        return reports[-1]

    ctrl.law.compute = recorded  # type: ignore[method-assign]
    node = Node("dist_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    statuses: list[ControllerStatus] = []
    sub = node.create_subscription(ControllerStatus, "/dist/controller/status", statuses.append,
                                   with_depth(STATUS_QOS, 100))
    try:
        assert spin_until(executor, lambda: sub.get_publisher_count() > 0, 30.0)
        model = ctrl.model
        x = np.array([0.0, 0.0, 0.05, 0.0])
        push = np.array([0.0, 0.004, 0.0, 0.0])  # on x_dot, the estimated state
        for k in range(6):
            ctrl._answer(state_msg(x, k * 20_000_000))
            x = model.step(x, reports[-1].u, 0.02, 10) + push
        ctrl.safety_reason = "safety request: test"
        ctrl._answer(state_msg(x, 6 * 20_000_000))
        assert spin_until(executor, lambda: len(statuses) == 7, 30.0)
    finally:
        node.destroy_node()
        ctrl.destroy_node()
    assert [s.header.stamp.nanosec for s in statuses] == [k * 20_000_000 for k in range(7)]
    for status, report in zip(statuses, reports, strict=True):
        assert list(status.disturbance_estimate) == report.disturbance.tolist()
        assert len(status.disturbance_estimate) == 4
    assert list(statuses[0].disturbance_estimate) == [0.0] * 4  # before the first update
    np.testing.assert_allclose(statuses[1].disturbance_estimate, 0.5 * push, rtol=0, atol=1e-9)
    assert statuses[5].disturbance_estimate[1] > statuses[1].disturbance_estimate[1]
    assert statuses[6].fallback_active
    assert list(statuses[6].disturbance_estimate) == [0.0] * 4  # the fallback's command was not planned with it
