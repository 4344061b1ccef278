"""Constraint monitor and disturbance injector over real DDS: timing of violations, repeatability,
non-finite states, bit-identical pass-through."""

from __future__ import annotations

import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.ros import REPO, bringup, executable, spin_until, start_bringup, start_when_matched, wait_for_exit

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from safe_ctrl_ros import systems  # noqa: E402
from safe_ctrl_ros.control import Nmpc, NmpcConfig  # noqa: E402
from safe_ctrl_ros.disturbances import load_scenario  # noqa: E402
from safe_ctrl_ros.msg import Command, ConstraintStatus, SafetyRequest, State  # noqa: E402
from safe_ctrl_ros.ros.convert import command_msg, state_msg  # noqa: E402
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS  # noqa: E402
from safe_ctrl_ros.safety import load_constraints  # noqa: E402
from safe_ctrl_ros.safety.monitor import ConstraintMonitor  # noqa: E402
from safe_ctrl_ros.simulation import PlantSim  # noqa: E402
from safe_ctrl_ros.tasks import make_task  # noqa: E402

LAUNCH = REPO / "launch" / "cartpole_nmpc.launch.xml"
CONSTRAINTS = REPO / "config" / "constraints" / "cartpole_pole.yaml"
IMPULSE = REPO / "config" / "disturbances" / "cartpole_impulse.yaml"


def expected_first_violation() -> float:
    """The same loop in the core: NMPC, the scenario's force, the monitor's rule."""
    model = systems.make("cartpole")
    cons = load_constraints(CONSTRAINTS, 4, 1)
    scenario = load_scenario(IMPULSE, 4, 1, 0.02, list(model.params))
    ctrl = Nmpc(model, make_task(model, None), NmpcConfig(Q=[1, 1, 10, 1], R=0.1), cons)
    sim = PlantSim(model, 0.02, 10, [0.0, 0.0, 0.15, 0.0])
    mon = ConstraintMonitor(cons, 4, [0.0])
    for _ in range(200):
        mon.state(sim.t_ns, sim.x)
        if mon.stats.first_violation_time is not None:
            return mon.stats.first_violation_time
        u = ctrl.solve(sim.x, sim.t).u
        mon.command(u)
        sim.wrench = scenario.force(sim.t)
        sim.advance(u)
    raise AssertionError("the core loop saw no violation")


def test_impulse_is_reported_at_the_expected_step_and_not_before(ros_context: object, tmp_path: Path) -> None:
    expected = expected_first_violation()
    assert expected == pytest.approx(2.02)  # the first state after the push at t = 2.0 s
    node = Node("impulse_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    statuses: list[ConstraintStatus] = []
    sub = node.create_subscription(ConstraintStatus, "/imp/constraint_monitor/status", statuses.append, STATUS_QOS)
    proc = start_bringup(str(LAUNCH), "namespace:=imp", "duration:=3.0", "autostart:=false")
    try:
        start_when_matched(node, executor, "imp", [sub])
        output = wait_for_exit(executor, proc, timeout=120.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
    assert proc.returncode == 0, output
    assert statuses, output
    stamp = {s.header.stamp.sec + s.header.stamp.nanosec * 1e-9: s for s in statuses}
    before = [s for t, s in stamp.items() if t < expected - 1e-9]
    assert before
    assert not any(any(s.violated) for s in before)
    assert any(stamp[t].violated[3] for t in stamp if abs(t - expected) < 1e-9)  # theta_dot upper bound
    last = statuses[-1]
    assert last.first_violation_time == pytest.approx(expected)
    assert last.failed
    assert "disturbance 'push' start" in output


def _noisy_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "noisy.yaml"
    path.write_text(
        "seed: 3\n"
        "disturbances:\n"
        "  - {name: noise, target: observation, kind: white_noise, std: [0.0, 0.0, 0.01, 0.02]}\n"
        "  - {name: shove, target: action, kind: uniform, low: -1.0, high: 1.0, start: 0.5}\n"
    )
    return path


def _run(tmp_path: Path, tag: str, *args: str) -> dict[str, object]:
    summary = tmp_path / f"{tag}.json"
    done = bringup(str(LAUNCH), "--composed", f"namespace:={tag}", "duration:=2.0", f"summary_file:={summary}",
                   f"disturbances:={_noisy_scenario(tmp_path)}", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(summary.read_text())


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    a = _run(tmp_path, "seed_a")
    b = _run(tmp_path, "seed_b")
    c = _run(tmp_path, "seed_c", "seed:=4")
    assert a["final_state"] == b["final_state"]  # bit for bit, through DDS, noise and all
    assert a["final_state"] != c["final_state"]
    assert a["missed_deadlines"] == b["missed_deadlines"] == 0


def test_nan_state_is_an_error_and_a_safety_request_and_nothing_dies(ros_context: object) -> None:
    monitor = subprocess.Popen(
        [*executable("constraint_monitor"), "--ros-args", "-r", "__ns:=/nan", "-p", f"constraints_file:={CONSTRAINTS}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    controller = subprocess.Popen(
        [*executable("controller"), "--ros-args", "-r", "__ns:=/nan", "-p", "controller:=nmpc"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    node = Node("nan_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    diags: list[DiagnosticArray] = []
    requests: list[SafetyRequest] = []
    commands: list[Command] = []
    subs = [
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, STATUS_QOS),
        node.create_subscription(SafetyRequest, "/nan/safety/request", requests.append, LATCHED_QOS),
        node.create_subscription(Command, "/nan/cmd", commands.append, COMMAND_QOS),
    ]
    pub = node.create_publisher(State, "/nan/state", STATE_QOS)
    try:
        assert spin_until(executor, lambda: all(s.get_publisher_count() > 0 for s in subs), 30.0)
        assert spin_until(executor, lambda: pub.get_subscription_count() >= 2, 30.0)
        k = 0
        # (a "stale stream" request may come first, while the probe was still matching)
        while k < 60 and not (requests and "non-finite" in requests[-1].reason and commands):
            k += 1
            pub.publish(state_msg(np.array([0.0, math.nan, 0.1, 0.0]), k * 20_000_000))
            spin_until(executor, lambda: False, 0.05)
        assert requests[-1].fallback
        assert requests[-1].freeze_adapter
        assert "non-finite" in requests[-1].reason
        assert any(s.level == b"\x02" and "non-finite" in s.message for d in diags for s in d.status)
        assert commands
        assert list(commands[-1].u) == [0.0]  # the safe command, not LQR on NaN
        assert monitor.poll() is None
        assert controller.poll() is None
    finally:
        node.destroy_node()
        for p in (monitor, controller):
            p.terminate()
            p.communicate(timeout=20)


def _bits(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def test_inactive_disturbances_pass_messages_through_bit_identical(ros_context: object, tmp_path: Path) -> None:
    later = tmp_path / "later.yaml"
    later.write_text(
        "seed: 1\ndisturbances:\n"
        "  - {name: late_noise, target: observation, kind: white_noise, std: 1.0, start: 1000.0}\n"
        "  - {name: late_shove, target: action, kind: step, magnitude: 1.0, start: 1000.0}\n"
    )
    injector = subprocess.Popen(
        [*executable("disturbance_injector"), "--ros-args", "-r", "__ns:=/bits", "-p", f"scenario_file:={later}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    node = Node("bits_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    states: list[State] = []
    cmds: list[Command] = []
    subs = [
        node.create_subscription(State, "/bits/state", states.append, STATE_QOS),
        node.create_subscription(Command, "/bits/plant/cmd", cmds.append, COMMAND_QOS),
    ]
    state_pub = node.create_publisher(State, "/bits/plant/state", STATE_QOS)
    cmd_pub = node.create_publisher(Command, "/bits/cmd", COMMAND_QOS)
    tricky = [0.1, -0.0, 5e-324, 1.7976931348623157e308, -1e-300, 1.0 / 3.0]
    try:
        assert spin_until(executor, lambda: all(s.get_publisher_count() > 0 for s in subs), 30.0)
        assert spin_until(executor, lambda: state_pub.get_subscription_count() > 0, 30.0)
        assert spin_until(executor, lambda: cmd_pub.get_subscription_count() > 0, 30.0)
        for k in range(1, 30):
            state_pub.publish(state_msg(np.array(tricky), k * 20_000_000))
            cmd_pub.publish(command_msg(np.array([tricky[k % 6]]), k * 20_000_000))
            spin_until(executor, lambda: False, 0.02)
        spin_until(executor, lambda: len(cmds) >= 29, 10.0)
    finally:
        node.destroy_node()
        injector.terminate()
        injector.communicate(timeout=20)
    assert states
    assert all(_bits(list(s.x)) == _bits(tricky) for s in states)
    assert len(cmds) == 29
    assert all(_bits(list(c.u)) == _bits([tricky[(i + 1) % 6]]) for i, c in enumerate(cmds))
