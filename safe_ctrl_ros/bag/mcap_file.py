"""A crash-safe MCAP file writer (ros2 profile): always a readable file, even after SIGKILL.

MCAP (https://mcap.dev/spec) is a sequence of records `opcode u8 | length u64 | content`. This writer
keeps messages in an in-memory chunk and, on every `flush()`, appends the chunk and its message
indexes followed by a provisional end (DataEnd + a Footer with no summary). The next flush writes
over that end, in one `pwrite`, so at any instant the file on disk is a complete MCAP file that
readers open by scanning (no summary needed). A process killed between flushes loses only the
messages of the open chunk. `close()` writes the indexed summary (schemas, channels, chunk
indexes, statistics, summary offsets) that readers use to seek.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS = 0x06, 0x07, 0x08, 0x0B
OP_METADATA, OP_METADATA_INDEX, OP_SUMMARY_OFFSET, OP_DATA_END = 0x0C, 0x0D, 0x0E, 0x0F


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _map(items: dict[str, str]) -> bytes:
    body = b"".join(_string(k) + _string(v) for k, v in items.items())
    return struct.pack("<I", len(body)) + body


def record(opcode: int, content: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(content)) + content


def _provisional_end() -> bytes:
    return record(OP_DATA_END, struct.pack("<I", 0)) + record(OP_FOOTER, struct.pack("<QQI", 0, 0, 0)) + MAGIC


@dataclass
class _Chunk:
    start: int = 2**64 - 1
    end: int = 0
    data: bytearray = field(default_factory=bytearray)
    index: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class McapFile:
    """Write one MCAP file. Not thread-safe: one writer (thread) at a time."""

    def __init__(self, path: Path, library: str, chunk_bytes: int = 1 << 20) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.chunk_bytes = chunk_bytes
        self.schemas: list[bytes] = []  # records, in id order (id = position + 1)
        self.channels: list[bytes] = []
        self.channel_counts: dict[int, int] = {}
        self.chunk_indexes: list[bytes] = []
        self.start_time = 2**64 - 1
        self.end_time = 0
        self._pending = bytearray()  # schema/channel records not yet on disk
        self._chunk = _Chunk()
        self._pos = 0  # where the provisional end starts
        self._closed = False
        self._write(MAGIC + record(OP_HEADER, _string("ros2") + _string(library)))

    def _write(self, data: bytes) -> None:
        """Write `data` and a provisional end at the current position, then advance past `data`."""
        blob = data + _provisional_end()
        written = os.pwrite(self._fd, blob, self._pos)
        if written != len(blob):  # a regular file: only on a full disk
            raise OSError(f"{self.path}: short write ({written} of {len(blob)} bytes)")
        self._pos += len(data)

    @property
    def message_count(self) -> int:
        return sum(self.channel_counts.values())

    def add_schema(self, name: str, encoding: str, data: str) -> int:
        schema_id = len(self.schemas) + 1
        body = struct.pack("<H", schema_id) + _string(name) + _string(encoding) + _string(data)
        self.schemas.append(record(OP_SCHEMA, body))
        self._pending += self.schemas[-1]
        return schema_id

    def add_channel(self, topic: str, schema_id: int, encoding: str, metadata: dict[str, str]) -> int:
        channel_id = len(self.channels) + 1
        body = struct.pack("<HH", channel_id, schema_id) + _string(topic) + _string(encoding) + _map(metadata)
        self.channels.append(record(OP_CHANNEL, body))
        self._pending += self.channels[-1]
        self.channel_counts[channel_id] = 0
        return channel_id

    def write_message(self, channel_id: int, log_time: int, data: bytes) -> None:
        if channel_id not in self.channel_counts:
            raise ValueError(f"unknown MCAP channel {channel_id}")
        chunk = self._chunk
        chunk.index.setdefault(channel_id, []).append((log_time, len(chunk.data)))
        chunk.data += record(OP_MESSAGE, struct.pack("<HIQQ", channel_id, 0, log_time, log_time) + data)
        chunk.start, chunk.end = min(chunk.start, log_time), max(chunk.end, log_time)
        self.channel_counts[channel_id] += 1
        self.start_time, self.end_time = min(self.start_time, log_time), max(self.end_time, log_time)
        if len(chunk.data) >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        """Put everything written so far on disk as a complete (summary-less) MCAP file."""
        out = bytes(self._pending)
        self._pending.clear()
        chunk = self._chunk
        if chunk.data:
            self._chunk = _Chunk()
            chunk_start = self._pos + len(out)
            head = struct.pack("<QQQI", chunk.start, chunk.end, len(chunk.data), 0) + _string("")
            chunk_record = record(OP_CHUNK, head + struct.pack("<Q", len(chunk.data)) + chunk.data)
            offsets: list[tuple[int, int]] = []
            indexes = bytearray()
            for cid, entries in chunk.index.items():
                offsets.append((cid, chunk_start + len(chunk_record) + len(indexes)))
                body = b"".join(struct.pack("<QQ", t, o) for t, o in entries)
                indexes += record(OP_MESSAGE_INDEX, struct.pack("<HI", cid, len(body)) + body)
            offset_map = b"".join(struct.pack("<HQ", cid, off) for cid, off in offsets)
            self.chunk_indexes.append(
                record(
                    OP_CHUNK_INDEX,
                    struct.pack("<QQQQ", chunk.start, chunk.end, chunk_start, len(chunk_record))
                    + struct.pack("<I", len(offset_map))
                    + offset_map
                    + struct.pack("<Q", len(indexes))
                    + _string("")
                    + struct.pack("<QQ", len(chunk.data), len(chunk.data)),
                )
            )
            out += chunk_record + bytes(indexes)
        if out:
            self._write(out)

    def close(self, metadata: dict[str, dict[str, str]] | None = None) -> None:
        """Flush, then write the metadata records, DataEnd and the indexed summary."""
        if self._closed:
            return
        self.flush()
        data = bytearray()
        metadata_indexes = bytearray()
        for name, items in (metadata or {}).items():
            rec = record(OP_METADATA, _string(name) + _map(items))
            metadata_indexes += record(
                OP_METADATA_INDEX, struct.pack("<QQ", self._pos + len(data), len(rec)) + _string(name)
            )
            data += rec
        data += record(OP_DATA_END, struct.pack("<I", 0))
        summary_start = self._pos + len(data)
        groups: list[tuple[int, bytes]] = [
            (OP_SCHEMA, b"".join(self.schemas)),
            (OP_CHANNEL, b"".join(self.channels)),
            (OP_CHUNK_INDEX, b"".join(self.chunk_indexes)),
            (OP_METADATA_INDEX, bytes(metadata_indexes)),
            (OP_STATISTICS, self._statistics(len(metadata or {}))),
        ]
        summary = bytearray()
        offsets = bytearray()
        for opcode, blob in groups:
            if blob:
                offsets += record(
                    OP_SUMMARY_OFFSET, struct.pack("<BQQ", opcode, summary_start + len(summary), len(blob))
                )
                summary += blob
        offsets_start = summary_start + len(summary)
        footer = record(OP_FOOTER, struct.pack("<QQI", summary_start, offsets_start, 0)) + MAGIC
        blob = bytes(data + summary + offsets) + footer
        os.pwrite(self._fd, blob, self._pos)
        os.ftruncate(self._fd, self._pos + len(blob))
        os.close(self._fd)
        self._closed = True

    def _statistics(self, metadata_count: int) -> bytes:
        counts = b"".join(struct.pack("<HQ", cid, n) for cid, n in sorted(self.channel_counts.items()))
        has_messages = self.message_count > 0
        return record(
            OP_STATISTICS,
            struct.pack(
                "<QHIIIIQQ",
                self.message_count,
                len(self.schemas),
                len(self.channels),
                0,
                metadata_count,
                len(self.chunk_indexes),
                self.start_time if has_messages else 0,
                self.end_time if has_messages else 0,
            )
            + struct.pack("<I", len(counts))
            + counts,
        )
