"""Killing nodes mid-run: the 3D quadrotor hovering in real time while the controller, the injector
and the constraint monitor are killed (SIGKILL) one after the other. The plant's watchdog applies
the hover thrust and reports it, the runner reports each death and respawns the node, the loop
resumes, and the bag recorded meanwhile reads back to the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.ros import REPO, kill_when_recorded, start_bringup
from safe_ctrl_ros.bag.report import load_run, metrics

pytest.importorskip("rclpy")
LAUNCH = REPO / "launch" / "quadrotor_3d_hover.launch.xml"
QUIET = "seed: 0\ndisturbances: []\n"



def test_killed_nodes_are_reported_respawned_and_the_loop_resumes(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(QUIET)
    bag, summary = tmp_path / "bag", tmp_path / "summary.json"
    proc = start_bringup(str(LAUNCH), "namespace:=faults", "mode:=realtime", "respawn:=true", "command_timeout:=0.1",
                         "duration:=12.0", f"disturbances:={quiet}", "record:=true", f"bag:={bag}",
                         "autostart:=false", f"summary_file:={summary}")
    killed: list[str] = []
    try:
        for node, at in (("controller", 2.0), ("disturbance_injector", 5.0), ("constraint_monitor", 8.0)):
            kill_when_recorded(bag, at, node, "faults")
            killed.append(node)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    for node in killed:
        assert f"{node} died with code -9; respawning" in out, out[-3000:]
    s = json.loads(summary.read_text())
    assert s["terminated"] == ""  # the episode ran to its end
    assert s["steps"] == 600
    assert s["safe_command_steps"] > 0  # the control path was down: hover thrust was applied
    # and every time the watchdog engaged, the respawned node brought the commands back
    # every outage but possibly the last (a node respawned near the end may not answer before the
    # episode ends, depending on the machine's load) was over before the end
    assert s["watchdog_engagements"] - s["watchdog_releases"] in (0, 1)
    assert s["watchdog_releases"] >= 2
    print(f"safe-command steps {s['safe_command_steps']}; watchdog engaged {s['watchdog_engagements']} time(s)")
    final = s["final_state"]
    assert abs(final["z"] - 1.0) < 0.1  # still hovering near its goal
    run = load_run(bag)
    assert run.complete is True
    times = [t for t, _ in run.states]
    assert times[-1] == pytest.approx(12.0)
    m = metrics(run)
    print(f"states recorded: {m['steps']} of 601")
    assert m["steps"] >= 590  # states recorded through every fault (best effort: a few may be lost)
    assert m["safe_command_steps"] == s["safe_command_steps"]  # the plant's health, from the bag
    assert m["loop_latency_p99_ms"] > 0


def test_a_killed_adapter_leaves_the_loop_flying_and_comes_back(tmp_path: Path) -> None:
    """The flagship in lockstep: SIGKILL the adapter at 3 s; the controller keeps the model version it
    has, the loop never waits for the adapter, the respawned adapter starts learning again."""
    bag, summary = tmp_path / "bag", tmp_path / "summary.json"
    proc = start_bringup(str(REPO / "launch" / "quadrotor_2d_flagship.launch.xml"), "namespace:=adaptfault",
                         "respawn:=true", "duration:=10.0", "record:=true", f"bag:={bag}", "autostart:=false",
                         f"summary_file:={summary}")
    try:
        kill_when_recorded(bag, 3.0, "adapter", "adaptfault", timeout=90.0)
        out, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "adapter died with code -9; respawning" in out
    assert out.count("qzo_ff on quadrotor_2d") == 2  # the adapter started twice
    s = json.loads(summary.read_text())
    assert s["terminated"] == ""
    assert s["steps"] == 500
    assert s["safe_command_steps"] == 0  # the control path never stopped
    m = metrics(load_run(bag))
    assert m["steps"] == 501
    assert m["violation_steps"] == 0
