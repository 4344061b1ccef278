"""A node's per-step status reaches a recorder that matched late (real DDS, two processes).

DDS discovery is not symmetric: a recorder's reader can match a status writer before the writer has
matched the reader, and what a volatile writer publishes in between is lost to the bag. Per-step
statuses are therefore published transient local with a history (ros/qos.py STEP_STATUS_QOS), and
the recorder subscribes transient local where every publisher latches: a reader the writer matches
late still gets what was published before. The volatile writer beside it shows what is lost without.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.ros import executable, spin_until

pytest.importorskip("rclpy")
NS = "status_history"
SENT = 5


def _statuses(bag: Path) -> dict[str, list[int]]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list[int]] = {}
    with AnyReader([bag]) as reader:
        for con, _t, raw in reader.messages():
            msg = reader.deserialize(raw, con.msgtype)
            out.setdefault(con.topic, []).append(int(msg.header.stamp.sec))
    return out


def test_statuses_published_before_the_recorder_matched_are_in_the_bag(ros_context: Any, tmp_path: Path) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from safe_ctrl_ros.msg import ConstraintStatus
    from safe_ctrl_ros.ros.qos import STATUS_QOS, STEP_STATUS_QOS

    node = Node("constraint_monitor", namespace=f"/{NS}", context=ros_context)
    kept = node.create_publisher(ConstraintStatus, "~/status", STEP_STATUS_QOS)
    lost = node.create_publisher(ConstraintStatus, "volatile/status", STATUS_QOS)
    for sec in range(1, SENT + 1):  # nobody listens yet
        msg = ConstraintStatus()
        msg.header.stamp.sec = sec
        kept.publish(msg)
        lost.publish(msg)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    bag = tmp_path / "late"
    recorder = subprocess.Popen(
        [*executable("recorder"), "--ros-args", "-r", f"__ns:=/{NS}", "-p", f"output:={bag}",
         "-p", "discovery_period:=0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Both writers must have matched the recorder's readers before it stops.
        assert spin_until(executor, lambda: kept.get_subscription_count() > 0 and lost.get_subscription_count() > 0,
                          60.0), "the recorder never subscribed"
        spin_until(executor, lambda: False, 2.0)  # the history is delivered, the writer thread flushes
        recorder.send_signal(signal.SIGINT)
        out = recorder.communicate(timeout=30)[0]
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.communicate()
        executor.shutdown()
        node.destroy_node()
    assert recorder.returncode == 0, out
    recorded = _statuses(bag)
    assert recorded.get(f"/{NS}/constraint_monitor/status") == list(range(1, SENT + 1)), out
    assert recorded.get(f"/{NS}/volatile/status", []) == []  # volatile: sent before the match, lost
