"""The bag writer: indexed MCAP on close, a readable bag after SIGKILL, rosbag2 metadata."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from safe_ctrl_ros.bag.mcap_file import MAGIC
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter

QOS = [
    {
        "history": "keep_last",
        "depth": 5,
        "reliability": "best_effort",
        "durability": "volatile",
        "deadline": {"sec": 2147483647, "nsec": 4294967295},
        "lifespan": {"sec": 2147483647, "nsec": 4294967295},
        "liveliness": "automatic",
        "liveliness_lease_duration": {"sec": 2147483647, "nsec": 4294967295},
        "avoid_ros_namespace_conventions": False,
    }
]


@functools.cache
def store() -> Typestore:
    return typestore()


def command(k: int) -> bytes:
    ts = store()
    msg = ts.types["safe_ctrl_ros/msg/Command"](
        header=ts.types["std_msgs/msg/Header"](
            stamp=ts.types["builtin_interfaces/msg/Time"](sec=k, nanosec=0), frame_id=""
        ),
        u=np.array([float(k)]),
    )
    return bytes(ts.serialize_cdr(msg, "safe_ctrl_ros/msg/Command"))


def read_all(path: Path) -> tuple[dict[str, int], list[tuple[str, int, bytes]], dict[str, object]]:
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        messages = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return counts, messages, info


def test_closed_bag_is_indexed_and_complete(tmp_path: Path) -> None:
    bag = tmp_path / "run"
    writer = BagWriter(bag, typestore(), flush_period=0.01)
    writer.add_topic("/a/cmd", "safe_ctrl_ros/msg/Command", QOS)
    writer.add_topic("/clock", "rosgraph_msgs/msg/Clock")
    writer.add_topic("/a/cmd", "safe_ctrl_ros/msg/Command")  # idempotent
    for k in range(300):
        writer.write("/a/cmd", k * 1000, command(k))
        if k % 100 == 0:
            time.sleep(0.05)  # let the writer flush: several chunks
    writer.close()
    counts, messages, info = read_all(bag)
    assert counts == {"/a/cmd": 300, "/clock": 0}
    assert [t for _, t, _ in messages] == [k * 1000 for k in range(300)]
    assert messages[7][2] == command(7)
    assert info["message_count"] == 300
    assert info["custom_data"] == {"recorder": "safe_ctrl_ros", "complete": "true"}
    topic = info["topics_with_message_count"][0]["topic_metadata"]
    assert topic["offered_qos_profiles"] == QOS
    assert topic["type_description_hash"].startswith("RIHS01_")
    with Reader(bag / "run.mcap") as raw:  # the MCAP file alone: its summary, indexes and definitions
        assert raw.message_count == 300
        storage = raw.storage
        assert len(storage.chunks) >= 3  # type: ignore[attr-defined]
        assert "float64[] u" in next(c for c in raw.connections if c.topic == "/a/cmd").msgdef.data


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_bag_writer import command
    from safe_ctrl_ros.bag.types import typestore
    from safe_ctrl_ros.bag.writer import BagWriter
    writer = BagWriter({bag!r}, typestore(), flush_period=0.05)
    writer.add_topic("/a/cmd", "safe_ctrl_ros/msg/Command")
    for k in range({settled}):
        writer.write("/a/cmd", k * 1000, command(k))
    time.sleep(0.5)  # more than a flush period: all of these are on disk
    print("settled", flush=True)
    k = {settled}
    while True:  # keep writing until killed
        writer.write("/a/cmd", k * 1000, command(k))
        k += 1
        time.sleep(0.001)
    """
)


def test_a_killed_recording_is_readable_up_to_the_last_flush(tmp_path: Path) -> None:
    bag = tmp_path / "killed"
    settled = 500
    script = CHILD.format(test_dir=str(Path(__file__).parent), bag=str(bag), settled=settled)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "settled"
        time.sleep(0.3)  # writing on while flushes land
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert (bag / "killed.mcap").read_bytes()[-8:] == MAGIC
    counts, messages, info = read_all(bag)
    stamps = [t for _, t, _ in messages]
    assert len(stamps) >= settled
    assert stamps == [k * 1000 for k in range(len(stamps))]  # a prefix, no gap
    assert messages[settled - 1][2] == command(settled - 1)
    assert info["custom_data"]["complete"] == "false"
    assert counts["/a/cmd"] <= len(stamps)  # metadata.yaml may trail the MCAP file by one flush
    with Reader(bag / "killed.mcap") as raw:  # the file by itself (scanned: no summary)
        assert raw.message_count == len(stamps)


def test_writer_refuses_an_existing_bag_and_unknown_types(tmp_path: Path) -> None:
    import pytest

    from safe_ctrl_ros.errors import ConfigError

    writer = BagWriter(tmp_path / "b", typestore())
    with pytest.raises(ConfigError, match="unknown to the bag's type store"):
        writer.add_topic("/x", "no_pkg/msg/Nothing")
    writer.close()
    with pytest.raises(ConfigError, match="already exists"):
        BagWriter(tmp_path / "b", typestore())
