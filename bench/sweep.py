"""Sweep throughput: runs per hour on this machine, graph and core, serial loop against Ray.

    tools/run.sh python bench/sweep.py [--graph-runs 6] [--core-runs 20] [--out bench/results/sweep.json]
    tools/run.sh python bench/sweep.py --bags-only --bags runs/sweeps/flagship   # only the bag sizes

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

Bag sizes (`bags` in the JSON, with its own provenance): every bag the graph runs recorded (the
recorder's default, zstd chunks) and every bag under `--bags DIR` is rewritten by
safe_ctrl_ros.bag.recompress with each chunk compression (none, lz4, zstd), all through the
recorder's writer with its default chunk size, so the sizes compare the same messages written
three ways. Records: {source, bag, messages, seconds (recorded span), compression, bytes,
write_s, chunk_bytes_raw and chunk_bytes_stored (the chunks' records before and after
compression), live_cpu_s (the MCAP file's CPU time when the bag is recorded live, a flush per 0.1 s of
recorded time: `live_cpu_s`)}; summaries per source and compression: total bytes, ratio to none,
bytes per recorded second, the chunks' own compression ratio, write time per MB of uncompressed
data, live CPU in % of one core at a real-time factor of 1.
"""

from __future__ import annotations

import os

# One thread per process in every way, as Ray gives a task of one CPU (it sets OMP_NUM_THREADS to the
# task's CPUs): set before numpy loads, inherited by the node processes of graph runs. Without it
# the serial loop's processes each run a thread pool per core on a shared machine, and the
# comparison measures that instead of Ray.
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _results import write_records  # bench/ is on sys.path when run as a script
from rosbags.rosbag2 import Reader

from safe_ctrl_ros.bag.mcap_file import McapFile
from safe_ctrl_ros.bag.recompress import recompress
from safe_ctrl_ros.bag.writer import COMPRESSIONS as COMPRESSIONS_MCAP
from safe_ctrl_ros.evaluation.provenance import provenance
from safe_ctrl_ros.json_out import dumps
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


COMPRESSIONS = ("none", "lz4", "zstd")


Message = tuple[str, str, int, bytes]  # topic, type, stamp, CDR


def read_messages(bag: Path) -> list[Message]:
    with Reader(bag) as reader:
        return [(c.topic, c.msgtype, t, bytes(d)) for c, t, d in reader.messages()]


def live_cpu_s(messages: list[Message], compression: str, out: Path, flush_period: float = 0.1) -> float:
    """CPU time of the MCAP file's work when recording `messages` live: every message written, a
    flush (the open chunk compressed and written) every `flush_period` s of recorded time, as the
    recorder's writer thread does at a real-time factor of 1; serialization and queueing apart."""
    f = McapFile(out, "bench", compression=COMPRESSIONS_MCAP[compression])
    channels: dict[str, int] = {}
    t0 = time.process_time()
    last = messages[0][2] if messages else 0
    for topic, msgtype, stamp, data in messages:
        if topic not in channels:
            channels[topic] = f.add_channel(topic, f.add_schema(msgtype, "ros2msg", ""), "cdr", {})
        f.write_message(channels[topic], stamp, data)
        if stamp - last >= flush_period * 1e9:
            f.flush()
            last = stamp
    f.close()
    elapsed = time.process_time() - t0
    out.unlink()
    return elapsed


def bag_sizes(source: str, bags: list[Path], tmp: Path) -> list[dict[str, Any]]:
    """Each bag rewritten with each chunk compression: sizes, write times, live recording CPU."""
    out = []
    for k, bag in enumerate(sorted(bags)):
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        messages = read_messages(bag)  # once per bag, for the live measurement of each compression
        for compression in COMPRESSIONS:
            done = recompress(bag, tmp / f"{source}_{k}_{compression}", compression)
            out.append({"source": source, "bag": "/".join(bag.parts[-3:]),
                        "messages": done.messages, "seconds": info["duration"]["nanoseconds"] * 1e-9,
                        "compression": compression, "bytes": done.bytes, "write_s": done.write_s,
                        "chunk_bytes_raw": done.chunk_bytes_raw, "chunk_bytes_stored": done.chunk_bytes_stored,
                        "live_cpu_s": live_cpu_s(messages, compression, tmp / "live.mcap")})
            shutil.rmtree(tmp / f"{source}_{k}_{compression}")
    print(f"bags {source}: {len(bags)} bags rewritten {len(COMPRESSIONS)} ways", flush=True)
    return out


def bag_summaries(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in sorted({r["source"] for r in records}):
        mine = [r for r in records if r["source"] == source]
        total = {c: sum(r["bytes"] for r in mine if r["compression"] == c) for c in COMPRESSIONS}
        seconds = sum(r["seconds"] for r in mine if r["compression"] == "none")
        out[source] = {
            "bags": len(mine) // len(COMPRESSIONS),
            "messages": sum(r["messages"] for r in mine if r["compression"] == "none"),
            **{c: {"bytes": total[c], "ratio_to_none": total["none"] / total[c],
                   "bytes_per_recorded_s": total[c] / seconds,
                   "chunk_ratio": sum(r["chunk_bytes_raw"] for r in mine if r["compression"] == c)
                   / sum(r["chunk_bytes_stored"] for r in mine if r["compression"] == c),
                   "write_ms_per_mb": 1e3 * sum(r["write_s"] for r in mine if r["compression"] == c)
                   / (total["none"] / 1e6),
                   "live_cpu_pct": 100 * sum(r["live_cpu_s"] for r in mine if r["compression"] == c) / seconds}
                for c in COMPRESSIONS},
        }
    return out


def write_bags(out: Path, records: list[dict[str, Any]]) -> None:
    """Put the bag sizes into the result file, keeping its throughput part."""
    data = json.loads(out.read_text()) if out.exists() else {"provenance": provenance(), "records": []}
    data["bags"] = {"provenance": provenance(), "rule": "each bag rewritten three ways by the recorder's writer "
                    "(safe_ctrl_ros.bag.recompress), default chunk size (768 KiB); bytes of the .mcap files",
                    "summaries": bag_summaries(records), "records": records}
    out.write_text(dumps(data))
    print(f"wrote {out} (bags)")


BAGS: list[dict[str, Any]] = []  # bag-size records of the graph runs' own bags


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
        if kind == "graph" and way == "serial":
            BAGS.extend(bag_sizes("cartpole_graph_runs", [m.parent for m in folder.rglob("metadata.yaml")],
                                  tmp))
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
    parser.add_argument("--bags", type=Path, nargs="*", default=[],
                        help="folders whose bags (any depth) are measured too, e.g. a sweep folder")
    parser.add_argument("--bags-only", action="store_true", help="measure only the bags of --bags")
    opts = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        bag_records: list[dict[str, Any]] = []
        for folder in opts.bags:
            found = [m.parent for m in folder.rglob("metadata.yaml")]
            if not found:
                raise SystemExit(f"--bags {folder}: no bag (metadata.yaml) under it")
            bag_records += bag_sizes(folder.name, found, Path(tmp))
        if opts.bags_only:
            if not opts.bags:
                raise SystemExit("--bags-only needs --bags DIR")
            old = json.loads(opts.out.read_text()).get("bags", {}).get("records", []) if opts.out.exists() else []
            names = {r["source"] for r in bag_records}
            write_bags(opts.out, [r for r in old if r["source"] not in names] + bag_records)
            return 0
        records = measure("core", opts.core_runs, Path(tmp)) + measure("graph", opts.graph_runs, Path(tmp))
    summary = summaries(records)
    for kind, s in summary.items():
        print(f"{kind}: Ray overhead {s['ray_overhead_s_per_run']:.2f} s per run ({s['ray_overhead_pct']:.1f}%), "
              f"{s['speedup_all_cpus']:.2f}x with every CPU", file=sys.stderr)
    write_records(opts.out, records, rule="the same runs (spec above) three ways; wall time from the first "
                  "submission to the last result; Ray's start-up apart; OMP_NUM_THREADS=1 in every way",
                  summaries=summary,
                  scenario="cartpole_nmpc.launch.xml, 5 s sim, graph: controller:=lqr with recording; core: NMPC")
    write_bags(opts.out, BAGS + bag_records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
