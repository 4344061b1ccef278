"""Every shipped launch file uses only what `ros2 launch`'s XML frontend accepts.

The reference is `LAUNCH_XML` in safe_ctrl_ros/bringup/launch_xml.py: the tags launch_xml and
launch_ros expose and, per tag, the attributes and nested tags their `parse` methods read (anything
else fails in `ros2 launch` with "Unrecognized entity of the type: ..." or "Unexpected
attribute(s) found in ..."). The walk here is independent of the bringup parser, which is checked
on the same files by test_launch_xml.py::test_shipped_launch_files_resolve.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from safe_ctrl_ros.bringup.launch_xml import LAUNCH_ROOT, LAUNCH_XML, SUBSTITUTIONS, Entity

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.xml"))

# The action tags of launch 3.7 / launch_ros 0.28 (Kilted) that matter here, read from their
# @expose_action decorators; `set-env` is not one of them (the tag is `set_env`).
UPSTREAM_ACTIONS = {
    "arg", "let", "group", "include", "node", "executable", "set_env", "unset_env", "append_env", "reset_env",
    "push-ros-namespace", "push_ros_namespace", "set_parameter", "set_parameters_from_file", "set_remap",
    "set_use_sim_time", "set_ros_log_dir", "log", "timer", "ros_timer", "shutdown", "reset", "node_container",
    "load_composable_node",
}


def violations(el: ET.Element, spec: Entity, where: str) -> list[str]:
    """What in `el` launch_xml would reject, given the entry `spec` it is parsed by."""
    unknown = sorted(set(el.attrib) - spec.attrs)
    out = [f"{where}: attribute '{a}' is not read by launch_xml's <{el.tag}>" for a in unknown]
    for value in el.attrib.values():
        out += [f"{where}: unknown substitution $({s})" for s in re.findall(r"\$\(([\w-]+)", value)
                if s not in SUBSTITUTIONS]
    for i, child in enumerate(el):
        at = f"{where}/{child.tag}[{i}]"
        if spec.holds_actions and not (el.tag == "group" and child.tag == "keep"):
            if child.tag not in LAUNCH_XML:
                out.append(f"{at}: Unrecognized entity of the type: {child.tag}")
            else:
                out += violations(child, LAUNCH_XML[child.tag], at)
        elif child.tag in spec.children:
            out += violations(child, spec.children[child.tag], at)
        else:
            out.append(f"{at}: <{child.tag}> is not a nested tag of launch_xml's <{el.tag}>")
    return out


def test_the_table_holds_launch_xml_s_actions_and_no_more_than_bringup_can_check() -> None:
    assert set(LAUNCH_XML) >= UPSTREAM_ACTIONS
    assert "set-env" not in LAUNCH_XML
    assert "unset-env" not in LAUNCH_XML

    def subset(spec: Entity, seen: set[int]) -> None:
        if id(spec) in seen:
            return
        seen.add(id(spec))
        assert spec.supported <= spec.attrs
        for child in spec.children.values():
            subset(child, seen)

    for spec in [LAUNCH_ROOT, *LAUNCH_XML.values()]:
        subset(spec, set())
    node = LAUNCH_XML["node"]
    assert {"pkg", "exec", "name", "namespace", "args", "ros_args", "on_exit", "respawn", "respawn_delay",
            "launch-prefix", "output", "if", "unless"} <= node.attrs
    assert set(node.children) == {"param", "remap", "env"}
    assert "if" not in node.children["param"].attrs  # nested entities take no condition in launch_xml


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_uses_only_what_launch_xml_accepts(launch_file: Path) -> None:
    root = ET.parse(launch_file).getroot()
    assert root.tag == "launch"
    assert violations(root, LAUNCH_ROOT, launch_file.name) == []


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_node_keeps_its_clock_in_its_namespace(launch_file: Path) -> None:
    """One ROS domain can hold several robots: each loop's clock is `<namespace>/clock`."""
    for node in ET.parse(launch_file).getroot().iter("node"):
        remaps = {(r.get("from"), r.get("to")) for r in node.iter("remap")}
        assert ("/clock", "clock") in remaps, f"{launch_file.name}: node {node.get('name')} hears the global /clock"


def test_the_walk_catches_what_launch_xml_rejects() -> None:
    bad = ET.fromstring(
        '<launch><set-env name="A" value="1"/><node pkg="p" exec="e" colour="red"><param name="a" value="1" '
        'if="true"/><foo/></node><arg name="x" default="$(nope)"/></launch>'
    )
    found = violations(bad, LAUNCH_ROOT, "t")
    assert found == [
        "t/set-env[0]: Unrecognized entity of the type: set-env",
        "t/node[1]: attribute 'colour' is not read by launch_xml's <node>",
        "t/node[1]/param[0]: attribute 'if' is not read by launch_xml's <param>",
        "t/node[1]/foo[1]: <foo> is not a nested tag of launch_xml's <node>",
        "t/arg[2]: unknown substitution $(nope)",
    ]
