"""Rewrite a bag with another MCAP chunk compression: the same topics, QoS, custom data and messages.

Used to measure what compression saves on recorded runs (bench/sweep.py) and to shrink bags that
were recorded uncompressed. The copy goes through the recorder's own writer (safe_ctrl_ros.bag.writer),
so its files are what the recorder would have written, message for message and chunk for chunk
(a chunk is sealed when it reaches `chunk_bytes`); only where the schema and channel records lie
between the chunks can differ, as they go out with the next flush.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rosbags.rosbag2 import Reader

from safe_ctrl_ros.bag.mcap_file import DEFAULT_CHUNK_BYTES
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import RESERVED_CUSTOM, BagWriter
from safe_ctrl_ros.errors import ConfigError


@dataclass(frozen=True)
class Rewritten:
    messages: int
    source_bytes: int  # the source's .mcap files
    bytes: int  # the copy's .mcap file
    write_s: float  # wall time of writing the copy (queueing, compression, disk), reading excluded
    chunk_bytes_raw: int  # the copy's chunk contents, uncompressed
    chunk_bytes_stored: int  # the same as stored (compressed)


def mcap_bytes(bag: Path) -> int:
    return sum(f.stat().st_size for f in bag.glob("*.mcap"))


def recompress(src: Path, dst: Path, compression: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Rewritten:
    """Copy bag `src` into a new bag `dst` whose MCAP chunks use `compression` (zstd, lz4, none)."""
    meta_file = src / "metadata.yaml"
    if not meta_file.is_file():
        raise ConfigError(f"'{src}' is not a rosbag2 bag: no metadata.yaml")
    info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
    custom = {k: str(v) for k, v in (info.get("custom_data") or {}).items() if k not in RESERVED_CUSTOM}
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"].get("offered_qos_profiles") or []
           for t in info["topics_with_message_count"]}
    with Reader(src) as reader:
        messages = [(c.topic, c.msgtype, t, bytes(d)) for c, t, d in reader.messages()]
        topics = [(c.topic, c.msgtype) for c in reader.connections]
    t0 = time.perf_counter()
    writer = BagWriter(dst, typestore(), custom_data=custom, compression=compression, chunk_bytes=chunk_bytes)
    for topic, msgtype in topics:
        profiles = qos.get(topic)
        writer.add_topic(topic, msgtype, yaml.safe_load(profiles) if isinstance(profiles, str) else profiles)
    for topic, _, stamp, data in messages:
        writer.write(topic, stamp, data)
    writer.close()
    elapsed = time.perf_counter() - t0
    if writer.errors:
        raise ConfigError(f"rewriting '{src}': {'; '.join(writer.errors)}")
    return Rewritten(len(messages), mcap_bytes(src), mcap_bytes(dst), elapsed,
                     writer.file.uncompressed_bytes, writer.file.compressed_bytes)
