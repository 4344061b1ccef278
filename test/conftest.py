"""Test-wide settings: DDS stays on this machine and each test run gets its own ROS_DOMAIN_ID.

Tests that start ROS nodes, node processes or installs carry the `graph` marker (every test of the
modules in GRAPH_MODULES, and any test marked `@pytest.mark.graph`): `pytest -m "not graph"` is
the core-only run, `make test` runs everything.

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

# Modules whose every test starts nodes over DDS, node processes or an install.
GRAPH_MODULES = frozenset({
    "test_adapter_node", "test_bench_smoke", "test_closed_loop_dds", "test_controller_node", "test_flagship_demo",
    "test_hil_netns", "test_monitor_injector_dds", "test_msg_roundtrip", "test_node_faults", "test_plant_node",
    "test_recorder_dds", "test_scenario_quadrotor_3d", "test_pip_install", "test_parameters_dds",
    "test_reproducibility", "test_sweep_cluster", "test_safety_filter_node", "test_safety_filter_bench",
    "test_mujoco_graph", "test_processes",
})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "graph: starts ROS nodes, node processes or an install (slow)")
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in GRAPH_MODULES:
            item.add_marker(pytest.mark.graph)
