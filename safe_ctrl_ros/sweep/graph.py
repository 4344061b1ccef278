"""Graph mode: one run of the launch file as real node processes over DDS, recorded into a bag.

The run gets a ROS_DOMAIN_ID of its own on the machine it runs on (a lock file in the temp folder,
the same claims as safe_ctrl_ros.bringup.domain, released when the run ends) and DDS discovery on
loopback; its folder holds `bag/`, `summary.json` (the plant's), `log.txt` (every node's output),
`params.yaml` / `disturbances.yaml` (its draws) and `run.json`. Metrics come from the bag
(safe_ctrl_ros.bag.report, plus safe_ctrl_ros.sweep.metrics).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros.bag.report import Run, load_run, metrics
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.sweep.core import node_values
from safe_ctrl_ros.sweep.metrics import Trajectory, error_series, trajectory_metrics
from safe_ctrl_ros.sweep.plan import RunPlan, launch_plan, materialize


class RunError(RuntimeError):
    """A run that did not give results; the message says why."""


@contextlib.contextmanager
def claimed_domain(first: int = 100, last: int = 199) -> Iterator[int]:
    """A ROS_DOMAIN_ID no other run or test on this machine holds, for the `with` block."""
    lock_dir = Path(tempfile.gettempdir()) / "safe_ctrl_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    candidates = list(range(first, last + 1))
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(candidates)  # not a draw of a run
    for domain in candidates:
        handle = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - closed below
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield domain
        finally:
            handle.close()
        return
    raise RunError(f"no free ROS_DOMAIN_ID in {first}..{last} on this machine")


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _trajectory(run: Run) -> Trajectory:
    cmds = dict(run.commands)
    margins = {round(float(m.header.stamp.sec) + m.header.stamp.nanosec * 1e-9, 9): m for m in run.monitor}
    nu = run.commands[0][1].size if run.commands else (run.model.nu if run.model is not None else 1)
    nx = run.states[0][1].size
    ts, xs, refs, us, mg, vio = [], [], [], [], [], []
    for t, x in run.states:
        ts.append(t)
        xs.append(x)
        refs.append(run.references.get(t, np.full(nx, np.nan)))
        us.append(cmds.get(t, np.full(nu, np.nan)))
        m = margins.get(round(t, 9))
        if m is not None and len(m.margins):
            mg.append(float(min(m.margins)))
            vio.append(bool(any(m.violated)))
        else:
            mg.append(np.nan)
            vio.append(False)
    return Trajectory(np.array(ts), np.array(xs), np.array(refs), np.array(us), np.array(mg),
                      np.array(vio, dtype=bool))


class IncompleteRecordingError(RunError):
    """The bag lacks messages the graph sent (the recorder found a topic late): the run is repeated."""


def check_complete(run: Run, execs: set[str]) -> None:
    """Every state answered by a recorded command, a controller status and a monitor verdict (for the
    nodes the graph has); IncompleteRecordingError naming what is missing otherwise."""
    n = len(run.states)
    want = {"plant/cmd": (len({t for t, _ in run.commands}), n - 1)}
    if "controller" in execs:
        want["controller/status"] = (len(run.controller), n - 1)
    if "constraint_monitor" in execs:
        want["constraint_monitor/status"] = (len(run.monitor), n)
    short = {topic: f"{got} of {need}" for topic, (got, need) in want.items() if got < need}
    if short:
        raise IncompleteRecordingError(f"the bag holds fewer messages than the {n} states need: {short} "
                                  f"(the recorder found the topic after the episode had started)")


def bag_metrics(bag: Path, run: RunPlan, duration: float, dt: float, execs: set[str] | None = None) -> dict[str, Any]:
    """The report's metrics of a recorded run plus the MetricExtractor set (safe_ctrl_ros.sweep.metrics);
    where both define one (tracking RMSE, violation steps) the report's value is kept."""
    loaded = load_run(bag)
    if not loaded.states or loaded.model is None:
        raise RunError(f"the bag {bag} holds no plant states of a known system")
    if execs is not None:
        check_complete(loaded, execs)
    traj = _trajectory(loaded)
    extra = trajectory_metrics(traj, loaded.model, duration, dt, run.cost_q, run.cost_r)
    row = metrics(loaded)
    row.pop("run", None)
    out = {**extra, **{k: v for k, v in row.items() if v is not None or k not in extra}}
    et, err = error_series(traj, loaded.model)
    np.savez(bag.parent / "series.npz", t=et, error=err)
    return out


RETRIES = 4  # extra attempts of a run whose bag came out incomplete (the recorder found a topic late)


def run_graph(run: RunPlan, folder: Path, timeout: float) -> dict[str, Any]:
    """Launch the run's graph (safe-ctrl-bringup), wait for the episode to end, analyse its bag; a run
    whose bag is incomplete (IncompleteRecordingError) is run again, up to RETRIES more times."""
    notes = []
    for attempt in range(RETRIES + 1):
        try:
            out = _run_graph_once(run, folder, timeout)
        except IncompleteRecordingError as exc:
            notes.append(str(exc))
            if attempt == RETRIES:
                raise RunError(f"{RETRIES + 1} attempts, every bag incomplete: {notes}") from None
            continue
        out["attempts"] = attempt + 1
        out["retry_reasons"] = notes
        return out
    raise AssertionError("unreachable")


def _run_graph_once(run: RunPlan, folder: Path, timeout: float) -> dict[str, Any]:
    args = materialize(run, folder)
    plan = launch_plan(run.launch, args)
    plants = [n for n in plan.nodes if n.pkg == "safe_ctrl_ros" and n.exec == "plant"]
    if len(plants) != 1:
        raise ConfigError(f"a sweep run is one loop: {plan.file.name} starts {len(plants)} plant nodes")
    vp = node_values(plan, plants[0])
    bag = folder / "bag"
    if bag.exists():  # a run interrupted before: start over
        import shutil

        shutil.rmtree(bag)
    summary = folder / "summary.json"
    summary.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "safe_ctrl_ros.bringup.cli", str(run.launch),
           *[f"{k}:={v}" for k, v in args.items()],
           "record:=true", f"bag:={bag}", "autostart:=false", f"summary_file:={summary}"]
    log = folder / "log.txt"
    with claimed_domain() as domain:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   PYTHONUNBUFFERED="1")
        (folder / "command.txt").write_text(f"ROS_DOMAIN_ID={domain} " + " ".join(cmd) + "\n")
        start = time.monotonic()
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise RunError(f"timed out after {timeout:.0f} s wall; the end of {log}:\n{_tail(log)}") from None
            except BaseException:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(20)
                raise
        wall = time.monotonic() - start
    if code != 0:
        reason = ""
        if summary.is_file():
            reason = str(json.loads(summary.read_text()).get("terminated") or "")
        if not reason or not bag.is_dir():
            raise RunError(f"safe-ctrl-bringup exited with {code}; the end of {log}:\n{_tail(log)}")
    if not bag.is_dir():
        raise RunError(f"no bag was recorded; the end of {log}:\n{_tail(log)}")
    out = bag_metrics(bag, run, vp["duration"], vp["dt"], {n.exec for n in plan.nodes})
    if summary.is_file():
        out["terminated"] = str(json.loads(summary.read_text()).get("terminated") or "")
    out["wall_s"] = wall
    out["domain_id"] = domain
    return out

