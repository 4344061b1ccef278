"""Writing rosbag2 bags (MCAP storage, metadata.yaml, message definitions embedded) with rosbags.

Messages are written as the serialized CDR bytes DDS delivered, so recording costs no
re-serialization. A writer thread drains a queue, so a caller never waits on the disk.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from safe_ctrl_ros.errors import ConfigError


class BagWriter:
    def __init__(self, path: str | Path, store: Typestore) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f"bag '{self.path}' already exists: choose another output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Connection] = {}
        self._queue: queue.Queue[tuple[str, int, bytes] | None] = queue.Queue()
        self._lock = threading.Lock()
        self.count = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._drain, name="bag-writer", daemon=True)
        self._thread.start()

    def add_topic(self, topic: str, msgtype: str) -> None:
        with self._lock:
            if topic in self._connections:
                return
            if msgtype not in self.store.types:
                raise ConfigError(f"topic '{topic}': message type '{msgtype}' is unknown to the bag's type store")
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """Queue one serialized message (non-blocking)."""
        self._queue.put((topic, stamp_ns, data))

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # stop
                return
            topic, stamp, data = item
            try:
                with self._lock:
                    self._writer.write(self._connections[topic], int(stamp), data)
                self.count += 1
            except Exception as exc:
                self.errors.append(f"{topic}: {exc}")

    def close(self) -> None:
        """Write everything queued, the MCAP summary and metadata.yaml."""
        self._queue.put(None)
        self._thread.join()
        with self._lock:
            self._writer.close()
