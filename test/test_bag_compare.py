"""Comparing two recorded runs bit for bit, with wall-time fields, wall-clock topics and re-sends left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from safe_ctrl_ros.bag.compare import differences, recorded
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter


def write(path: Path, xs: list[float], solve_ms: list[float], resend_at: int | None = None,
          diagnostics: int = 0) -> None:
    ts = typestore()
    T = ts.types
    writer = BagWriter(path, ts)
    writer.add_topic("/r/plant/state", "safe_ctrl_ros/msg/State")
    writer.add_topic("/r/controller/status", "safe_ctrl_ros/msg/ControllerStatus")
    writer.add_topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    for k, (x, ms) in enumerate(zip(xs, solve_ms, strict=True)):
        h = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=k, nanosec=0), frame_id="")
        state = T["safe_ctrl_ros/msg/State"](header=h, x=np.array([x, 0.0]))
        status = T["safe_ctrl_ros/msg/ControllerStatus"](
            header=h, controller="nmpc", solver="rti_hpipm", solve_time_ms=ms, iterations=1, solver_status="ok",
            cost=x * x, max_slack=0.0, model_version=0, fallback_active=False, fallback_reason="", fallbacks_total=0,
            disturbance_estimate=np.zeros(0), sync_breaks_total=0)
        for _ in range(2 if k == resend_at else 1):
            writer.write("/r/plant/state", k * 10**9, bytes(ts.serialize_cdr(state, state.__msgtype__)))
        writer.write("/r/controller/status", k * 10**9 + 1, bytes(ts.serialize_cdr(status, status.__msgtype__)))
    for k in range(diagnostics):
        diag = T["diagnostic_msgs/msg/DiagnosticArray"](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=k, nanosec=0), frame_id=""),
            status=[])
        writer.write("/diagnostics", k * 10**9 + 2, bytes(ts.serialize_cdr(diag, diag.__msgtype__)))
    writer.close()


def test_same_run_with_other_wall_times_resends_and_diagnostics_is_equal(tmp_path: Path) -> None:
    write(tmp_path / "a", [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], diagnostics=3)
    write(tmp_path / "b", [0.1, 0.2, 0.3], [9.0, 8.0, 7.0], resend_at=1, diagnostics=1)
    assert differences(tmp_path / "a", tmp_path / "b") == []
    assert len(recorded(tmp_path / "b")["/r/plant/state"]) == 3  # the re-send counted once


def test_one_bit_of_one_state_is_a_difference_that_names_the_field(tmp_path: Path) -> None:
    write(tmp_path / "a", [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    write(tmp_path / "b", [0.1, np.nextafter(0.2, 1.0), 0.3], [1.0, 1.0, 1.0])
    found = differences(tmp_path / "a", tmp_path / "b")
    assert found[0].startswith("/r/controller/status message 1: cost: ")
    assert found[1] == ("/r/plant/state message 1: x: [0.2, 0.0] != [0.20000000000000004, 0.0]")
    assert len(found) == 2


def test_missing_messages_and_topics_are_differences(tmp_path: Path) -> None:
    write(tmp_path / "a", [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    write(tmp_path / "b", [0.1, 0.2], [1.0, 1.0])
    assert differences(tmp_path / "a", tmp_path / "b") == [
        "/r/controller/status: 3 messages against 2", "/r/plant/state: 3 messages against 2"]
