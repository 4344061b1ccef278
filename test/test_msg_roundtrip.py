"""Every custom message survives a round trip through another process over DDS, field for field."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from helpers.ros import REPO, spin_until

rclpy = pytest.importorskip("rclpy")
interfaces = pytest.importorskip("safe_ctrl_ros.msg")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from helpers.echo_node import message_types  # noqa: E402

QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def samples(name: str) -> list[object]:
    """Messages that exercise every field, including empty, long and non-finite arrays."""
    cls = getattr(interfaces, name)
    fields = cls.get_fields_and_field_types()
    out = []
    for i, values in enumerate([[], [0.1, -2.5, 1e300, 5e-324], [math.inf, -math.inf, math.nan], list(range(300))]):
        m = cls()
        m.header.stamp.sec = 1000 + i
        m.header.stamp.nanosec = 999_999_999 - i
        m.header.frame_id = f"frame_{i}"
        for field, kind in fields.items():
            if kind == "sequence<double>":
                setattr(m, field, [float(v) for v in values])
        out.append(m)
    return out


def same(a: object, b: object) -> bool:
    for field in type(a).get_fields_and_field_types():
        va, vb = getattr(a, field), getattr(b, field)
        if hasattr(va, "get_fields_and_field_types"):
            if not same(va, vb):
                return False
        elif hasattr(va, "__len__") and not isinstance(va, str):
            if len(va) != len(vb) or any(
                not (x == y or (math.isnan(x) and math.isnan(y))) for x, y in zip(va, vb, strict=True)
            ):
                return False
        elif va != vb:
            return False
    return True


def test_all_message_types_are_covered() -> None:
    assert {"State", "Command"} <= set(message_types())


def test_each_custom_message_round_trips_between_processes(ros_context: object) -> None:
    echo = subprocess.Popen(
        [sys.executable, str(REPO / "test" / "helpers" / "echo_node.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    node = Node("roundtrip_test", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        received: dict[str, list[object]] = {}
        pubs = {}
        for name, cls in message_types().items():
            received[name] = []
            pubs[name] = node.create_publisher(cls, f"in/{name}", QOS)
            node.create_subscription(cls, f"out/{name}", received[name].append, QOS)
        matched = spin_until(
            executor,
            lambda: all(p.get_subscription_count() > 0 for p in pubs.values())
            and all(node.count_publishers(f"out/{n}") > 0 for n in pubs),
            timeout=30.0,
        )
        assert matched, "the echo process was not discovered"
        # Discovery of the echo's publishers by our subscriptions can lag a little: publish until
        # the first sample of every type comes back, then check the exact sequence.
        for name in pubs:
            sent = samples(name)
            count = len(sent)
            for _attempt in range(10):
                received[name].clear()
                for msg in sent:
                    pubs[name].publish(msg)
                if spin_until(executor, lambda n=name, k=count: len(received[n]) >= k, timeout=2.0):
                    break
            assert len(received[name]) >= count, name
            assert all(same(a, b) for a, b in zip(sent, received[name][-len(sent):], strict=True)), name
    finally:
        echo.terminate()
        try:
            echo.wait(timeout=20)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait()
            raise AssertionError("the echo process did not stop on SIGTERM") from None
        finally:
            node.destroy_node()
