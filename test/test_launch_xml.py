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
    # an argument only the included file declares can be given on the command line, as in ros2 launch
    outer = launch(tmp_path, '<include file="$(dirname)/inner.launch.xml"/>', "outer.launch.xml")
    assert [n.exec for n in parse_launch_file(outer, {"who": "z"}).nodes] == ["z"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # what launch_xml itself rejects, in its words
        ('<set-env name="A" value="1"/><node pkg="p" exec="a"/>',
         r"Unrecognized entity of the type: set-env \(the tag is <set_env>\)"),
        ('<unset-env name="A"/><node pkg="p" exec="a"/>', "Unrecognized entity of the type: unset-env"),
        ('<node pkg="p" exec="a"/><foo/>', "Unrecognized entity of the type: foo"),
        ('<param name="a" value="1"/><node pkg="p" exec="a"/>', "Unrecognized entity of the type: param"),
        ('<node pkg="p" exec="a" colour="red"/>', r"Unexpected attribute\(s\) found in `node`: \{'colour'\}"),
        ('<node pkg="p" exec="a"><param name="x" value="1" if="true"/></node>',
         r"Unexpected attribute\(s\) found in `param`: \{'if'\}"),
        ('<node pkg="p" exec="a"><remap from="a" to="b" unless="false"/></node>',
         r"Unexpected attribute\(s\) found in `remap`: \{'unless'\}"),
        ('<node pkg="p" exec="a"><set_env name="A" value="1"/></node>',
         r"Unexpected nested tag\(s\) found in `node`: \{'set_env'\}"),
        ('<node pkg="p" exec="a"><param name="n"><param from="x.yaml"/></param></node>',
         r"Unexpected attribute\(s\) found in `param`: \{'from'\}"),
        ('<include file="x.launch.xml"><arg name="a" value="1" default="2"/></include>',
         r"Unexpected attribute\(s\) found in `arg`: \{'default'\}"),
        ('<node pkg="p" exec="a" if="true" unless="false"/>', "if and unless conditions can't be used simultaneously"),
        ('<node pkg="p" exec="a" if="yes"/>', "expected true or false"),  # conditions: true/1/false/0 only
        ('<node pkg="p" exec="a" on_exit="restart"/>', "on_exit of Entity node expected to be shutdown"),
        ('<arg name="x" default="shutdown"/><node pkg="p" exec="a" on_exit="$(var x)"/>', "takes a literal"),
        ('<node pkg="p" exec="a" respawn_delay="-1"/>', "expected to be a non-negative value"),
        ('<node pkg="p" exec="a" respawn="maybe"/>', "expected true or false"),
        ('<node pkg="p" exec="a"><param name="x" from="p.yaml"/></node>', "name and from attributes are mutually"),
        ('<node pkg="p" exec="a"><param name="x" value="1"><param name="y" value="2"/></param></node>',
         "nested parameters and value attributes are mutually exclusive"),
        ('<node pkg="p" exec="a"><param name="x"/></node>', "either a value attribute or nested params"),
        ('<node pkg="p" exec="a" name="$(nope 1)"/>', "Unknown substitution: nope"),
        ('<node pkg="p" exec="$(var missing)"/>', "undefined launch argument 'missing'"),
        ('<arg name="needed"/><node pkg="p" exec="a"/>', 'Required launch argument "needed" was not provided'),
        ('<arg name="c" default="x"><choice value="a"/><choice value="b"/></arg><node pkg="p" exec="a"/>',
         'Argument "c" provided value "x" is not valid'),
        ('<launch_me/>', "Unrecognized entity of the type: launch_me"),
        # what launch_xml accepts and safe-ctrl-bringup does not implement: an error that says so
        ('<node pkg="p" exec="a"/><timer period="1"/>', "<timer> is a launch_xml action that ros2 launch runs"),
        ('<node pkg="p" exec="a" launch-prefix="gdb"/>', r"\{'launch-prefix'\} are accepted by ros2 launch but not"),
        ('<node pkg="p" exec="a"><param name="x" value="1" type="str"/></node>', r"\{'type'\} are accepted"),
        ('<node pkg="p" exec="a" name="$(eval 1+1)"/>', r"\$\(eval\) is accepted by ros2 launch but not"),
        ('<arg name="a" default="b"/><node pkg="p" exec="$(var $(var a))"/>', "nested substitutions"),
        ('<group><keep name="a" value="1"/><node pkg="p" exec="a"/></group>', "<keep> inside <group> is accepted"),
        ('<group forwarding="false"><node pkg="p" exec="a"/></group>', r"\{'forwarding'\} are accepted"),
        ('<node exec="a"/>', "needs the attribute 'pkg'"),
        # and what is plainly wrong
        ('<node pkg="p" exec="a"><param from="nope.yaml"/></node>', "does not exist"),
        ('<node pkg="p" exec="$(var a"/>', "malformed substitution"),
        ('<node pkg="p" exec="$(env  A)"/>', "exactly one space"),
        ('<group scoped="$(var a)"><node pkg="p" exec="a"/></group>', "takes a literal"),
        ("<!-- nothing -->", "starts no node"),
    ],
)
def test_unsupported_or_wrong_input_is_an_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(LaunchFileError, match=message):
        parse_launch_file(launch(tmp_path, body))


def test_errors_name_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = launch(tmp_path, '<arg name="a" default="1"/>\n\n  <set-env name="A" value="1"/>')
    with pytest.raises(LaunchFileError, match=rf"^{path}:5: Unrecognized entity of the type: set-env"):
        parse_launch_file(path)
    assert bringup_main([str(path), "--show"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: Unrecognized entity of the type: set-env" in err


def test_set_env_unset_env_ros_args_and_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safe_ctrl_ros.bringup.runner import child_env

    monkeypatch.setenv("SAFE_CTRL_TEST_DROP", "x")
    path = launch(
        tmp_path,
        """
  <arg name="mode" default="b" description="a mode"><choice value="a"/><choice value="b"/></arg>
  <set_env name="SAFE_CTRL_TEST_SET" value="$(var mode)"/>
  <unset_env name="SAFE_CTRL_TEST_DROP"/>
  <node pkg="p" exec="a" args="--flag 'two words' $(var mode)" ros_args="--log-level debug" respawn="yes"
        respawn_delay="0.5">
    <env name="SAFE_CTRL_TEST_OWN" value="1"/>
    <param name="dropped" value="$(env SAFE_CTRL_TEST_DROP gone)"/>
  </node>""",
    )
    plan = parse_launch_file(path)
    (node,) = plan.nodes
    assert node.args == ["--flag", "two words", "b"]
    assert node.ros_args("/tmp/p.yaml")[:4] == ["--ros-args", "--log-level", "debug", "--ros-args"]
    assert node.respawn  # respawn is a YAML boolean ("yes"), as in launch
    assert node.respawn_delay == 0.5
    assert node.inline_params()["/**"]["ros__parameters"] == {"dropped": "gone"}
    env = child_env(node)
    assert env["SAFE_CTRL_TEST_SET"] == "b"
    assert env["SAFE_CTRL_TEST_OWN"] == "1"
    assert "SAFE_CTRL_TEST_DROP" not in env
    assert plan.descriptions["mode"] == "a mode. Valid choices are: ['a', 'b']"
    assert parse_launch_file(path, {"mode": "a"}).nodes[0].args[-1] == "a"


def test_include_is_not_scoped_and_deprecated_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As upstream's IncludeLaunchDescription: what the included file sets stays set after it."""
    launch(tmp_path, '<let name="from_inner" value="set"/><node pkg="p" exec="inner"/>', "inner.launch.xml")
    path = tmp_path / "outer.launch.xml"
    path.write_text('<launch deprecated="use other.launch.xml"><include file="inner.launch.xml"/>'
                    '<node pkg="p" exec="$(var from_inner)"/></launch>')
    plan = parse_launch_file(path)
    assert [n.exec for n in plan.nodes] == ["inner", "set"]
    assert plan.warnings == [f"{path} is deprecated: use other.launch.xml"]
    assert bringup_main([str(path), "--show-args"]) == 0
    assert "is deprecated: use other.launch.xml" in capsys.readouterr().err


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
