"""The MuJoCo plant: speed against the CasADi plant, the nominal model's one-step prediction error
on it, and a real-time run with the edge side in another process.

    tools/run.sh python bench/mujoco_plant.py [--steps 1000] [--seeds 10] [--hil-seconds 8] [--no-hil]
        [--out bench/results/mujoco_plant.json]

1. Speed (`kind: speed`): control steps per second of `advance` (dt = 0.02 s, the command held) for
   each system: CasADi RK4 at the plant's default 10 substeps (2 ms) and at 20 (1 ms, MuJoCo's
   physics step), MuJoCo with every effect off and with the default effects on; best of 3 repeats
   of --steps steps from the equilibrium with hover input. `realtime_factor` = steps/s x dt.
2. One-step prediction error (`kind: prediction`): the nominal symbolic model's prediction
   (RK4, 10 substeps) of the next state against the MuJoCo plant's, on the transitions of a
   closed loop: LQR (the scenario's weights) from the equilibrium plus a seeded uniform draw,
   with seeded input noise (1% of the input span) so that the state moves, 4 s per seed. Per
   system and effect set (each effect alone, all defaults on, none), per seed: the RMS over steps
   of the prediction error's norm, and that relative to the RMS norm of the state change (how much
   of a step the model gets wrong). Summaries over seeds: stats.summarize.
3. Real time (`kind: realtime`): launch/cartpole_hil_robot.launch.xml (plant, mode realtime) and
   launch/cartpole_hil_edge.launch.xml (NMPC controller, monitor, injector with the link faults:
   5 +- 2 ms delay, 1% loss per link) as two bringup processes on this host, for each engine;
   latency and deadline figures from the plant's summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.simulation.mujoco import MujocoPlantSim, MujocoSettings

REPO = Path(__file__).resolve().parents[1]
DT = 0.02
SYSTEMS = ("cartpole", "quadrotor_2d", "quadrotor_3d")
# LQR weights per system (the scenarios' params files) and how far from the equilibrium a seed starts.
LQR = {
    "cartpole": ("config/cartpole_lqr.yaml", [0.2, 0.2, 0.1, 0.2]),
    "quadrotor_2d": ("config/quadrotor_2d_flagship.yaml", [0.2, 0.2, 0.2, 0.2, 0.1, 0.2]),
    "quadrotor_3d": ("config/quadrotor_3d_hover.yaml", [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2]),
}
EFFECT_SETS: dict[str, tuple[str, ...]] = {
    "cartpole": ("cart_damping", "cart_friction", "pole_damping", "pole_friction"),
    "quadrotor_2d": ("thrust_lag", "drag_linear", "drag_quadratic", "ground_contact"),
    "quadrotor_3d": ("thrust_lag", "drag_linear", "drag_quadratic", "ground_contact"),
}
PRED_SECONDS = 4.0
INPUT_NOISE = 0.01  # of the input span


def _equilibrium_start(model: systems.SymbolicModel) -> np.ndarray:
    x = model.x_eq.copy()
    slot = model.position_slot("z")
    if slot is not None:
        x[slot[0]] = 1.0  # hover at 1 m, clear of the floor
    return x


def speed(steps: int) -> list[dict[str, Any]]:
    out = []
    for name in SYSTEMS:
        model = systems.make(name)
        x0 = _equilibrium_start(model)
        sims: dict[str, PlantSim] = {
            "casadi_10_substeps": PlantSim(model, DT, 10, x0),
            "casadi_20_substeps": PlantSim(model, DT, 20, x0),
            "mujoco_nominal": MujocoPlantSim(model, DT, MujocoSettings.nominal(), x0),
            "mujoco_effects": MujocoPlantSim(model, DT, MujocoSettings(), x0),
        }
        for engine, sim in sims.items():
            best = 0.0
            for _ in range(3):
                sim.reset(x0)
                t0 = time.perf_counter()
                for _ in range(steps):
                    sim.advance(model.u_eq)
                best = max(best, steps / (time.perf_counter() - t0))
            out.append({"kind": "speed", "system": name, "engine": engine, "steps_per_s": best,
                        "realtime_factor": best * DT, "physics_step_s": sim.describe()["physics"]["step_s"]})  # type: ignore[index]
            print(f"speed {name:13s} {engine:20s} {best:9.0f} steps/s  {best * DT:7.1f}x real time")
    return out


def _lqr(name: str, model: systems.SymbolicModel) -> LqrController:
    cfg = yaml.safe_load((REPO / LQR[name][0]).read_text())["/**/controller"]["ros__parameters"]
    r = cfg["lqr"]["R"]
    goal = _equilibrium_start(model)
    return LqrController(model, cfg["lqr"]["Q"], r[0] if len(r) == 1 else r, DT,
                         cfg["lqr"].get("discretization", "exact"), goal)


def prediction_error(name: str, settings: MujocoSettings, seed: int) -> dict[str, float]:
    model = systems.make(name)
    law = _lqr(name, model)
    rng = np.random.default_rng(seed)
    x0 = _equilibrium_start(model) + rng.uniform(-1, 1, model.nx) * np.array(LQR[name][1])
    sim = MujocoPlantSim(model, DT, settings, x0)
    span = model.input_high - model.input_low
    errs, moves = [], []
    for _ in range(round(PRED_SECONDS / DT)):
        x = sim.x.copy()
        u = np.clip(law(x) + rng.uniform(-INPUT_NOISE, INPUT_NOISE, model.nu) * span, model.input_low, model.input_high)
        x_next = sim.advance(u).copy()
        predicted = model.step(x, u, DT, 10)
        errs.append(float(np.linalg.norm(x_next - predicted)))
        moves.append(float(np.linalg.norm(x_next - x)))
    rms = float(np.sqrt(np.mean(np.square(errs))))
    return {"rms_error": rms, "relative_error": rms / float(np.sqrt(np.mean(np.square(moves)))),
            "max_error": float(np.max(errs))}


def predictions(seeds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records, summaries = [], {}
    defaults = MujocoSettings()
    for name in SYSTEMS:
        sets = {"none": MujocoSettings.nominal(), "all": defaults.only(*EFFECT_SETS[name])}
        sets.update({e: defaults.only(e) for e in EFFECT_SETS[name]})
        summaries[name] = {}
        for label, settings in sets.items():
            rows = [prediction_error(name, settings, s) for s in range(seeds)]
            for s, row in enumerate(rows):
                records.append({"kind": "prediction", "system": name, "effects": label, "seed": s, **row})
            summaries[name][label] = {k: stats.summarize([r[k] for r in rows]) for k in rows[0]}
            m = summaries[name][label]
            print(f"prediction {name:13s} {label:15s} rms {m['rms_error']['mean']:.3e} "
                  f"(relative {m['relative_error']['mean']:.3%}, worst seed {m['relative_error']['worst']:.3%})")
    return records, summaries


def _hil_run(engine: str, seconds: float) -> dict[str, Any]:
    """The HIL robot and edge launch files as two bringup processes on this host (own domain)."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(150 + os.getpid() % 50)}
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        cli = [sys.executable, "-m", "safe_ctrl_ros.bringup.cli"]
        edge = subprocess.Popen([*cli, str(REPO / "launch/cartpole_hil_edge.launch.xml"), "peers:=127.0.0.1"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
        try:
            robot = subprocess.run([*cli, str(REPO / "launch/cartpole_hil_robot.launch.xml"), "peers:=127.0.0.1",
                                    f"engine:={engine}", f"duration:={seconds}", f"summary_file:={summary}"],
                                   env=env, capture_output=True, text=True, cwd=REPO, timeout=seconds + 120)
        finally:
            os.killpg(edge.pid, 2)  # SIGINT: bringup shuts its nodes down cleanly
            edge.wait(timeout=30)
        if robot.returncode != 0:
            raise RuntimeError(f"HIL robot side ({engine}) failed: {robot.stdout[-2000:]}{robot.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(summary.read_text())
    t = result["timing"]
    record = {"kind": "realtime", "engine": engine, "seconds": seconds, "steps": result["steps"],
              "latency_p50_ms": t["latency_ms"]["p50"], "latency_p99_ms": t["latency_ms"]["p99"],
              "latency_max_ms": t["latency_ms"]["max"], "jitter_p99_ms": t["jitter_ms"]["p99"],
              "miss_rate": t["miss_rate"], "missed_deadlines": result["missed_deadlines"],
              "final_theta": result["final_state"]["theta"], "terminated": result["terminated"]}
    print(f"realtime {engine:7s} latency p50/p99/max {record['latency_p50_ms']:.1f}/{record['latency_p99_ms']:.1f}/"
          f"{record['latency_max_ms']:.1f} ms, misses {record['missed_deadlines']} of {record['steps']}, "
          f"final theta {record['final_theta']:+.4f}")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--hil-seconds", type=float, default=8.0)
    parser.add_argument("--no-hil", action="store_true", help="skip the real-time run (no ROS needed)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mujoco_plant.json")
    opts = parser.parse_args()
    records = speed(opts.steps)
    pred_records, pred = predictions(opts.seeds)
    records += pred_records
    realtime = [] if opts.no_hil else [_hil_run(e, opts.hil_seconds) for e in ("casadi", "mujoco")]
    records += realtime
    by = {(r["system"], r["engine"]): r for r in records if r["kind"] == "speed"}
    speed_summary = {name: {
        "mujoco_effects_realtime_factor": by[name, "mujoco_effects"]["realtime_factor"],
        "mujoco_nominal_realtime_factor": by[name, "mujoco_nominal"]["realtime_factor"],
        "casadi_realtime_factor": by[name, "casadi_10_substeps"]["realtime_factor"],
        "casadi_1ms_realtime_factor": by[name, "casadi_20_substeps"]["realtime_factor"],
        "mujoco_effects_over_casadi":
            by[name, "mujoco_effects"]["steps_per_s"] / by[name, "casadi_10_substeps"]["steps_per_s"],
    } for name in SYSTEMS}
    write_records(opts.out, records, rule=__doc__.split("\n\n", 2)[2].strip(), dt=DT,
                  settings={**MujocoSettings().__dict__}, summaries={
                      "speed": speed_summary, "prediction": pred,
                      "realtime": {r["engine"]: r for r in realtime}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
