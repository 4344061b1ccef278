"""The XML launch-file runner: what it supports resolves as in ROS 2 launch; the rest is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_ctrl_ros.bringup.cli import main as bringup_main
from safe_ctrl_ros.bringup.launch_xml import LaunchFileError, parse_launch_file

REPO = Path(__file__).resolve().parents[1]


def launch(tmp_path: Path, body: str, name: str = "t.launch.xml") -> Path:
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0"?>\n<launch>\n{body}\n</launch>\n')
    return path


def test_args_substitutions_params_and_remaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters: {}\n")
    monkeypatch.setenv("SAFE_CTRL_TEST_VALUE", "from_env")
    path = launch(
        tmp_path,
        """
  <arg name="ns" default="robot1"/>
  <arg name="rate" default="50.0"/>
  <let name="file" value="$(dirname)/p.yaml"/>
  <node pkg="safe_ctrl_ros" exec="plant" name="sim" namespace="$(var ns)" on_exit="shutdown">
    <param from="$(var file)"/>
    <param name="rate" value="$(var rate)"/>
    <param name="label" value="$(env SAFE_CTRL_TEST_VALUE)"/>
    <param name="other" value="$(env SAFE_CTRL_UNSET_VARIABLE fallback)"/>
    <param name="lqr"><param name="Q" value="[1.0, 2.0]"/></param>
    <remap from="state" to="plant/state"/>
  </node>""",
    )
    plan = parse_launch_file(path, {"rate": "100.0"})
    (node,) = plan.nodes
    assert node.name == "sim"
    assert node.namespace == "/robot1"
    assert node.on_exit_shutdown
    assert node.params_files == [str(tmp_path / "p.yaml")]
    assert node.inline_params() == {
        "/**": {"ros__parameters": {"rate": 100.0, "label": "from_env", "other": "fallback", "lqr": {"Q": [1.0, 2.0]}}}
    }
    args = node.ros_args("/tmp/inline.yaml")
    assert args[:5] == ["--ros-args", "-r", "__node:=sim", "-r", "__ns:=/robot1"]
    assert args[-2:] == ["-r", "state:=plant/state"]
    assert args.index(str(tmp_path / "p.yaml")) < args.index("/tmp/inline.yaml")  # files in order


def test_groups_namespaces_and_conditions(tmp_path: Path) -> None:
    path = launch(
        tmp_path,
        """
  <arg name="with_b" default="false"/>
  <group>
    <push-ros-namespace namespace="outer"/>
    <node pkg="p" exec="a" namespace="inner"/>
    <node pkg="p" exec="b" if="$(var with_b)"/>
  </group>
  <node pkg="p" exec="c" unless="$(var with_b)"/>
  <node pkg="p" exec="d" namespace="/absolute"/>""",
    )
    plan = parse_launch_file(path)
    assert [(n.exec, n.namespace) for n in plan.nodes] == [("a", "/outer/inner"), ("c", ""), ("d", "/absolute")]
    plan = parse_launch_file(path, {"with_b": "true"})
    assert [n.exec for n in plan.nodes] == ["a", "b", "d"]


def test_include_passes_arguments(tmp_path: Path) -> None:
    launch(tmp_path, '<arg name="who" default="x"/><node pkg="p" exec="$(var who)"/>', "inner.launch.xml")
    path = launch(tmp_path, '<include file="$(dirname)/inner.launch.xml"><arg name="who" value="y"/></include>')
    assert [n.exec for n in parse_launch_file(path).nodes] == ["y"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<node pkg="p" exec="a"/><timer period="1"/>', "unsupported element <timer>"),
        ('<node pkg="p" exec="a" launch-prefix="gdb"/>', "unsupported attribute"),
        ('<node pkg="p" exec="a" name="$(eval 1+1)"/>', "unsupported substitution"),
        ('<node pkg="p" exec="$(var missing)"/>', "undefined launch argument 'missing'"),
        ('<node pkg="p" exec="a" if="maybe"/>', "expected true or false"),
        ('<arg name="needed"/><node pkg="p" exec="a"/>', "'needed' has no default"),
        ('<node pkg="p" exec="a"><param from="nope.yaml"/></node>', "does not exist"),
        ('<node pkg="p" exec="a" on_exit="restart"/>', "only 'shutdown'"),
        ('<node exec="a"/>', "needs the attribute 'pkg'"),
        ("<!-- nothing -->", "starts no node"),
    ],
)
def test_unsupported_or_wrong_input_is_an_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(LaunchFileError, match=message):
        parse_launch_file(launch(tmp_path, body))


def test_unknown_cli_argument_and_bad_xml(tmp_path: Path) -> None:
    path = launch(tmp_path, '<arg name="a" default="1"/><node pkg="p" exec="x"/>')
    with pytest.raises(LaunchFileError, match=r"unknown launch argument\(s\) \['b'\]"):
        parse_launch_file(path, {"b": "2"})
    bad = tmp_path / "bad.launch.xml"
    bad.write_text("<launch><node pkg='p'></launch>")
    with pytest.raises(LaunchFileError, match="not valid XML"):
        parse_launch_file(bad)
    with pytest.raises(LaunchFileError, match="does not exist"):
        parse_launch_file(tmp_path / "missing.launch.xml")


@pytest.mark.parametrize("launch_file", sorted((REPO / "launch").glob("*.launch.xml")), ids=lambda p: p.name)
def test_shipped_launch_files_resolve(launch_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bringup_main([str(launch_file), "--show"]) == 0
    out = capsys.readouterr().out
    assert "--ros-args" in out


def test_cli_reports_errors_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bringup_main([str(tmp_path / "none.launch.xml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert bringup_main([str(REPO / "launch" / "cartpole_lqr.launch.xml"), "duration=5"]) == 2
    assert "name:=value" in capsys.readouterr().err


def test_nodes_do_not_outlive_a_killed_bringup(tmp_path: Path) -> None:
    """Even a SIGKILLed bringup (e.g. a test's timeout) takes its node processes with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("rclpy")
    pid_file = tmp_path / "pid"
    script = tmp_path / "sleeper.py"
    script.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from safe_ctrl_ros.bringup.launch_xml import NodeSpec, LaunchPlan;"
        "from safe_ctrl_ros.bringup import runner;"
        f"runner.node_command = lambda spec, f=None: [sys.executable, {str(script)!r}];"
        "plan = LaunchPlan(Path('x'), [NodeSpec(pkg='p', exec='sleeper')], {}, {});"
        "runner.ProcessRunner(plan, Path('.')).run()"
    )])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    alive = True
    while alive and time.monotonic() < deadline:
        try:
            os.kill(child, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            alive = False
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive
