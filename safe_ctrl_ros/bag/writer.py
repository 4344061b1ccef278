"""Writing rosbag2 bags (MCAP storage, metadata.yaml, message definitions embedded).

Messages are written as the serialized CDR bytes DDS delivered, so recording costs no
re-serialization. A writer thread drains a queue, so a caller never waits on the disk. Every
`flush_period` s the thread puts what it has on disk as a complete MCAP file and rewrites
metadata.yaml atomically (counts every `metadata_period` s, a new topic at once), so a recorder
killed with SIGKILL leaves a bag that rosbags, `ros2 bag info` and Foxglove read, missing at most
the last `flush_period`. MCAP chunks are compressed (`compression`: zstd by default, lz4 or
none; safe_ctrl_ros.bag.mcap_file): the open chunk is rewritten compressed at every flush and sealed
once it holds `chunk_bytes`, so compression costs no crash safety. As with rosbag2's MCAP storage configured for
chunk compression, metadata.yaml's `compression_format` stays empty: that field names rosbag2's own
file or message compression, which would make the bag unreadable to MCAP tools.
`custom_data.complete` says whether the bag was closed (`'true'`) or interrupted (`'false'`);
`custom_data.system` names the recorded system (`set_custom_data`, e.g. `'cartpole'`), which
`safe-ctrl-report` reads to know which state entries are positions and angles. rosbag2 keeps the
same map (`ros2 bag record --custom-data key=value`); at close it is also in the MCAP file's
`rosbag2` metadata record, as rosbag2's MCAP storage writes it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml
from rosbags.typesys.store import Typestore

from safe_ctrl_ros.bag.mcap_file import DEFAULT_CHUNK_BYTES, McapFile
from safe_ctrl_ros.errors import ConfigError

QosDict = dict[str, Any]
RESERVED_CUSTOM = ("recorder", "complete")  # custom_data keys the writer sets itself
COMPRESSIONS = {"zstd": "zstd", "lz4": "lz4", "none": ""}  # parameter value -> MCAP chunk compression


class BagWriter:
    def __init__(
        self, path: str | Path, store: Typestore, flush_period: float = 0.1, metadata_period: float = 1.0,
        custom_data: Mapping[str, str] | None = None, compression: str = "zstd",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ConfigError(f"bag compression must be one of {', '.join(COMPRESSIONS)}, got '{compression}'")
        if chunk_bytes < 1024:
            raise ConfigError(f"bag chunk size must be at least 1024 bytes, got {chunk_bytes}")
        self.custom_data: dict[str, str] = {}
        for key, value in (custom_data or {}).items():
            self._check_custom(key, value)
            self.custom_data[key] = value
        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f"bag '{self.path}' already exists: choose another output")
        self.path.mkdir(parents=True)
        self.store = store
        self.flush_period = flush_period
        self.metadata_period = metadata_period
        self._metadata_at = 0.0
        self.file = McapFile(
            self.path / f"{self.path.name}.mcap", f"safe_ctrl_ros, rosbags-{version('rosbags')}",
            chunk_bytes=chunk_bytes, compression=COMPRESSIONS[compression],
        )
        self.topics: dict[str, tuple[int, str, str, list[QosDict]]] = {}  # topic -> channel, type, hash, qos
        self._schemas: dict[str, int] = {}
        self._queue: queue.Queue[tuple[str, int, bytes] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._dirty = True
        self.closed = False
        self.count = 0
        self.errors: list[str] = []
        self._write_metadata(complete=False)
        self._thread = threading.Thread(target=self._drain, name="bag-writer", daemon=True)
        self._thread.start()

    def add_topic(self, topic: str, msgtype: str, qos: list[QosDict] | None = None) -> None:
        """Register a topic (idempotent); `qos` are its publishers' offered profiles (rosbag2 v9 form)."""
        with self._lock:
            if topic in self.topics:
                return
            if msgtype not in self.store.types:
                raise ConfigError(f"topic '{topic}': message type '{msgtype}' is unknown to the bag's type store")
            type_hash = self.store.hash_rihs01(msgtype)
            if msgtype not in self._schemas:
                text, _ = self.store.generate_msgdef(msgtype, ros_version=2)
                encoding = "ros2idl" if text.startswith("=" * 80 + "\nIDL: ") else "ros2msg"
                self._schemas[msgtype] = self.file.add_schema(msgtype, encoding, text)
            profiles = list(qos or [])
            metadata = {"offered_qos_profiles": _dump(profiles) if profiles else "", "topic_type_hash": type_hash}
            channel = self.file.add_channel(topic, self._schemas[msgtype], "cdr", metadata)
            self.topics[topic] = (channel, msgtype, type_hash, profiles)
            # metadata.yaml names the topic before the file holds its channel: a reader matches the
            # file's channels against it, and a crash in between must not hide the topic.
        self._write_metadata(complete=False)

    @staticmethod
    def _check_custom(key: str, value: str) -> None:
        if key in RESERVED_CUSTOM:
            raise ConfigError(f"bag custom data '{key}' is the writer's own ({', '.join(RESERVED_CUSTOM)})")
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ConfigError(f"bag custom data must map names to strings, got {key!r}: {value!r}")

    def set_custom_data(self, key: str, value: str) -> None:
        """Add or change one entry of the bag's `custom_data` (metadata.yaml is rewritten at once)."""
        self._check_custom(key, value)
        with self._meta_lock:
            if self.closed:
                raise ConfigError(f"bag '{self.path}' is closed: custom data '{key}' comes too late")
            with self._lock:
                self.custom_data[key] = value
                text = self._metadata_text(complete=False)
            _replace(self.path / "metadata.yaml", text)

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """Queue one serialized message (non-blocking)."""
        self._queue.put((topic, stamp_ns, data))

    def _drain(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_period)
            except queue.Empty:
                item = ("", 0, b"")  # nothing new: only flush when due
            if item is None:  # stop
                return
            topic, stamp, data = item
            if topic:
                try:
                    with self._lock:
                        self.file.write_message(self.topics[topic][0], int(stamp), data)
                    self.count += 1
                    self._dirty = True
                except Exception as exc:
                    self.errors.append(f"{topic}: {exc}")
            if time.monotonic() - last_flush >= self.flush_period:
                self._flush()
                last_flush = time.monotonic()

    def _flush(self) -> None:
        try:
            with self._lock:
                self.file.flush()
                due = self._dirty and time.monotonic() - self._metadata_at >= self.metadata_period
                if due:
                    self._dirty = False
            if due:
                self._metadata_at = time.monotonic()
                self._write_metadata(complete=False)
        except OSError as exc:
            self.errors.append(f"flush: {exc}")

    def close(self) -> None:
        """Write everything queued, the MCAP summary and the final metadata.yaml."""
        self._queue.put(None)
        self._thread.join()
        with self._meta_lock:
            with self._lock:
                text = self._metadata_text(complete=True)
                self.file.close({"rosbag2": {"serialized_metadata": text}})
            _replace(self.path / "metadata.yaml", text)
            self.closed = True

    def _write_metadata(self, complete: bool) -> None:
        with self._meta_lock:  # writes land in the order their contents were taken
            if self.closed:  # the final metadata.yaml stays
                return
            with self._lock:
                text = self._metadata_text(complete)
            _replace(self.path / "metadata.yaml", text)

    def _metadata_text(self, complete: bool) -> str:
        """rosbag2's metadata.yaml (version 9) for the messages written so far."""
        counts = self.file.channel_counts
        total = self.file.message_count
        start = self.file.start_time if total else 0
        duration = self.file.end_time - start if total else 0
        name = self.file.path.name
        info = {
            "version": 9,
            "storage_identifier": "mcap",
            "relative_file_paths": [name],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": total,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": topic,
                        "type": msgtype,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": qos,
                        "type_description_hash": type_hash,
                    },
                    "message_count": counts[channel],
                }
                for topic, (channel, msgtype, type_hash, qos) in self.topics.items()
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": [
                {
                    "path": name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": total,
                }
            ],
            "custom_data": {
                "recorder": "safe_ctrl_ros", **self.custom_data, "complete": "true" if complete else "false"
            },
            "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
        }
        return _dump({"rosbag2_bagfile_information": info})


def _dump(data: object) -> str:
    return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))


def _replace(path: Path, text: str) -> None:
    """Write a file so that a reader (or a crash) sees the old or the new content, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
