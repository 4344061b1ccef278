"""Hardware in the loop across a network link: the plant (realtime) in one network namespace, the
controller, monitor and injector in another, joined by a veth pair; discovery by static peers set
by the HIL launch files. The injector adds 5 ms +- 2 ms of delay and 1% loss on each link.

Needs root (or CAP_NET_ADMIN) to create network namespaces; skips, saying why, where refused.
Nothing leaves the two namespaces: their only interfaces are their own loopback and the veth ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.ros import REPO

pytest.importorskip("rclpy")

ROBOT, EDGE = "10.77.0.1", "10.77.0.2"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    robot, edge = f"scr{tag}", f"sce{tag}"
    made = _ip("netns", "add", robot)
    if made.returncode != 0:
        pytest.skip(f"this machine refuses network namespaces: {made.stderr.strip()}")
    try:
        _ip("netns", "add", edge)
        steps = [
            ("link", "add", f"v{tag}r", "type", "veth", "peer", "name", f"v{tag}e"),
            ("link", "set", f"v{tag}r", "netns", robot),
            ("link", "set", f"v{tag}e", "netns", edge),
            ("-n", robot, "addr", "add", f"{ROBOT}/24", "dev", f"v{tag}r"),
            ("-n", edge, "addr", "add", f"{EDGE}/24", "dev", f"v{tag}e"),
            ("-n", robot, "link", "set", f"v{tag}r", "up"),
            ("-n", edge, "link", "set", f"v{tag}e", "up"),
            ("-n", robot, "link", "set", "lo", "up"),
            ("-n", edge, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth link (ip {' '.join(step)}): {done.stderr.strip()}")
        yield robot, edge
    finally:
        _ip("netns", "del", robot)
        _ip("netns", "del", edge)


def _in_ns(ns: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_STATIC_PEERS", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "safe_ctrl_ros.bringup.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
    )


def test_cartpole_nmpc_balances_over_a_delayed_lossy_link(namespaces: tuple[str, str], tmp_path: Path) -> None:
    robot_ns, edge_ns = namespaces
    summary = tmp_path / "summary.json"
    edge = _in_ns(edge_ns, str(REPO / "launch" / "cartpole_hil_edge.launch.xml"), f"peers:={ROBOT}")
    robot = _in_ns(robot_ns, str(REPO / "launch" / "cartpole_hil_robot.launch.xml"), f"peers:={EDGE}",
                   "duration:=8.0", f"summary_file:={summary}")
    try:
        robot_out, _ = robot.communicate(timeout=150)
    finally:
        edge.terminate()
        try:
            edge_out, _ = edge.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge_out, _ = edge.communicate()
        if robot.poll() is None:
            robot.kill()
            robot.communicate()
    assert robot.returncode == 0, robot_out + "\n--- edge ---\n" + edge_out
    s = json.loads(summary.read_text())
    assert s["terminated"] == ""  # the pole stayed up: no bound left
    assert s["steps"] == 400
    timing = s["timing"]
    # The link's 5 +- 2 ms each way shows in the measured round trip (state out -> command back).
    assert timing["latency_ms"]["p50"] > 8.0
    assert timing["checked_steps"] > 350
    assert abs(s["final_state"]["theta"]) < 0.05  # back near upright after starting at 0.15 rad
    assert "link faults: state dropped" in edge_out  # the injector dropped and delayed messages
    print(f"HIL over veth: latency p50/p99/max {timing['latency_ms']['p50']:.1f}/"
          f"{timing['latency_ms']['p99']:.1f}/{timing['latency_ms']['max']:.1f} ms, "
          f"deadline misses {timing['deadline_misses']} of {timing['checked_steps']}")
