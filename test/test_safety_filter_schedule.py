"""The safety_filter node follows the adapter's lockstep schedule (adapter.sync): a round's model is
swapped in exactly at its due state, not when it arrives, and a proposal at the due waits for that
round's status; so a lockstep run with the adapter and a filter predicting with the residual repeats
bit for bit. Over DDS, the filter in its own process, a probe playing plant, controller and adapter."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from helpers.ros import REPO, executable, spin_until

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from safe_ctrl_ros.learning.model_file import load_model  # noqa: E402
from safe_ctrl_ros.msg import AdapterStatus, Command, ModelUpdate, SafetyFilterStatus, State  # noqa: E402
from safe_ctrl_ros.ros.convert import command_msg, ns_to_stamp, stamp_to_ns, state_msg  # noqa: E402
from safe_ctrl_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STATUS_QOS  # noqa: E402

MS = 1_000_000
DT = 20 * MS
DUE = 10 * DT  # round 1's model is in force from the state stamped 0.2 s


def test_filter_swaps_the_adapters_model_in_at_its_due_not_on_arrival(ros_context: object) -> None:
    model_file = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
    start = load_model(model_file, 6, 2)
    proc = subprocess.Popen(
        [*executable("safety_filter"), "--ros-args", "-r", "__ns:=/sfsync", "-p", "system:=quadrotor_2d",
         "-p", "filter:=cbf", "-p", f"model_file:={model_file}",
         "-p", f"constraints_file:={REPO / 'config' / 'constraints' / 'quadrotor_2d_flight.yaml'}",
         "-p", "adapter.sync:=true", "-p", "adapter.sync_timeout:=30.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    node = Node("sfsync_probe", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    statuses: dict[int, SafetyFilterStatus] = {}
    certified: dict[int, list[float]] = {}
    node.create_subscription(SafetyFilterStatus, "/sfsync/safety_filter/status",
                             lambda m: statuses.setdefault(stamp_to_ns(m.header.stamp), m), STATUS_QOS)
    node.create_subscription(Command, "/sfsync/cmd",
                             lambda m: certified.setdefault(stamp_to_ns(m.header.stamp), list(m.u)), COMMAND_QOS)
    state_pub = node.create_publisher(State, "/sfsync/state", STATE_QOS)
    cmd_pub = node.create_publisher(Command, "/sfsync/cmd_proposed", COMMAND_QOS)
    status_pub = node.create_publisher(AdapterStatus, "/sfsync/adapter/status", LATCHED_QOS)
    model_pub = node.create_publisher(ModelUpdate, "/sfsync/adapter/model", LATCHED_QOS)
    x = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    hover = np.full(2, 0.1323)

    def step(stamp: int) -> bool:
        """Plant and controller: the state and the proposal of `stamp`; True when it was certified."""
        state_pub.publish(state_msg(x, stamp))
        cmd_pub.publish(command_msg(hover, stamp))
        return spin_until(ex, lambda: stamp in certified, 3.0)

    try:
        assert spin_until(ex, lambda: cmd_pub.get_subscription_count() > 0 and state_pub.get_subscription_count() > 0
                          and status_pub.get_subscription_count() > 0, 60.0), "the filter did not come up"
        status_pub.publish(AdapterStatus(round=0, outcome="announced", lockstep=True, next_due=ns_to_stamp(DUE)))
        net = start.net
        weights = net.int_weights().copy()
        weights[-1] += 50  # a new version (its last bias)
        # Round 1's model, sent early: long before its due, as a fast round would.
        model_pub.publish(ModelUpdate(version=1, activation=net.spec.activation, layer_sizes=list(net.spec.layer_sizes),
                                      weights=weights.tolist(), scales=net.scales(), validation_loss=0.01,
                                      round=1, due=ns_to_stamp(DUE)))
        spin_until(ex, lambda: False, 1.0)  # delivered
        for k in range(DUE // DT):
            assert step(k * DT), f"no certified command for t={k * DT * 1e-9:.2f} s"
        # The due state: its proposal waits for round 1's status (the controller had it before it proposed).
        assert not step(DUE), "answered the due state before round 1's status came"
        status_pub.publish(AdapterStatus(round=1, outcome="accepted", version=1, lockstep=True,
                                         due=ns_to_stamp(DUE), next_due=ns_to_stamp(DUE + 10 * DT)))
        assert spin_until(ex, lambda: DUE in certified, 5.0)
        for k in range(DUE // DT + 1, DUE // DT + 5):
            assert step(k * DT)
        # The adapter restarts (a new announcement): the filter stops following its schedule, and its
        # statuses count that break of lockstep from then on.
        status_pub.publish(AdapterStatus(round=0, outcome="announced", lockstep=True,
                                         next_due=ns_to_stamp(DUE + 100 * DT)))
        spin_until(ex, lambda: False, 1.0)  # delivered
        assert step(DUE + 5 * DT)
        spin_until(ex, lambda: len(statuses) >= DUE // DT + 6, 3.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        node.destroy_node()
    versions = {stamp: st.model_version for stamp, st in statuses.items()}
    assert versions == {k * DT: (0 if k * DT < DUE else 1) for k in range(DUE // DT + 6)}, out[-2000:]
    breaks = {stamp: st.sync_breaks_total for stamp, st in statuses.items()}
    assert breaks == {k * DT: int(k == DUE // DT + 5) for k in range(DUE // DT + 6)}
