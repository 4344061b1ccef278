"""Load: how many real-time control loops (namespaced robots) this machine holds at 50 Hz.

    tools/run.sh python bench/load.py [--robots 1 2 4 6 8 ...] [--seconds 15] [--modes processes composed]
        [--clocks shared private] [--max-miss-rate 0.01] [--busy 0.2] [--retries 2] [--out bench/results/load.json]

One robot is launch/cartpole_lqr.launch.xml in its own namespace with mode:=realtime: the plant (a
50 Hz wall-clock timer stepping with the latest command) and the LQR controller, each node its own
process (mode `processes`, as `safe-ctrl-bringup` runs it) or both in one process (`composed`,
`safe-ctrl-bringup --composed`). For each robot count N, all N robots are started with
autostart:=false; once every controller spins and every plant serves `~/start`, and `--settle` s
later (DDS discovery among all processes goes on for a while), the benchmark starts all plants at
once, so the N loops run side by side for `--seconds` of wall time. Each plant's summary file gives
its loop timing (safe_ctrl_ros/simulation/timing.py): deadline misses (no command for step k
before step k+1 fired), command latency (state published -> command with its stamp received) and
timer jitter.

CPU time comes from /proc over the middle of the run: this benchmark's processes (`cpu_cores`,
precise per-process accounting; in `processes` mode also split into plants and controllers), every
other process alive over that window (`other_cpu_cores`: other users of a shared machine; a lower
bound, processes that come and go in between are missed) and the machine's /proc/stat
(`machine_cpu_cores`: tick-sampled, it undercounts timer-driven loads like these loops, so it can
read lower than `cpu_cores`). The machine may be shared: a robot count that does not hold while
other processes use more than `--busy` cores is run again (at most `--retries` times) and judged by
its best attempt (one that held, else the least disturbed); the record lists every attempt.

The launch files remap `/clock` into each robot's namespace (`private`: a controller hears only its
own plant's clock). `--clocks shared` runs a generated copy of the launch file without that remap:
every plant publishes the absolute `/clock` and every controller (use_sim_time) subscribes to it,
so with N robots each controller receives N x 50 clock messages a second, which shows that cost.

A machine **holds** N loops when every robot completes its episode, and every robot misses at most
`--max-miss-rate` (default 1%) of its deadlines, and every robot's p99 command latency is at most
one period (20 ms). The sweep (per mode and clock) stops at the first N that does not hold.

Records, one per (mode, clock, N): {mode, clock (shared | private), robots, seconds, settle_s, held, why_not,
miss_rate (all robots' misses / all checked steps), worst_miss_rate, deadline_misses,
checked_steps, startup_steps, latency_p50_ms (median over robots), latency_p99_ms (worst robot),
latency_max_ms, jitter_p99_ms (worst robot), cpu_cores, cpu_cores_plants, cpu_cores_controllers,
machine_cpu_cores, machine_total_cores, other_cpu_cores, cpu_cores_per_loop, load_avg_1m,
clean_exit, attempts: [{held, other_cpu_cores, worst_miss_rate, latency_p99_ms}], per_robot:
[{namespace, steps, checked_steps, startup_steps, deadline_misses, miss_rate, latency_p50_ms,
latency_p99_ms, latency_max_ms, jitter_p99_ms}]}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml
from _graph import (  # bench/ is on sys.path when run as a script
    Graph,
    NodeProcess,
    claim_domain,
    cpu_seconds,
    load_average,
    machine_cpu,
    terminate_on_sigterm,
)
from _results import write_records

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "cartpole_lqr.launch.xml"
PERIOD_MS = 20.0
RETRY_S = 2.0
FIGURES = ("miss_rate", "worst_miss_rate", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "jitter_p99_ms",
           "cpu_cores", "machine_cpu_cores", "other_cpu_cores")


def patient_params(directory: Path) -> Path:
    """config/cartpole_lqr.yaml with a plant that waits for its controller as long as it takes
    (N robots' processes can take longer than the default startup_timeout to come up)."""
    params = yaml.safe_load((REPO / "config" / "cartpole_lqr.yaml").read_text())
    params["/**/plant"]["ros__parameters"]["startup_timeout"] = 0.0
    path = directory / "cartpole_lqr_patient.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def start_all(namespaces: list[str], timeout: float, settle: float) -> None:
    """Wait until every robot's controller spins (it answers a parameter request: its topics appear
    before it has finished setting up) and its plant serves ~/start, wait `settle` s more (DDS
    discovery among all the processes goes on for a while and costs CPU), then start all plants at
    once. A request without an answer within RETRY_S is sent again: with Fast DDS a service can answer
    before it has matched the client's response reader, and that answer is lost."""
    import rclpy
    from rcl_interfaces.srv import GetParameters
    from rclpy.client import Client
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.task import Future
    from std_srvs.srv import Trigger

    node = rclpy.create_node(f"load_bench_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def call_all(clients: dict[str, Client], request: object, until: float) -> dict[str, Any]:
        """Call every client (re-sending unanswered requests); the answers by namespace."""
        pending: dict[str, tuple[Future, float]] = {}
        answers: dict[str, Any] = {}
        while len(answers) < len(clients) and time.monotonic() < until:
            now = time.monotonic()
            for ns, client in clients.items():
                if ns in answers or not client.service_is_ready():
                    continue
                if ns in pending and pending[ns][0].done():
                    answers[ns] = pending[ns][0].result()
                elif ns not in pending or now - pending[ns][1] > RETRY_S:
                    pending[ns] = (client.call_async(request), now)
            executor.spin_once(timeout_sec=0.05)
        missing = sorted(set(clients) - set(answers))
        if missing:
            raise RuntimeError(f"no answer from {missing} after {timeout} s")
        return answers

    try:
        until = time.monotonic() + timeout
        probes = {ns: node.create_client(GetParameters, f"/{ns}/controller/get_parameters") for ns in namespaces}
        starts = {ns: node.create_client(Trigger, f"/{ns}/plant/start") for ns in namespaces}
        call_all(probes, GetParameters.Request(names=["dt"]), until)
        settled = time.monotonic() + settle
        while (not all(c.service_is_ready() for c in starts.values()) or time.monotonic() < settled) and (
            time.monotonic() < until
        ):
            executor.spin_once(timeout_sec=0.05)
        call_all(starts, Trigger.Request(), until)  # (a repeated request gets "already running")
    finally:
        executor.remove_node(node)
        node.destroy_node()


def shared_clock_launch(directory: Path) -> Path:
    """launch/cartpole_lqr.launch.xml without its per-robot `/clock` remap, so every plant publishes
    the absolute `/clock` and every controller hears every plant's clock (N x 50 Hz)."""
    tree = ET.parse(LAUNCH)
    for node in tree.getroot().iter("node"):
        for remap in [r for r in node.findall("remap") if r.get("from") == "/clock"]:
            node.remove(remap)
    path = directory / "cartpole_lqr_shared_clock.launch.xml"
    tree.write(path)
    return path


def cpu_of(procs: list[NodeProcess]) -> dict[str, float]:
    """CPU seconds so far by process label (processes that are gone are left out)."""
    return {p.label: v for p in procs if (v := cpu_seconds(p.pid)) is not None}


def cpu_of_all() -> dict[int, float]:
    """CPU seconds so far of every process on the machine, by PID."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (v := cpu_seconds(int(entry.name))) is not None:
            out[int(entry.name)] = v
    return out


def run_once(
    mode: str, clock: str, robots: int, seconds: float, params: Path, work: Path, max_miss_rate: float,
    settle: float, attempt: int = 0,
) -> dict[str, Any]:
    tag = f"load{os.getpid()}_{mode[0]}{clock[0]}{robots}_{attempt}"
    launch = shared_clock_launch(work) if clock == "shared" else LAUNCH
    namespaces = [f"{tag}_r{k}" for k in range(robots)]
    log_dir = work / tag
    log_dir.mkdir()
    with Graph(log_dir) as graph:
        for ns in namespaces:
            graph.launch(launch, {"namespace": ns, "params": str(params), "mode": "realtime", "duration": str(seconds),
                                  "summary_file": str(log_dir / f"{ns}.json"), "autostart": "false"},
                         composed=(mode == "composed"))
        try:
            start_all(namespaces, timeout=60.0 + 5.0 * robots, settle=settle)
        except RuntimeError as exc:
            graph.stop()
            for p in graph.procs:
                if any(ns in str(exc) for ns in namespaces if p.label.startswith(f"/{ns}/")):
                    tail = p.log.read_text(errors="replace").splitlines()[-3:]
                    print(f"  {p.label} (exit {p.popen.returncode}): " + " | ".join(tail), flush=True)
            return {"mode": mode, "clock": clock, "robots": robots, "seconds": seconds, "held": False,
                    "why_not": str(exc), **dict.fromkeys(FIGURES, math.nan), "per_robot": []}
        t0 = time.monotonic()
        # CPU over the middle of the run (all loops running, start-up and shutdown left out)
        margin = min(2.0, 0.15 * seconds)
        time.sleep(margin)
        cpu_a, all_a, (busy_a, total_a), wall_a = cpu_of(graph.procs), cpu_of_all(), machine_cpu(), time.monotonic()
        time.sleep(max(seconds - 2 * margin, 0.1))
        cpu_b, all_b, (busy_b, total_b), wall_b = cpu_of(graph.procs), cpu_of_all(), machine_cpu(), time.monotonic()
        load = load_average()
        plants = [p for p in graph.procs if p.shutdown_on_exit]
        deadline = t0 + seconds + 30.0
        while any(p.alive() for p in plants) and time.monotonic() < deadline:
            time.sleep(0.1)
        codes = graph.stop()
    window = wall_b - wall_a
    used = {label: cpu_b[label] - cpu_a[label] for label in cpu_b.keys() & cpu_a.keys()}
    ours = sum(used.values())
    mine = {p.pid for p in graph.procs} | {os.getpid()}
    others = sum(all_b[pid] - all_a[pid] for pid in all_b.keys() & all_a.keys() if pid not in mine)
    per_robot = []
    problems = []
    for ns in namespaces:
        summary_file = log_dir / f"{ns}.json"
        if not summary_file.exists():
            problems.append(f"{ns}: no summary")
            continue
        s = json.loads(summary_file.read_text())
        t = s["timing"]
        if s["terminated"] or s["steps"] != round(seconds / (PERIOD_MS / 1e3)):
            problems.append(f"{ns}: episode incomplete ({s['steps']} steps, {s['terminated'] or 'no reason'})")
        per_robot.append({
            "namespace": ns,
            "steps": s["steps"],
            "checked_steps": t["checked_steps"],
            "startup_steps": t["startup_steps"],
            "deadline_misses": t["deadline_misses"],
            "miss_rate": t["miss_rate"],
            "latency_p50_ms": t["latency_ms"]["p50"],
            "latency_p99_ms": t["latency_ms"]["p99"],
            "latency_max_ms": t["latency_ms"]["max"],
            "jitter_p99_ms": t["jitter_ms"]["p99"],
        })
    bad_exits = {label: code for label, code in codes.items() if code != 0}

    def worst(key: str) -> float:
        values = [r[key] for r in per_robot if r[key] is not None]
        return max(values) if values else float("nan")

    checked = sum(r["checked_steps"] for r in per_robot)
    misses = sum(r["deadline_misses"] for r in per_robot)
    record: dict[str, Any] = {
        "mode": mode,
        "clock": clock,
        "robots": robots,
        "seconds": seconds,
        "settle_s": settle,
        "held": False,
        "why_not": "",
        "miss_rate": misses / checked if checked else float("nan"),
        "worst_miss_rate": worst("miss_rate"),
        "deadline_misses": misses,
        "checked_steps": checked,
        "startup_steps": sum(r["startup_steps"] for r in per_robot),
        "latency_p50_ms": statistics.median(r["latency_p50_ms"] for r in per_robot if r["latency_p50_ms"])
        if per_robot else float("nan"),
        "latency_p99_ms": worst("latency_p99_ms"),
        "latency_max_ms": worst("latency_max_ms"),
        "jitter_p99_ms": worst("jitter_p99_ms"),
        "cpu_cores": ours / window,
        "cpu_cores_plants": sum(v for k, v in used.items() if k.endswith("/plant")) / window,
        "cpu_cores_controllers": sum(v for k, v in used.items() if k.endswith("/controller")) / window,
        "machine_cpu_cores": (busy_b - busy_a) / window,
        "machine_total_cores": (total_b - total_a) / window,
        "other_cpu_cores": others / window,
        "cpu_cores_per_loop": ours / window / robots,
        "load_avg_1m": load,
        "clean_exit": not bad_exits,
        "per_robot": per_robot,
    }
    if bad_exits:
        problems.append(f"exit codes {bad_exits}")
    if record["worst_miss_rate"] > max_miss_rate:
        problems.append(f"a robot missed {record['worst_miss_rate']:.2%} of its deadlines (> {max_miss_rate:.2%})")
    if record["latency_p99_ms"] > PERIOD_MS:
        problems.append(f"p99 latency {record['latency_p99_ms']:.1f} ms > one period ({PERIOD_MS:.0f} ms)")
    record["why_not"] = "; ".join(problems)
    record["held"] = not problems
    for label, code in bad_exits.items():
        log = next((p.log for p in graph.procs if p.label == label), None)
        tail = log.read_text(errors="replace").splitlines()[-5:] if log else []
        print(f"  {label} exited with {code}: " + " | ".join(tail), flush=True)
    return record


def _disturbance(record: dict[str, Any]) -> float:
    """How much other processes disturbed a run (a run that did not start: the most)."""
    other = float(record["other_cpu_cores"])
    return math.inf if math.isnan(other) else other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24],
                        help="robot counts to try, in order; each mode stops at the first that does not hold")
    parser.add_argument("--seconds", type=float, default=15.0, help="wall seconds each robot runs")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="wall seconds between every robot being up and the start (discovery settles)")
    parser.add_argument("--modes", nargs="+", choices=["processes", "composed"], default=["processes", "composed"])
    parser.add_argument("--max-miss-rate", type=float, default=0.01)
    parser.add_argument("--clocks", nargs="+", choices=["shared", "private"], default=["private"],
                        help="private: /clock remapped into each robot's namespace (as launched); shared: every "
                        "plant publishes the absolute /clock")
    parser.add_argument("--busy", type=float, default=0.2,
                        help="a robot count that does not hold while other processes use more cores than this is "
                        "tried again (at most --retries times); the verdict is the best attempt's")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--keep-going", action="store_true", help="try every robot count even after one fails")
    parser.add_argument("--logs", type=Path, default=None, help="keep the nodes' logs and summaries here")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args()
    domain = claim_domain()

    import rclpy

    rclpy.init()
    records: list[dict[str, Any]] = []
    print(f"ROS_DOMAIN_ID {domain}, {os.cpu_count()} CPU(s), {args.seconds:g} s per run, 50 Hz")
    print(f"{'mode':<10}{'clock':<8}{'N':>3}{'held':>6}{'miss %':>8}{'worst %':>8}{'lat p50':>9}{'lat p99':>9}"
          f"{'lat max':>9}{'jit p99':>9}{'CPU':>6}{'mach.':>7}{'other':>7}   (ms; CPU in cores)", flush=True)
    try:
        with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="load_") as tmp:
            work = args.logs or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            params = patient_params(work)
            for clock, mode in itertools.product(args.clocks, args.modes):
                for n in args.robots:
                    r = run_once(mode, clock, n, args.seconds, params, work, args.max_miss_rate, args.settle)
                    attempts = [r]
                    while (not r["held"] and len(attempts) <= args.retries
                           and (r["other_cpu_cores"] > args.busy or not r["per_robot"])):
                        why = (f"while other processes used {r['other_cpu_cores']:.2f} cores" if r["per_robot"]
                               else "to start")
                        print(f"{mode:<10}{clock:<8}{n:>3}    (failed {why}: again)", flush=True)
                        attempts.append(run_once(mode, clock, n, args.seconds, params, work, args.max_miss_rate,
                                                 args.settle, len(attempts)))
                        held_runs = [a for a in attempts if a["held"]]
                        r = held_runs[0] if held_runs else min(attempts, key=_disturbance)
                    r["attempts"] = [{k: a[k] for k in ("held", "other_cpu_cores", "worst_miss_rate", "latency_p99_ms")}
                                     for a in attempts]
                    records.append(r)
                    print(f"{mode:<10}{clock:<8}{n:>3}{'yes' if r['held'] else 'no':>6}{r['miss_rate'] * 100:>8.2f}"
                          f"{r['worst_miss_rate'] * 100:>8.2f}{r['latency_p50_ms']:>9.2f}{r['latency_p99_ms']:>9.2f}"
                          f"{r['latency_max_ms']:>9.1f}{r['jitter_p99_ms']:>9.2f}{r['cpu_cores']:>6.2f}"
                          f"{r['machine_cpu_cores']:>7.2f}{r['other_cpu_cores']:>7.2f}", flush=True)
                    if r["why_not"]:
                        print(f"{'':<21}{r['why_not']}", flush=True)
                    if not r["held"] and not args.keep_going:
                        break
                held = [r["robots"] for r in records if (r["mode"], r["clock"]) == (mode, clock) and r["held"]]
                print(f"{mode}, {clock} /clock: holds {max(held) if held else 0} loop(s) at 50 Hz", flush=True)
    finally:
        rclpy.try_shutdown()
        write_records(args.out, records)  # what was measured, even after Ctrl-C
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
