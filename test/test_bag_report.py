"""Bags without ROS: writing MCAP bags with our types, reading them back, metrics, re-evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safe_ctrl_ros.bag.report import load_run, main, markdown, metrics, reevaluate
from safe_ctrl_ros.bag.types import typestore
from safe_ctrl_ros.bag.writer import BagWriter
from safe_ctrl_ros.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write_run(path: Path, violate_at: float | None) -> None:
    """A synthetic 2 s cart-pole run at 50 Hz; theta_dot leaves the pole constraint at `violate_at`."""
    ts = typestore()
    T = ts.types
    header = T["std_msgs/msg/Header"]
    time_ = T["builtin_interfaces/msg/Time"]
    writer = BagWriter(path, ts)
    for topic, kind in (("/r/plant/state", "State"), ("/r/plant/reference", "Reference"), ("/r/plant/cmd", "Command"),
                        ("/r/constraint_monitor/status", "ConstraintStatus")):
        writer.add_topic(topic, f"safe_ctrl_ros/msg/{kind}")
    first = -1.0
    for k in range(100):
        t = k * 0.02
        h = header(stamp=time_(sec=int(t), nanosec=round((t - int(t)) * 1e9)), frame_id="")
        theta_dot = 0.5 if violate_at is not None and abs(t - violate_at) < 1e-9 else 0.0
        x = np.array([0.01 * k, 0.0, 0.0, theta_dot])
        violated = [False, False, False, theta_dot > 0.2]
        if any(violated) and first < 0:
            first = t
        msgs = {
            "/r/plant/state": T["safe_ctrl_ros/msg/State"](header=h, x=x),
            "/r/plant/reference": T["safe_ctrl_ros/msg/Reference"](header=h, x_ref=np.zeros(4), u_ref=np.zeros(1)),
            "/r/plant/cmd": T["safe_ctrl_ros/msg/Command"](header=h, u=np.array([0.5])),
            "/r/constraint_monitor/status": T["safe_ctrl_ros/msg/ConstraintStatus"](
                header=h, names=["a", "b", "c", "d"], values=np.array([-0.2, -0.2, -0.2, theta_dot - 0.2]),
                margins=np.array([0.2, 0.2, 0.2, 0.2 - theta_dot]), violated=np.array(violated, dtype=bool),
                almost_active=np.zeros(4, dtype=bool),
                level=2 if any(violated) else 0, message="", steps=k + 1, violation_steps=int(first >= 0),
                failed=first >= 0, worst_margin=0.0, first_violation_time=first, safety_request=False,
                safety_reason=""),
        }
        for topic, msg in msgs.items():
            writer.write(topic, round(t * 1e9), ts.serialize_cdr(msg, msg.__msgtype__))
    writer.close()


def test_bag_reads_back_with_every_topic_and_type(tmp_path: Path) -> None:
    write_run(tmp_path / "bag", violate_at=1.0)
    assert (tmp_path / "bag" / "metadata.yaml").is_file()
    run = load_run(tmp_path / "bag")
    assert run.topics == {
        "/r/plant/state": ("safe_ctrl_ros/msg/State", 100),
        "/r/plant/reference": ("safe_ctrl_ros/msg/Reference", 100),
        "/r/plant/cmd": ("safe_ctrl_ros/msg/Command", 100),
        "/r/constraint_monitor/status": ("safe_ctrl_ros/msg/ConstraintStatus", 100),
    }
    assert len(run.states) == 100


def test_metrics_of_a_run_with_a_known_violation(tmp_path: Path) -> None:
    write_run(tmp_path / "a", violate_at=1.0)
    write_run(tmp_path / "b", violate_at=None)
    a, b = metrics(load_run(tmp_path / "a")), metrics(load_run(tmp_path / "b"))
    assert a["violation_steps"] == 1
    assert a["failed"]
    assert a["first_violation_time"] == pytest.approx(1.0)
    assert a["worst_margin"] == pytest.approx(-0.3)
    assert b["violation_steps"] == 0
    assert b["first_violation_time"] is None
    expected = np.sqrt(np.mean([(0.01 * k) ** 2 for k in range(100)]))  # x drifts, theta 0
    assert b["tracking_rmse"] == pytest.approx(expected)
    assert a["control_effort"] == pytest.approx(0.25)
    table = markdown([a, b])
    assert "| violation_steps | 1 | 0 |" in table


def test_offline_reevaluation_with_other_constraints(tmp_path: Path) -> None:
    write_run(tmp_path / "a", violate_at=1.0)
    run = load_run(tmp_path / "a")
    same = reevaluate(run, REPO / "config" / "constraints" / "cartpole_pole.yaml")
    assert same["violation_steps"] == 1
    assert same["first_violation_time"] == pytest.approx(1.0)
    strict = tmp_path / "cart.yaml"
    strict.write_text("constraints:\n  - {name: cart, kind: bounded, active_dims: [0], lower: -0.5, upper: 0.5}\n")
    other = reevaluate(run, strict)
    assert other["violation_steps"] == 49  # x = 0.01 k exceeds 0.5 from k = 51 on
    assert other["first_violation_time"] == pytest.approx(1.02)


def test_cli_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "a", violate_at=1.0)
    assert main([str(tmp_path / "a"), "--json", str(tmp_path / "m.json"), "--plots", str(tmp_path / "p")]) == 0
    assert (tmp_path / "m.json").is_file()
    assert (tmp_path / "p" / "a_overview.png").is_file()
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="already exists"):
        BagWriter(tmp_path / "a", typestore())


def test_flagship_table_and_progress(tmp_path: Path) -> None:
    from safe_ctrl_ros.bringup.flagship import VARIANTS, bag_sim_seconds, table

    bag = tmp_path / "a"
    write_run(bag, violate_at=0.5)
    assert bag_sim_seconds(bag) == pytest.approx(1.98)
    assert bag_sim_seconds(tmp_path / "not_yet") == 0.0
    row = metrics(load_run(bag))
    row["run"] = "qzo_ff"
    row["adapter_memory_bytes"] = 5120
    labels = {k: v.label for k, v in VARIANTS.items()}
    text = table([row, {**row, "run": "nominal", "adapter_memory_bytes": None}], labels)
    lines = text.splitlines()
    assert lines[2].startswith("| qzo_ff: QZO-FF on board")
    cells = [c.strip() for c in lines[2].split("|")]
    assert cells[4] == "1"  # violation steps
    assert cells[-2] == "5.0"  # KiB
    assert "| - |" in lines[3]
