"""Closed-loop adaptation: 2D quadrotor figure-8 under a 30% mass mismatch, NMPC with the residual.

    tools/run.sh python bench/adapter_closed_loop.py [--seconds 40] [--out bench/results/adapter_closed_loop.json]

The same loop as the ROS graph, run in the core for repeatability: the plant is 30% heavier than
the controller's model; the NMPC predicts with nominal RK4 + the residual (starting from the
pretrained config/models/quadrotor_2d_residual.npz); the adapter gets every transition and trains
`steps_per_round` steps every `round_period` s with the adapter node's default settings
(safe_ctrl_ros.learning.settings.PARAMETERS; --lr and --bp-lr override the step sizes), and each
accepted version is swapped into the NMPC at once; --model runs another pretrained residual.
Variants: nominal (the pretrained residual, no adaptation), qzo_ff, bp (backpropagation online),
plus no_residual (plain nominal NMPC) for reference. Records: {variant, rmse_last_10s,
rmse, violation_steps, p99_solve_ms, p99_solve_ms_while_adapting, versions, train_step_ms}.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import Nmpc, NmpcConfig
from safe_ctrl_ros.learning.adapter import OnlineAdapter
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.learning.settings import PARAMETERS, adapter_settings
from safe_ctrl_ros.safety import load_constraints
from safe_ctrl_ros.simulation import PlantSim
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
DT = 0.02
FIG8 = {"kind": "figure8", "scale": 0.75, "length": 6.0, "plane": "xz", "offset": [0.0, 1.0]}
Q = [5.0, 0.1, 5.0, 0.1, 0.1, 0.1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"


def run(variant: str, seconds: float, round_period: float, steps_per_round: int, lr: float,
        model: Path = MODEL, bp_lr: float = PARAMETERS["bp_lr"][0]) -> dict[str, object]:
    nominal = systems.make("quadrotor_2d")
    plant = PlantSim(systems.make("quadrotor_2d", mass=0.027 * 1.3), DT, 10)
    task = make_task(nominal, FIG8)
    cons = load_constraints(REPO / "config" / "constraints" / "quadrotor_2d_flight.yaml", 6, 2)
    start = load_model(model, 6, 2)
    residual = None if variant == "no_residual" else start.net.spec
    ctrl = Nmpc(nominal, task, NmpcConfig(Q=Q, R=0.1), cons, residual)
    if residual is not None:
        ctrl.set_residual_weights(start.net.theta())
    adapter = None
    if variant in ("qzo_ff", "bp", "fg_fp32"):
        # The adapter node's defaults (safe_ctrl_ros.learning.settings), but for the method and lr.
        cfg = replace(adapter_settings({"method": variant}).config)
        cfg.trainer = replace(cfg.trainer, lr=lr)
        cfg.bp_lr = bp_lr
        adapter = OnlineAdapter(start, nominal, cfg)
    plant.reset(task.reference(0.0)[0][0])
    steps = round(seconds / DT)
    every = round(round_period / DT)
    errors, solve_ms, adapting_ms, violations, versions, train_ms = [], [], [], 0, 0, []
    for k in range(steps):
        x = plant.x.copy()
        result = ctrl.solve(x, k * DT)
        solve_ms.append(result.solve_time_s * 1e3)
        x_next = plant.advance(result.u)
        violations += bool(cons.evaluate(x_next, result.u).any_violated)
        errors.append(np.linalg.norm(x_next[[0, 2]] - task.reference((k + 1) * DT)[0][0][[0, 2]]))
        if adapter is not None:
            adapter.add(x, result.u, x_next)
            if adapter.ready:
                adapting_ms.append(solve_ms[-1])
            if k % every == every - 1 and adapter.ready:
                t0 = time.perf_counter()
                adapter.train(steps_per_round)
                train_ms.append((time.perf_counter() - t0) * 1e3 / steps_per_round)
                version = adapter.propose()
                if version is not None:
                    ctrl.set_residual_weights(version.net.theta())
                    versions += 1
    err = np.array(errors)
    last = err[-round(10.0 / DT):]
    return {
        "variant": variant,
        "rmse_last_10s": float(np.sqrt(np.mean(last**2))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "violation_steps": int(violations),
        "p99_solve_ms": float(np.percentile(solve_ms[1:], 99)),
        "p99_solve_ms_while_adapting": float(np.percentile(adapting_ms, 99)) if adapting_ms else None,
        "versions": versions,
        "train_step_ms": float(np.mean(train_ms)) if train_ms else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--round-period", type=float, default=PARAMETERS["update_period"][0])
    parser.add_argument("--steps-per-round", type=int, default=PARAMETERS["steps_per_update"][0])
    parser.add_argument("--lr", type=float, default=PARAMETERS["trainer.lr"][0], help="forward-gradient lr")
    parser.add_argument("--variants", nargs="+", default=["no_residual", "nominal", "qzo_ff", "bp"])
    parser.add_argument("--bp-lr", type=float, default=PARAMETERS["bp_lr"][0], help="backprop's Adam lr")
    parser.add_argument("--model", type=Path, default=MODEL, help="the pretrained residual")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_closed_loop.json")
    args = parser.parse_args()
    records = []
    print(f"{'variant':<13}{'rmse last 10 s':>15}{'rmse':>9}{'violations':>11}{'p99 ms':>8}{'versions':>9}")
    for variant in args.variants:
        r = run(variant, args.seconds, args.round_period, args.steps_per_round, args.lr, args.model, args.bp_lr)
        records.append(r)
        print(f"{variant:<13}{r['rmse_last_10s']:>15.4f}{r['rmse']:>9.4f}{r['violation_steps']:>11}"
              f"{r['p99_solve_ms']:>8.2f}{r['versions']:>9}", flush=True)
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
