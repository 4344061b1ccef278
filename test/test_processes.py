"""Starting and stopping node processes (bringup and benchmarks share it): escalation and logs."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from safe_ctrl_ros.bringup import processes

IGNORES_SIGINT = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); " \
                 "time.sleep(60)"


def test_stop_escalates_past_an_ignored_sigint_and_reports_who_outlived_it(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    stubborn = processes.spawn([sys.executable, "-c", IGNORES_SIGINT], dict(os.environ), log)
    polite = processes.spawn(["sleep", "60"], dict(os.environ))
    while b"up" not in log.read_bytes():
        pass
    seen: list[tuple[list[int], signal.Signals]] = []
    processes.stop([stubborn, polite], ((signal.SIGINT, 1.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)),
                   lambda running, sig: seen.append(([p.pid for p in running], sig)))
    assert polite.wait() == -signal.SIGINT
    assert stubborn.wait() == -signal.SIGTERM
    assert seen == [([stubborn.pid], signal.SIGINT)]
    assert log.read_text() == "up\n"


def test_a_child_stops_at_sigint_even_when_its_launcher_ignores_it() -> None:
    """A launcher started as a background job of a shell without job control has SIGINT ignored;
    its nodes must not inherit that, or the first stage of `stop` does nothing."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = processes.spawn(["sleep", "60"], dict(os.environ))
    finally:
        signal.signal(signal.SIGINT, before)
    processes.stop([child], ((signal.SIGINT, 2.0), (signal.SIGKILL, 2.0)))
    assert child.wait() == -signal.SIGINT
