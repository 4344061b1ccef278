"""The recorder in a real graph: a complete MCAP bag of every topic, started by the recorder, and
the report's metrics of a run with a known violation, side by side with one without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.ros import REPO, bringup
from safe_ctrl_ros.bag.report import load_run, main, metrics

pytest.importorskip("rclpy")
LAUNCH = REPO / "launch" / "cartpole_nmpc.launch.xml"


def record(tmp_path: Path, name: str, *args: str) -> Path:
    bag = tmp_path / name
    done = bringup(str(LAUNCH), f"namespace:={name}", "record:=true", f"bag:={bag}", "autostart:=false",
                   "duration:=3.0", *args, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "asked the plant to start" in done.stdout
    return bag


def test_recorded_bags_hold_every_topic_and_report_the_known_violation(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("seed: 0\ndisturbances: []\n")
    pushed = record(tmp_path, "pushed")
    calm = record(tmp_path, "calm", f"disturbances:={quiet}")
    run = load_run(pushed)
    expected = {
        "plant/state": "State", "state": "State", "cmd": "Command", "plant/cmd": "Command",
        "plant/reference": "Reference", "controller/status": "ControllerStatus",
        "constraint_monitor/status": "ConstraintStatus", "disturbance/events": "DisturbanceEvent",
        "safety/request": "SafetyRequest",
    }
    for suffix, kind in expected.items():
        assert run.topics[f"/pushed/{suffix}"][0] == f"safe_ctrl_ros/msg/{kind}"
    assert run.topics["/clock"][0] == "rosgraph_msgs/msg/Clock"
    assert run.topics["/pushed/plant/wrench"][0] == "geometry_msgs/msg/WrenchStamped"
    assert len(run.states) == 151  # every state of the 3 s episode, from t = 0
    a, b = metrics(run), metrics(load_run(calm))
    assert a["first_violation_time"] == pytest.approx(2.02)
    assert a["violation_steps"] > 0
    assert [e["phase"] for e in a["disturbance_events"]] == ["start", "end"]
    assert b["violation_steps"] == 0
    assert b["first_violation_time"] is None
    out = tmp_path / "report.json"
    assert main([str(pushed), str(calm), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["run"] for r in rows] == ["pushed", "calm"]
