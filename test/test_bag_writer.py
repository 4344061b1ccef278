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
from typing import Any

import numpy as np
import pytest
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


def read_all(path: Path) -> tuple[dict[str, int], list[tuple[str, int, bytes]], dict[str, Any]]:
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        messages = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return counts, messages, info


def test_closed_bag_is_indexed_and_complete(tmp_path: Path) -> None:
    bag = tmp_path / "run"
    writer = BagWriter(bag, typestore(), flush_period=0.01, chunk_bytes=4096)
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
        assert len(storage.chunks) >= 3  # type: ignore[attr-defined]  # 300 messages of 62 bytes, 4 KiB chunks
        assert "float64[] u" in next(c for c in raw.connections if c.topic == "/a/cmd").msgdef.data


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_bag_writer import command
    from safe_ctrl_ros.bag.types import typestore
    from safe_ctrl_ros.bag.writer import BagWriter
    writer = BagWriter({bag!r}, typestore(), flush_period=0.05, chunk_bytes=4096)  # chunks sealed while killed
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


def record_bytes() -> int:
    """An MCAP message record of command(k): opcode, length, channel, sequence, two times, the CDR."""
    return 1 + 8 + 2 + 4 + 8 + 8 + len(command(0))


def write_bag(path: Path, compression: str, n: int = 2000, chunk_bytes: int = 16384) -> None:
    writer = BagWriter(path, typestore(), compression=compression, chunk_bytes=chunk_bytes)
    writer.add_topic("/a/cmd", "safe_ctrl_ros/msg/Command")
    for k in range(n):
        writer.write("/a/cmd", k * 1000, command(k % 50))
    writer.close()


def mcap_library_messages(path: Path) -> list[tuple[str, int, bytes]]:
    from mcap.reader import make_reader

    with path.open("rb") as f:
        return [(ch.topic, m.log_time, m.data) for _, ch, m in make_reader(f).iter_messages()]


def test_compressed_chunks_are_read_by_rosbags_and_the_mcap_library(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    sizes = {}
    expected = [("/a/cmd", k * 1000, command(k % 50)) for k in range(2000)]
    for compression in ("none", "zstd", "lz4"):
        bag = tmp_path / compression
        write_bag(bag, compression)
        _, messages, info = read_all(bag)
        assert messages == expected
        assert info["compression_format"] == ""  # rosbag2's own compression: none (MCAP tools read the bag)
        mcap = bag / f"{compression}.mcap"
        assert mcap_library_messages(mcap) == expected
        with mcap.open("rb") as f:
            summary = make_reader(f).get_summary()
        assert summary is not None
        stored = {i.compression for i in summary.chunk_indexes}
        assert stored == {"" if compression == "none" else compression}
        per_chunk = -(-16384 // record_bytes())  # a chunk is sealed by the message that fills it
        assert len(summary.chunk_indexes) == -(-2000 // per_chunk)
        sizes[compression] = mcap.stat().st_size
    assert sizes["zstd"] < sizes["none"] / 3  # 50 distinct messages repeated; message indexes stay uncompressed
    assert sizes["lz4"] < sizes["none"] / 2


def top_level_opcodes(data: bytes) -> list[int]:
    """The opcodes of the records between the leading and trailing magic."""
    ops, pos = [], len(MAGIC)
    while pos < len(data) - len(MAGIC):
        ops.append(data[pos])
        pos += 9 + int.from_bytes(data[pos + 1 : pos + 9], "little")
    assert pos == len(data) - len(MAGIC)
    return ops


def test_a_copy_that_compresses_smaller_is_padded_never_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open chunk's new copy can be shorter than the old (here: a stronger zstd level); the file
    must not shrink (no truncation is atomic with a write), and the padding must be read past."""
    from safe_ctrl_ros.bag import mcap_file

    path = tmp_path / "padded.mcap"
    f = mcap_file.McapFile(path, "test")
    channel = f.add_channel("/a/cmd", f.add_schema("safe_ctrl_ros/msg/Command", "ros2msg", "float64[] u"), "cdr", {})
    monkeypatch.setattr(mcap_file, "ZSTD_LEVEL", -50)  # fast and large
    for k in range(3000):
        f.write_message(channel, k * 1000, command(k % 97))
    f.flush()
    size = path.stat().st_size
    monkeypatch.setattr(mcap_file, "ZSTD_LEVEL", 19)  # the same chunk plus one message, smaller
    f.write_message(channel, 3000 * 1000, command(3000 % 97))
    f.flush()
    data = path.read_bytes()
    assert len(data) == size
    assert top_level_opcodes(data)[-5:] == [mcap_file.OP_CHUNK, mcap_file.OP_MESSAGE_INDEX,
                                            mcap_file.OP_PADDING, mcap_file.OP_DATA_END, mcap_file.OP_FOOTER]
    expected = [("/a/cmd", k * 1000, command(k % 97)) for k in range(3001)]
    assert mcap_library_messages(path) == expected
    with Reader(path) as raw:
        assert [(c.topic, t, bytes(d)) for c, t, d in raw.messages()] == expected
    f.close()  # the summary after a padding record: indexed, and still every message
    assert mcap_file.OP_PADDING in top_level_opcodes(path.read_bytes())
    assert mcap_library_messages(path) == expected
    with Reader(path) as raw:
        assert raw.message_count == 3001
        assert [(c.topic, t, bytes(d)) for c, t, d in raw.messages()] == expected


def test_writer_refuses_unknown_compression_and_tiny_chunks(tmp_path: Path) -> None:
    from safe_ctrl_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="compression must be one of zstd, lz4, none, got 'gzip'"):
        BagWriter(tmp_path / "a", typestore(), compression="gzip")
    with pytest.raises(ConfigError, match="chunk size must be at least 1024 bytes, got 10"):
        BagWriter(tmp_path / "b", typestore(), chunk_bytes=10)


def test_recompress_copies_topics_qos_custom_data_and_every_message(tmp_path: Path) -> None:
    from safe_ctrl_ros.bag.recompress import recompress
    from safe_ctrl_ros.errors import ConfigError

    src = tmp_path / "src"
    writer = BagWriter(src, typestore(), custom_data={"system": "cartpole"}, compression="none")
    writer.add_topic("/a/cmd", "safe_ctrl_ros/msg/Command", QOS)
    writer.add_topic("/clock", "rosgraph_msgs/msg/Clock")
    for k in range(3000):
        writer.write("/a/cmd", k * 1000, command(k % 50))
    writer.close()
    done = recompress(src, tmp_path / "dst", "zstd")
    counts, messages, info = read_all(tmp_path / "dst")
    assert (counts, messages) == read_all(src)[:2]
    assert done.messages == 3000
    assert done.source_bytes == (src / "src.mcap").stat().st_size
    assert done.bytes == (tmp_path / "dst" / "dst.mcap").stat().st_size < done.source_bytes / 3
    assert done.chunk_bytes_raw == 3000 * record_bytes() > 10 * done.chunk_bytes_stored
    assert info["custom_data"] == {"recorder": "safe_ctrl_ros", "system": "cartpole", "complete": "true"}
    assert info["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"] == QOS
    with pytest.raises(ConfigError, match=r"is not a rosbag2 bag: no metadata\.yaml"):
        recompress(tmp_path, tmp_path / "x", "zstd")
