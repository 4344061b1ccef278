"""The package is one thing in three installs: colcon (ROS), pip (no ROS), and the source tree."""

from __future__ import annotations

import configparser
import importlib
import os
import re
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from safe_ctrl_ros.ros.params import check_params_file

REPO = Path(__file__).resolve().parents[1]


def node_modules() -> set[str]:
    return {p.stem for p in (REPO / "safe_ctrl_ros" / "nodes").glob("*.py") if not p.stem.startswith("_")}


def install_prefix() -> Path:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if (Path(prefix) / "share" / "safe_ctrl_ros" / "package.xml").is_file():
            return Path(prefix)
    pytest.fail("safe_ctrl_ros is not on AMENT_PREFIX_PATH: run make setup")


def test_every_node_module_has_main_and_node_class() -> None:
    assert {"plant", "controller"} <= node_modules()
    for name in node_modules():
        module = importlib.import_module(f"safe_ctrl_ros.nodes.{name}")
        assert callable(module.main), name
        assert hasattr(module, "NODE_CLASS"), name


def test_colcon_install_holds_one_executable_per_node() -> None:
    lib = install_prefix() / "lib" / "safe_ctrl_ros"
    installed = {p.name for p in lib.iterdir()}
    assert installed == node_modules()
    for p in lib.iterdir():
        assert os.access(p, os.X_OK), p


def test_pip_console_scripts_match_the_nodes() -> None:
    # After a colcon build, rosidl's generated egg-info (no entry points) also names safe_ctrl_ros.
    scripts = {
        ep.name: ep.value
        for dist in metadata.distributions()
        if dist.metadata["Name"] == "safe_ctrl_ros"
        for ep in dist.entry_points
        if ep.group == "console_scripts"
    }
    for name in node_modules():
        assert scripts[f"safe-ctrl-{name.replace('_', '-')}"] == f"safe_ctrl_ros.nodes.{name}:main"
    assert scripts["safe-ctrl-bringup"] == "safe_ctrl_ros.bringup.cli:main"


def test_share_holds_launch_and_config() -> None:
    share = install_prefix() / "share" / "safe_ctrl_ros"
    for folder in ("launch", "config"):
        source = {p.name for p in (REPO / folder).iterdir()}
        assert source <= {p.name for p in (share / folder).iterdir()}, folder


def test_messages_import_from_the_install() -> None:
    from safe_ctrl_ros.msg import Command, State

    assert State.get_fields_and_field_types()["x"] == "sequence<double>"
    assert Command.get_fields_and_field_types()["u"] == "sequence<double>"
    msgs = {p.stem for p in (REPO / "msg").glob("*.msg")}
    assert msgs <= {p.stem for p in (install_prefix() / "share" / "safe_ctrl_ros" / "msg").glob("*.msg")}


def test_package_xml_is_format_3_and_versions_agree() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "safe_ctrl_ros"
    assert root.find("export/build_type").text == "ament_cmake"  # type: ignore[union-attr]
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["version"] == root.findtext("version")
    init = (REPO / "safe_ctrl_ros" / "__init__.py").read_text()
    assert re.search(r'__version__ = "([^"]+)"', init).group(1) == root.findtext("version")  # type: ignore[union-attr]


@pytest.mark.parametrize("params", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_params_files_are_valid(params: Path) -> None:
    assert check_params_file(params)


def test_core_does_not_import_rclpy() -> None:
    """Only nodes/, ros/, the composed bringup and the replay tool may import rclpy: the core and the
    report work with pip alone."""
    allowed = {"nodes", "ros", "bringup", "replay.py"}
    for path in (REPO / "safe_ctrl_ros").rglob("*.py"):
        rel = path.relative_to(REPO / "safe_ctrl_ros")
        if rel.parts[0] in allowed or rel.name in allowed:
            continue
        text = path.read_text()
        assert not re.search(r"^\s*(import rclpy|from rclpy)", text, re.M), rel
        assert not re.search(r"^\s*from safe_ctrl_ros(\.msg| import msg)", text, re.M), rel


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_readme_lists_every_document_and_every_launch_file() -> None:
    docs = _readme_section("Documentation")
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in docs, f"README's Documentation list omits docs/{doc.name}"
    scenarios = _readme_section("Running the graph")
    for launch in sorted((REPO / "launch").glob("*.launch.xml")):
        assert f"| `{launch.name}` |" in scenarios, f"README's scenario table omits {launch.name}"


def test_package_declares_its_license_and_pip_dependencies() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.findtext("license") == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert "Version 2.0" in (REPO / "LICENSE").read_text()
    assert "requirements/runtime.txt" in (REPO / "package.xml").read_text()
    runtime = {line.split("==")[0].lower() for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines()
               if line and not line.startswith("#")}
    assert {"numpy", "casadi", "scipy", "pyyaml", "rosbags", "torch"} <= runtime
    exec_depends = {e.text for e in root.iter("exec_depend")}
    assert {"python3-numpy", "python3-yaml", "python3-scipy"} <= exec_depends


def test_nodes_stay_thin() -> None:
    """A node wires one core object to topics, parameters and timers: its __init__ stays short and the
    plant (whose episode, watchdog and steppers live in simulation/) stays a small I/O layer."""
    import ast

    for path in sorted((REPO / "safe_ctrl_ros" / "nodes").glob("[!_]*.py")):
        tree = ast.parse(path.read_text())
        inits = [f for c in tree.body if isinstance(c, ast.ClassDef) for f in c.body
                 if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
        assert inits, f"{path.name}: no node class with an __init__"
        for init in inits:
            length = (init.end_lineno or init.lineno) - init.lineno + 1
            assert length <= 50, f"{path.name}: __init__ is {length} lines"
    assert len((REPO / "safe_ctrl_ros" / "nodes" / "plant.py").read_text().splitlines()) < 250
