"""Run a launch plan: each node as its own process (default), or all composed in one process."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from safe_ctrl_ros.bringup import processes
from safe_ctrl_ros.bringup.launch_xml import LaunchFileError, LaunchPlan, NodeSpec, find_executable

OWN_PACKAGE = "safe_ctrl_ros"
STOP_GRACE_S = 5.0


def node_command(spec: NodeSpec, inline_params_file: str | None = None) -> list[str]:
    """The command line that `ros2 launch` would run for this node."""
    try:
        exe = [str(find_executable(spec.pkg, spec.exec))]
    except LaunchFileError as exc:
        if spec.pkg != OWN_PACKAGE or "not executable" in str(exc):
            raise
        # pip-installed without a colcon build: our nodes are importable modules.
        exe = [sys.executable, "-m", f"{OWN_PACKAGE}.nodes.{spec.exec}"]
    return [*exe, *spec.args, *spec.ros_args(inline_params_file)]


def child_env(spec: NodeSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    for name in spec.unset_env:  # <unset_env> (disjoint from spec.env: the last of set/unset wins)
        env.pop(name, None)
    env.update(spec.env)
    return env


def _say(text: str) -> None:
    print(f"[bringup] {text}", flush=True)


@dataclass
class _Proc:
    spec: NodeSpec
    popen: subprocess.Popen[bytes]
    pump: threading.Thread
    restarts: int = 0
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)


class ProcessRunner:
    """Starts one process per node, prefixes their output, and stops them all on shutdown."""

    def __init__(self, plan: LaunchPlan, params_dir: Path) -> None:
        self.plan = plan
        self.params_dir = params_dir
        self.procs: list[_Proc] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failures: list[tuple[str, int]] = []

    def _pump(self, label: str, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                print(f"[{label}] {line}", flush=True)

    def _start(self, spec: NodeSpec) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        index = self.plan.nodes.index(spec)
        cmd = node_command(spec, spec.write_inline_params(self.params_dir, index))
        popen = processes.spawn(cmd, child_env(spec))
        pump = threading.Thread(target=self._pump, args=(spec.label, popen.stdout), daemon=True)
        pump.start()
        _say(f"process started with pid [{popen.pid}]: {spec.label}")
        return popen, pump

    def _signal_handler(self, signum: int, _frame: FrameType | None) -> None:
        _say(f"signal {signal.Signals(signum).name}: shutting down")
        self._stop.set()

    def run(self) -> int:
        old = {s: signal.signal(s, self._signal_handler) for s in (signal.SIGINT, signal.SIGTERM)}
        shutdown_code: int | None = None
        try:
            for spec in self.plan.nodes:
                popen, pump = self._start(spec)
                self.procs.append(_Proc(spec, popen, pump))
            while not self._stop.is_set():
                alive = 0
                for proc in self.procs:
                    code = proc.popen.poll()
                    if code is None:
                        alive += 1
                        continue
                    if proc.restart_at is not None:
                        if time.monotonic() >= proc.restart_at:
                            proc.popen, proc.pump = self._start(proc.spec)
                            proc.restart_at = None
                            alive += 1
                        else:
                            alive += 1
                        continue
                    if proc.exit_codes and proc.exit_codes[-1] is code and proc.popen.returncode == code:
                        continue
                    proc.pump.join(timeout=1.0)
                    proc.exit_codes.append(code)
                    if code != 0:
                        self.failures.append((proc.spec.label, code))
                    if proc.spec.on_exit_shutdown:
                        _say(f"{proc.spec.label} exited with code {code}; shutting down (on_exit=shutdown)")
                        shutdown_code = code
                        self._stop.set()
                        break
                    if proc.spec.respawn:
                        _say(f"{proc.spec.label} died with code {code}; respawning in {proc.spec.respawn_delay} s")
                        proc.restarts += 1
                        proc.restart_at = time.monotonic() + proc.spec.respawn_delay
                        alive += 1
                    else:
                        _say(f"process has died [pid {proc.popen.pid}, exit code {code}]: {proc.spec.label}")
                if alive == 0:
                    break
                time.sleep(0.05)
        finally:
            self.stop_all()
            for s, handler in old.items():
                signal.signal(s, handler)
        if shutdown_code not in (None, 0):
            return int(shutdown_code)
        return self.failures[0][1] if self.failures else 0

    def stop_all(self) -> None:
        stages = ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0))
        labels = {proc.popen.pid: proc.spec.label for proc in self.procs}

        def report(running: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
            _say(f"{[labels[p.pid] for p in running]} still running after {sig.name}")

        processes.stop([p.popen for p in self.procs], stages, report)
        for proc in self.procs:
            proc.pump.join(timeout=1.0)


def run_composed(plan: LaunchPlan, params_dir: Path) -> int:
    """All nodes in one process and one executor (only this package's nodes can be composed)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node

    from safe_ctrl_ros.errors import ConfigError
    from safe_ctrl_ros.ros.params import check_params_files

    for spec in plan.nodes:
        if spec.pkg != OWN_PACKAGE:
            raise LaunchFileError(f"--composed runs only {OWN_PACKAGE} nodes; '{spec.pkg}/{spec.exec}' is not one")
        if spec.env or spec.unset_env or spec.args:
            raise LaunchFileError(f"--composed cannot give node '{spec.label}' its own environment or arguments")
    ros_args = [s.ros_args(s.write_inline_params(params_dir, i)) for i, s in enumerate(plan.nodes)]
    for args in ros_args:
        check_params_files(args)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=[])
    nodes: list[Node] = []
    code = 0
    try:
        for spec, args in zip(plan.nodes, ros_args, strict=True):
            module = importlib.import_module(f"{OWN_PACKAGE}.nodes.{spec.exec}")
            node = module.NODE_CLASS(cli_args=args, use_global_arguments=False)
            nodes.append(node)
            _say(f"composed node started: {spec.label}")
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        watched = [
            n.done for n, s in zip(nodes, plan.nodes, strict=True) if s.on_exit_shutdown and hasattr(n, "done")
        ]
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            finished = [f for f in watched if f.done()]
            if finished:
                code = int(finished[0].result() or 0)
                _say(f"a node with on_exit=shutdown finished (code {code}); shutting down")
                break
    except ConfigError as exc:
        print(f"[bringup] configuration error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
