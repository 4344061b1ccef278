"""A ROS_DOMAIN_ID of one's own on a shared machine: test runs and benchmarks claim one each.

A free domain in 100..199 is claimed by an exclusive lock on a file in the temp folder, held until
the process exits, so two runs never share a domain (and never see each other's /clock).
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path
from typing import IO

_held: list[IO[str]] = []  # the lock files, open for the life of the process


def claim_domain(first: int = 100, last: int = 199) -> int:
    lock_dir = Path(tempfile.gettempdir()) / "safe_ctrl_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    candidates = list(range(first, last + 1))
    random.Random(os.getpid()).shuffle(candidates)
    for domain in candidates:
        handle = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - held until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held.append(handle)
        return domain
    raise RuntimeError(f"no free ROS_DOMAIN_ID in {first}..{last}")
