"""A crash-safe MCAP file writer (ros2 profile): always a readable file, even after SIGKILL.

MCAP (https://mcap.dev/spec) is a sequence of records `opcode u8 | length u64 | content`. Messages
collect in an open chunk. On every `flush()` the open chunk is compressed (zstd or lz4, the chunk
compressions of the MCAP spec that rosbag2's MCAP storage offers; stored uncompressed when that is
not smaller, as libmcap does) and written, with its message indexes and a provisional end (DataEnd
+ a Footer with no summary), over the previous copy of the same chunk, in one `pwrite`. So at any
instant the file on disk is a complete MCAP file that readers open by scanning, and a process
killed between flushes loses only what came after the last flush. When the open chunk reaches
`chunk_bytes` it is sealed where it lies and a new chunk opens after it. `close()` writes the
indexed summary (schemas, channels, chunk indexes, statistics, summary offsets) that readers use
to seek.

The file never shrinks, since no truncation can be atomic with the write before it: a write that
would end before the file's end (a chunk whose new copy compresses smaller than the old) fills the
difference with a padding record, an opcode the spec leaves to private records, which MCAP readers
skip (rosbags and the mcap library do; a test reads such a file). The next write covers it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame  # type: ignore[import-untyped]

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd  # type: ignore[import-not-found,no-redef]

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS = 0x06, 0x07, 0x08, 0x0B
OP_METADATA, OP_METADATA_INDEX, OP_SUMMARY_OFFSET, OP_DATA_END = 0x0C, 0x0D, 0x0E, 0x0F
OP_PADDING = 0x80  # a private record (0x80-0xFF): readers skip it
RECORD_HEAD = 9  # opcode u8 + length u64


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    "zstd": lambda data: bytes(zstd.compress(data, level=ZSTD_LEVEL)),
    "lz4": lambda data: bytes(lz4.frame.compress(data)),
}
ZSTD_LEVEL = 3  # zstd's default level (what it gives on recorded runs: bench/sweep.py, docs/RECORDING.md)
DEFAULT_CHUNK_BYTES = 768 * 1024  # libmcap's default chunk size


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _map(items: dict[str, str]) -> bytes:
    body = b"".join(_string(k) + _string(v) for k, v in items.items())
    return struct.pack("<I", len(body)) + body


def record(opcode: int, content: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(content)) + content


def padding(size: int) -> bytes:
    """A record of exactly `size` bytes (at least RECORD_HEAD) that readers skip."""
    return record(OP_PADDING, bytes(size - RECORD_HEAD))


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

    def __init__(
        self, path: Path, library: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES, compression: str = "zstd"
    ) -> None:
        if compression not in COMPRESSORS:
            raise ValueError(f"MCAP chunk compression must be one of {sorted(COMPRESSORS)}, got {compression!r}")
        if chunk_bytes < 1:
            raise ValueError(f"MCAP chunk size must be at least 1 byte, got {chunk_bytes}")
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.chunk_bytes = chunk_bytes
        self.compression = compression
        self.uncompressed_bytes = 0  # of the sealed chunks' records
        self.compressed_bytes = 0  # the same, as stored
        self.schemas: list[bytes] = []  # records, in id order (id = position + 1)
        self.channels: list[bytes] = []
        self.channel_counts: dict[int, int] = {}
        self.chunk_indexes: list[bytes] = []
        self.start_time = 2**64 - 1
        self.end_time = 0
        self._pending = bytearray()  # schema/channel records not yet on disk
        self._chunk = _Chunk()
        self._pos = 0  # where the open chunk's provisional copy (or the provisional end) starts
        self._size = 0  # the file's length on disk
        self._chunk_written = True  # the open chunk's copy on disk is up to date
        self._closed = False
        self._write(MAGIC + record(OP_HEADER, _string("ros2") + _string(library)))

    def _write(self, data: bytes, provisional: bytes = b"") -> None:
        """Write `data`, then `provisional` (the open chunk's copy) and a provisional end, at the
        current position, padded to reach the file's end; advance past `data` only."""
        body, end = data + provisional, _provisional_end()
        self._pwrite(body + self._pad(len(body) + len(end)) + end)
        self._pos += len(data)

    def _pad(self, length: int) -> bytes:
        """Padding after `length` bytes written at the current position, so they end no earlier
        than the file does (a padding record is at least RECORD_HEAD bytes: the file may grow)."""
        gap = self._size - (self._pos + length)
        return padding(max(gap, RECORD_HEAD)) if gap > 0 else b""

    def _pwrite(self, blob: bytes) -> None:
        written = os.pwrite(self._fd, blob, self._pos)
        if written != len(blob):  # a regular file: only on a full disk
            raise OSError(f"{self.path}: short write ({written} of {len(blob)} bytes)")
        self._size = max(self._size, self._pos + len(blob))

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
        self._chunk_written = False
        if len(chunk.data) >= self.chunk_bytes:
            self._flush(seal=True)

    def flush(self) -> None:
        """Put everything written so far on disk as a complete (summary-less) MCAP file."""
        self._flush(seal=False)

    def _flush(self, seal: bool) -> None:
        pending = bytes(self._pending)
        self._pending.clear()
        chunk = self._chunk
        if not chunk.data:
            if pending:
                self._write(pending)
            return
        if not seal and self._chunk_written and not pending:
            return  # the file already holds all of it
        chunk_start = self._pos + len(pending)
        stored = COMPRESSORS[self.compression](bytes(chunk.data))
        compression = self.compression if len(stored) < len(chunk.data) else ""
        records = stored if compression else bytes(chunk.data)
        head = struct.pack("<QQQI", chunk.start, chunk.end, len(chunk.data), 0) + _string(compression)
        chunk_record = record(OP_CHUNK, head + struct.pack("<Q", len(records)) + records)
        indexes, offset_map = self._message_indexes(chunk, chunk_start + len(chunk_record))
        if not seal:
            self._write(pending, chunk_record + indexes)
            self._chunk_written = True
            return
        self.chunk_indexes.append(
            record(
                OP_CHUNK_INDEX,
                struct.pack("<QQQQ", chunk.start, chunk.end, chunk_start, len(chunk_record))
                + struct.pack("<I", len(offset_map))
                + offset_map
                + struct.pack("<Q", len(indexes))
                + _string(compression)
                + struct.pack("<QQ", len(records), len(chunk.data)),
            )
        )
        self.uncompressed_bytes += len(chunk.data)
        self.compressed_bytes += len(records)
        self._chunk = _Chunk()
        self._chunk_written = True
        self._write(pending + chunk_record + indexes)

    @staticmethod
    def _message_indexes(chunk: _Chunk, start: int) -> tuple[bytes, bytes]:
        """The chunk's message index records (written from `start`) and the chunk index's offset map."""
        offsets: list[tuple[int, int]] = []
        indexes = bytearray()
        for cid, entries in chunk.index.items():
            offsets.append((cid, start + len(indexes)))
            body = b"".join(struct.pack("<QQ", t, o) for t, o in entries)
            indexes += record(OP_MESSAGE_INDEX, struct.pack("<HI", cid, len(body)) + body)
        return bytes(indexes), b"".join(struct.pack("<HQ", cid, off) for cid, off in offsets)

    def close(self, metadata: dict[str, dict[str, str]] | None = None) -> None:
        """Seal the open chunk, then write the metadata records, DataEnd and the indexed summary
        (after a padding record if they would end before the file does)."""
        if self._closed:
            return
        self._flush(seal=True)
        tail = self._tail(metadata or {}, self._pos)
        lead = self._pad(len(tail))
        if lead:  # the summary's offsets move by the padding's length
            tail = lead + self._tail(metadata or {}, self._pos + len(lead))
        self._pwrite(tail)
        os.close(self._fd)
        self._closed = True

    def _tail(self, metadata: dict[str, dict[str, str]], start: int) -> bytes:
        """Metadata records, DataEnd, summary, summary offsets and footer, written from `start`."""
        data = bytearray()
        metadata_indexes = bytearray()
        for name, items in metadata.items():
            rec = record(OP_METADATA, _string(name) + _map(items))
            index = struct.pack("<QQ", start + len(data), len(rec)) + _string(name)
            metadata_indexes += record(OP_METADATA_INDEX, index)
            data += rec
        data += record(OP_DATA_END, struct.pack("<I", 0))
        summary_start = start + len(data)
        groups: list[tuple[int, bytes]] = [
            (OP_SCHEMA, b"".join(self.schemas)),
            (OP_CHANNEL, b"".join(self.channels)),
            (OP_CHUNK_INDEX, b"".join(self.chunk_indexes)),
            (OP_METADATA_INDEX, bytes(metadata_indexes)),
            (OP_STATISTICS, self._statistics(len(metadata))),
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
        return bytes(data + summary + offsets) + footer

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
