"""Starting and stopping node processes: what `safe-ctrl-bringup` and the graph benchmarks share.

Each node runs in a session of its own (so a signal reaches the node and anything it started) and
gets SIGTERM when its parent dies, even by SIGKILL, so a killed bringup or benchmark never leaves
nodes behind. Stopping escalates as `ros2 launch` does: SIGINT (a node's clean shutdown), then
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Stage = tuple[signal.Signals, float]
# (signal, seconds to wait for the processes to exit after it)
STOP_STAGES: tuple[Stage, ...] = ((signal.SIGINT, 5.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0))


def prepare_child() -> None:
    """In the child, before exec: SIGINT back to its default action, and SIGTERM when the parent dies.

    A shell without job control starts its background jobs with SIGINT ignored, and an exec keeps an
    ignored signal ignored: a node started by `safe-ctrl-bringup ... &` would then outlive the SIGINT
    that `stop` sends first, and only stop at the SIGTERM after it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1  # (Linux prctl PR_SET_PDEATHSIG)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(cmd: Sequence[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session; output (stdout and stderr) to `log`, else to a pipe."""
    if log is None:
        return subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=prepare_child)
    with open(log, "wb") as out:
        return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=prepare_child)


def stop(popens: Sequence[subprocess.Popen[bytes]], stages: Sequence[Stage] = STOP_STAGES,
         still_running: Callable[[list[subprocess.Popen[bytes]], signal.Signals], None] | None = None) -> None:
    """Stop every process of `popens` that still runs, escalating through `stages`; `still_running`
    is told which processes outlived each stage but the last."""
    running = [p for p in popens if p.poll() is None]
    for sig, wait in stages:
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(0.02)
        running = [p for p in running if p.poll() is None]
        if not running:
            return
        if still_running is not None:
            still_running(running, sig)
