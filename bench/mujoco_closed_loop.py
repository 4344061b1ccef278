"""Closed loop on the MuJoCo quadrotor over seeds, in the core: the figure-8 with NMPC on the
nominal symbolic model, the residual adapted on board, the plant MuJoCo's 2D quadrotor with thrust
lag and drag on.

    tools/run.sh python bench/mujoco_closed_loop.py [--seeds 10] [--seconds 40] [--variants nominal qzo_ff bp]
        [--thrust-lag S] [--out bench/results/mujoco_closed_loop.json]

The loop, the variants, the seeds, the wind, the 30% heavier vehicle, the adapter in its own
process (the adapter node's default settings) and the figures are bench/adapter_closed_loop.py's
own (imported: `run`, `record`, `summaries`), with one change: the plant is `MujocoPlantSim` with
the default MuJoCo effects (thrust lag 0.015 s, drag 0.01 N s/m + 0.005 N s^2/m^2, ground contact;
1 ms RK4 physics steps) instead of the CasADi plant. The NMPC still predicts with the nominal
symbolic model plus the residual, so the residual has thrust lag and drag to learn on top of the
mass mismatch. Seed s drives the wind, the adapter's batches and its perturbations; every variant
of a seed flies the same wind, so the comparisons are paired per seed. `cut` = 1 - RMSE /
nominal's RMSE of the same seed, `added_violations` = violation steps - nominal's (constraints of
config/constraints/quadrotor_2d_flight.yaml), summarized over seeds (stats.summarize: mean, 95% CI,
worst seed). The hand-over points between loop and adapter are fixed, so a seed's figures repeat.
(The sweep spec config/sweeps/quadrotor_2d_mujoco.yaml runs launch/quadrotor_2d_mujoco.launch.xml
through the ROS graph instead: `safe-ctrl-sweep config/sweeps/quadrotor_2d_mujoco.yaml`.)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import adapter_closed_loop as acl  # bench/ is on sys.path when run as a script
from _results import write_records

from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.simulation.mujoco import MujocoPlantSim, MujocoSettings
from safe_ctrl_ros.systems.base import SymbolicModel

REPO = Path(__file__).resolve().parents[1]
SETTINGS = MujocoSettings()
VARIANTS = ("nominal", "qzo_ff", "bp")


def mujoco_plant(model: SymbolicModel, dt: float, substeps: int) -> MujocoPlantSim:
    """What the imported loop calls as `PlantSim(model, dt, substeps)`: the MuJoCo plant (substeps unused)."""
    del substeps
    return MujocoPlantSim(model, dt, SETTINGS)


def main() -> int:
    global SETTINGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--thrust-lag", type=float, default=SETTINGS.thrust_lag, help="s; 0: off (a diagnostic)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mujoco_closed_loop.json")
    args = parser.parse_args()
    SETTINGS = replace(SETTINGS, thrust_lag=args.thrust_lag)
    acl.PlantSim = mujoco_plant  # type: ignore[assignment,misc]  # the one change to the imported loop
    seeds = list(range(args.seeds))
    variants: list[str] = args.variants
    p = acl.PARAMETERS
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for seed in seeds:
        for variant in variants:
            runs[variant, seed] = [acl.run(variant, seed, args.seconds, p["update_period"][0],
                                           p["steps_per_update"][0], p["trainer.lr"][0])]
        line = "  ".join(f"{v} {runs[v, seed][0]['rmse_last_10s']:.4f} ({runs[v, seed][0]['versions']} versions, "
                         f"{runs[v, seed][0]['violation_steps']} violation steps)" for v in variants)
        print(f"seed {seed}: rmse last 10 s  {line}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    records = [acl.record(runs[v, s]) for s in seeds for v in variants]
    result = acl.summaries(records, variants, seeds)
    by = {(r["variant"], r["seed"]): r for r in records}
    result["added_violations"] = {}
    for v in variants:
        if v != "nominal" and "nominal" in variants:
            added = [float(by[v, s]["violation_steps"] - by["nominal", s]["violation_steps"]) for s in seeds]
            result["added_violations"][v] = {**stats.summarize(added), "per_seed": added}
    for v in variants:
        s = result["summaries"][v]["rmse_last_10s"]
        viol = result["summaries"][v]["violation_steps"]
        print(f"{v:<9} rmse last 10 s mean {s['mean']:.4f} [{s['ci95_low']:.4f}, {s['ci95_high']:.4f}] "
              f"worst {s['worst']:.4f}; violation steps mean {viol['mean']:.1f}, worst {viol['worst']:.0f}")
    for name, c in result["cut"].items():
        r = c["rmse_last_10s"]
        print(f"{name} cut against nominal: mean {r['mean']:.0%} [{r['ci95_low']:.0%}, {r['ci95_high']:.0%}], "
              f"worst seed {r['worst']:.0%} (goal 30%)")
    write_records(
        args.out, records,
        rule=__doc__.split("\n\n", 2)[2].strip(),
        seeds=seeds, seconds=args.seconds,
        plant={"engine": "mujoco", "system": "quadrotor_2d", "mass_scale": acl.MASS_SCALE, "dt": acl.DT,
               "mujoco": {**SETTINGS.__dict__}},
        wind=acl.WIND,
        **result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
