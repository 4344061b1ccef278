"""Bad configuration stops a node with a message that names the problem (and exit code 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers.ros import executable

pytest.importorskip("rclpy")


def run_node(name: str, *ros_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*executable(name), "--ros-args", *ros_args], capture_output=True, text=True, timeout=60, check=False
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("node", ["plant", "controller"])
def test_malformed_params_file_names_the_file(node: str, tmp_path: Path) -> None:
    path = write(tmp_path, "/**:\n  ros__parameters:\n    system: [cartpole\n")
    done = run_node(node, "--params-file", str(path))
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "not valid YAML" in done.stderr


def test_missing_params_file(tmp_path: Path) -> None:
    done = run_node("plant", "--params-file", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "nope.yaml' does not exist" in done.stderr


def test_params_file_without_ros_parameters(tmp_path: Path) -> None:
    done = run_node("plant", "--params-file", str(write(tmp_path, "plant:\n  system: cartpole\n")))
    assert done.returncode == 2
    assert "ros__parameters" in done.stderr


def test_mixed_type_list_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "/**:\n  ros__parameters:\n    initial_state: [0.0, 0, 0.1, 0.0]\n")
    done = run_node("plant", "--params-file", str(path))
    assert done.returncode == 2
    assert "initial_state" in done.stderr
    assert "mixes types" in done.stderr


@pytest.mark.parametrize("node", ["plant", "controller"])
def test_unknown_system_is_named(node: str) -> None:
    done = run_node(node, "-p", "system:=cartpoll")
    assert done.returncode == 2
    assert "unknown system 'cartpoll'" in done.stderr
    assert "cartpole" in done.stderr  # the known systems are listed


def test_unknown_parameter_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "/**:\n  ros__parameters:\n    dtt: 0.01\n")
    done = run_node("plant", "--params-file", str(path))
    assert done.returncode == 2
    assert "unknown parameter(s) ['dtt']" in done.stderr


def test_wrong_vector_size_is_named() -> None:
    done = run_node("plant", "-p", "initial_state:=[0.1, 0.2]")
    assert done.returncode == 2
    assert "initial_state" in done.stderr
    assert "size 4" in done.stderr


def test_wrong_parameter_type_is_named() -> None:
    done = run_node("plant", "-p", "dt:=fast")
    assert done.returncode == 2
    assert "'dt'" in done.stderr


def test_bad_physical_parameter_is_named() -> None:
    done = run_node("plant", "-p", "model.pole_mass:=-0.1")
    assert done.returncode == 2
    assert "pole_mass" in done.stderr


def test_bad_controller_option_is_named() -> None:
    done = run_node("controller", "-p", "lqr.discretization:=tustin")
    assert done.returncode == 2
    assert "lqr.discretization" in done.stderr


def test_negative_adapter_niceness_is_refused() -> None:
    model = Path(__file__).resolve().parents[1] / "config" / "models" / "quadrotor_2d_residual.npz"
    done = run_node("adapter", "-p", "system:=quadrotor_2d", "-p", f"model_file:={model}", "-p", "nice:=-5")
    assert done.returncode == 2
    assert "'nice'" in done.stderr


def test_bringup_reports_a_node_that_stops_on_bad_config(tmp_path: Path) -> None:
    from helpers.ros import REPO, bringup

    params = write(tmp_path, "/**:\n  ros__parameters:\n    system: cartpoll\n")
    done = bringup(str(REPO / "launch" / "cartpole_lqr.launch.xml"), f"params:={params}")
    assert done.returncode == 2
    assert "unknown system 'cartpoll'" in done.stdout


def test_empty_list_is_explained(tmp_path: Path) -> None:
    """ROS 2 declares an empty list without a value: refused before rclpy sees it, naming the key."""
    path = write(tmp_path, "/**:\n  ros__parameters:\n    task:\n      goal: []\n")
    done = run_node("controller", "--params-file", str(path))
    assert done.returncode == 2
    assert "task.goal' is an empty list" in done.stderr
    done = run_node("controller", "-p", "fallback.command:=[]")
    assert done.returncode == 2
    assert "parameter 'fallback.command'" in done.stderr


def test_out_of_range_value_is_named() -> None:
    done = run_node("controller", "-p", "nmpc.horizon:=0")
    assert done.returncode == 2
    assert "parameter 'nmpc.horizon': expected an integer in [1, 10000], got 0" in done.stderr
