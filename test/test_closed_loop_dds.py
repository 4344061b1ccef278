"""The walking skeleton end to end: plant and LQR controller as separate processes over real DDS.

A test-side subscriber watches the plant's state over DDS; the plant's summary and the exact
core simulation are compared with what went over the wire.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.ros import REPO, bringup, executable, spin_until, start_bringup, wait_for_exit
from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.simulation import PlantSim

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from safe_ctrl_ros.msg import Command, State  # noqa: E402
from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns  # noqa: E402
from safe_ctrl_ros.ros.qos import COMMAND_QOS, STATE_QOS, with_depth  # noqa: E402

LAUNCH = REPO / "launch" / "cartpole_lqr.launch.xml"
CONFIG = REPO / "config" / "cartpole_lqr.yaml"


def params_with(tmp_path: Path, **plant: object) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    data["/**/plant"]["ros__parameters"].update(plant)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def core_reference(steps: int) -> np.ndarray:
    """The same loop without ROS: what lockstep over DDS must reproduce bit for bit."""
    cfg = yaml.safe_load(CONFIG.read_text())
    p, c = cfg["/**/plant"]["ros__parameters"], cfg["/**/controller"]["ros__parameters"]
    sim = PlantSim(systems.make("cartpole"), p["dt"], p["substeps"], p["initial_state"])
    law = LqrController(systems.make("cartpole"), c["lqr"]["Q"], c["lqr"]["R"], c["dt"], c["lqr"]["discretization"])
    for _ in range(steps):
        sim.advance(law(sim.x))
    return sim.x


def test_cartpole_balanced_over_dds_in_separate_processes(ros_context: object, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    params = params_with(tmp_path, wait_for_subscribers=2)  # the controller and this test
    node = Node("closed_loop_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    states: list[tuple[int, list[float]]] = []
    node.create_subscription(
        State,
        "/skeleton/plant/state",
        lambda m: states.append((stamp_to_ns(m.header.stamp), list(m.x))),
        with_depth(STATE_QOS, 400),  # the whole run queued: a probe slowed by a loaded machine loses none
    )
    proc = start_bringup(
        str(LAUNCH), "namespace:=skeleton", f"params:={params}", "duration:=6.0", f"summary_file:={summary}"
    )
    try:
        output = wait_for_exit(executor, proc, timeout=120.0)
        # A probe slowed by a loaded machine still holds the rest in its reader's history: take it.
        spin_until(executor, lambda: len({stamp for stamp, _ in states}) >= 301, 10.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
    assert proc.returncode == 0, output
    # Each process was its own: two pids were started.
    assert output.count("process started with pid") == 2, output

    # Lockstep: the initial state and one state per step, each stamped k dt; the plant waited for this
    # probe (wait_for_subscribers) before the first. A re-sent state repeats its stamp and values.
    by_stamp: dict[int, list[float]] = {}
    for stamp, x in states:
        assert by_stamp.setdefault(stamp, x) == x, f"state {stamp} ns re-sent with other values"
    stamps = sorted(by_stamp)
    assert stamps == [k * 20_000_000 for k in range(301)], (
        f"{len(stamps)} distinct states seen over DDS, expected the 301 of 300 steps at 0.02 s"
    )
    assert by_stamp[0] == [0.0, 0.0, 0.1, 0.0]  # the configured initial state, exactly
    times = np.array(stamps) * 1e-9
    thetas = np.array([by_stamp[t][2] for t in stamps])
    settled = times[np.abs(thetas) >= 0.01].max(initial=0.0)
    assert settled < 5.0, f"|theta| >= 0.01 rad until t={settled:.2f} s"
    assert np.all(np.abs(thetas[times >= 5.0]) < 0.01)

    result = json.loads(summary.read_text())
    assert result["terminated"] == ""  # the episode ran to its end
    assert result["steps"] == 300
    assert result["missed_deadlines"] == 0
    assert abs(result["final_state"]["theta"]) < 1e-3
    # Lockstep over DDS is exactly the core simulation: same numbers, bit for bit.
    final = [result["final_state"][k] for k in ("x", "x_dot", "theta", "theta_dot")]
    np.testing.assert_array_equal(final, core_reference(300))


def test_composed_mode_gives_the_same_run(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = bringup(str(LAUNCH), "--composed", "namespace:=composed", "duration:=6.0", f"summary_file:={summary}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "composed node started: plant" in done.stdout
    result = json.loads(summary.read_text())
    final = [result["final_state"][k] for k in ("x", "x_dot", "theta", "theta_dot")]
    np.testing.assert_array_equal(final, core_reference(300))


def test_unanswered_states_are_missed_deadlines(ros_context: object, tmp_path: Path) -> None:
    """A controller that answers once, then never again: the plant applies the safe command, counts and
    reports it."""
    summary = tmp_path / "summary.json"
    params = params_with(tmp_path, command_timeout=0.05, resend_period=0.01, duration=0.2, wait_for_subscribers=1)
    node = Node("silent_controller", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    pub = node.create_publisher(Command, "/silent/plant/cmd", COMMAND_QOS)
    answered: list[int] = []

    def answer_once(msg: State) -> None:  # answers the initial state, then falls silent
        if not answered:
            answered.append(1)
            pub.publish(command_msg(np.zeros(1), stamp_to_ns(msg.header.stamp)))

    node.create_subscription(State, "/silent/plant/state", answer_once, STATE_QOS)
    proc = subprocess.Popen(
        [*executable("plant"), "--ros-args", "-r", "__ns:=/silent", "--params-file", str(params),
         "-p", f"summary_file:={summary}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output = wait_for_exit(executor, proc, timeout=60.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
    assert proc.returncode == 0, output
    result = json.loads(summary.read_text())
    assert result["steps"] == 10
    assert result["missed_deadlines"] == 9  # every step after the answered first one
    assert result["resends"] >= 10  # each state was re-sent before its deadline passed
    assert result["safe_command_steps"] == 9
    assert (result["watchdog_engagements"], result["watchdog_releases"]) == (1, 0)  # engaged once, for good
    # The safe command is the cart-pole's equilibrium input (no force): all 10 steps ran on u = 0.
    p = yaml.safe_load(CONFIG.read_text())["/**/plant"]["ros__parameters"]
    sim = PlantSim(systems.make("cartpole"), p["dt"], p["substeps"], p["initial_state"])
    for _ in range(10):
        sim.advance(np.zeros(1))
    np.testing.assert_array_equal([result["final_state"][k] for k in ("x", "x_dot", "theta", "theta_dot")], sim.x)


def test_plant_gives_up_when_no_controller_appears(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    params = params_with(tmp_path, startup_timeout=1.0, summary_file=str(summary))
    done = subprocess.run(
        [*executable("plant"), "--ros-args", "-r", "__ns:=/nobody", "--params-file", str(params)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    result = json.loads(summary.read_text())
    assert result["terminated"] == (
        "no controller after 1.0 s: plant/state has 0 of 1 subscriber(s), plant/cmd 0 publisher(s)"
    )
    assert result["steps"] == 0
