"""Shared helpers of the ROS tests: spinning until a condition, running our executables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def spin_until(executor: object, condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)  # type: ignore[attr-defined]
    return condition()


def wait_for_exit(executor: object, proc: subprocess.Popen[str], timeout: float, drain: float = 0.3) -> str:
    """Spin (so the test's subscriptions keep receiving) until `proc` exits, then `drain` seconds more
    for the last messages; the process's output. A process still running at the timeout is killed."""
    spin_until(executor, lambda: proc.poll() is not None, timeout)
    spin_until(executor, lambda: False, drain)
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=30)[0]


def executable(name: str) -> list[str]:
    """The installed node executable (colcon install tree), as `ros2 run` would start it."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "lib" / "safe_ctrl_ros" / name
        if path.is_file():
            return [str(path)]
    raise FileNotFoundError(f"node executable '{name}' not found: run make setup")


def bringup(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safe_ctrl_ros.bringup.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def start_bringup(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safe_ctrl_ros.bringup.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def start_when_matched(
    node: object, executor: object, ns: str, subscriptions: list[object], timeout: float = 60.0
) -> None:
    """Wait until every subscription has matched a publisher, then start the plant's episode.

    DDS endpoint discovery among several processes can take seconds; a test that must see every
    message of a run (launched with autostart:=false) starts the episode only once it listens.
    """
    from std_srvs.srv import Trigger

    ok = spin_until(
        executor, lambda: all(s.get_publisher_count() > 0 for s in subscriptions), timeout  # type: ignore[attr-defined]
    )
    assert ok, f"not all of {[s.topic_name for s in subscriptions]} matched a publisher"  # type: ignore[attr-defined]
    client = node.create_client(Trigger, f"/{ns}/plant/start")  # type: ignore[attr-defined]
    assert spin_until(executor, client.service_is_ready, timeout), "the plant's ~/start service is not up"
    future = client.call_async(Trigger.Request())
    assert spin_until(executor, future.done, timeout)


def pid_of(node: str, namespace: str) -> int | None:
    """The pid of the process running node `node` in `namespace` (from its --ros-args remaps)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"__node:={node}".encode() in args and f"__ns:=/{namespace}".encode() in args:
            return int(proc.name)
    return None


def wait_for_bag_time(bag: Path, seconds: float, timeout: float = 60.0) -> None:
    """Wait until the bag being recorded holds `seconds` of sim time (its metadata.yaml says so)."""
    from safe_ctrl_ros.bringup.flagship import bag_sim_seconds

    deadline = time.monotonic() + timeout
    while bag_sim_seconds(bag) < seconds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bag_sim_seconds(bag) >= seconds, f"the recorded run did not reach t={seconds} s"


def kill_when_recorded(bag: Path, seconds: float, node: str, namespace: str, timeout: float = 60.0) -> None:
    """SIGKILL node `node` of `namespace` once the bag being recorded reaches `seconds` of sim time."""
    import signal

    wait_for_bag_time(bag, seconds, timeout)
    pid = pid_of(node, namespace)
    assert pid is not None, f"no process runs {node} in /{namespace}"
    os.kill(pid, signal.SIGKILL)
