"""Recorder node: writes the graph's topics into a rosbag2 bag (MCAP), in this process.

rosbag2 (`ros2 bag record`) is not needed: the node subscribes to every topic of its namespace
(plus /clock and /diagnostics, or the `topics` list), finds new topics as they appear, takes the
serialized bytes DDS delivers and hands them to a writer thread, so recording never slows the
control loop. On shutdown (SIGINT/SIGTERM) the bag is closed: MCAP summary and metadata.yaml; killed
(SIGKILL), it leaves a readable bag holding all but the last flush period (safe_ctrl_ros.bag.writer).
QoS per topic follows its publishers: best effort where a publisher is best effort, transient local
where all publishers latch.
The bag names the recorded system in its metadata (`custom_data.system`, e.g. `cartpole`), so the
report knows which state entries are positions and angles: the `system` parameter, or else the
`system` parameter of the node publishing `plant/state`, read through its parameter service.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.parameters.recorder import RECORDER
from safe_ctrl_ros.ros.message_types import message_class
from safe_ctrl_ros.ros.node_main import run_node
from safe_ctrl_ros.ros.params import declare_parameters, node_options

GLOBAL_TOPICS = ("/clock", "/diagnostics")
SKIP = ("/rosout", "/parameter_events")
INFINITE = {"sec": 2147483647, "nsec": 4294967295}  # how rosbag2 writes an infinite duration
SERVICE_RETRY_S = 1.0  # wall s before an unanswered request for the plant's system is sent again


def _duration(value: Any) -> dict[str, int]:
    ns = int(value.nanoseconds)
    if ns <= 0 or ns // 10**9 >= INFINITE["sec"]:
        return dict(INFINITE)
    return {"sec": ns // 10**9, "nsec": ns % 10**9}


def offered_qos(profile: QoSProfile) -> dict[str, Any]:
    """A publisher's QoS in rosbag2's metadata form (version 9), so `ros2 bag play` can offer it again."""
    return {
        "history": profile.history.name.lower(),
        "depth": int(profile.depth),
        "reliability": profile.reliability.name.lower(),
        "durability": profile.durability.name.lower(),
        "deadline": _duration(profile.deadline),
        "lifespan": _duration(profile.lifespan),
        "liveliness": profile.liveliness.name.lower(),
        "liveliness_lease_duration": _duration(profile.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(profile.avoid_ros_namespace_conventions),
    }


class RecorderNode(Node):
    def __init__(self, **node_kwargs: object) -> None:
        super().__init__("recorder", **node_options(node_kwargs))  # type: ignore[arg-type]
        values = declare_parameters(self, RECORDER)  # parameters/recorder.py
        output = str(values["output"])
        self.topics, self.exclude = list(values["topics"]), list(values["exclude"])
        period = float(values["discovery_period"])
        self.start_plant, self.settle = bool(values["start_plant"]), int(values["start_after_scans"])
        self.system = str(values["system"])
        if not output:
            raise ConfigError("parameter 'output' is required: the bag directory to create")
        self.writer = BagWriter(
            Path(output), typestore(), custom_data={"system": self.system} if self.system else None,
            compression=str(values["compression"]), chunk_bytes=int(values["chunk_bytes"]),
        )
        # Asking the plant for its system: done once answered (or set), the plant's node, its parameter
        # service, the request in flight and when it was sent.
        self.system_done = bool(self.system)
        self.system_plant = ""
        self.system_client: Any = None
        self.system_request: Any = None
        self.system_asked_at = 0.0
        self.subs: dict[str, Any] = {}
        self.quiet_scans = 0
        self.start_client: Any = self.create_client(Trigger, "plant/start") if self.start_plant else None
        self.start_sent = False
        self.system_wait = float(values["start_system_wait"])
        self.ready_at: float | None = None  # wall s when every topic was first matched for the start
        self.ns = self.get_namespace().rstrip("/")
        self.requires = [f"{self.ns}/{t.strip('/')}" for t in values["start_requires"] if t]
        # Wall time: with use_sim_time the sim clock only moves once the episode runs.
        self.timer = self.create_timer(period, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._discover()
        self.get_logger().info(f"recording into {output}")

    def _wanted(self, topic: str) -> bool:
        if topic in SKIP or topic in self.exclude:
            return False
        explicit = [t for t in self.topics if t]
        if explicit:
            return topic in explicit or topic.lstrip("/") in explicit
        return topic in GLOBAL_TOPICS or (topic.startswith(self.ns + "/") if self.ns else True)

    @staticmethod
    def _qos(pubs: list[Any]) -> QoSProfile:
        """The subscription QoS that matches every publisher in `pubs` (their TopicEndpointInfo)."""
        best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in pubs)
        latched = bool(pubs) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in pubs)
        return QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _discover(self) -> None:
        before = len(self.subs)
        self._scan()
        self._ask_system()
        self.quiet_scans = self.quiet_scans + 1 if len(self.subs) == before else 0
        if self.start_client is not None and not self.start_sent and self.quiet_scans >= self.settle:
            matched = all(s is None or s.get_publisher_count() > 0 for s in self.subs.values())
            matched = matched and all(self.subs.get(t) is not None for t in self.requires)
            if matched and any(t.endswith("plant/state") for t in self.subs) and self.start_client.service_is_ready():
                self._start_when_system_known()

    def _start_when_system_known(self) -> None:
        """Start the plant once the bag names its system, or after `start_system_wait` without an answer."""
        now = time.monotonic()
        self.ready_at = now if self.ready_at is None else self.ready_at
        waited = now - self.ready_at
        if not self.system_done and waited < self.system_wait:
            return
        if not self.system_done:
            self.get_logger().warning(
                f"{self.system_plant or 'the plant'} did not name its system within {self.system_wait:g} s: "
                "starting the plant; the bag names the system once it answers"
            )
        self.start_client.call_async(Trigger.Request())
        self.start_sent = True
        self.get_logger().info(f"all {len(self.subs)} topics matched: asked the plant to start")

    def _scan(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self.subs or not self._wanted(topic) or not types:
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue  # only subscribers so far: wait for a publisher, whose QoS we must match
            msgtype = types[0]
            try:
                self.writer.add_topic(topic, msgtype, [offered_qos(p.qos_profile) for p in pubs])
                cls = message_class(msgtype)
            except (ConfigError, AttributeError, ModuleNotFoundError, ValueError) as exc:
                self.get_logger().warning(f"not recording '{topic}' ({msgtype}): {exc}")
                self.subs[topic] = None
                continue
            self.subs[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic: self._on_message(t, data), self._qos(pubs), raw=True
            )
            self.get_logger().info(f"recording {topic} [{msgtype}]")

    # --- the recorded system ------------------------------------------------------------------------
    def _ask_system(self) -> None:
        """Until the bag names its system: ask the node that publishes plant/state for its `system`
        parameter (again after SERVICE_RETRY_S: a reply sent before the client matched can be lost)."""
        if self.system_done:
            return
        if self.system_client is None:
            plants = [
                p for t, sub in self.subs.items() if sub is not None and t.endswith("/plant/state")
                for p in self.get_publishers_info_by_topic(t)
            ]
            if not plants:
                return
            fqn = f"{plants[0].node_namespace.rstrip('/')}/{plants[0].node_name}"
            self.system_client = self.create_client(GetParameters, f"{fqn}/get_parameters")
            self.system_plant = fqn
        if self.system_request is not None:
            if time.monotonic() - self.system_asked_at < SERVICE_RETRY_S:
                return
            self.system_request = None  # unanswered: ask again
        if not self.system_client.service_is_ready():
            return
        future = self.system_client.call_async(GetParameters.Request(names=["system"]))
        self.system_request, self.system_asked_at = future, time.monotonic()
        future.add_done_callback(self._on_system)

    def _on_system(self, future: Any) -> None:
        if future is not self.system_request or self.system_done:
            return  # a request given up on, or already answered
        self.system_request = None
        self.system_done = True
        result = future.result()
        values = list(result.values) if result is not None else []
        if not values or values[0].type != ParameterType.PARAMETER_STRING or not values[0].string_value:
            self.get_logger().warning(
                f"{self.system_plant} has no 'system' parameter: the bag does not name its system (set the "
                "recorder's 'system' parameter; safe-ctrl-report infers it from the state size where it can)"
            )
            return
        self.system = values[0].string_value
        if not self.writer.closed:
            self.writer.set_custom_data("system", self.system)
            self.get_logger().info(f"system: {self.system} (parameter 'system' of {self.system_plant})")

    def _on_message(self, topic: str, data: bytes) -> None:
        # The node's clock: sim time with use_sim_time (0 before the first /clock), else wall time.
        self.writer.write(topic, self.get_clock().now().nanoseconds, data)

    def destroy_node(self) -> None:
        self.writer.close()
        self.get_logger().info(f"bag closed: {self.writer.count} messages in {self.writer.path}")
        if self.writer.errors:
            self.get_logger().error(f"{len(self.writer.errors)} messages not written, first: {self.writer.errors[0]}")
        super().destroy_node()


NODE_CLASS = RecorderNode


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, "recorder", args)


if __name__ == "__main__":
    raise SystemExit(main())
