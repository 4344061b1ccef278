"""Soak: one simulated hour in lockstep with randomized disturbances, recorded; memory and completeness.

    tools/run.sh python bench/soak.py [--sim-seconds 3600] [--seed 0] [--keep DIR] [--out bench/results/soak.json]

Runs launch/cartpole_nmpc.launch.xml (plant in lockstep, disturbance injector, NMPC controller,
constraint monitor, recorder; record:=true autostart:=false, so the recorder starts the episode
once it listens to every topic) for `--sim-seconds` of simulated time under a disturbance scenario
generated from `--seed` (safe_ctrl_ros/disturbances schema): about one force impulse a minute and
one force step, one sensor-noise window and one actuator-noise window every five minutes, at random
times, magnitudes and lengths. Lockstep and the seeded scenario make the run deterministic.

Every `--sample-period` s of wall time it reads each node process's resident set size (VmRSS,
/proc). Afterwards it checks: every process exited with code 0 and no log holds a 'Traceback'; RSS
growth per process (mean over the first 10% of the episode vs the last 10%, MB and %); the plant
completed the episode; the bag is complete (it opens, metadata.yaml exists, plant/state holds one
state per step from t = 0 with no gap in sim time, every topic's message count). It prints the
lockstep real-time factor and the wall time one simulated hour would take at that speed.

Record (a one-element list): {sim_seconds, seed, controller, ok, problems, wall_s, episode_wall_s,
realtime_factor, projected_hour_wall_s, steps, missed_deadlines, resends, terminated, disturbances
(count per kind), processes: [{label, exit_code, tracebacks, error_lines, cpu_s, rss_first_mb,
rss_last_mb, rss_max_mb, rss_growth_mb, rss_growth_pct, samples, rss_by_tenth_mb (mean RSS in each
tenth of the episode)}], bag: {size_mb, metadata, topics (message count per topic), states,
expected_states, gaps, first_state_s, last_state_s, commands (distinct plant/cmd stamps), error}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _graph import Graph, NodeProcess, claim_domain, cpu_seconds, rss_mb, terminate_on_sigterm
from _results import write_records  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "cartpole_nmpc.launch.xml"
DT_NS = 20_000_000  # config/cartpole_nmpc.yaml: dt 0.02 s


def disturbance_scenario(sim_seconds: float, seed: int) -> dict[str, Any]:
    """A scenario for a run of `sim_seconds`, drawn from `seed`: force impulses (~1/min), force steps,
    sensor-noise and actuator-noise windows (~1 each per 5 min), inside [5 s, end - 5 s]."""
    rng = np.random.default_rng(seed)
    lo, hi = 5.0, max(sim_seconds - 5.0, 5.5)

    def starts(count: int) -> list[float]:
        return sorted(round(float(t), 2) for t in rng.uniform(lo, hi, count))

    def count(per_s: float) -> int:
        return max(1, round(sim_seconds * per_s))

    def sign() -> float:
        return float(rng.choice([-1.0, 1.0]))

    items: list[dict[str, Any]] = []
    for i, t in enumerate(starts(count(1 / 60))):
        items.append({"name": f"push_{i:03d}", "target": "force", "kind": "impulse", "start": t, "duration": 0.1,
                      "magnitude": round(sign() * float(rng.uniform(0.2, 0.8)), 3), "decay_rate": 1.0,
                      "mask": [1, 0, 0, 0, 0, 0]})
    for i, t in enumerate(starts(count(1 / 300))):
        items.append({"name": f"lean_{i:03d}", "target": "force", "kind": "step", "start": t,
                      "duration": round(float(rng.uniform(5.0, 30.0)), 2),
                      "magnitude": round(sign() * float(rng.uniform(0.01, 0.04)), 3), "mask": [1, 0, 0, 0, 0, 0]})
    for i, t in enumerate(starts(count(1 / 300))):
        items.append({"name": f"sensor_noise_{i:03d}", "target": "observation", "kind": "white_noise", "start": t,
                      "duration": round(float(rng.uniform(10.0, 60.0)), 2),
                      "std": [round(float(rng.uniform(0.0005, 0.002)), 5), 0.0,
                              round(float(rng.uniform(0.0005, 0.002)), 5), 0.0]})
    for i, t in enumerate(starts(count(1 / 300))):
        items.append({"name": f"actuator_noise_{i:03d}", "target": "action", "kind": "white_noise", "start": t,
                      "duration": round(float(rng.uniform(10.0, 60.0)), 2),
                      "std": round(float(rng.uniform(0.05, 0.2)), 3)})
    return {"seed": seed, "disturbances": items}


Samples = list[tuple[float, dict[str, float]]]


def sample_processes(
    graph: Graph, plant: NodeProcess, period: float, timeout: float
) -> tuple[Samples, dict[str, float]]:
    """(wall time, {label: RSS MB}) every `period` s until the plant exits (or `timeout`), and each
    process's CPU seconds at the last sample it was alive for."""
    samples: Samples = []
    cpu: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while plant.alive() and time.monotonic() < deadline:
        now = time.monotonic()
        rss = {}
        for p in graph.procs:
            mb, seconds = rss_mb(p.pid), cpu_seconds(p.pid)
            if mb is not None and seconds is not None:
                rss[p.label], cpu[p.label] = mb, seconds
        samples.append((now, rss))
        time.sleep(max(period - (time.monotonic() - now), 0.0))
    return samples, cpu


def memory_growth(samples: Samples, label: str, start: float, end: float) -> dict[str, Any]:
    """RSS of one process: mean over the first vs the last 10% of [start, end], and the maximum."""
    series = [(t, rss[label]) for t, rss in samples if label in rss and start <= t <= end]
    if len(series) < 2:
        return {"rss_first_mb": None, "rss_last_mb": None, "rss_max_mb": None, "rss_growth_mb": None,
                "rss_growth_pct": None, "samples": len(series), "rss_by_tenth_mb": []}
    tenth = (end - start) * 0.1
    first = [v for t, v in series if t <= start + tenth] or [series[0][1]]
    last = [v for t, v in series if t >= end - tenth] or [series[-1][1]]
    a, b = float(np.mean(first)), float(np.mean(last))
    times, values = np.array([t for t, _ in series]), np.array([v for _, v in series])
    tenths = np.minimum(((times - start) / max(end - start, 1e-9) * 10).astype(int), 9)
    profile = [round(float(values[tenths == i].mean()), 2) if np.any(tenths == i) else None for i in range(10)]
    return {"rss_first_mb": a, "rss_last_mb": b, "rss_max_mb": max(v for _, v in series),
            "rss_growth_mb": b - a, "rss_growth_pct": (b - a) / a * 100.0, "samples": len(series),
            "rss_by_tenth_mb": profile}


def check_bag(bag: Path, steps: int) -> dict[str, Any]:
    """Message count per topic; plant/state: one state per step from t = 0, no gaps in sim time."""
    from rosbags.highlevel import AnyReader

    out: dict[str, Any] = {"size_mb": sum(f.stat().st_size for f in bag.rglob("*") if f.is_file()) / 2**20,
                           "metadata": (bag / "metadata.yaml").exists(), "error": ""}
    try:
        with AnyReader([bag]) as reader:
            out["topics"] = {c.topic: c.msgcount for c in reader.connections}
            states = [c for c in reader.connections if c.topic.endswith("/plant/state")]
            cmds = [c for c in reader.connections if c.topic.endswith("/plant/cmd")]
            stamps: set[int] = set()
            for con, _t, raw in reader.messages(connections=states):
                st = reader.deserialize(raw, con.msgtype).header.stamp
                stamps.add(int(st.sec) * 1_000_000_000 + int(st.nanosec))
            cmd_stamps: set[int] = set()
            for con, _t, raw in reader.messages(connections=cmds):
                st = reader.deserialize(raw, con.msgtype).header.stamp
                cmd_stamps.add(int(st.sec) * 1_000_000_000 + int(st.nanosec))
    except Exception as exc:  # any failure to read the bag is the finding, reported as such
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    ordered = np.array(sorted(stamps), dtype=np.int64)
    diffs = np.diff(ordered)
    out |= {
        "states": int(ordered.size),
        "expected_states": steps + 1,  # the initial state and one per step (the final one included)
        "first_state_s": float(ordered[0]) * 1e-9 if ordered.size else None,
        "last_state_s": float(ordered[-1]) * 1e-9 if ordered.size else None,
        "gaps": int(np.count_nonzero(diffs != DT_NS)),
        "commands": len(cmd_stamps),
    }
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    scenario = disturbance_scenario(args.sim_seconds, args.seed)
    scenario_file = work / "soak_disturbances.yaml"
    scenario_file.write_text(yaml.safe_dump(scenario, sort_keys=False))
    kinds: dict[str, int] = {}
    for d in scenario["disturbances"]:
        key = f"{d['target']}/{d['kind']}"
        kinds[key] = kinds.get(key, 0) + 1
    bag, summary_file, logs = work / "bag", work / "plant_summary.json", work / "logs"
    logs.mkdir()
    problems: list[str] = []
    t0 = time.monotonic()
    with Graph(logs) as graph:
        graph.launch(LAUNCH, {"namespace": f"soak{os.getpid()}", "duration": str(args.sim_seconds),
                              "summary_file": str(summary_file), "record": "true", "bag": str(bag),
                              "autostart": "false", "disturbances": str(scenario_file), "seed": "-1",
                              "controller": args.controller})
        plant = next(p for p in graph.procs if p.shutdown_on_exit)
        samples, cpu = sample_processes(graph, plant, args.sample_period, args.timeout)
        plant_end = time.monotonic()
        if plant.alive():
            problems.append(f"the plant did not finish within {args.timeout} s of wall time")
        codes = graph.stop(grace=60.0)  # the recorder closes the bag on SIGINT
    wall = time.monotonic() - t0
    summary: dict[str, Any] = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if not summary:
        problems.append("no plant summary")
    steps = int(summary.get("steps", 0))
    expected_steps = round(args.sim_seconds / (DT_NS * 1e-9))
    if summary and (summary["terminated"] or steps != expected_steps):
        problems.append(f"episode incomplete: {steps} of {expected_steps} steps ({summary['terminated']})")
    episode_wall = float(summary.get("wall_time_s", 0.0))
    start = plant_end - episode_wall if episode_wall else (samples[0][0] if samples else plant_end)
    processes = []
    for p in graph.procs:
        text = p.log.read_text(errors="replace")
        entry = {"label": p.label, "exit_code": codes[p.label], "tracebacks": text.count("Traceback"),
                 "error_lines": sum("[ERROR]" in line for line in text.splitlines()),
                 "cpu_s": cpu.get(p.label), **memory_growth(samples, p.label, start, plant_end)}
        processes.append(entry)
        if entry["exit_code"] != 0:
            problems.append(f"{p.label} exited with code {entry['exit_code']}")
        if entry["tracebacks"]:
            problems.append(f"{p.label}: {entry['tracebacks']} traceback(s) in its log ({p.log.name})")
    bag_check = check_bag(bag, steps) if bag.exists() else {"error": "no bag directory"}
    if bag_check["error"]:
        problems.append(f"bag: {bag_check['error']}")
    else:
        if not bag_check["metadata"]:
            problems.append("bag: no metadata.yaml (not closed)")
        if bag_check["states"] != bag_check["expected_states"] or bag_check["gaps"] or bag_check["first_state_s"]:
            problems.append(f"bag: {bag_check['states']} states of {bag_check['expected_states']}, "
                            f"{bag_check['gaps']} gap(s), first at {bag_check['first_state_s']} s")
    rtf = float(summary.get("realtime_factor", 0.0))
    return {
        "sim_seconds": args.sim_seconds,
        "seed": args.seed,
        "controller": args.controller,
        "ok": not problems,
        "problems": problems,
        "wall_s": wall,
        "episode_wall_s": episode_wall,
        "realtime_factor": rtf,
        "projected_hour_wall_s": 3600.0 / rtf if rtf else None,
        "steps": steps,
        "missed_deadlines": summary.get("missed_deadlines"),
        "resends": summary.get("resends"),
        "terminated": summary.get("terminated"),
        "disturbances": kinds,
        "processes": processes,
        "bag": bag_check,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-seconds", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the disturbance scenario")
    parser.add_argument("--controller", choices=["nmpc", "lqr"], default="nmpc")
    parser.add_argument("--sample-period", type=float, default=0.5, help="wall s between RSS samples")
    parser.add_argument("--timeout", type=float, default=None, help="wall s to wait for the episode "
                        "(default: the simulated time, i.e. at least real-time speed, + 120 s)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the bag, logs and scenario in this new dir")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = args.sim_seconds + 120.0
    domain = claim_domain()
    print(f"ROS_DOMAIN_ID {domain}: {args.sim_seconds:g} s simulated, {args.controller}, seed {args.seed}", flush=True)
    with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            work = args.keep
        r = run(args, work)
        if args.keep is None:
            shutil.rmtree(work / "bag", ignore_errors=True)
    print(f"episode: {r['steps']} steps, {r['sim_seconds']:g} s sim in {r['episode_wall_s']:.1f} s wall "
          f"({r['realtime_factor']:.1f}x real time; one simulated hour: "
          f"{(r['projected_hour_wall_s'] or 0) / 60:.1f} min wall), missed deadlines {r['missed_deadlines']}, "
          f"resends {r['resends']}")
    print(f"disturbances: {r['disturbances']}")
    print(f"{'process':<34}{'exit':>5}{'tb':>4}{'RSS first':>11}{'last':>8}{'max':>8}{'growth MB':>11}{'%':>7}"
          f"{'CPU s':>8}")
    for p in r["processes"]:
        def f(v: float | None, width: int, digits: int = 1) -> str:
            return f"{v:>{width}.{digits}f}" if v is not None else f"{'-':>{width}}"
        print(f"{p['label']:<34}{p['exit_code']:>5}{p['tracebacks']:>4}{f(p['rss_first_mb'], 11)}"
              f"{f(p['rss_last_mb'], 8)}{f(p['rss_max_mb'], 8)}{f(p['rss_growth_mb'], 11, 2)}"
              f"{f(p['rss_growth_pct'], 7)}{f(p['cpu_s'], 8)}")
    b = r["bag"]
    if b.get("error"):
        print(f"bag: ERROR {b['error']}")
    else:
        print(f"bag: {b['size_mb']:.1f} MB, metadata.yaml {'yes' if b['metadata'] else 'NO'}; plant/state "
              f"{b['states']} of {b['expected_states']} states, {b['gaps']} gap(s), t = {b['first_state_s']} .. "
              f"{b['last_state_s']} s; {b['commands']} commands")
        for topic, n in sorted(b["topics"].items()):
            print(f"  {topic:<52}{n:>9}")
    print("OK" if r["ok"] else "PROBLEMS:\n  " + "\n  ".join(r["problems"]))
    write_records(args.out, [r])
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
