"""Core mode: a run of the launch file's loop without ROS, from the same parameters as the graph.

The launch file is resolved as for a graph run (safe_ctrl_ros.bringup.launch_xml) and each node's
parameters are read from its params files and inline <param>s and resolved by the node's own spec
(safe_ctrl_ros.parameters), so the core run uses what the node would: the plant (PlantSim + Episode:
the initial-state draw from the plant's seed, the termination rules), the controller
(build_controller: LQR or NMPC with its residual, fallback), the constraint monitor (its safety
requests force the controller's fallback, as with `safety.sync_with_monitor`) and the disturbance
injector's scenario (observation, action, force and parameter disturbances). Per step k: the
parameters in force at t_k, the monitor's verdict on x_k, the controller's command for the
(disturbed) observation, the disturbed command applied with the wrench of t_k.

Not in core mode: the adapter (a launch file that starts one is refused: run that variant as a
graph sweep or with the adapter off), the recorder, wall-clock effects (real-time mode, timeouts).
The core loop is the graph's in one process, not bit for bit the same run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros import systems
from safe_ctrl_ros.bringup.launch_xml import LaunchPlan
from safe_ctrl_ros.bringup.launch_xml import NodeSpec as LaunchNode
from safe_ctrl_ros.errors import ConfigError, read_yaml
from safe_ctrl_ros.parameters.common import model_of, task_of
from safe_ctrl_ros.parameters.controller import CONTROLLER, build_controller
from safe_ctrl_ros.parameters.injector import DISTURBANCE_INJECTOR, build_scenario
from safe_ctrl_ros.parameters.monitor import CONSTRAINT_MONITOR, build_monitor
from safe_ctrl_ros.parameters.plant import PLANT
from safe_ctrl_ros.parameters.spec import NodeSpec
from safe_ctrl_ros.simulation import Episode, PlantSim
from safe_ctrl_ros.sweep.draws import _node_matches
from safe_ctrl_ros.sweep.metrics import Trajectory, error_series, trajectory_metrics
from safe_ctrl_ros.sweep.plan import RunPlan, launch_plan, materialize

SPECS: dict[str, NodeSpec] = {s.node: s for s in (PLANT, CONTROLLER, DISTURBANCE_INJECTOR, CONSTRAINT_MONITOR)}
IGNORED = ("use_sim_time",)  # rclpy's own parameter


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def given_params(node: LaunchNode) -> dict[str, Any]:
    """What the node is given, as `ros2 launch` would pass it: its params files' sections for it in
    order, then the inline <param>s (later ones win)."""
    values: dict[str, Any] = {}
    label = node.label
    for path in node.params_files:
        data = read_yaml(path, "params file") or {}
        for key, section in data.items():
            if isinstance(section, Mapping) and _node_matches(str(key), label):
                values.update(_flatten(section.get("ros__parameters") or {}))
    values.update(_flatten(node.inline_params()["/**"]["ros__parameters"]))
    for name in IGNORED:
        values.pop(name, None)
    return values


def node_values(plan: LaunchPlan, node: LaunchNode) -> dict[str, Any]:
    """The node's parameter values, resolved by its spec (ConfigError naming a bad or unknown one)."""
    spec = SPECS[node.exec]
    return spec.resolve(given_params(node), where=f"{plan.file.name}: node '{node.label}': ")


def nodes_by_exec(plan: LaunchPlan) -> dict[str, LaunchNode]:
    out: dict[str, LaunchNode] = {}
    for node in plan.nodes:
        if node.pkg != "safe_ctrl_ros":
            raise ConfigError(f"core mode runs this package's nodes only; {plan.file.name} starts "
                              f"{node.pkg}/{node.exec}")
        if node.exec in out:
            raise ConfigError(f"core mode runs one loop; {plan.file.name} starts two '{node.exec}' nodes")
        out[node.exec] = node
    if "plant" not in out or "controller" not in out:
        raise ConfigError(f"core mode needs a plant and a controller node; {plan.file.name} starts {sorted(out)}")
    if "adapter" in out:
        raise ConfigError(f"core mode does not run the adapter: {plan.file.name} starts one (run this "
                          f"variant as a graph sweep, or turn the adapter off, e.g. adapter:=false)")
    other = sorted(set(out) - set(SPECS) - {"recorder"})
    if other:
        raise ConfigError(f"core mode has no core for node(s) {other} of {plan.file.name}")
    return out


def run_core(run: RunPlan, folder: Path) -> dict[str, Any]:
    """One run in the core: its metrics (the series for the plots go to `folder`/series.npz)."""
    args = materialize(run, folder)
    plan = launch_plan(run.launch, args)
    nodes = nodes_by_exec(plan)
    vp = node_values(plan, nodes["plant"])
    vc = node_values(plan, nodes["controller"])
    model = model_of(vp)
    sim = PlantSim(model, vp["dt"], vp["substeps"], vp["initial_state"])
    episode = Episode(sim, vp["init_randomization"], duration=vp["duration"],
                      stop_on_out_of_bounds=vp["stop_on_out_of_bounds"], seed=vp["seed"])
    task = task_of(model, vp)
    built = build_controller(vc)
    law = built.law
    monitor = None
    react = False
    if "constraint_monitor" in nodes:
        vm = node_values(plan, nodes["constraint_monitor"])
        monitor = build_monitor(vm)
        react = bool(vm["reaction.enabled"])
    scenario = build_scenario(node_values(plan, nodes["disturbance_injector"])) if "disturbance_injector" in nodes \
        else None
    nominal = dict(model.params)
    in_force = dict(nominal)
    steps = round(vp["duration"] / vp["dt"]) if vp["duration"] > 0 else 0
    if steps == 0:
        raise ConfigError("core mode needs a finite episode: duration > 0")
    ts, xs, refs, us, margins, violated = [], [], [], [], [], []
    fallbacks = 0
    solve_ms = []
    episode.reset()
    wall = time.perf_counter()
    for k in range(steps + 1):
        t = sim.t
        x = sim.x.copy()
        ts.append(t)
        xs.append(x)
        refs.append(task.reference(t)[0][0])
        force = ""
        if monitor is not None:
            verdict = monitor.state(sim.t_ns, x)
            if verdict is not None and verdict.evaluation.values.size:
                margins.append(float(np.min(verdict.evaluation.margins)))
                violated.append(bool(verdict.evaluation.any_violated))
            else:
                margins.append(np.nan)
                violated.append(False)
            if react and monitor.request.active:
                force = monitor.request.reason
        else:
            margins.append(np.nan)
            violated.append(False)
        if k == steps:
            us.append(np.full(model.nu, np.nan))
            break
        if scenario is not None:
            params = scenario.parameters(t, nominal)
            if params != in_force:
                sim.set_model(systems.make(model.name, **params))
                in_force = params
        obs = scenario.observation(t, x) if scenario is not None else x
        report = law.compute(obs, t, force)
        fallbacks += int(report.fallback_active)
        solve_ms.append(report.solve_time_s * 1e3)
        u = scenario.action(t, report.u) if scenario is not None else report.u
        uv = sim.check_command(u)
        applied = sim.u_last if uv is None else uv
        us.append(np.asarray(u, dtype=float).copy())  # as commanded (the graph records plant/cmd before clipping)
        sim.wrench = scenario.force(t) if scenario is not None else np.zeros_like(sim.wrench)
        if monitor is not None:
            monitor.command(applied)
        result = episode.step(uv)
        if result.terminated:
            ts.append(sim.t)
            xs.append(sim.x.copy())
            refs.append(task.reference(sim.t)[0][0])
            us.append(np.full(model.nu, np.nan))
            margins.append(np.nan)
            violated.append(False)
            break
    wall = time.perf_counter() - wall
    traj = Trajectory(np.array(ts), np.array(xs), np.array(refs), np.array(us), np.array(margins),
                      np.array(violated, dtype=bool))
    out = trajectory_metrics(traj, model, vp["duration"], vp["dt"], run.cost_q, run.cost_r)
    out["steps"] = len(ts)
    out["fallback_steps"] = fallbacks
    ms = np.array(solve_ms[1:] or solve_ms)
    out["solve_ms_p50"] = float(np.percentile(ms, 50))
    out["solve_ms_p99"] = float(np.percentile(ms, 99))
    out["terminated"] = episode.terminated
    out["wall_s"] = wall
    et, err = error_series(traj, model)
    np.savez(folder / "series.npz", t=et, error=err)
    return out
