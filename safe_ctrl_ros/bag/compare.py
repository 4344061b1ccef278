"""Are two recorded runs the same run? Every message on every topic, field by field, bit for bit.

Two lockstep runs with the same configuration and seed must record the same messages. What may
differ, and is left out of the comparison (docs/RECORDING.md lists it):
- fields that measure the machine (WALL_TIME_FIELDS: solve and training-step times, the adapter's
  measured training memory);
- topics published on the wall clock (WALL_CLOCK_TOPICS: `/diagnostics`, a health report every
  `diagnostics_period` s of wall time);
- re-sends: the lockstep protocol re-sends a state (and its answer) when no answer came within
  `resend_period` of wall time, so a message equal to the one before it on its topic (same stamp,
  same content) is counted once;
- the times at which the recorder received the messages (the bag's log times).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros.bag.types import open_bag

WALL_TIME_FIELDS: dict[str, frozenset[str]] = {
    "safe_ctrl_ros/msg/ControllerStatus": frozenset({"solve_time_ms"}),
    # training_memory_bytes: what the allocator handed out in the adapter's one measured step, which
    # moves by a few bytes per mille between processes (tracemalloc also sees interpreter state)
    "safe_ctrl_ros/msg/AdapterStatus": frozenset({"step_time_ms", "training_memory_bytes"}),
    "safe_ctrl_ros/msg/SafetyFilterStatus": frozenset({"solve_time_ms"}),
}
WALL_CLOCK_TOPICS = frozenset({"/diagnostics", "/rosout", "/parameter_events"})


def canonical(value: Any) -> Any:
    """A hashable, bit-exact form of a deserialized message: ("msg", ((field, value), ...)),
    ("a", dtype, shape, bytes) for arrays, ("f", bits) for floats (NaN included), ("l", items)."""
    if isinstance(value, np.ndarray):
        return ("a", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, list | tuple):
        return ("l", tuple(canonical(v) for v in value))
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        skip = WALL_TIME_FIELDS.get(getattr(value, "__msgtype__", ""), frozenset())
        return ("msg", tuple((name, canonical(getattr(value, name))) for name in fields if name not in skip))
    return value


def _is_wall_clock(topic: str) -> bool:
    return topic in WALL_CLOCK_TOPICS or any(topic.endswith(t) for t in WALL_CLOCK_TOPICS)


def recorded(bag: Path, topics: Iterable[str] | None = None) -> dict[str, list[Any]]:
    """Per topic, the canonical messages in recorded order, wall-clock topics left out and
    consecutive repeats (re-sends) counted once."""
    wanted = set(topics) if topics is not None else None
    out: dict[str, list[Any]] = {}
    with open_bag(bag) as reader:
        chosen = [c for c in reader.connections
                  if not _is_wall_clock(c.topic) and (wanted is None or c.topic in wanted)]
        for con, _stamp, raw in reader.messages(connections=chosen):
            msg = canonical(reader.deserialize(raw, con.msgtype))
            seq = out.setdefault(con.topic, [])
            if not seq or seq[-1] != msg:
                seq.append(msg)
    return out


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two canonical forms first differ: a field path and both values."""
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("msg",):
        for (name, x), (_, y) in zip(a[1], b[1], strict=True):
            if x != y:
                return _first_difference(x, y, f"{path}.{name}" if path else name)
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("l",) and len(a[1]) == len(b[1]):
        for i, (x, y) in enumerate(zip(a[1], b[1], strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '<message>'}: {_show(a)} != {_show(b)}"


def _show(v: Any) -> str:
    if isinstance(v, tuple) and v[:1] == ("f",):
        x = struct.unpack("<d", v[1])[0]
        return "nan" if math.isnan(x) else repr(x)
    if isinstance(v, tuple) and v[:1] == ("a",):
        return repr(np.frombuffer(v[3], dtype=v[1]).reshape(v[2]).tolist())[:120]
    return repr(v)[:120]


def differences(bag_a: Path, bag_b: Path, limit: int = 20) -> list[str]:
    """What differs between two bags (at most `limit` lines); empty when they hold the same run."""
    a, b = recorded(bag_a), recorded(bag_b)
    found: list[str] = []
    for topic in sorted(set(a) | set(b)):
        if topic not in a or topic not in b:
            found.append(f"{topic}: only in {bag_a if topic in a else bag_b}")
            continue
        sa, sb = a[topic], b[topic]
        for i, (x, y) in enumerate(zip(sa, sb, strict=False)):
            if x != y:
                found.append(f"{topic} message {i}: {_first_difference(x, y)}")
                break
        if len(sa) != len(sb):
            found.append(f"{topic}: {len(sa)} messages against {len(sb)}")
        if len(found) >= limit:
            break
    return found[:limit]
