"""Plant speed: core steps per second per system, and the lockstep graph's real-time factor.

    tools/run.sh python bench/plant_speed.py [--sim-seconds 20] [--out bench/results/plant_speed.json]

Records: {system, mode (core | composed | processes), steps_per_s, realtime_factor}. The graph
modes run launch/cartpole_lqr.launch.xml (plant + LQR controller over DDS, 50 Hz, lockstep).
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

from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.simulation import PlantSim

REPO = Path(__file__).resolve().parents[1]
DT, SUBSTEPS = 0.02, 10


def core_speed(name: str, steps: int) -> dict[str, object]:
    model = systems.make(name)
    x_eq, u_eq = model.equilibrium()
    sim = PlantSim(model, DT, SUBSTEPS, x_eq)
    sim.advance(u_eq)  # first call: CasADi function set-up
    start = time.perf_counter()
    for _ in range(steps):
        sim.advance(u_eq)
    wall = time.perf_counter() - start
    rate = steps / wall
    return {"system": name, "mode": "core", "steps_per_s": rate, "realtime_factor": rate * DT}


def graph_speed(mode: str, sim_seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [
            sys.executable, "-m", "safe_ctrl_ros.bringup.cli", str(REPO / "launch" / "cartpole_lqr.launch.xml"),
            f"duration:={sim_seconds}", f"summary_file:={summary}", f"namespace:=bench_{os.getpid()}",
        ]
        if mode == "composed":
            cmd.append("--composed")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{done.stdout}\n{done.stderr}")
        result = json.loads(summary.read_text())
    return {
        "system": "cartpole",
        "mode": mode,
        "steps_per_s": result["steps"] / result["wall_time_s"],
        "realtime_factor": result["realtime_factor"],
        "missed_deadlines": result["missed_deadlines"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-steps", type=int, default=20000)
    parser.add_argument("--sim-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "plant_speed.json")
    args = parser.parse_args()
    records = [core_speed(name, args.core_steps) for name in systems.SYSTEM_NAMES]
    records += [graph_speed(mode, args.sim_seconds) for mode in ("composed", "processes")]
    print(f"{'system':<14}{'mode':<11}{'steps/s':>12}{'x real time':>13}")
    for r in records:
        print(f"{r['system']:<14}{r['mode']:<11}{r['steps_per_s']:>12.0f}{r['realtime_factor']:>13.1f}")
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
