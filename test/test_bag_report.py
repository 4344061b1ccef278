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


def write_run(path: Path, violate_at: float | None, system: str | None = None, theta_rate: float = 0.0,
              safety_filter: bool = False, answered_twice: int | None = None) -> None:
    """A synthetic 2 s cart-pole run at 50 Hz; theta_dot leaves the pole constraint at `violate_at`.
    With `answered_twice` = k, state k was re-sent and answered again, with another command (3 N),
    which the plant rejected: the bag holds both commands of that stamp, the applied one first.

    The cart drifts (x = 0.01 k m at step k), the pole leans by theta = theta_rate k rad, the reference
    is 0. `system` is written into the bag's metadata (None: an old bag that does not name it).
    With `safety_filter`, an MPSC filter's status per step: it intervenes at k = 5, 15, .., 95 by
    0.01 k N, cannot certify k = 15 and 95, takes 0.2 ms (3 ms at k = 99), and its status for k = 50
    is re-sent (recorded twice).
    """
    ts = typestore()
    T = ts.types
    header = T["std_msgs/msg/Header"]
    time_ = T["builtin_interfaces/msg/Time"]
    writer = BagWriter(path, ts, custom_data=None if system is None else {"system": system})
    for topic, kind in (("/r/plant/state", "State"), ("/r/plant/reference", "Reference"), ("/r/plant/cmd", "Command"),
                        ("/r/constraint_monitor/status", "ConstraintStatus"),
                        *([("/r/safety_filter/status", "SafetyFilterStatus")] if safety_filter else [])):
        writer.add_topic(topic, f"safe_ctrl_ros/msg/{kind}")
    first = -1.0
    for k in range(100):
        t = k * 0.02
        h = header(stamp=time_(sec=int(t), nanosec=round((t - int(t)) * 1e9)), frame_id="")
        theta_dot = 0.5 if violate_at is not None and abs(t - violate_at) < 1e-9 else 0.0
        x = np.array([0.01 * k, 0.0, theta_rate * k, theta_dot])
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
        if safety_filter:
            cut = k % 10 == 5
            msgs["/r/safety_filter/status"] = T["safe_ctrl_ros/msg/SafetyFilterStatus"](
                header=h, filter="mpsc", intervened=cut, intervention=0.01 * k if cut else 0.0,
                u_proposed=np.array([0.5 + (0.01 * k if cut else 0.0)]), u_safe=np.array([0.5]),
                active_constraints=["pole[1]_upper"] if cut else [], max_slack=0.0, infeasible=k in (15, 95),
                fallback="terminal LQR law" if k in (15, 95) else "", solve_time_ms=3.0 if k == 99 else 0.2,
                model_version=0, interventions_total=(k + 5) // 10, infeasible_total=int(k >= 15) + int(k >= 95),
                sync_breaks_total=0)
        for topic, msg in msgs.items():
            for _ in range(2 if topic.endswith("safety_filter/status") and k == 50 else 1):
                writer.write(topic, round(t * 1e9), ts.serialize_cdr(msg, msg.__msgtype__))
        if k == answered_twice:
            again = T["safe_ctrl_ros/msg/Command"](header=h, u=np.array([3.0]))
            writer.write("/r/plant/cmd", round(t * 1e9) + 1, ts.serialize_cdr(again, again.__msgtype__))
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
    # A state answered twice (re-sent by the plant): the command the plant applied, the first, counts.
    write_run(tmp_path / "twice", violate_at=None, answered_twice=50)
    twice = load_run(tmp_path / "twice")
    assert twice.topics["/r/plant/cmd"][1] == 101
    assert [float(u[0]) for _, u in twice.commands] == [0.5] * 100
    assert metrics(twice)["control_effort"] == pytest.approx(0.25)
    table = markdown([a, b])
    assert "| violation_steps | 1 | 0 |" in table


def test_tracking_error_is_in_metres_and_the_pole_angle_apart_in_radians(tmp_path: Path) -> None:
    """The cart-pole tracks its cart position x (m); the pole angle's error is its own metric (rad)."""
    write_run(tmp_path / "a", violate_at=None, system="cartpole", theta_rate=0.001)
    run = load_run(tmp_path / "a")
    assert (run.system, run.system_note) == ("cartpole", "")
    m = metrics(run)
    x_rms = np.sqrt(np.mean([(0.01 * k) ** 2 for k in range(100)]))
    theta_rms = np.sqrt(np.mean([(0.001 * k) ** 2 for k in range(100)]))
    assert m["tracking_rmse"] == pytest.approx(x_rms, rel=1e-12)  # x alone: theta is not added to it
    assert m["angle_rmse"] == pytest.approx(theta_rms, rel=1e-12)
    # The last 10 s of a 1.98 s run are all of it.
    assert m["tracking_rmse_last_10s"] == pytest.approx(x_rms, rel=1e-12)
    assert m["angle_rmse_last_10s"] == pytest.approx(theta_rms, rel=1e-12)
    assert m["system"] == "cartpole"
    assert "system_note" not in m
    assert m["units"]["tracking_rmse"] == "m"
    assert m["units"]["angle_rmse"] == "rad"
    assert m["units"]["tracking_rmse_last_10s"] == "m"
    table = markdown([m])
    assert "| tracking_rmse (m) |" in table
    assert "| angle_rmse (rad) |" in table
    assert "| system | cartpole |" in table


def test_the_system_comes_from_the_bag_else_from_the_state_size_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "old", violate_at=None, theta_rate=0.001)  # recorded before bags named the system
    old = load_run(tmp_path / "old")
    assert old.system == "cartpole"
    assert "does not name its system" in old.system_note
    assert "'cartpole' inferred from the state size 4" in old.system_note
    m = metrics(old)
    assert m["system_note"] == old.system_note
    assert m["tracking_rmse"] == pytest.approx(np.sqrt(np.mean([(0.01 * k) ** 2 for k in range(100)])), rel=1e-12)
    assert "Notes:" in markdown([m])
    assert main([str(tmp_path / "old")]) == 0
    assert "note: old: the bag does not name its system" in capsys.readouterr().err
    # A name the report does not know, or one that does not fit the states, is an error with the reason.
    write_run(tmp_path / "wrong", violate_at=None, system="quadrotor_2d")
    with pytest.raises(ConfigError, match=r"system 'quadrotor_2d' \(recorded in the bag\) has 6 states.* has 4"):
        load_run(tmp_path / "wrong")
    assert load_run(tmp_path / "wrong", system="cartpole").system == "cartpole"  # --system overrides
    assert main([str(tmp_path / "wrong")]) == 2
    assert "has 6 states" in capsys.readouterr().err
    assert main([str(tmp_path / "wrong"), "--system", "cartpole"]) == 0
    write_run(tmp_path / "unknown", violate_at=None, system="segway")
    with pytest.raises(ConfigError, match="unknown system 'segway'"):
        load_run(tmp_path / "unknown")


def test_the_system_name_is_in_the_metadata_and_the_mcap_summary(tmp_path: Path) -> None:
    """custom_data.system, where rosbag2 keeps a bag's own data: metadata.yaml from the start (a killed
    recorder leaves it too) and, once closed, the MCAP file's rosbag2 metadata record."""
    import yaml

    writer = BagWriter(tmp_path / "b", typestore())
    read = lambda: yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())  # noqa: E731
    assert "system" not in read()["rosbag2_bagfile_information"]["custom_data"]
    writer.set_custom_data("system", "quadrotor_3d")
    custom = read()["rosbag2_bagfile_information"]["custom_data"]
    assert custom == {"recorder": "safe_ctrl_ros", "system": "quadrotor_3d", "complete": "false"}
    with pytest.raises(ConfigError, match="writer's own"):
        writer.set_custom_data("complete", "true")
    writer.close()
    assert read()["rosbag2_bagfile_information"]["custom_data"]["system"] == "quadrotor_3d"
    assert read()["rosbag2_bagfile_information"]["custom_data"]["complete"] == "true"
    assert b"system: quadrotor_3d" in (tmp_path / "b" / "b.mcap").read_bytes()
    with pytest.raises(ConfigError, match="closed"):
        writer.set_custom_data("system", "cartpole")
    assert read()["rosbag2_bagfile_information"]["custom_data"]["complete"] == "true"


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


def test_safety_filter_interventions_stand_next_to_the_violations(tmp_path: Path) -> None:
    write_run(tmp_path / "f", violate_at=1.0, system="cartpole", safety_filter=True)
    run = load_run(tmp_path / "f")
    assert run.topics["/r/safety_filter/status"] == ("safe_ctrl_ros/msg/SafetyFilterStatus", 101)
    m = metrics(run)
    assert m["violation_steps"] == 1
    assert m["filter"] == "mpsc"
    assert m["filter_steps"] == 100  # the re-sent status of k = 50 counts once
    assert m["interventions"] == 10
    cuts = [0.01 * k for k in range(5, 100, 10)]
    assert m["intervention_mean"] == pytest.approx(sum(cuts) / 100, rel=1e-12)  # 0.05 N over all steps
    assert m["intervention_max"] == pytest.approx(0.95, rel=1e-12)
    assert m["filter_infeasible_steps"] == 2
    times = [0.2] * 99 + [3.0]
    assert m["filter_solve_ms_p50"] == pytest.approx(0.2)
    assert m["filter_solve_ms_p99"] == pytest.approx(float(np.percentile(times, 99)))
    assert m["filter_solve_ms_max"] == pytest.approx(3.0)
    assert m["units"]["filter_solve_ms_p99"] == "ms"
    table = markdown([m])
    assert "| violation_steps | 1 |" in table
    assert "| interventions | 10 |" in table
    assert "| filter_infeasible_steps | 2 |" in table
    assert "| intervention_max | 0.95 |" in table
    # A run without a filter has none of these.
    write_run(tmp_path / "n", violate_at=1.0, system="cartpole")
    plain = metrics(load_run(tmp_path / "n"))
    assert not {"filter", "interventions", "intervention_mean", "filter_infeasible_steps"} & set(plain)
    # --plots: the intervention panel is one more panel of the overview (cart-pole: position, angle,
    # margin, solve time; + the filter's), each 3 in high at 90 dpi.
    from matplotlib.image import imread

    from safe_ctrl_ros.bag.report import plots

    with_filter = imread(plots(run, tmp_path / "p")[0])
    without = imread(plots(load_run(tmp_path / "n"), tmp_path / "q")[0])
    assert without.shape[0] == 4 * 3 * 90
    assert with_filter.shape[0] == 5 * 3 * 90


def _message(ts: object, msgtype: str, **given: object) -> object:
    """A message of the bag's typestore with every field not `given` at its zero value."""
    import dataclasses

    types = ts.types  # type: ignore[attr-defined]
    zero = {"str": "", "int": 0, "float": 0.0, "bool": False}
    values = {}
    for f in dataclasses.fields(types[msgtype]):
        if f.type.startswith("ClassVar"):
            continue
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.type in zero:
            values[f.name] = zero[f.type]
        elif f.type.startswith("list"):
            values[f.name] = []
        elif "__msg__" in f.type:
            values[f.name] = _message(ts, f.type.replace("__msg__", "/msg/"))
        else:
            values[f.name] = np.array([], dtype=np.float64)
    return types[msgtype](**values)


def _lockstep_bag(path: Path, msgs: Path | None) -> None:
    """Three cart-pole steps: the controller's running total of sync breaks 0, 1, 1; the filter's 0, 0,
    1; the adapter's missing transitions 0 then 2; the plant's watchdog stepped 3 times. With `msgs`
    (older .msg files), the statuses as recorded before they carried the totals."""
    ts = typestore(msgs)
    writer = BagWriter(path, ts, custom_data={"system": "cartpole"})
    topics = {"/r/plant/state": "State", "/r/controller/status": "ControllerStatus",
              "/r/safety_filter/status": "SafetyFilterStatus", "/r/adapter/status": "AdapterStatus"}
    for topic, kind in topics.items():
        writer.add_topic(topic, f"safe_ctrl_ros/msg/{kind}")
    writer.add_topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    has_totals = "sync_breaks_total" in (msgs or (REPO / "msg")).joinpath("ControllerStatus.msg").read_text()
    for k, (ctrl, filt, missing) in enumerate(((0, 0, 0), (1, 0, 2), (1, 1, 2))):
        stamp = ts.types["builtin_interfaces/msg/Time"](sec=0, nanosec=20_000_000 * k)
        h = ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id="")
        totals = {"sync_breaks_total": ctrl} if has_totals else {}
        parts = [("/r/plant/state", _message(ts, "safe_ctrl_ros/msg/State", header=h, x=np.zeros(4))),
                 ("/r/controller/status", _message(ts, "safe_ctrl_ros/msg/ControllerStatus", header=h, **totals)),
                 ("/r/safety_filter/status", _message(ts, "safe_ctrl_ros/msg/SafetyFilterStatus", header=h,
                                                      **({"sync_breaks_total": filt} if has_totals else {})))]
        if k != 1:
            parts.append(("/r/adapter/status", _message(ts, "safe_ctrl_ros/msg/AdapterStatus", header=h,
                                                        transitions_missing=missing)))
        for topic, msg in parts:
            writer.write(topic, 20_000_000 * k, ts.serialize_cdr(msg, msg.__msgtype__))  # type: ignore[attr-defined]
    kv = ts.types["diagnostic_msgs/msg/KeyValue"]
    status = _message(ts, "diagnostic_msgs/msg/DiagnosticStatus", level=0, name="/r/plant: loop timing",
                      values=[kv(key="safe_command_steps", value="3")])
    diag = _message(ts, "diagnostic_msgs/msg/DiagnosticArray", status=[status])
    writer.write("/diagnostics", 40_000_000, ts.serialize_cdr(diag, diag.__msgtype__))  # type: ignore[attr-defined]
    writer.close()


def test_lockstep_breaks_add_the_controllers_filters_adapters_and_watchdogs_totals(tmp_path: Path) -> None:
    _lockstep_bag(tmp_path / "now", None)
    m = metrics(load_run(tmp_path / "now"))
    assert (m["controller_sync_breaks"], m["filter_sync_breaks"], m["adapter_transitions_missing"],
            m["safe_command_steps"]) == (1, 1, 2, 3)
    assert m["lockstep_breaks"] == 7
    assert "| lockstep_breaks | 7 |" in markdown([m])
    # A bag recorded before the statuses carried the totals: unknown, so not reported (never a 0).
    old = tmp_path / "old_msg"
    old.mkdir()
    for src in (REPO / "msg").glob("*.msg"):
        kept = [line for line in src.read_text().splitlines() if "sync_breaks_total" not in line]
        (old / src.name).write_text("\n".join(kept) + "\n")
    _lockstep_bag(tmp_path / "then", old)
    m = metrics(load_run(tmp_path / "then"))
    assert m["safe_command_steps"] == 3
    assert not {"controller_sync_breaks", "filter_sync_breaks", "lockstep_breaks"} & set(m)
