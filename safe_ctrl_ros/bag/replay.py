"""safe-ctrl-replay: republish a bag's topics over ROS 2, with /clock, where `ros2 bag play` is missing.

    safe-ctrl-replay BAG [--rate 1.0] [--topics T ...] [--exclude T ...] [--start-delay 2.0]

Messages go out as the serialized bytes in the bag (no re-serialization), in the order and with
the spacing they were recorded (divided by `--rate`), each topic with the QoS it was recorded
with where the bag says, else reliable (state streams: best effort). The bag's own /clock is
republished; without one, /clock follows the recorded time stamps. Subscribers get
`--start-delay` seconds to be discovered before the first message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from safe_ctrl_ros.bag.types import open_bag
from safe_ctrl_ros.errors import ConfigError


def replay(bag: Path, rate: float, topics: list[str], exclude: list[str], start_delay: float) -> int:
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    from safe_ctrl_ros.ros.message_types import message_class
    from safe_ctrl_ros.ros.qos import CLOCK_QOS, COMMAND_QOS, STATE_QOS

    if rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {rate}")
    rclpy.init()
    node = Node("replay")
    pubs: dict[str, Any] = {}
    count = 0
    try:
        with open_bag(bag) as reader:
            chosen = [c for c in reader.connections
                      if (not topics or c.topic in topics) and c.topic not in exclude]
            if not chosen:
                raise ConfigError(f"bag '{bag}': no topic to replay (have {[c.topic for c in reader.connections]})")
            has_clock = any(c.topic == "/clock" for c in chosen)
            clock_pub = None if has_clock else node.create_publisher(Clock, "/clock", CLOCK_QOS)
            for con in chosen:
                qos = STATE_QOS if con.topic.endswith("state") else COMMAND_QOS
                pubs[con.topic] = node.create_publisher(message_class(con.msgtype), con.topic, qos)
            time.sleep(start_delay)
            start_wall, start_bag = time.monotonic(), None
            for con, stamp, raw in reader.messages(connections=chosen):
                if start_bag is None:
                    start_bag = stamp
                due = start_wall + (stamp - start_bag) * 1e-9 / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if clock_pub is not None:
                    clock_pub.publish(Clock(clock=Time(sec=stamp // 10**9, nanosec=stamp % 10**9)))
                pubs[con.topic].publish(bytes(raw))
                count += 1
        time.sleep(0.5)  # let reliable messages drain
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"replayed {count} messages on {len(pubs)} topics from {bag}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-replay", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--topics", nargs="*", default=[])
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--start-delay", type=float, default=2.0)
    opts = parser.parse_args(argv)
    try:
        return replay(opts.bag, opts.rate, opts.topics, opts.exclude, opts.start_delay)
    except ConfigError as exc:
        print(f"safe-ctrl-replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
