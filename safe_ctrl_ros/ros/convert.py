"""Message <-> numpy conversion and stamp arithmetic (integer nanoseconds, never floats)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from numpy.typing import NDArray

from safe_ctrl_ros.msg import Command, State

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: TimeMsg) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


SEC_MIN, SEC_MAX = -(2**31), 2**31 - 1  # builtin_interfaces/Time.sec is an int32


def ns_to_stamp(ns: int) -> TimeMsg:
    """A stamp; ValueError outside Time's int32 seconds (the message would silently wrap around)."""
    sec = ns // NS_PER_S
    if not SEC_MIN <= sec <= SEC_MAX:
        raise ValueError(f"time {ns} ns is outside the range of builtin_interfaces/Time (int32 seconds)")
    return TimeMsg(sec=sec, nanosec=ns % NS_PER_S)


def state_msg(x: NDArray[np.float64], stamp_ns: int, frame_id: str = "") -> State:
    msg = State()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.x = np.asarray(x, dtype=np.float64).tolist()
    return msg


def command_msg(u: NDArray[np.float64], stamp_ns: int, frame_id: str = "") -> Command:
    msg = Command()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.u = np.asarray(u, dtype=np.float64).tolist()
    return msg


def vector_of(values: object) -> NDArray[np.float64]:
    """A message's float64[] field as a float numpy vector (a copy)."""
    return np.array(values, dtype=np.float64).reshape(-1)
