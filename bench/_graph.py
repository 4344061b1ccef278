"""What the graph benchmarks (load, soak) share: run a launch file's nodes as processes the benchmark
owns, stop them all whatever happens, and read CPU time and memory from /proc.

The nodes are started exactly as `safe-ctrl-bringup` starts them (same resolved launch plan, same
command lines and environment, the same process start and stop: safe_ctrl_ros/bringup/processes.py),
but as children of the benchmark, so it knows every PID (for RSS
and CPU sampling) and every exit code, and writes each node's output to its own log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from safe_ctrl_ros.bringup import processes
from safe_ctrl_ros.bringup.domain import claim_domain as claim_free_domain
from safe_ctrl_ros.bringup.launch_xml import parse_launch_file
from safe_ctrl_ros.bringup.runner import child_env, node_command

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def claim_domain() -> int:
    """A ROS_DOMAIN_ID of this benchmark's own: the one in the environment if set (e.g. by the
    tests), else a free one in 100..199 claimed by the same lock files as the tests' (so two
    benchmarks, a test run and a benchmark never share a domain and never see each other's /clock)."""
    if os.environ.get("ROS_DOMAIN_ID"):
        return int(os.environ["ROS_DOMAIN_ID"])
    domain = claim_free_domain()
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt like Ctrl-C, so `finally` blocks stop the graph."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class NodeProcess:
    label: str  # namespace/name
    popen: subprocess.Popen[bytes]
    log: Path
    shutdown_on_exit: bool  # on_exit="shutdown" in the launch file (the plant)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Graph:
    """Processes of one or more launch plans; `stop()` (also on exceptions, via `with`) ends them all."""

    log_dir: Path
    procs: list[NodeProcess] = field(default_factory=list)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _spawn(self, label: str, cmd: list[str], env: dict[str, str], shutdown_on_exit: bool) -> NodeProcess:
        log = self.log_dir / f"{len(self.procs):03d}_{label.strip('/').replace('/', '_')}.log"
        proc = NodeProcess(label, processes.spawn(cmd, env, log), log, shutdown_on_exit)
        self.procs.append(proc)
        return proc

    def launch(self, launch_file: Path, args: dict[str, str], composed: bool = False) -> list[NodeProcess]:
        """Start the launch file's nodes, one process each, or all in one `--composed` bringup."""
        if composed:
            ns = args.get("namespace", "")
            cmd = [sys.executable, "-m", "safe_ctrl_ros.bringup.cli", str(launch_file), "--composed",
                   *(f"{k}:={v}" for k, v in args.items())]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            return [self._spawn(f"{ns}/composed", cmd, env, shutdown_on_exit=True)]
        plan = parse_launch_file(launch_file, args)
        params_dir = Path(tempfile.mkdtemp(prefix="params_", dir=self.log_dir))
        started = []
        for i, spec in enumerate(plan.nodes):
            cmd = node_command(spec, spec.write_inline_params(params_dir, i))
            label = f"{spec.namespace.rstrip('/')}/{spec.label}"
            started.append(self._spawn(label, cmd, child_env(spec), spec.on_exit_shutdown))
        return started

    def stop(self, procs: list[NodeProcess] | None = None, grace: float = 10.0) -> dict[str, int]:
        """SIGINT (a node's clean shutdown), then SIGTERM, then SIGKILL; the exit codes by label.
        A negative code is the signal that ended the process."""
        targets = self.procs if procs is None else procs
        stages = ((signal.SIGINT, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))
        processes.stop([p.popen for p in targets], stages)
        return {p.label: int(p.popen.wait()) for p in targets}


# --- /proc -----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process in s (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS; None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine in s, summed over cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])
