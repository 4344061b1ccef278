"""Running a sweep's runs: serially, or as Ray tasks (a local Ray instance or an existing cluster).

Each run is a task that reserves `cpus_per_run` CPUs; the driver collects the results as they come,
writes each run's `result.json` into its folder and shows progress (runs done, failures, time left).
A run that fails (its graph exits badly, times out, a node raises; the Ray worker dies) is recorded
with its reason and the others go on. A run whose folder already holds an `ok` result of the same
digest (the same launch arguments, params and scenario) is skipped: re-running the command resumes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.evaluation.provenance import code_version
from safe_ctrl_ros.json_out import dumps
from safe_ctrl_ros.sweep.plan import RunPlan

MODES = ("graph", "core")


def run_folder(out: Path, run: RunPlan) -> Path:
    return out / "runs" / run.variant / f"seed_{run.seed:04d}"


def execute_one(run_json: dict[str, Any], folder: str, mode: str, timeout: float) -> dict[str, Any]:
    """One run, anywhere (in this process or a Ray worker): its record, `status` ok or failed."""
    run = RunPlan.from_json(run_json)
    where = Path(folder)
    record: dict[str, Any] = {"run": run.run_id, "variant": run.variant, "seed": run.seed, "mode": mode,
                              "digest": run.digest(), "host": socket.gethostname(), "pid": os.getpid(),
                              "code": code_version()}  # a resumed sweep can mix runs of several commits
    try:
        import ray

        if ray.is_initialized():
            record["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray there is no node id
        pass
    start = time.monotonic()
    try:
        if mode == "core":
            from safe_ctrl_ros.sweep.core import run_core

            metrics = run_core(run, where)
        else:
            from safe_ctrl_ros.sweep.graph import run_graph

            metrics = run_graph(run, where, timeout)
        record.update(status="ok", reason="", **metrics)
    except Exception as exc:  # a failed run is recorded, the sweep goes on
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        where.mkdir(parents=True, exist_ok=True)
        (where / "error.txt").write_text(traceback.format_exc())
    record["run_wall_s"] = time.monotonic() - start
    record["draws"] = run.draws
    return record


def completed(out: Path, run: RunPlan, mode: str) -> dict[str, Any] | None:
    """The run's earlier result if it finished ok with the same digest and mode."""
    path = run_folder(out, run) / "result.json"
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") == "ok" and record.get("digest") == run.digest() and record.get("mode") == mode:
        return record
    return None


class Progress:
    """A one-line progress bar on a terminal (a line every 10 s and per failure otherwise)."""

    def __init__(self, total: int, skipped: int, stream: Any = None) -> None:
        self.total, self.done, self.failed = total, skipped, 0
        self.skipped = skipped
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = -1e9

    def line(self) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        new = self.done - self.skipped
        elapsed = time.monotonic() - self.start
        left = (self.total - self.done) * elapsed / new if new else None
        eta = "?" if left is None else time.strftime("%H:%M:%S", time.gmtime(left))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} runs, {self.failed} failed, "
                f"{eta} left")

    def update(self, record: dict[str, Any] | None = None) -> None:
        if record is not None:
            self.done += 1
            self.failed += record["status"] != "ok"
        now = time.monotonic()
        failed_now = record is not None and record["status"] != "ok"
        if self.tty:
            print("\r" + self.line(), end="", file=self.stream, flush=True)
        elif failed_now or now - self.last >= 10.0 or self.done == self.total:
            print(self.line(), file=self.stream, flush=True)
            self.last = now
        if failed_now and record is not None:
            print(("\n" if self.tty else "") + f"failed: {record['run']}: {record['reason'].splitlines()[0]}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


def _save(out: Path, run: RunPlan, record: dict[str, Any]) -> None:
    folder = run_folder(out, run)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(dumps(record))


def run_serial(runs: list[RunPlan], out: Path, mode: str, timeout: float,
               progress: Progress | None = None) -> list[dict[str, Any]]:
    """The runs one after the other in this process (no Ray): the reference for the Ray results."""
    records = []
    for run in runs:
        record = execute_one(run.to_json(), str(run_folder(out, run)), mode, timeout)
        _save(out, run, record)
        records.append(record)
        if progress is not None:
            progress.update(record)
    return records


def ray_init(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, else start a local Ray instance sized to this machine (one node,
    its servers on 127.0.0.1 only), without the dashboard."""
    import logging

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # Ray 2.60 replaces a 127.0.0.1 node address by the machine's and then listens on every
        # interface; as a single-node instance ("cluster mode" off) it keeps to 127.0.0.1.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "ray" in sys.modules:  # read at import: set the constant the address lookup reads
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)


def run_ray(runs: list[RunPlan], out: Path, mode: str, timeout: float, cpus_per_run: float,
            progress: Progress | None = None, spread: bool = True) -> list[dict[str, Any]]:
    """The runs as Ray tasks (`ray_init` first); records in the order of `runs`."""
    import ray
    from ray.exceptions import RayError

    capacity = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
    if cpus_per_run > capacity:
        raise ConfigError(f"a run reserves {cpus_per_run:g} CPUs (resources.cpus_per_run) but the Ray cluster "
                          f"has {capacity:g}")
    task = ray.remote(execute_one).options(num_cpus=cpus_per_run, max_retries=0,
                                           scheduling_strategy="SPREAD" if spread else "DEFAULT")
    pending = {task.remote(r.to_json(), str(run_folder(out, r).resolve()), mode, timeout): i
               for i, r in enumerate(runs)}
    records: list[dict[str, Any] | None] = [None] * len(runs)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        if not done:
            if progress is not None:
                progress.update()
            continue
        for ref in done:
            i = pending.pop(ref)
            run = runs[i]
            try:
                record = ray.get(ref)
            except RayError as exc:  # the worker died, the node left the cluster, ...
                record = {"run": run.run_id, "variant": run.variant, "seed": run.seed, "mode": mode,
                          "digest": run.digest(), "status": "failed",
                          "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          "draws": run.draws}
            _save(out, run, record)
            records[i] = record
            if progress is not None:
                progress.update(record)
    return [r for r in records if r is not None]


def run_sweep(runs: list[RunPlan], out: Path, mode: str, timeout: float, cpus_per_run: float, *,
              use_ray: bool = True, address: str | None = None, num_cpus: int | None = None,
              resume: bool = True, show: Callable[[int, int], Progress] | None = None) -> list[dict[str, Any]]:
    """Every run's record in the order of `runs`: earlier ok results (resume), then the rest."""
    if mode not in MODES:
        raise ConfigError(f"mode: expected one of {MODES}, got '{mode}'")
    done = {r.run_id: rec for r in runs if resume and (rec := completed(out, r, mode)) is not None}
    todo = [r for r in runs if r.run_id not in done]
    progress = (show or (lambda total, skipped: Progress(total, skipped)))(len(runs), len(done))
    progress.update()
    if todo:
        if use_ray:
            ray_init(address, num_cpus)
            fresh = run_ray(todo, out, mode, timeout, cpus_per_run, progress)
        else:
            fresh = run_serial(todo, out, mode, timeout, progress)
    else:
        fresh = []
    progress.close()
    by_id = {**done, **{rec["run"]: rec for rec in fresh}}
    for rec in done.values():
        rec["resumed"] = True
    return [by_id[r.run_id] for r in runs]
