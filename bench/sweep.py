"""Sweep throughput: runs per hour on this machine, graph and core, serial loop against Ray.

    tools/run.sh python bench/sweep.py [--graph-runs 6] [--core-runs 20] [--out bench/results/sweep.json]

Graph runs: launch/cartpole_nmpc.launch.xml with controller:=lqr (plant, injector, controller,
constraint monitor, recorder: five node processes over DDS, lockstep), 5 s of sim time each, every
run recorded into a bag and analysed (safe_ctrl_ros.sweep.graph). Core runs: the same spec without
ROS (NMPC, 5 s, safe_ctrl_ros.sweep.core). Each spec draws a start, a pole mass and a push time
per seed. Three ways, the same runs each: `serial` (a plain loop in one process, no Ray),
`ray_1cpu` (a local Ray instance with one CPU: the runs one at a time, as the loop, plus Ray's
costs) and `ray_all` (a local Ray instance with every CPU of the machine, a run per CPU). The
time of a way is from the first run's submission to the last result (Ray's start-up apart, in
`ray_start_s`). Every way with OMP_NUM_THREADS=1 (what Ray sets for a task of one CPU). Records:
{kind, way, runs, failed, wall_s, runs_per_hour, ray_start_s, cpus, run_s_median (a run's own wall
time, measured inside it), outside_runs_s_per_run (the way's wall time not spent inside a run, per
run; one run at a time only)}. Summaries: runs per hour per kind and way, Ray's overhead per run
(ray_1cpu's time outside the runs minus the serial loop's, s, and % of the serial median run: a
measure the machine's load moves far less than the throughputs), the speed-up of ray_all over
serial. The machine's load from other work moves these figures (provenance holds the load
average).
"""

from __future__ import annotations

import os

# One thread per process in every way, as Ray gives a task of one CPU (it sets OMP_NUM_THREADS to the
# task's CPUs): set before numpy loads, inherited by the node processes of graph runs. Without it
# the serial loop's processes each run a thread pool per core on a shared machine, and the
# comparison measures that instead of Ray.
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

from safe_ctrl_ros.sweep.execute import Progress, ray_init, run_ray, run_serial
from safe_ctrl_ros.sweep.plan import plan_runs
from safe_ctrl_ros.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = """
name: bench_{kind}
launch: {launch}
args: {{duration: 5.0{extra}}}
seeds: {{first: 0, count: {count}}}
randomize:
  params:
    plant.model.pole_mass: {{distrib: uniform, low: 0.08, high: 0.12}}
  init: [0.05, 0.0, 0.03, 0.0]
  disturbances:
    push.start: {{distrib: uniform, low: 1.5, high: 3.0}}
"""


class Quiet(Progress):
    def update(self, record: dict[str, Any] | None = None) -> None:
        if record is not None:
            self.done += 1
            self.failed += record["status"] != "ok"


def measure(kind: str, count: int, tmp: Path) -> list[dict[str, Any]]:
    import ray

    extra = ", controller: lqr" if kind == "graph" else ""
    spec_file = tmp / f"{kind}.yaml"
    spec_file.write_text(SPEC.format(kind=kind, launch=REPO / "launch" / "cartpole_nmpc.launch.xml", extra=extra,
                                     count=count))
    runs = plan_runs(load_spec(spec_file))
    mode = "graph" if kind == "graph" else "core"
    cpus = os.cpu_count() or 1
    out = []
    for way in ("serial", "ray_1cpu", "ray_all"):
        folder = tmp / f"{kind}_{way}"
        shutil.rmtree(folder, ignore_errors=True)
        ray_start = None
        if way != "serial":
            t0 = time.perf_counter()
            ray_init(None, 1 if way == "ray_1cpu" else cpus)
            ray_start = time.perf_counter() - t0
        progress = Quiet(len(runs), 0)
        t0 = time.perf_counter()
        if way == "serial":
            records = run_serial(runs, folder, mode, 300, progress)
        else:
            records = run_ray(runs, folder, mode, 300, 1.0, progress, spread=False)
        wall = time.perf_counter() - t0
        if way != "serial":
            ray.shutdown()
        failed = sum(r["status"] != "ok" for r in records)
        in_runs = sum(float(r["run_wall_s"]) for r in records)
        rec = {"kind": kind, "way": way, "runs": len(runs), "failed": failed, "wall_s": wall,
               "runs_per_hour": len(runs) / wall * 3600, "ray_start_s": ray_start,
               "cpus": 1 if way in ("serial", "ray_1cpu") else cpus,
               "run_s_median": float(np.median([r["run_wall_s"] for r in records])),
               "outside_runs_s_per_run": (wall - in_runs) / len(runs) if way != "ray_all" else None}
        print(f"{kind:5} {way:8}: {len(runs)} runs ({failed} failed) in {wall:6.1f} s = "
              f"{rec['runs_per_hour']:7.0f} runs/h" + (f" (Ray start {ray_start:.1f} s)" if ray_start else ""),
              flush=True)
        out.append(rec)
    return out


def summaries(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("graph", "core"):
        by = {r["way"]: r for r in records if r["kind"] == kind}
        if len(by) < 3:
            continue
        # Ray's cost per run: the wall time outside the runs themselves (scheduling, shipping the
        # task and its result) with one run at a time, beyond the serial loop's own.
        per_run = by["ray_1cpu"]["outside_runs_s_per_run"] - by["serial"]["outside_runs_s_per_run"]
        out[kind] = {
            "runs_per_hour": {w: r["runs_per_hour"] for w, r in by.items()},
            "ray_overhead_s_per_run": per_run,
            "ray_overhead_pct": 100 * per_run / by["serial"]["run_s_median"],
            "speedup_all_cpus": by["serial"]["wall_s"] / by["ray_all"]["wall_s"],
            "ray_start_s": by["ray_all"]["ray_start_s"],
            "run_s_median": {w: r["run_s_median"] for w, r in by.items()},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph-runs", type=int, default=6)
    parser.add_argument("--core-runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep.json")
    opts = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        records = measure("core", opts.core_runs, Path(tmp)) + measure("graph", opts.graph_runs, Path(tmp))
    summary = summaries(records)
    for kind, s in summary.items():
        print(f"{kind}: Ray overhead {s['ray_overhead_s_per_run']:.2f} s per run ({s['ray_overhead_pct']:.1f}%), "
              f"{s['speedup_all_cpus']:.2f}x with every CPU", file=sys.stderr)
    write_records(opts.out, records, rule="the same runs (spec above) three ways; wall time from the first "
                  "submission to the last result; Ray's start-up apart; OMP_NUM_THREADS=1 in every way",
                  summaries=summary,
                  scenario="cartpole_nmpc.launch.xml, 5 s sim, graph: controller:=lqr with recording; core: NMPC")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
