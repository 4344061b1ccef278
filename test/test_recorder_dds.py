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
    assert f"system: cartpole (parameter 'system' of /{name}/plant)" in done.stdout
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
    assert run.topics["/pushed/clock"][0] == "rosgraph_msgs/msg/Clock"  # the loop's own clock
    assert "/clock" not in run.topics
    assert run.topics["/pushed/plant/wrench"][0] == "geometry_msgs/msg/WrenchStamped"
    assert len(run.states) == 151  # every state of the 3 s episode, from t = 0
    # The bag names its system (asked from the plant), so the report needs no guess.
    assert (run.system, run.system_note) == ("cartpole", "")
    a, b = metrics(run), metrics(load_run(calm))
    assert a["system"] == "cartpole"
    assert a["units"]["tracking_rmse"] == "m"
    assert a["angle_rmse"] is not None  # the pole angle, in rad, apart from the cart position
    assert a["first_violation_time"] == pytest.approx(2.02)
    assert a["violation_steps"] > 0
    assert [e["phase"] for e in a["disturbance_events"]] == ["start", "end"]
    assert b["violation_steps"] == 0
    assert b["first_violation_time"] is None
    out = tmp_path / "report.json"
    assert main([str(pushed), str(calm), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["run"] for r in rows] == ["pushed", "calm"]


def test_replay_reproduces_the_monitors_output(tmp_path: Path) -> None:
    """A fresh constraint monitor fed by safe-ctrl-replay gives the recorded monitor's verdicts."""
    import subprocess
    import sys

    from helpers.ros import executable

    bag = record(tmp_path, "orig")
    monitor = subprocess.Popen(
        [*executable("constraint_monitor"), "--ros-args", "-r", "__ns:=/orig", "-r", "__node:=judge",
         "-p", f"constraints_file:={REPO / 'config' / 'constraints' / 'cartpole_pole.yaml'}",
         "-r", "state:=plant/state", "-r", "cmd:=plant/cmd"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    again = tmp_path / "again"
    recorder = subprocess.Popen(
        [*executable("recorder"), "--ros-args", "-r", "__ns:=/orig", "-p", f"output:={again}",
         "-p", "topics:=['/orig/judge/status']"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "safe_ctrl_ros.bag.replay", str(bag), "--topics", "/orig/plant/state",
             "/orig/plant/cmd", "--start-delay", "3.0"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        for p in (recorder, monitor):
            p.terminate()
            p.communicate(timeout=30)
    original = {(s.header.stamp.sec, s.header.stamp.nanosec): s for s in load_run(bag).monitor}
    from rosbags.highlevel import AnyReader

    replayed = {}
    with AnyReader([again]) as reader:
        for con, _t, raw in reader.messages():
            s = reader.deserialize(raw, con.msgtype)
            replayed[(s.header.stamp.sec, s.header.stamp.nanosec)] = s
    common = sorted(set(original) & set(replayed))
    assert len(common) >= 140  # nearly all of the 151 states (best-effort replay may drop a few)
    for key in common:
        assert list(replayed[key].violated) == list(original[key].violated), key
        assert list(replayed[key].values) == pytest.approx(list(original[key].values), abs=1e-12), key
    assert any(any(replayed[k].violated) for k in common)  # the push's violation is reproduced


def test_a_killed_recorder_leaves_a_readable_bag(tmp_path: Path) -> None:
    from helpers.ros import kill_when_recorded, start_bringup

    bag = tmp_path / "killed"
    proc = start_bringup(str(LAUNCH), "namespace:=killed", "record:=true", f"bag:={bag}", "autostart:=false",
                         "duration:=6.0")
    try:
        kill_when_recorded(bag, 2.0, "recorder", "killed", timeout=90.0)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "recorder" in out
    assert "exit code -9" in out  # the runner reported the death; the loop went on
    assert "episode finished: 300 steps" in out
    run = load_run(bag)
    assert run.complete is False
    assert (run.system, run.system_note) == ("cartpole", "")  # metadata.yaml named it before the kill
    times = [t for t, _ in run.states]
    assert times[0] == 0.0
    assert len(times) >= 100  # everything up to the kill (>= 2 s of sim), less the last flush
    assert times == pytest.approx([k * 0.02 for k in range(len(times))])  # a gap-free prefix
    assert metrics(run)["recording_complete"] is False


def test_the_recorders_system_parameter(tmp_path: Path) -> None:
    """`system` set on the recorder is in the bag from its first metadata.yaml on; an unknown name
    stops the recorder with the reason (exit code 2) before it creates the bag."""
    import subprocess
    import time

    import yaml

    from helpers.ros import executable

    bad = subprocess.run([*executable("recorder"), "--ros-args", "-p", f"output:={tmp_path / 'bad'}",
                          "-p", "system:=cartpoll"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "unknown system 'cartpoll'" in bad.stderr
    assert not (tmp_path / "bad").exists()
    bag = tmp_path / "given"
    proc = subprocess.Popen([*executable("recorder"), "--ros-args", "-r", "__ns:=/given", "-p", f"output:={bag}",
                             "-p", "system:=quadrotor_2d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30.0
        while not (bag / "metadata.yaml").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
        assert custom["system"] == "quadrotor_2d"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert (custom["system"], custom["complete"]) == ("quadrotor_2d", "true")  # the closed bag keeps it
    assert load_run(bag).system == "quadrotor_2d"


def test_the_recorder_starts_a_plant_that_never_names_its_system_after_start_system_wait(
    ros_context: object, tmp_path: Path
) -> None:
    """A plant without a parameter service (a driver that offers only its topics): the recorder starts
    it once every topic is matched and `start_system_wait` has passed without the system's answer, and
    says so; the bag then names no system."""
    import subprocess
    import time

    import yaml
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_srvs.srv import Trigger

    from helpers.ros import executable, spin_until
    from safe_ctrl_ros.msg import State
    from safe_ctrl_ros.ros.qos import STATE_QOS

    node = Node("plant", namespace="/mute", context=ros_context, start_parameter_services=False)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    pub = node.create_publisher(State, "/mute/plant/state", STATE_QOS)
    started: list[float] = []

    def start(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        started.append(time.monotonic())
        res.success = True
        return res

    node.create_service(Trigger, "/mute/plant/start", start)
    bag, wait = tmp_path / "mute", 2.0
    proc = subprocess.Popen(
        [*executable("recorder"), "--ros-args", "-r", "__ns:=/mute", "-p", f"output:={bag}", "-p", "start_plant:=true",
         "-p", "discovery_period:=0.1", "-p", "start_after_scans:=1", "-p", "start_requires:=['']",
         "-p", f"start_system_wait:={wait}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 60.0), "the recorder never subscribed"
        matched_at = time.monotonic()
        assert spin_until(executor, lambda: bool(started), 60.0), "the recorder never started the plant"
        # Its own match can precede ours (asymmetric discovery): a margin of 0.5 s below the wait.
        assert started[0] - matched_at >= wait - 0.5
        custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
        assert "system" not in (custom or {})
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        node.destroy_node()
    assert f"did not name its system within {wait:g} s" in out
    assert len(started) == 1  # asked once
