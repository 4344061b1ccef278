"""What produced a result file: commit, date, machine, package versions and the exact command.

Every results JSON carries this block (`provenance`) so that a figure can be traced back to the code
and the machine that measured it, and re-run with the same command.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The packages whose version can move a figure.
PACKAGES = ("numpy", "scipy", "casadi", "torch", "rosbags", "ros-rclpy", "ros-rmw-fastrtps-cpp", "mujoco", "ray",
            "optuna")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `packages`; a package that is not installed is left out."""
    found: dict[str, str] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def command(argv: list[str] | None = None) -> str:
    """The command line that re-runs this process from the repository root."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py"):
        path = Path(args[0]).resolve()
        try:
            args[0] = str(path.relative_to(REPO))
        except ValueError:
            args[0] = str(path)
        return "tools/run.sh python " + shlex.join(args)
    if args:
        args[0] = Path(args[0]).name
    return "tools/run.sh " + shlex.join(args)


def code_version() -> dict[str, Any]:
    """The code this process runs: the checkout's commit and whether tracked files differ from it."""
    return {"commit": _git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance block of a result file written now by this process."""
    code = code_version()
    commit, dirty = code["commit"], code["dirty"]
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "commit": commit,
        "dirty": dirty,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command(argv),
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": load,
        },
        "versions": versions(),
    }
