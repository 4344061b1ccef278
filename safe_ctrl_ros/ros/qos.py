"""The QoS profiles of the graph (docs/ARCHITECTURE.md lists which topic uses which, and why)."""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

# State streams: best effort, a short history. The newest sample is what matters; a lost sample
# is answered (in lockstep) by the plant re-sending the same state, never by a stale queue.
STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

# Commands, events and status: every message counts.
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
STATUS_QOS = COMMAND_QOS

# /clock: reliable so that both reliable and best-effort clock subscribers (rclpy's TimeSource)
# match; depth 10 so a subscriber that is briefly slow still sees time advance monotonically.
CLOCK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Latched data (model updates, static descriptions): late joiners get the latest one.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def with_depth(profile: QoSProfile, depth: int) -> QoSProfile:
    """The same policies with a deeper history: for a subscriber that reads in bursts (the adapter,
    whose training rounds hold the interpreter for tens of ms) and wants every sample."""
    return QoSProfile(
        history=profile.history, depth=depth, reliability=profile.reliability, durability=profile.durability
    )


# A node's per-step `~/status` (controller, monitor, safety filter), as published: latched (reliable,
# transient local) with 2 s of history at 50 Hz. DDS discovery is not symmetric: a recorder's reader
# can match a writer before the writer has matched it, and a volatile writer drops what it publishes
# in between (seen: the first 18 statuses of a run missing from its bag). A transient-local writer
# sends its history to a transient-local reader when it matches; volatile readers match it too.
STEP_STATUS_QOS = with_depth(LATCHED_QOS, 100)
