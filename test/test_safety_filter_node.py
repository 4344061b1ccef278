"""The safety_filter node in the graph (launch/cartpole_safety_filter.launch.xml).

Lockstep: every command the plant side receives on `cmd` is the filter's answer to the controller's
`cmd_proposed` with the same stamp, `~/status` reports exactly what it changed, and the default
(safety_filter:=none) leaves the controller publishing `cmd` itself. Faults: the filter killed
(SIGKILL) mid-run: the plant's watchdog applies its safe command, the runner respawns the filter and
the commands come back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.ros import REPO, bringup, kill_when_recorded, spin_until, start_bringup, start_when_matched

pytest.importorskip("rclpy")
LAUNCH = REPO / "launch" / "cartpole_safety_filter.launch.xml"
pytestmark = pytest.mark.graph


def _keep(into: dict[int, Any], stamp: int, value: Any) -> None:
    into.setdefault(stamp, value)  # the first message per stamp (re-sends repeat it)


def test_lockstep_commands_are_the_filters_answers_with_the_same_stamp(tmp_path: Path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from safe_ctrl_ros.msg import Command, SafetyFilterStatus
    from safe_ctrl_ros.ros.convert import stamp_to_ns
    from safe_ctrl_ros.ros.qos import COMMAND_QOS, STATUS_QOS

    ns = "sfnode"
    summary = tmp_path / "summary.json"
    rclpy.init()
    node = rclpy.create_node("sf_probe")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    proposed: dict[int, list[float]] = {}
    certified: dict[int, list[float]] = {}
    statuses: dict[int, SafetyFilterStatus] = {}
    subs: list[object] = [
        node.create_subscription(Command, f"/{ns}/cmd_proposed",
                                 lambda m: _keep(proposed, stamp_to_ns(m.header.stamp), list(m.u)), COMMAND_QOS),
        node.create_subscription(Command, f"/{ns}/cmd",
                                 lambda m: _keep(certified, stamp_to_ns(m.header.stamp), list(m.u)), COMMAND_QOS),
        node.create_subscription(SafetyFilterStatus, f"/{ns}/safety_filter/status",
                                 lambda m: _keep(statuses, stamp_to_ns(m.header.stamp), m), STATUS_QOS),
    ]
    proc = start_bringup(str(LAUNCH), f"namespace:={ns}", "duration:=2.0", "autostart:=false",
                         f"summary_file:={summary}")
    try:
        start_when_matched(node, ex, ns, subs, timeout=90.0)
        assert spin_until(ex, lambda: proc.poll() is not None, 120.0), "the run did not finish"
        spin_until(ex, lambda: False, 0.5)  # the last messages
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate()
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, out[-3000:]
    steps = json.loads(summary.read_text())["steps"]
    assert steps == 100
    # The probe's readers can be matched before the controller's and the filter's writers have
    # matched them (Fast DDS discovery is not symmetric), so the first proposals and certified
    # commands may be lost to the probe (never to the plant, which ran all its steps): from the
    # probe's first one, at most 3 steps in, every step's certified command is there, up to the last
    # state's (k = 0..steps; the last one's answer may come after the end).
    dt = 20_000_000
    assert min(certified) <= 3 * dt, f"the probe lost the certified commands up to t={min(certified) * 1e-9:.2f} s"
    assert sorted(certified) == list(range(min(certified), max(certified) + dt, dt))
    assert max(certified) in ((steps - 1) * dt, steps * dt)
    assert min(proposed) <= 3 * dt, f"the probe lost the proposals up to t={min(proposed) * 1e-9:.2f} s"
    assert min(statuses) <= 3 * dt, f"the probe lost the statuses up to t={min(statuses) * 1e-9:.2f} s"
    first = max(min(proposed), min(certified), min(statuses))  # compare from where the probe has all three
    certified_seen = {k: v for k, v in certified.items() if k >= first}
    statuses = {k: v for k, v in statuses.items() if k >= first}
    proposed = {k: v for k, v in proposed.items() if k in certified_seen}  # (a last proposal may be cut off)
    # one certified command per step, each answering the proposal with the same stamp
    assert sorted(certified_seen) == sorted(proposed) == sorted(statuses)
    intervened = 0
    for stamp, st in statuses.items():
        assert st.u_proposed.tolist() == proposed[stamp]
        assert st.u_safe.tolist() == certified[stamp]
        diff = np.asarray(certified[stamp]) - np.asarray(proposed[stamp])
        assert st.intervention == pytest.approx(float(np.linalg.norm(diff)), abs=1e-12)
        assert st.intervened == bool(np.max(np.abs(diff)) > 1e-9)
        assert st.filter == "cbf"
        assert st.infeasible is False
        intervened += st.intervened
    last = statuses[max(statuses)]
    lost = first // dt  # the steps before the probe's first complete one
    assert intervened <= last.interventions_total <= intervened + lost
    assert intervened > 0  # the aggressive LQR's first commands are cut


def test_without_a_filter_the_controller_feeds_the_plant_side_directly() -> None:
    res = bringup(str(LAUNCH), "safety_filter:=none", "--show")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [line for line in res.stdout.splitlines() if line.startswith("safety_filter")]
    assert "cmd_proposed" not in res.stdout
    res = bringup(str(LAUNCH), "safety_filter:=mpsc", "--show")
    lines = res.stdout.splitlines()
    controller = next(line for line in lines if line.startswith("controller:"))
    assert controller.endswith("-r cmd:=cmd_proposed")
    node = lines.index(next(line for line in lines if line.startswith("safety_filter:")))
    assert "'filter': 'mpsc'" in lines[node + 1]


def test_a_killed_filter_hands_over_to_the_plant_watchdog(tmp_path: Path) -> None:
    import yaml

    ns = "sffault"
    bag, summary = tmp_path / "bag", tmp_path / "summary.json"
    # Lockstep: the plant waits command_timeout per step, then steps on its safe command. The outage
    # lasts at least the runner's respawn_delay (0.5 s) plus the filter's start, so a 0.25 s timeout
    # engages the watchdog however fast the machine restarts the filter (1 s did not, on a quiet one).
    params = yaml.safe_load((REPO / "config" / "cartpole_safety_filter.yaml").read_text())
    params["/**/plant"]["ros__parameters"]["command_timeout"] = 0.25
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    proc = start_bringup(str(LAUNCH), f"namespace:={ns}", "respawn:=true", "duration:=4.0", f"params:={params_file}",
                         "record:=true", f"bag:={bag}", "autostart:=false", f"summary_file:={summary}")
    try:
        kill_when_recorded(bag, 1.0, "safety_filter", ns, timeout=90.0)
        killed_at = time.monotonic()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - killed_at < 120
    assert "safety_filter died with code -9; respawning" in out, out[-3000:]
    s = json.loads(summary.read_text())
    assert s["safe_command_steps"] > 0  # the plant's watchdog applied its safe command meanwhile
    assert s["watchdog_engagements"] >= 1
    assert s["watchdog_releases"] == s["watchdog_engagements"]  # the respawned filter brought commands back
    assert s["steps"] == 200
    assert s["terminated"] == ""
