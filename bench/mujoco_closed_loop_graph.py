"""Closed loop on the MuJoCo quadrotor over seeds: launch/quadrotor_2d_mujoco.launch.xml through the
real graph, nominal against on-board QZO-FF and backpropagation.

    tools/run.sh python bench/mujoco_closed_loop_graph.py [--seeds 10] [--duration 40] [--variants nominal qzo_ff bp]
        [--out bench/results/mujoco_closed_loop_graph.json] [--keep DIR]

Every (seed, variant) is one run of the scenario (plant on MuJoCo with thrust lag 0.015 s and drag
0.01 N s/m + 0.005 N s^2/m^2, the 30% heavier vehicle and the gusts of
config/disturbances/quadrotor_2d_gusts.yaml; NMPC on the nominal symbolic model with the pretrained
residual; plant, injector, controller, monitor, adapter and recorder each a process over DDS, in
lockstep), recorded into a bag and measured by safe_ctrl_ros.bag.report.metrics, as
safe-ctrl-flagship measures its runs: tracking RMSE over the last 10 s and over the run, constraint
violation steps (the constraint monitor), adapter updates, the controller's p99 solve time. The
variants are the flagship's: nominal (adapter:=false), qzo_ff, bp (method:=bp). Seed s is the
disturbance seed (`seed:=s`: the breeze's phase); every variant of a seed flies the same
disturbances, so the comparisons are paired per seed. `cut` = 1 - RMSE / nominal's RMSE of the same
seed, `added_violations` = violation steps - nominal's, both summarized over seeds
(stats.summarize: mean, 95% CI, worst seed). Runs are one after the other (the 2 cores); runs with
an adapter are not bit-for-bit repeatable (an update lands when its training round ends, in wall
time), so a seed's figures move a little from run to run. A run takes 45-65 s of wall time on a
quiet 2-core machine (minutes under load): the >= 10-seed figure of docs/HIL.md comes from the core
loop, bench/mujoco_closed_loop.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros.bag.report import load_run, metrics
from safe_ctrl_ros.evaluation import stats
from safe_ctrl_ros.simulation.mujoco import MujocoSettings

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "quadrotor_2d_mujoco.launch.xml"
VARIANTS = {"nominal": ("adapter:=false",), "qzo_ff": ("adapter:=true", "method:=qzo_ff"),
            "bp": ("adapter:=true", "method:=bp")}
KEYS = ("tracking_rmse_last_10s", "tracking_rmse", "violation_steps", "adapter_updates", "solve_ms_p99",
        "fallback_steps")


def run_one(variant: str, seed: int, duration: float, folder: Path) -> dict[str, Any]:
    bag = folder / f"{variant}_seed{seed}"
    cmd = [sys.executable, "-m", "safe_ctrl_ros.bringup.cli", str(LAUNCH), *VARIANTS[variant], f"seed:={seed}",
           f"duration:={duration}", "record:=true", f"bag:={bag}", "autostart:=false",
           f"namespace:=mjcl_{variant}_{seed}"]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=duration * 20 + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} seed {seed} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    m = metrics(load_run(bag))
    row = {"seed": seed, "variant": variant, "wall_s": time.monotonic() - t0, **{k: m.get(k) for k in KEYS}}
    if row["adapter_updates"] is None:
        row["adapter_updates"] = 0
    return row


def summaries(records: list[dict[str, Any]], variants: list[str], seeds: list[int]) -> dict[str, Any]:
    by = {(r["variant"], r["seed"]): r for r in records}
    out: dict[str, Any] = {"summaries": {}, "cut": {}, "added_violations": {}}
    for v in variants:
        out["summaries"][v] = {k: stats.summarize([float(by[v, s][k]) for s in seeds])
                               for k in ("tracking_rmse_last_10s", "tracking_rmse", "violation_steps", "solve_ms_p99")}
        out["summaries"][v]["adapter_updates"] = stats.summarize([float(by[v, s]["adapter_updates"]) for s in seeds],
                                                                 worse="lower")
    if "nominal" in variants:
        for v in variants:
            if v == "nominal":
                continue
            cuts = [1.0 - by[v, s]["tracking_rmse_last_10s"] / by["nominal", s]["tracking_rmse_last_10s"]
                    for s in seeds]
            out["cut"][v] = {"rmse_last_10s": stats.summarize(cuts, worse="lower"), "per_seed": cuts}
            added = [float(by[v, s]["violation_steps"] - by["nominal", s]["violation_steps"]) for s in seeds]
            out["added_violations"][v] = {**stats.summarize(added), "per_seed": added}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--keep", type=Path, help="keep the bags in this folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mujoco_closed_loop_graph.json")
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    variants: list[str] = args.variants
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for v in variants:
                records.append(run_one(v, seed, args.duration, folder))
                r = records[-1]
                print(f"seed {seed} {v:<8} rmse last 10 s {r['tracking_rmse_last_10s']:.4f} m, all "
                      f"{r['tracking_rmse']:.4f} m, violation steps {r['violation_steps']}, updates "
                      f"{r['adapter_updates']}, p99 solve {r['solve_ms_p99']:.2f} ms ({r['wall_s']:.0f} s wall)",
                      flush=True)
    result = summaries(records, variants, seeds)
    for v in variants:
        s = result["summaries"][v]["tracking_rmse_last_10s"]
        print(f"{v:<8} rmse last 10 s mean {s['mean']:.4f} m [{s['ci95_low']:.4f}, {s['ci95_high']:.4f}], "
              f"worst seed {s['worst']:.4f}")
    for v, c in result["cut"].items():
        r = c["rmse_last_10s"]
        a = result["added_violations"][v]
        print(f"{v} cut against nominal: mean {r['mean']:.1%} [{r['ci95_low']:.1%}, {r['ci95_high']:.1%}], worst "
              f"seed {r['worst']:.1%} (goal 30%); added violation steps mean {a['mean']:.1f}, worst {a['worst']:.0f}")
    write_records(args.out, records, rule=__doc__.split("\n\n", 2)[2].strip(), seeds=seeds, duration_s=args.duration,
                  launch=str(LAUNCH.relative_to(REPO)), mujoco={**MujocoSettings().__dict__}, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
