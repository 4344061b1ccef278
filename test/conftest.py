"""Test-wide settings: DDS stays on this machine and each test run gets its own ROS_DOMAIN_ID.

The domain is claimed with an exclusive lock file, so concurrent test runs on one machine (two
developers' `make test`, CI and a benchmark) never share a domain and never cross-talk.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

REPO = Path(__file__).resolve().parents[1]
_domain_lock: IO[str] | None = None


def _claim_domain() -> int:
    global _domain_lock
    lock_dir = Path(tempfile.gettempdir()) / "safe_ctrl_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    candidates = list(range(100, 200))
    random.Random(os.getpid()).shuffle(candidates)
    for domain in candidates:
        handle = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - held for the whole session
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _domain_lock = handle
        return domain
    raise RuntimeError("no free ROS_DOMAIN_ID in 100..199")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "SAFE_CTRL_TEST_DOMAIN" not in os.environ:
        os.environ["SAFE_CTRL_TEST_DOMAIN"] = str(_claim_domain())
    os.environ["ROS_DOMAIN_ID"] = os.environ["SAFE_CTRL_TEST_DOMAIN"]


@pytest.fixture
def ros_context() -> Iterator[object]:
    """An initialized rclpy context of its own for one test."""
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
