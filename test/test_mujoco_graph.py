"""The MuJoCo plant behind the plant node's whole contract, through the real graph (engine:=mujoco).

- quadrotor_3d_hover.launch.xml engine:=mujoco: plant, injector (the wind step: a force
  disturbance over plant/wrench), LQR controller and constraint monitor as processes over DDS, in
  lockstep: the final state is bit for bit the ROS-free loop's on `MujocoPlantSim`, and the summary
  names the engine and its effects.
- quadrotor_2d_mujoco.launch.xml adapter:=false: the new scenario flies (parameter disturbance
  model.mass x 1.3 applied by the injector to the MuJoCo plant), no constraint violation.
- cartpole_lqr.launch.xml engine:=mujoco mode:=realtime: the real-time stepper on MuJoCo reports
  its timing block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.ros import REPO, bringup
from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.disturbances import load_scenario
from safe_ctrl_ros.parameters.plant import PLANT, mujoco_settings

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (test_mujoco_render renders offscreen)
pytest.importorskip("mujoco")
pytest.importorskip("rclpy")
pytestmark = pytest.mark.graph

from safe_ctrl_ros.simulation.mujoco import MujocoPlantSim  # noqa: E402

HOVER = REPO / "launch" / "quadrotor_3d_hover.launch.xml"
HOVER_CONFIG = REPO / "config" / "quadrotor_3d_hover.yaml"
WIND = REPO / "config" / "disturbances" / "quadrotor_3d_step.yaml"
DURATION, DT = 4.0, 0.02


def core_hover(duration: float) -> np.ndarray:
    """The hover scenario's LQR loop without ROS, on the MuJoCo plant with the default effects."""
    cfg = yaml.safe_load(HOVER_CONFIG.read_text())
    p, c = cfg["/**/plant"]["ros__parameters"], cfg["/**/controller"]["ros__parameters"]
    model = systems.make("quadrotor_3d")
    values = PLANT.resolve({"system": "quadrotor_3d", "engine": "mujoco"})
    sim = MujocoPlantSim(model, p["dt"], mujoco_settings(values), p["initial_state"])
    r = c["lqr"]["R"]
    law = LqrController(model, c["lqr"]["Q"], r[0] if len(r) == 1 else r, c["dt"], c["lqr"]["discretization"],
                        c["task"]["goal"])
    wind = load_scenario(WIND, model.nx, model.nu, DT, list(model.params))
    for _ in range(round(duration / DT)):
        sim.wrench = wind.force(sim.t)
        sim.advance(law(sim.x))
    return sim.x


def test_hover_on_mujoco_over_dds_is_the_core_loop_bit_for_bit(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = bringup(str(HOVER), "namespace:=mj_hover", "engine:=mujoco", f"duration:={DURATION}",
                   f"summary_file:={summary}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "disturbance 'wind' start (t=2.000 s)" in done.stdout
    result = json.loads(summary.read_text())
    assert result["engine"] == "mujoco"
    assert result["physics"]["step_s"] == 0.001
    assert result["physics"]["substeps"] == 20
    assert result["physics"]["effects"] == {"thrust_lag": 0.015, "drag_linear": 0.01, "drag_quadratic": 0.005,
                                            "ground_contact": True}
    assert result["terminated"] == ""
    assert result["steps"] == round(DURATION / DT)
    final = np.array([result["final_state"][k] for k in systems.make("quadrotor_3d").state_names])
    expected = core_hover(DURATION)
    np.testing.assert_array_equal(final, expected)
    assert 0.005 < np.hypot(final[0], final[2]) < 0.05  # the wind pushed it, and it held on


def test_quadrotor_2d_mujoco_scenario_flies_without_violation(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = bringup(str(REPO / "launch" / "quadrotor_2d_mujoco.launch.xml"), "namespace:=mj_fig8", "adapter:=false",
                   "duration:=6.0", f"summary_file:={summary}", timeout=180.0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model parameters changed: {'model.mass': 0.0351}" in done.stdout  # the injector's change, on MuJoCo
    result = json.loads(summary.read_text())
    assert result["engine"] == "mujoco"
    assert result["terminated"] == ""
    assert result["steps"] == 300
    assert "violation" not in done.stdout.lower().replace("violation_steps=0", "")


def test_realtime_mode_on_mujoco_reports_timing(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = bringup(str(REPO / "launch" / "cartpole_lqr.launch.xml"), "namespace:=mj_rt", "engine:=mujoco",
                   "mode:=realtime", "duration:=2.0", f"summary_file:={summary}")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(summary.read_text())
    assert result["engine"] == "mujoco"
    assert result["mode"] == "realtime"
    timing = result["timing"]
    assert timing["latency_ms"]["count"] >= 90  # 100 steps, a few before the loop first closed
    assert abs(result["final_state"]["theta"]) < 0.05  # balanced on wall time
