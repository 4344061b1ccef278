"""Closed-loop adaptation: 2D quadrotor figure-8 under a 30% mass mismatch, NMPC with the residual.

    tools/run.sh python bench/adapter_closed_loop.py [--seconds 40] [--repeats 3]
        [--out bench/results/adapter_closed_loop.json]

The same loop as the ROS graph, run in the core for repeatability: the plant is 30% heavier than
the controller's model; the NMPC predicts with nominal RK4 + the residual (starting from the
pretrained config/models/quadrotor_2d_residual.npz). The adapter runs in its own process, as on the
robot, with the adapter node's default settings (safe_ctrl_ros.learning.settings.PARAMETERS; --lr
and --bp-lr override the step sizes; --model runs another pretrained residual): at the end of every
`round_period` the loop hands it the round's transitions, and it trains `steps_per_round` steps and
proposes a version *while the loop flies the next round*; that version (if accepted) goes into the
NMPC at the end of that next round. The hand-over points are fixed, so the run does not depend on
timing (checked across repeats), yet training and solving really run at the same time on the 2
cores: the solve times show what training beside the controller costs it.

Variants: nominal (the pretrained residual, no adaptation), qzo_ff, bp (backpropagation online),
plus no_residual (plain nominal NMPC) for reference. Each runs `--repeats` times, interleaved
(variant by variant within each repeat), and the solve-time percentiles are over the solves of all
repeats pooled (a 2 000-solve p99 varies by ~10% from run to run at ~1 ms). Records: {variant,
rmse_last_10s, rmse, violation_steps, p99_solve_ms, p99_solve_ms_while_adapting, versions,
train_step_ms, repeats, p99_solve_ms_per_repeat}; "while adapting" = the solves from the adapter's
first training round on.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import Nmpc, NmpcConfig
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
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
ADAPTING = ("qzo_ff", "bp", "fg_fp32")


def adapter_config(variant: str, lr: float, bp_lr: float) -> AdapterConfig:
    """The adapter node's defaults (safe_ctrl_ros.learning.settings), but for the method and lrs."""
    cfg = replace(adapter_settings({"method": variant}).config)
    cfg.trainer = replace(cfg.trainer, lr=lr)
    cfg.bp_lr = bp_lr
    return cfg


def train_worker(conn: Connection, model: Path, cfg: AdapterConfig, steps_per_round: int) -> None:
    """The adapter process: per round, (transitions) in -> (ready, new weights or None, ms/step) out."""
    adapter = OnlineAdapter(load_model(model, 6, 2), systems.make("quadrotor_2d"), cfg)
    conn.send("started")
    while (batch := conn.recv()) is not None:
        for x, u, x_next in batch:
            adapter.add(x, u, x_next)
        step_ms = None
        if adapter.ready:
            t0 = time.perf_counter()
            adapter.train(steps_per_round)
            step_ms = (time.perf_counter() - t0) * 1e3 / steps_per_round
        version = adapter.propose()
        conn.send((adapter.ready, None if version is None else version.net.theta(), step_ms))


def run(variant: str, seconds: float, round_period: float, steps_per_round: int, lr: float,
        model: Path = MODEL, bp_lr: float = PARAMETERS["bp_lr"][0]) -> dict[str, object]:
    """One 40 s run: the record's figures plus the raw solve times (ms) and which of them ran while
    the adapter trained."""
    nominal = systems.make("quadrotor_2d")
    plant = PlantSim(systems.make("quadrotor_2d", mass=0.027 * 1.3), DT, 10)
    task = make_task(nominal, FIG8)
    cons = load_constraints(REPO / "config" / "constraints" / "quadrotor_2d_flight.yaml", 6, 2)
    start = load_model(model, 6, 2)
    residual = None if variant == "no_residual" else start.net.spec
    ctrl = Nmpc(nominal, task, NmpcConfig(Q=Q, R=0.1), cons, residual)
    if residual is not None:
        ctrl.set_residual_weights(start.net.theta())
    conn: Connection | None = None
    worker = None
    if variant in ADAPTING:
        conn, child = mp.Pipe()
        worker = mp.get_context("spawn").Process(
            target=train_worker, args=(child, model, adapter_config(variant, lr, bp_lr), steps_per_round), daemon=True
        )
        worker.start()
        if not conn.poll(120) or conn.recv() != "started":  # its imports must not overlap the loop
            raise RuntimeError(f"{variant}: the training process did not start")
    plant.reset(task.reference(0.0)[0][0])
    steps, every = round(seconds / DT), round(round_period / DT)
    errors, solve_ms, adapting, train_ms = [], [], [], []
    violations = versions = 0
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending = training = False
    for k in range(steps):
        x = plant.x.copy()
        result = ctrl.solve(x, k * DT)
        solve_ms.append(result.solve_time_s * 1e3)
        adapting.append(training)
        x_next = plant.advance(result.u)
        violations += bool(cons.evaluate(x_next, result.u).any_violated)
        errors.append(np.linalg.norm(x_next[[0, 2]] - task.reference((k + 1) * DT)[0][0][[0, 2]]))
        if conn is None:
            continue
        batch.append((x, result.u, x_next))
        if k % every == every - 1:
            if pending:  # the proposal from the round before, trained while this round flew
                ready, theta, step_ms = conn.recv()
                training = training or ready
                if step_ms is not None:
                    train_ms.append(step_ms)
                if theta is not None:
                    ctrl.set_residual_weights(theta)
                    versions += 1
            conn.send(batch)
            batch, pending = [], True
    if conn is not None and worker is not None:
        if pending:
            conn.recv()
        conn.send(None)
        worker.join(timeout=30)
    err = np.array(errors)
    last = err[-round(10.0 / DT):]
    return {
        "variant": variant,
        "rmse_last_10s": float(np.sqrt(np.mean(last**2))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "violation_steps": int(violations),
        "versions": versions,
        "train_step_ms": float(np.mean(train_ms)) if train_ms else None,
        "solve_ms": np.array(solve_ms[1:]),  # the first solve (set-up) excluded
        "adapting": np.array(adapting[1:]),
    }


def pooled(runs: list[dict[str, object]]) -> dict[str, object]:
    """One record from the repeats of a variant: the same loop each time (checked), percentiles over
    all their solves."""
    first = runs[0]
    same = ("rmse_last_10s", "rmse", "violation_steps", "versions")
    for other in runs[1:]:
        if any(other[key] != first[key] for key in same):
            raise RuntimeError(f"{first['variant']}: repeats differ ({[{k: r[k] for k in same} for r in runs]})")
    ms = np.concatenate([r["solve_ms"] for r in runs])  # type: ignore[misc]
    while_adapting = np.concatenate([r["solve_ms"][r["adapting"]] for r in runs])  # type: ignore[index]
    steps_ms = [r["train_step_ms"] for r in runs if r["train_step_ms"] is not None]
    return {
        **{key: first[key] for key in ("variant", *same)},
        "p99_solve_ms": float(np.percentile(ms, 99)),
        "p99_solve_ms_while_adapting": float(np.percentile(while_adapting, 99)) if while_adapting.size else None,
        "train_step_ms": float(np.mean(steps_ms)) if steps_ms else None,  # type: ignore[arg-type]
        "repeats": len(runs),
        "p99_solve_ms_per_repeat": [float(np.percentile(r["solve_ms"], 99)) for r in runs],  # type: ignore[arg-type]
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
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved; solve times pooled")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adapter_closed_loop.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, object]]] = {v: [] for v in args.variants}
    for _ in range(max(1, args.repeats)):
        for variant in args.variants:
            runs[variant].append(run(variant, args.seconds, args.round_period, args.steps_per_round, args.lr,
                                     args.model, args.bp_lr))
    records = [pooled(runs[v]) for v in args.variants]
    print(f"{'variant':<13}{'rmse last 10 s':>15}{'rmse':>9}{'violations':>11}{'p99 ms':>8}{'p99 adapting':>13}"
          f"{'versions':>9}")
    for r in records:
        adapting = r["p99_solve_ms_while_adapting"]
        print(f"{r['variant']:<13}{r['rmse_last_10s']:>15.4f}{r['rmse']:>9.4f}{r['violation_steps']:>11}"
              f"{r['p99_solve_ms']:>8.2f}{'-' if adapting is None else f'{adapting:.2f}':>13}{r['versions']:>9}")
    base = next((r for r in records if r["variant"] == "nominal"), None)
    for r in records:
        if base is not None and r["p99_solve_ms_while_adapting"] is not None:
            move = r["p99_solve_ms_while_adapting"] / base["p99_solve_ms"] - 1  # type: ignore[operator]
            print(f"{r['variant']}: p99 solve while adapting {move:+.1%} against nominal (goal: under 10%)")
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
