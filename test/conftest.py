"""Test-wide settings: DDS stays on this machine and each test run gets its own ROS_DOMAIN_ID.

The domain is claimed with an exclusive lock file, so concurrent test runs on one machine (two
developers' `make test`, CI and a benchmark) never share a domain and never cross-talk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_ctrl_ros.bringup.domain import claim_domain

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "SAFE_CTRL_TEST_DOMAIN" not in os.environ:
        os.environ["SAFE_CTRL_TEST_DOMAIN"] = str(claim_domain())
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
